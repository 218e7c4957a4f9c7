"""rlstack 1.x's stateful schedulers, for 1.x code that uses them directly.

rlstack 2 schedules learning rate and entropy coefficient itself, from
``lr_schedule`` / ``entropy_coeff_schedule`` (:mod:`rlstack.core.schedules`,
evaluated on device inside the compiled update). These classes keep 1.x's
constructors and ``step(count) -> value`` for code written against them; their
values are :func:`rlstack.core.schedules.schedule_value`'s.

Examples:
    >>> from rlstack.shell.schedulers import EntropyScheduler
    >>> scheduler = EntropyScheduler(0.0, schedule=[(0, 1.0), (100, 2.0)], kind="interp")
    >>> scheduler.step(50)
    1.5
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal, Protocol

import torch

from ..core.schedules import SCHEDULE_KINDS, schedule_value

ScheduleKind = Literal["interp", "step"]
Schedule = Sequence[Sequence[float]]


class Scheduler(Protocol):
    """Anything with ``step(count) -> value`` (1.x's protocol)."""

    def step(self, count: float, /) -> float:
        """The value after ``count`` env transitions."""


def _check_points(owner: str, schedule: Schedule) -> list[tuple[float, float]]:
    """``schedule`` as sorted ``(count, value)`` pairs starting at 0, or a one-line error."""
    points = [tuple(p) for p in schedule]
    if not points or any(len(p) != 2 for p in points):
        raise ValueError(
            f"{owner} `schedule` must be a non-empty list of (env_transitions, value) pairs, got "
            f"{schedule!r}."
        )
    if points[0][0] != 0:
        raise ValueError(
            f"{owner} `schedule` must start at 0 env transitions (its initial value), got "
            f"{points[0]!r}."
        )
    counts = [p[0] for p in points]
    if any(b <= a for a, b in itertools.pairwise(counts)):
        raise ValueError(
            f"{owner} `schedule` must be sorted by env transitions, strictly increasing, got "
            f"{counts}."
        )
    return points


class ConstantScheduler:
    """Always ``value`` (1.x's scheduler where no schedule is given)."""

    def __init__(self, value: float, /) -> None:
        self.value = value

    def step(self, _: float, /) -> float:
        """The value at ``count`` (env transitions so far)."""
        return self.value


class StepScheduler:
    """Each point's value, held until the next point's env transition count."""

    def __init__(self, schedule: Schedule, /) -> None:
        self.schedule = _check_points(type(self).__name__, schedule)

    def step(self, count: float, /) -> float:
        """The value at ``count`` (env transitions so far)."""
        return schedule_value(self.schedule, "step", count)


class InterpScheduler:
    """Linear interpolation between points; the last value after the last point."""

    def __init__(self, schedule: Schedule, /) -> None:
        self.schedule = _check_points(type(self).__name__, schedule)
        self.x = [p[0] for p in self.schedule]
        self.y = [p[1] for p in self.schedule]

    def step(self, count: float, /) -> float:
        """The value at ``count`` (env transitions so far)."""
        return schedule_value(self.schedule, "interp", count)


def _scheduler(owner: str, default: float, schedule: Schedule | None, kind: str) -> Scheduler:
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"{owner} `kind` must be one of {list(SCHEDULE_KINDS)}, got {kind!r}.")
    if schedule is None:
        return ConstantScheduler(default)
    return StepScheduler(schedule) if kind == "step" else InterpScheduler(schedule)


class EntropyScheduler:
    """The entropy coefficient after a number of env transitions.

    Args:
        coeff: the coefficient when ``schedule`` is None (ignored otherwise).
        schedule: ``(env_transitions, value)`` points, the first at 0.
        kind: ``"step"`` (hold each value) or ``"interp"`` (interpolate).

    Raises:
        ValueError: for another ``kind`` or a schedule not starting at 0.
    """

    def __init__(
        self, coeff: float, /, *, schedule: Schedule | None = None, kind: ScheduleKind = "step"
    ) -> None:
        self.scheduler = _scheduler(type(self).__name__, coeff, schedule, kind)
        self.coeff = self.step(0)

    def step(self, count: float, /) -> float:
        """Move to ``count`` env transitions; returns (and keeps in ``coeff``) the value there."""
        self.coeff = self.scheduler.step(count)
        return self.coeff


class LRScheduler:
    """The learning rate after a number of env transitions, written into a
    ``torch.optim`` optimizer's param groups at each :meth:`step` (1.x's
    behaviour; without a schedule the optimizer's rate is left alone and
    ``coeff`` is 0.0, as in 1.x).

    Args:
        optimizer: the optimizer whose ``lr`` the schedule sets.
        schedule: ``(env_transitions, lr)`` points, the first at 0.
        kind: ``"step"`` (hold each value) or ``"interp"`` (interpolate).

    Raises:
        ValueError: for another ``kind`` or a schedule not starting at 0.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        /,
        *,
        schedule: Schedule | None = None,
        kind: ScheduleKind = "step",
    ) -> None:
        self.optimizer = optimizer
        self.scheduler = _scheduler(type(self).__name__, 0.0, schedule, kind)
        self.sets_lr = schedule is not None
        self.coeff = self.step(0)

    def step(self, count: float, /) -> float:
        """Move to ``count`` env transitions; sets the optimizer's ``lr`` and returns it."""
        self.coeff = self.scheduler.step(count)
        if self.sets_lr:
            for group in self.optimizer.param_groups:
                group["lr"] = self.coeff
        return self.coeff
