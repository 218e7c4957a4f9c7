"""The optimizer's building blocks: :class:`GradientTransformation`, the
transforms' state records, :func:`chain`, :func:`apply_updates` and
:func:`global_norm` (see :mod:`rlstack.core.optim`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import optree
import torch

from ..types import Params

#: A schedule maps a 0-d float32 step count to a 0-d float32 value.
Schedule = Callable[[torch.Tensor], torch.Tensor]
#: A learning rate: a number, a 0-d tensor or a schedule.
LearningRate = float | torch.Tensor | Schedule


class GradientTransformation(NamedTuple):
    """``init(params) -> state`` and ``update(grads, state, params) -> (updates, state)``."""

    init: Callable[[Params], Any]
    update: Callable[[Params, Any, Params], tuple[Params, Any]]


class ClipByGlobalNormState(NamedTuple):
    """``grad_norm``: 0-d global norm of the last gradients, before clipping."""

    grad_norm: torch.Tensor


class ScaleByAdamState(NamedTuple):
    """``count``: 0-d float32 steps applied; ``mu``/``nu``: first and second
    moments of the gradients.
    """

    count: torch.Tensor
    mu: Params
    nu: Params


class TraceState(NamedTuple):
    """``count``: 0-d float32 steps applied; ``momentum``: the momentum
    buffers (zeros before the first step).
    """

    count: torch.Tensor
    momentum: Params


class ScaleByLearningRateState(NamedTuple):
    """``count``: 0-d float32 steps applied; ``learning_rate``: 0-d float32
    rate of the next step (the last step's, when scheduled).
    """

    count: torch.Tensor
    learning_rate: torch.Tensor


class AccumulateState(NamedTuple):
    """``mini_step``: 0-d int64 gradients summed since the last step;
    ``grad_sum``: their sum; ``inner``: the wrapped transform's state.
    """

    mini_step: torch.Tensor
    grad_sum: Params
    inner: Any


class ApplyIfFiniteState(NamedTuple):
    """``notfinite_count``: 0-d int64 consecutive skipped steps;
    ``total_notfinite``: 0-d int64 steps skipped in all; ``inner``: the
    wrapped transform's state.
    """

    notfinite_count: torch.Tensor
    total_notfinite: torch.Tensor
    inner: Any


def _device_of(params: Params) -> torch.device:
    return next(iter(params.values())).device


def _scalar(value: float, params: Params, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.full((), value, dtype=dtype, device=_device_of(params))


def _zeros_like(params: Params) -> Params:
    return optree.tree_map(torch.zeros_like, params)


def apply_updates(params: Params, updates: Params) -> Params:
    """``params + updates``, leaf by leaf (new tensors; inputs untouched)."""
    return {k: p + updates[k] for k, p in params.items()}


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Apply ``transforms`` in order; the state is the tuple of their states."""

    def init(params: Params) -> tuple:
        return tuple(t.init(params) for t in transforms)

    def update(grads: Params, state: tuple, params: Params) -> tuple[Params, tuple]:
        new_states = []
        for t, s in zip(transforms, state, strict=True):
            grads, s = t.update(grads, s, params)
            new_states.append(s)
        return grads, tuple(new_states)

    return GradientTransformation(init, update)


def global_norm(tree: Params) -> torch.Tensor:
    """0-d L2 norm of all leaves together."""
    return torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g) for g in optree.tree_leaves(tree)])
    )
