"""Observation-history windows for feedforward models (rlstack 1.x's view
requirement ``shift``).

A model that sets ``obs_window = K`` (an int attribute, ``K >= 2``; 1.x's
``ViewRequirement(shift=K - 1)``) is called with an :class:`ObsWindow` of
the last ``K`` observations instead of the current one: ``inputs`` leaves
``[B, K, ...]`` (oldest first, the current observation last) and
``padding_mask`` ``[B, K]`` bool, ``True`` at positions from before the
episode began, whose inputs are zeros. Windows never reach across an
episode's start: a fresh env, an episode's end, or the first step of a run.

Nothing is stored ``K`` times. The rollout carries each env's last ``K - 1``
observations (:class:`WindowCarry`) and the trajectory keeps one
observation per step plus the ``K - 1`` before its first; the update gathers
a minibatch's windows from that one buffer by index arithmetic
(:func:`gather`). Every observation in a window is the one the policy saw
at that step (normalised, if observations are normalised), so the update
sees exactly what the rollout acted on.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import optree
import torch

from ..core.types import Tree


class ObsWindow(NamedTuple):
    """What a windowed model's ``forward`` receives instead of ``obs``.

    Attributes:
        inputs: the last ``K`` observations, leaves ``[B, K, ...]``, oldest
            first; zeros where ``padding_mask``.
        padding_mask: ``[B, K]`` bool, ``True`` where a position lies before
            the episode's first observation (padding; 1.x's convention).
    """

    inputs: Tree
    padding_mask: torch.Tensor


class WindowCarry(NamedTuple):
    """A windowed policy's memory between steps (``RolloutCarry.memory``).

    Attributes:
        frames: the ``K - 1`` observations before ``carry.obs``, leaves
            ``[N, K - 1, ...]``, oldest first (stale where masked).
        ages: ``[N]`` int64, steps since the episode of ``carry.obs`` began
            (0: ``carry.obs`` is its first observation).
    """

    frames: Tree
    ages: torch.Tensor


class ObsFrames(NamedTuple):
    """A trajectory's observations as the update's source of windows
    (``Batch.obs`` for a windowed policy).

    Attributes:
        frames: the ``K - 1`` observations before the rollout then its
            ``T``, time-major and flattened: leaves ``[(T + K - 1) * N, ...]``;
            transition ``b = t * N + n`` sees rows ``b + j * N``, ``j < K``.
        ages: ``[T * N]`` int64, each transition's steps since its episode began.
    """

    frames: Tree
    ages: torch.Tensor


def window_size(model: Any) -> int:
    """``K``, the observations a model sees per step: its ``obs_window``
    attribute, 1 (the current observation only) when it has none.

    Raises:
        ValueError: if ``obs_window`` is not a positive int.
    """
    size = getattr(model, "obs_window", 1)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(
            f"model {type(model).__name__}.obs_window must be a positive int (observations per "
            f"window, 1.x's view requirement shift + 1), got {size!r}."
        )
    return size


def padding_mask(ages: torch.Tensor, size: int) -> torch.Tensor:
    """``[..., K]`` bool: position ``j`` of the window of an observation
    ``ages`` steps into its episode holds an observation from before the
    episode (``K - 1 - j > age``).
    """
    lags = torch.arange(size - 1, -1, -1, device=ages.device)
    return lags > ages.unsqueeze(-1)


def _masked(inputs: Tree, mask: torch.Tensor) -> Tree:
    """``inputs`` (leaves ``[..., K, ...]``, mask ``[..., K]``) with zeros where masked."""

    def zero(x: torch.Tensor) -> torch.Tensor:
        m = mask.reshape(*mask.shape, *([1] * (x.dim() - mask.dim())))
        return torch.where(m, torch.zeros_like(x), x)

    return optree.tree_map(zero, inputs)


def initial(obs: Tree, size: int) -> WindowCarry:
    """The memory of envs whose episodes begin at ``obs`` (leaves ``[N, ...]``):
    zero frames ``[N, K - 1, ...]`` and ages 0.
    """
    frames = optree.tree_map(lambda x: x.new_zeros(x.shape[0], size - 1, *x.shape[1:]), obs)
    n = optree.tree_leaves(obs)[0].shape[0]
    return WindowCarry(
        frames, torch.zeros(n, dtype=torch.int64, device=optree.tree_leaves(obs)[0].device)
    )


def restart(memory: WindowCarry, starts: torch.Tensor) -> WindowCarry:
    """``memory`` with the envs where ``starts`` (``[N]`` bool) beginning an episode."""
    return memory._replace(ages=torch.where(starts, torch.zeros_like(memory.ages), memory.ages))


def window(memory: WindowCarry, obs: Tree, size: int) -> ObsWindow:
    """The window ending at ``obs`` (leaves ``[N, ...]``): ``memory``'s frames
    then ``obs``, ``[N, K, ...]``, masked by ``memory.ages``.
    """
    inputs = optree.tree_map(lambda f, x: torch.cat([f, x.unsqueeze(1)], 1), memory.frames, obs)
    mask = padding_mask(memory.ages, size)
    return ObsWindow(_masked(inputs, mask), mask)


def advance(seen: ObsWindow, memory: WindowCarry) -> WindowCarry:
    """The memory after acting on ``seen`` (the window :func:`window` built
    from ``memory``): its last ``K - 1`` observations, one step older. The
    frames are contiguous, laid out as :func:`initial`'s, so compiled code
    sees one layout whether a rollout starts from fresh or carried memory.
    """
    return WindowCarry(
        optree.tree_map(lambda x: x[:, 1:].contiguous(), seen.inputs), memory.ages + 1
    )


def history(memory: WindowCarry) -> Tree:
    """``memory``'s frames time-major, leaves ``[K - 1, N, ...]``: the
    trajectory record's ``history`` (:class:`~rlstack.policy.memory.WindowRecord`).
    """
    return optree.tree_map(lambda f: f.transpose(0, 1), memory.frames)


def frames(obs_history: Tree, obs: Tree, ages: torch.Tensor) -> ObsFrames:
    """A trajectory's window source: ``obs_history`` ``[K - 1, N, ...]``
    then ``obs`` ``[T, N, ...]`` flattened time-major, and ``ages`` ``[T, N]``
    flattened (see :class:`ObsFrames`).
    """
    joined = optree.tree_map(lambda h, x: torch.cat([h, x]).flatten(0, 1), obs_history, obs)
    return ObsFrames(joined, ages.reshape(-1))


def gather(source: ObsFrames, idx: torch.Tensor, size: int) -> ObsWindow:
    """The windows of transitions ``idx`` (``[B]`` int64 indices into the
    ``T * N`` flat batch), ``[B, K, ...]``: rows ``idx + j * N`` of
    ``source.frames``, masked by their ages. Only the ``B * K`` rows asked
    for are read.
    """
    total, steps = optree.tree_leaves(source.frames)[0].shape[0], source.ages.shape[0]
    num_envs = (total - steps) // (size - 1)
    rows = idx.unsqueeze(-1) + num_envs * torch.arange(size, device=idx.device)
    mask = padding_mask(source.ages[idx], size)
    return ObsWindow(_masked(optree.tree_map(lambda f: f[rows], source.frames), mask), mask)


def unfold(obs_history: Tree, obs: Tree, ages: torch.Tensor) -> ObsWindow:
    """Every window of a trajectory at once, ``[T, N, K, ...]``, from a view
    (``Tensor.unfold`` over time) masked by ``ages`` ``[T, N]``; for
    evaluation and inspection (the update gathers minibatches instead).
    """
    size = optree.tree_leaves(obs_history)[0].shape[0] + 1
    inputs = optree.tree_map(
        lambda h, x: torch.cat([h, x]).unfold(0, size, 1).movedim(-1, 2), obs_history, obs
    )
    mask = padding_mask(ages, size)
    return ObsWindow(_masked(inputs, mask), mask)
