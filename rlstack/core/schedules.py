"""Piecewise schedules keyed on env transitions, as in rlstack 1.x.

A schedule is a list of ``(env_transitions, value)`` points, sorted by
transitions and starting at 0. Kind ``"step"`` holds each value until the
next point; kind ``"interp"`` interpolates linearly between points and holds
the last value after the last point.

Two evaluations of one schedule, equal to the last bit: :func:`schedule_value`
on the host (what the shell logs) and :func:`device_schedule`, torch ops on a
0-d tensor, so the compiled update evaluates learning rate and entropy
coefficient on device from its optimizer step count
(:func:`by_optimizer_steps` maps steps to env transitions). Neither syncs.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch

SCHEDULE_KINDS = ("step", "interp")


def check_schedule(
    name: str, schedule: Sequence[Sequence[float]] | None, kind: str, *, min_value: float = 0.0
) -> None:
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
            raise TypeError(
                f"`{name}` must be a list of (int env_transitions, float value) pairs, got point "
                f"{point!r}."
            )
    if points[0][0] != 0:
        raise ValueError(
            f"`{name}` must start at 0 env transitions (its initial value), got first point "
            f"{tuple(points[0])}."
        )
    steps = [p[0] for p in points]
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise ValueError(
            f"`{name}` must be sorted by env transitions, strictly increasing, got {steps}."
        )
    for count, value in points:
        if value < min_value:
            raise ValueError(
                f"`{name}` values must be >= {min_value}, got {value} at {count} transitions."
            )


def linear_anneal(
    lr: float, *, updates: int, transitions_per_update: int
) -> list[tuple[int, float]]:
    """An ``lr_schedule`` (kind ``"interp"``) annealing ``lr`` linearly to 0
    over a run of ``updates`` updates of ``transitions_per_update`` env
    transitions (``num_envs * horizon``), as CleanRL's ``anneal_lr``: update
    ``u`` (0-based) trains at ``lr * (1 - u / updates)``, the last at
    ``lr / updates``; after the run the rate stays 0.

    An update is keyed on the transitions collected when it trains, ``(u +
    1) * transitions_per_update`` (see :func:`by_optimizer_steps`), hence the
    point holding ``lr`` through the first update.

    Raises:
        ValueError: for a non-positive ``lr``, ``updates`` or ``transitions_per_update``.

    Examples:
        >>> linear_anneal(3e-4, updates=4, transitions_per_update=2048)
        [(0, 0.0003), (2048, 0.0003), (10240, 0.0)]
        >>> [schedule_value(linear_anneal(1.0, updates=4, transitions_per_update=10), "interp", (u +
        1) * 10)
        ...  for u in range(4)]
        [1.0, 0.75, 0.5, 0.25]
    """
    for name, value in (("updates", updates), ("transitions_per_update", transitions_per_update)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"`lr` must be a positive number, got {lr!r}.")
    return [
        (0, float(lr)),
        (transitions_per_update, float(lr)),
        ((updates + 1) * transitions_per_update, 0.0),
    ]


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


def device_schedule(
    schedule: Sequence[Sequence[float]], kind: str
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The (validated) schedule as a function of a tensor count, on the
    count's device: ``f(count) -> float32`` of the count's shape, equal to
    :func:`schedule_value` (both compute in float64, in the same order).
    Pure torch ops on Python constants: works under ``torch.compile`` and
    ``vmap``.

    Examples:
        >>> f = device_schedule([(0, 1.0), (100, 0.0)], "interp")
        >>> f(torch.tensor(25.0)).item()
        0.75
    """
    points = [(float(x), float(y)) for x, y in schedule]

    def value(count: torch.Tensor) -> torch.Tensor:
        x = count.double()
        out = torch.full_like(x, points[0][1])
        for i, (x0, y0) in enumerate(points):
            if kind == "interp" and i + 1 < len(points):
                x1, y1 = points[i + 1]
                segment = y0 + (y1 - y0) * (x - x0) / (x1 - x0)
                out = torch.where((x >= x0) & (x < x1), segment, out)
            else:
                out = torch.where(x >= x0, torch.full_like(x, y0), out)
        return out.float()

    return value


def by_optimizer_steps(
    schedule: Callable[[torch.Tensor], torch.Tensor],
    *,
    steps_per_update: int,
    transitions_per_update: int,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Re-key a schedule of env transitions on optimizer steps: step ``s``
    belongs to update ``s // steps_per_update``, which trains on the first
    ``(s // steps_per_update + 1) * transitions_per_update`` transitions
    collected (the count the shell's ``Algorithm.coefficients`` uses).
    """

    def value(count: torch.Tensor) -> torch.Tensor:
        updates = torch.div(count.double(), steps_per_update, rounding_mode="floor")
        return schedule((updates + 1) * transitions_per_update)

    return value


def logged_coefficients(
    config: Any, lr: float, entropy_coeff: float, env_steps: int
) -> dict[str, float]:
    """The learning rate and entropy coefficient of the next update, from
    their schedules (when ``config`` has them) at ``env_steps`` transitions
    collected, else the given values; and the value-loss coefficient. The
    update evaluates the same schedules on device; these host values are
    what is logged (``coefficients/*``).
    """
    if config.lr_schedule is not None:
        lr = schedule_value(config.lr_schedule, config.lr_schedule_kind, env_steps)
    if config.entropy_coeff_schedule is not None:
        entropy_coeff = schedule_value(
            config.entropy_coeff_schedule, config.entropy_coeff_schedule_kind, env_steps
        )
    return {
        "coefficients/lr": lr,
        "coefficients/entropy": entropy_coeff,
        "coefficients/vf": config.vf_coeff,
    }
