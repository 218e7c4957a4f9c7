"""chex assertions on torch pytrees: leaves become NumPy arrays first.

chex checks JAX-style pytrees (dicts, tuples, NamedTuples, lists), which are
the same containers rlstack's records use; only the leaves need converting.
"""

from __future__ import annotations

from typing import Any

import chex
import numpy as np
import optree
import torch


def to_numpy(tree: Any) -> Any:
    """The tree with every tensor leaf as a NumPy array (on the host)."""
    return optree.tree_map(
        lambda x: x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x), tree
    )


def assert_trees_equal(a: Any, b: Any) -> None:
    """Same structure, shapes, dtypes and values, bit for bit."""
    chex.assert_trees_all_equal_structs(to_numpy(a), to_numpy(b))
    chex.assert_trees_all_equal_dtypes(to_numpy(a), to_numpy(b))
    chex.assert_trees_all_equal(to_numpy(a), to_numpy(b))


def assert_trees_close(a: Any, b: Any, *, rtol: float = 1e-6, atol: float = 0.0) -> None:
    """Same structure and shapes, values within ``atol + rtol * |b|``."""
    chex.assert_trees_all_equal_shapes(to_numpy(a), to_numpy(b))
    chex.assert_trees_all_close(to_numpy(a), to_numpy(b), rtol=rtol, atol=atol)


def assert_same_shapes(a: Any, b: Any) -> None:
    chex.assert_trees_all_equal_shapes(to_numpy(a), to_numpy(b))


def assert_shape_prefix(tree: Any, prefix: tuple[int, ...]) -> None:
    """Every leaf's shape starts with ``prefix`` (e.g. ``[T, N]`` of a trajectory)."""
    chex.assert_tree_shape_prefix(to_numpy(tree), prefix)
