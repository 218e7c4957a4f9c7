"""The train state an :class:`~rlstack.Algorithm` holds and checkpoints,
and the member axis a population adds to it.

A single run's :class:`TrainState` has tensors of their own shapes; a
population's has the same structure with a leading member axis ``K`` on
every leaf (:func:`stack` of the members' states). The shell runs the same
code on both: what differs is only whether the pure functions are mapped
over that axis (:func:`each_member`). Member ``k`` is the slice
:func:`take` ``(state, k)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import optree
import torch

from ..core import random
from ..core.optim import tree_select
from ..core.types import HParams, RolloutCarry, Trajectory


class TrainState(NamedTuple):
    """Everything training changes, as tensors (under a population every
    leaf has a leading ``[K]`` member axis).

    Attributes:
        params: the policy's parameters, name -> tensor.
        opt_state: the optimizer chain's state (its learning rate included,
            :func:`rlstack.core.optim.learning_rate`).
        carry: the env carry (env state, observations, normalisation
            statistics, episode tally, memory, rollout key), ``None`` before
            the first collect.
        trajectory: the last rollout, ``None`` once trained on.
        key: ``[2]`` int64, the training key (collect and step split it).
        hparams: gamma, GAE lambda, clip parameter and entropy coefficient
            as 0-d float32 tensors (:class:`~rlstack.core.types.HParams`).

    The counters (collects, steps, env transitions) stay host ints beside it,
    in the shell: logging and checkpointing decide by them without a
    device sync.
    """

    params: dict[str, torch.Tensor]
    opt_state: Any
    carry: RolloutCarry | None
    trajectory: Trajectory | None
    key: torch.Tensor
    hparams: HParams


def stack(trees: Sequence[Any]) -> Any:
    """Stack equal-structured pytrees of tensors along a new leading axis
    (``None`` stays ``None``).
    """
    return optree.tree_map(lambda *xs: torch.stack(xs), *trees)


def take(tree: Any, k: int) -> Any:
    """Member ``k`` of a stacked pytree (every leaf indexed ``[k]``)."""
    return optree.tree_map(lambda x: x[k], tree)


def select_members(active: torch.Tensor, new: Any, old: Any) -> Any:
    """``new`` for the members where ``active`` ``[K]`` holds, ``old``
    elsewhere, leaf by leaf (a frozen member keeps its state).
    """
    return torch.func.vmap(tree_select)(active, new, old)


def each_member(fn: Callable, num_members: int | None, in_dims: Any = 0) -> Callable:
    """``fn`` as the shell applies it to a train state: unchanged for one run
    (``num_members`` ``None``), mapped over the leading member axis with
    ``torch.func.vmap`` for a population.
    """
    return fn if num_members is None else torch.func.vmap(fn, in_dims=in_dims)


def split_key(key: torch.Tensor, num_members: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``random.split`` of each member's key: ``(next key, drawn key)``, each
    ``[2]`` (``[K, 2]`` for a population).
    """
    keys = each_member(random.split, num_members)(key)
    if num_members is None:
        return keys[0], keys[1]
    return keys[:, 0].contiguous(), keys[:, 1].contiguous()


def to_host(stats: Mapping[str, torch.Tensor], num_members: int | None) -> list[dict[str, float]]:
    """Device stats (0-d tensors, or ``[K]`` for a population) as one
    ``{name: float}`` dict per member, with a single device sync.
    """
    count = 1 if num_members is None else num_members
    if not stats:
        return [{} for _ in range(count)]
    values = torch.stack(
        [v.detach().float().reshape(count) for v in stats.values()]
    ).tolist()  # [names][K]
    return [{name: row[k] for name, row in zip(stats, values, strict=True)} for k in range(count)]


def non_finite(stats: Mapping[str, float], where: str) -> str | None:
    """The message for the non-finite values of host ``stats`` (``None`` if
    all are finite): ``"Non-finite losses/total=nan <where>."``.
    """
    bad = {k: v for k, v in stats.items() if not math.isfinite(v)}
    return (
        f"{MemberStatus.NON_FINITE} {', '.join(f'{k}={v}' for k, v in bad.items())} {where}."
        if bad
        else None
    )


class MemberStatus:
    """Which members still train, and how many updates each took.

    A member stops when a stop condition holds (for one
    :meth:`Trainer.run <rlstack.Trainer.run>`) or when its rollout or update
    turns non-finite (for good: :meth:`failed`). A stopped member's state is
    kept as it is, on device, at every later collect and step. A single run
    is one member.

    Attributes:
        stopped: per member, why it stopped (``None`` while it trains).
        steps: per member, the updates it took.
        active: ``[K]`` bool on ``device``, the members still training.
    """

    #: How the reason of a non-finite stop begins.
    NON_FINITE = "Non-finite"

    def __init__(self, count: int, device: torch.device) -> None:
        self.stopped: list[str | None] = [None] * count
        self.steps = [0] * count
        self.active = torch.ones(count, dtype=torch.bool, device=device)

    def training(self) -> list[bool]:
        """Per member, whether it still trains (host values, no sync)."""
        return [why is None for why in self.stopped]

    def failed(self, k: int) -> bool:
        """Whether member ``k`` stopped for a non-finite rollout or update."""
        return self.stopped[k] is not None and self.stopped[k].startswith(self.NON_FINITE)

    def freeze(self, k: int, why: str) -> None:
        """Stop training member ``k``: from now on its state is kept."""
        if self.stopped[k] is None:
            self._set(k, why)

    def unfreeze(self, k: int) -> None:
        """Let member ``k``, stopped by a condition, train again (a member
        that failed stays stopped).
        """
        if self.stopped[k] is not None and not self.failed(k):
            self._set(k, None)

    def unfreeze_all(self) -> None:
        """:meth:`unfreeze` every member stopped by a condition."""
        for k in range(len(self.stopped)):
            self.unfreeze(k)

    def stop_non_finite(
        self, stats: Sequence[Mapping[str, float]], where: str, *, population: bool
    ) -> None:
        """Stop the training members whose host ``stats`` are not finite;
        when that leaves none training, raise :class:`FloatingPointError`
        instead, with those members left as they were (the caller keeps its
        last good state and may try again).
        """
        failed = [
            (k, why)
            for k, s in enumerate(stats)
            if self.stopped[k] is None and (why := non_finite(s, where)) is not None
        ]
        if not failed:
            return
        if len(failed) < sum(self.training()):
            for k, why in failed:
                self.freeze(k, why)
            return
        reasons = [why for _, why in failed]
        raise FloatingPointError(
            f"No member of the population is left training: {reasons}" if population else reasons[0]
        )

    def keep_stopped(self, new: Any, old: Any, fields: Sequence[str]) -> Any:
        """The record ``new`` (a :class:`TrainState`), except that a stopped
        member keeps its ``old`` ``fields`` (those ``old`` has).
        """
        if all(self.training()):
            return new
        fields = [f for f in fields if getattr(old, f) is not None]
        kept = select_members(
            self.active, [getattr(new, f) for f in fields], [getattr(old, f) for f in fields]
        )
        return new._replace(**dict(zip(fields, kept, strict=True)))

    def restore(self, stopped: Sequence[str | None], steps: Sequence[int]) -> None:
        """Set every member's reason and step count (a checkpoint's)."""
        self.stopped, self.steps = list(stopped), list(steps)
        self.active = torch.tensor(self.training(), device=self.active.device)

    def _set(self, k: int, why: str | None) -> None:
        self.stopped[k] = why
        self.active = self.active.clone()
        self.active[k] = why is None
