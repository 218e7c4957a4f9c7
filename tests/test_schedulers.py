"""rlstack.shell.schedulers: rlstack 1.x's EntropyScheduler and LRScheduler, with
1.1.0's documented values (its own tests/test_schedulers.py, copied as 1.x
code would call them) and numpy.interp as the independent reference.
"""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rlstack.shell.schedulers import EntropyScheduler, InterpScheduler, LRScheduler, StepScheduler


def _adam():
    return torch.optim.Adam([torch.nn.Parameter(torch.tensor([0.0]))])


# 1.1.0's tests: float points, as its users wrote them.
def test_interp_entropy_scheduler_1x():
    scheduler = EntropyScheduler(0.0, schedule=[[0.0, 1.0], [1.0, 2.0]], kind="interp")
    assert scheduler.step(0.0) == 1.0
    assert scheduler.step(0.5) == 1.5
    assert scheduler.step(1.0) == 2.0


def test_interp_lr_scheduler_1x():
    optimizer = _adam()
    scheduler = LRScheduler(optimizer, schedule=[[0.0, 1.0], [1.0, 2.0]], kind="interp")
    assert scheduler.step(0.0) == 1.0
    assert scheduler.step(0.5) == 1.5
    assert optimizer.param_groups[0]["lr"] == 1.5
    assert scheduler.step(1.0) == 2.0


def test_step_entropy_scheduler_1x():
    scheduler = EntropyScheduler(0.0, schedule=[[0.0, 1.0], [1.0, 2.0]], kind="step")
    assert scheduler.step(0.0) == 1.0
    assert scheduler.step(2.0) == 2.0
    assert scheduler.step(3.0) == 2.0


def test_step_lr_scheduler_1x():
    optimizer = _adam()
    scheduler = LRScheduler(optimizer, schedule=[[0.0, 1.0], [1.0, 2.0]], kind="step")
    assert scheduler.step(0.0) == 1.0
    assert scheduler.step(2.0) == 2.0
    assert scheduler.step(3.0) == 2.0
    assert optimizer.param_groups[0]["lr"] == 2.0


def test_without_a_schedule_the_coefficient_is_constant_and_the_lr_untouched():
    assert EntropyScheduler(0.01).step(10**9) == 0.01
    optimizer = _adam()
    scheduler = LRScheduler(optimizer)
    assert scheduler.coeff == 0.0 and scheduler.step(1000) == 0.0
    assert optimizer.param_groups[0]["lr"] == 1e-3  # Adam's default, as in 1.x


def test_the_value_at_construction_is_the_first_point():
    assert EntropyScheduler(0.5, schedule=[(0, 0.1), (100, 0.0)]).coeff == 0.1
    optimizer = _adam()
    LRScheduler(optimizer, schedule=[(0, 3e-4), (100, 1e-4)])
    assert optimizer.param_groups[0]["lr"] == 3e-4


points = st.lists(st.floats(-10.0, 10.0), min_size=1, max_size=5).flatmap(
    lambda ys: st.lists(
        st.integers(1, 1000), min_size=len(ys) - 1, max_size=len(ys) - 1, unique=True
    ).map(lambda xs: list(zip([0] + sorted(xs), ys, strict=True)))
)


@given(schedule=points, count=st.floats(0.0, 2000.0))
def test_interp_is_numpy_interp(schedule, count):
    x, y = zip(*schedule, strict=True)
    assert InterpScheduler(schedule).step(count) == pytest.approx(
        float(np.interp(count, x, y)), abs=1e-9
    )


@given(schedule=points, count=st.floats(0.0, 2000.0))
def test_step_holds_the_last_point_reached(schedule, count):
    expected = [value for start, value in schedule if count >= start][-1]  # 1.x's loop
    assert StepScheduler(schedule).step(count) == expected


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda: EntropyScheduler(0.0, schedule=[(0, 1.0)], kind="linear"),
            "EntropyScheduler `kind` must be one of",
        ),
        (
            lambda: LRScheduler(_adam(), schedule=[(0, 1.0)], kind="cosine"),
            "LRScheduler `kind` must be one of",
        ),
        (lambda: EntropyScheduler(0.0, schedule=[(10, 1.0)]), "must start at 0 env transitions"),
        (
            lambda: EntropyScheduler(0.0, schedule=[(0, 1.0), (5, 0.5), (5, 0.1)]),
            "strictly increasing",
        ),
        (lambda: EntropyScheduler(0.0, schedule=[]), "non-empty list"),
    ],
)
def test_bad_schedules_are_refused_in_one_line(make, match):
    with pytest.raises(ValueError, match=match):
        make()
