"""Replay a pure function of tensors as one CUDA graph.

A rollout is ``T`` small policy/env steps and an update hundreds of small
kernels per minibatch; on a GPU, launching them from Python can cost more
than running them. :class:`CudaGraphed` records every kernel of one call of
``fn`` (the whole rollout, or the whole update with all its epochs and
minibatches) into a ``torch.cuda.CUDAGraph`` and replays it with one launch,
following PyTorch's whole-network capture recipe: warm up on a side stream,
capture with static input buffers, then copy new inputs into those buffers
and replay.

What makes this possible is that rlstack's ``rollout()`` and ``update()``
never synchronise with the host, keep every shape fixed and draw random
numbers from torch's default CUDA generator, whose state CUDA graphs advance
on every replay (so each replay samples new actions and permutations).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optree
import torch


class CudaGraphed:
    """``fn`` run eagerly for ``warmup`` calls, then captured once and replayed.

    Args:
        fn: a pure function ``fn(*args) -> out`` whose ``args`` and ``out``
            are pytrees of CUDA tensors. Every call must pass the same tree
            structure, shapes, dtypes and device; ``fn`` must not sync with
            the host (no ``.item()``, no data-dependent shapes) and must not
            keep references to its inputs. It may be ``torch.compile``-d:
            compilation happens during the warm-up calls.
        warmup: eager calls on a side stream before capture (>= 1); they let
            ``torch.compile``, cuBLAS and the caching allocator do their
            one-time work outside the graph.

    A replay copies the new inputs into the graph's static input buffers and
    returns clones of its static outputs, so results stay valid after later
    calls (the functional contract of ``fn``). The graph's memory is a private
    pool held for the life of this object.

    Raises:
        TypeError / ValueError: for a non-tensor or non-CUDA leaf, or when a
            call's tree structure, shapes or dtypes differ from the captured
            call's.
    """

    def __init__(self, fn: Callable[..., Any], *, warmup: int = 2) -> None:
        if not callable(fn):
            raise TypeError(f"`fn` must be callable, got {type(fn).__name__}.")
        if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 1:
            raise ValueError(f"`warmup` must be an int >= 1, got {warmup!r}.")
        self.fn = fn
        self.warmup = warmup
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self._spec: Any = None
        self._signature: list[tuple[torch.Size, torch.dtype, torch.device]] = []
        self._static_inputs: list[torch.Tensor] = []
        self._static_output: Any = None

    @property
    def captured(self) -> bool:
        """Whether the graph has been captured (after the warm-up calls)."""
        return self.graph is not None

    def __call__(self, *args: Any) -> Any:
        """Run the function: eagerly for the warm-up calls, then by replaying its captured graph."""
        leaves, spec = optree.tree_flatten(args)
        signature = _signature(leaves)
        self.calls += 1
        if self.graph is None and self.calls <= self.warmup:
            return self._run_on_side_stream(args)
        if self.graph is None:
            self._capture(leaves, spec, signature)
        else:
            self._check_same_call(spec, signature)
            for static, value in zip(self._static_inputs, leaves, strict=True):
                static.copy_(value)
        self.graph.replay()
        return optree.tree_map(torch.clone, self._static_output)

    def _run_on_side_stream(self, args: tuple) -> Any:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            out = self.fn(*args)
        current = torch.cuda.current_stream()
        current.wait_stream(stream)
        # The outputs were allocated on the side stream and are used on the
        # current one from now on: tell the caching allocator.
        for leaf in optree.tree_leaves(out):
            if isinstance(leaf, torch.Tensor) and leaf.is_cuda:
                leaf.record_stream(current)
        return out

    def _capture(self, leaves: list[torch.Tensor], spec: Any, signature: list) -> None:
        self._spec, self._signature = spec, signature
        self._static_inputs = [leaf.clone() for leaf in leaves]
        static_args = optree.tree_unflatten(spec, self._static_inputs)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._static_output = self.fn(*static_args)
        self.graph = graph

    def _check_same_call(self, spec: Any, signature: list) -> None:
        if spec != self._spec:
            raise ValueError(
                f"CudaGraphed({_name(self.fn)}) was captured for arguments of structure "
                f"{self._spec}, "
                f"got {spec}; build a new CudaGraphed for a new structure."
            )
        for i, (got, want) in enumerate(zip(signature, self._signature, strict=True)):
            if got != want:
                raise ValueError(
                    f"CudaGraphed({_name(self.fn)}): leaf {i} of the arguments is (shape, dtype, "
                    f"device) = {got}, "
                    f"the captured call's was {want}; CUDA graphs replay fixed shapes."
                )


def _signature(leaves: list[Any]) -> list[tuple[torch.Size, torch.dtype, torch.device]]:
    signature = []
    for i, leaf in enumerate(leaves):
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(
                f"CudaGraphed arguments must be pytrees of tensors; leaf {i} is "
                f"{type(leaf).__name__}."
            )
        if leaf.device.type != "cuda":
            raise ValueError(
                f"CudaGraphed arguments must be CUDA tensors; leaf {i} is on {leaf.device}."
            )
        signature.append((leaf.shape, leaf.dtype, leaf.device))
    return signature


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", type(fn).__name__)
