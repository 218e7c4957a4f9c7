"""Piecewise schedules keyed on env transitions, as in rlstack 1.x.

A schedule is a list of ``(env_transitions, value)`` points, sorted by
transitions and starting at 0. Kind ``"step"`` holds each value until the
next point; kind ``"interp"`` interpolates linearly between points and holds
the last value after the last point. Values are computed in the shell from
its host-side transition counter (no device sync) and enter the compiled
update as 0-d tensors.
"""

from __future__ import annotations

import bisect
from typing import Sequence

SCHEDULE_KINDS = ("step", "interp")


def check_schedule(name: str, schedule: Sequence[Sequence[float]] | None, kind: str, *, min_value: float = 0.0) -> None:
    """Validate a schedule; ``name`` is the hyperparameter it came from.

    Raises:
        ValueError: for an unknown kind, a schedule not starting at 0, not
            strictly increasing in transitions, or with a value below
            ``min_value``.
        TypeError: for points that are not ``(int, number)`` pairs.
    """
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"`{name}_kind` must be one of {list(SCHEDULE_KINDS)}, got {kind!r}.")
    if schedule is None:
        return
    points = list(schedule)
    if not points:
        raise ValueError(f"`{name}` must have at least one (env_transitions, value) point, got [].")
    for point in points:
        if (
            not isinstance(point, (tuple, list))
            or len(point) != 2
            or not isinstance(point[0], int)
            or isinstance(point[0], bool)
            or not isinstance(point[1], (int, float))
        ):
            raise TypeError(f"`{name}` must be a list of (int env_transitions, float value) pairs, got point {point!r}.")
    if points[0][0] != 0:
        raise ValueError(f"`{name}` must start at 0 env transitions (its initial value), got first point {tuple(points[0])}.")
    steps = [p[0] for p in points]
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"`{name}` must be sorted by env transitions, strictly increasing, got {steps}.")
    for count, value in points:
        if value < min_value:
            raise ValueError(f"`{name}` values must be >= {min_value}, got {value} at {count} transitions.")


def schedule_value(schedule: Sequence[Sequence[float]], kind: str, count: int) -> float:
    """Value of a (validated) schedule after ``count`` env transitions.

    Examples:
        >>> schedule_value([(0, 1.0), (100, 0.0)], "step", 99)
        1.0
        >>> schedule_value([(0, 1.0), (100, 0.0)], "interp", 25)
        0.75
    """
    steps = [p[0] for p in schedule]
    i = bisect.bisect_right(steps, count) - 1
    i = max(i, 0)
    x0, y0 = schedule[i]
    if kind == "step" or i == len(schedule) - 1:
        return float(y0)
    x1, y1 = schedule[i + 1]
    return float(y0 + (y1 - y0) * (count - x0) / (x1 - x0))
