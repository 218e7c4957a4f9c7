"""Stop conditions: callables on a step's stats that return True to stop.

They hold a little memory between calls (best value so far, and
``stalls``: consecutive calls without progress, compared with ``patience``),
so use a fresh instance per run. rlstack 1.x called that counter ``losses``;
the name stays as an alias.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

Stats = Mapping[str, float]


class Condition(Protocol):
    """A stop condition: called with a step's stats, True stops the run."""

    def __call__(self, stats: Stats, /) -> bool:
        """Whether the run should stop after the step with these ``stats``."""


def _value(stats: Stats, name: str) -> float:
    if name not in stats:
        raise KeyError(f"Stop condition key {name!r} is not among the train stats {sorted(stats)}.")
    return stats[name]


class _Patience:
    """``stalls``: consecutive calls without progress; ``losses``: rlstack 1.x's name for it."""

    stalls: int

    @property
    def losses(self) -> int:
        return self.stalls

    @losses.setter
    def losses(self, value: int) -> None:
        self.stalls = value


def _check_patience(patience: int) -> None:
    if not isinstance(patience, int) or isinstance(patience, bool) or patience < 1:
        raise ValueError(f"`patience` must be a positive int, got {patience!r}.")


class And:
    """True when all ``conditions`` are true (each is called every time)."""

    def __init__(self, conditions: Sequence[Condition], /) -> None:
        if not conditions:
            raise ValueError("`conditions` must hold at least one condition.")
        self.conditions = list(conditions)

    def __call__(self, stats: Stats, /) -> bool:
        """Whether the run should stop after the step with these ``stats``."""
        return all([condition(stats) for condition in self.conditions])


class HitsLowerBound:
    """True once ``stats[key] <= lower_bound``."""

    def __init__(self, key: str, lower_bound: float, /) -> None:
        self.key, self.lower_bound = key, lower_bound

    def __call__(self, stats: Stats, /) -> bool:
        """Whether the run should stop after the step with these ``stats``."""
        return _value(stats, self.key) <= self.lower_bound


class HitsUpperBound:
    """True once ``stats[key] >= upper_bound``."""

    def __init__(self, key: str, upper_bound: float, /) -> None:
        self.key, self.upper_bound = key, upper_bound

    def __call__(self, stats: Stats, /) -> bool:
        """Whether the run should stop after the step with these ``stats``."""
        return _value(stats, self.key) >= self.upper_bound


class Plateaus(_Patience):
    """True once ``stats[key]`` stayed within ``rtol`` (relative) of its
    previous value ``patience`` calls in a row.
    """

    def __init__(self, key: str, /, *, patience: int = 5, rtol: float = 1e-3) -> None:
        _check_patience(patience)
        if not rtol >= 0:
            raise ValueError(f"`rtol` must be >= 0, got {rtol!r}.")
        self.key, self.patience, self.rtol = key, patience, rtol
        self.stalls = 0
        self.old_value: float | None = None

    def __call__(self, stats: Stats, /) -> bool:
        """Whether the run should stop after the step with these ``stats``."""
        value = _value(stats, self.key)
        if self.old_value is not None and abs(value - self.old_value) <= self.rtol * abs(
            self.old_value
        ):
            self.stalls += 1
        else:
            self.stalls = 0
        self.old_value = value
        return self.stalls >= self.patience


class StopsDecreasing(_Patience):
    """True once ``stats[key]`` has not set a new minimum for ``patience`` calls."""

    def __init__(self, key: str, /, *, patience: int = 5) -> None:
        _check_patience(patience)
        self.key, self.patience = key, patience
        self.stalls = 0
        self.min_ = float("inf")

    def __call__(self, stats: Stats, /) -> bool:
        """Whether the run should stop after the step with these ``stats``."""
        value = _value(stats, self.key)
        if value >= self.min_:
            self.stalls += 1
        else:
            self.stalls, self.min_ = 0, value
        return self.stalls >= self.patience


class StopsIncreasing(_Patience):
    """True once ``stats[key]`` has not set a new maximum for ``patience`` calls."""

    def __init__(self, key: str, /, *, patience: int = 5) -> None:
        _check_patience(patience)
        self.key, self.patience = key, patience
        self.stalls = 0
        self.max_ = float("-inf")

    def __call__(self, stats: Stats, /) -> bool:
        """Whether the run should stop after the step with these ``stats``."""
        value = _value(stats, self.key)
        if value <= self.max_:
            self.stalls += 1
        else:
            self.stalls, self.max_ = 0, value
        return self.stalls >= self.patience


class ReturnReaches:
    """True once the return reaches ``target``: the mean return of the
    episodes that ended in the latest rollout that had one
    (``episodes/return/mean``), or, on an env whose episodes never end, the
    return per rollout (``returns/mean``).

    Attributes:
        target: the return to reach.
        value: the return the last call saw (``None`` before any episode ended).
    """

    def __init__(self, target: float) -> None:
        self.target = target
        self.value: float | None = None

    def __call__(self, stats: Stats, /) -> bool:
        """Whether the return reached ``target`` (eval stats are ignored)."""
        if "episodes/return/mean" in stats:
            self.value = stats["episodes/return/mean"]
        elif "returns/mean" in stats and "episodes/count" not in stats:
            self.value = stats["returns/mean"]
        return self.value is not None and self.value >= self.target
