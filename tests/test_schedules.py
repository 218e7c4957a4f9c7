import pytest

from rlstack.schedules import check_schedule, schedule_value

SCHEDULE = [(0, 1.0), (100, 0.5), (300, 0.0)]


@pytest.mark.parametrize("count, expected", [(0, 1.0), (99, 1.0), (100, 0.5), (299, 0.5), (300, 0.0), (10**9, 0.0)])
def test_step_schedule_holds_each_value_until_the_next_point(count, expected):
    assert schedule_value(SCHEDULE, "step", count) == expected


@pytest.mark.parametrize("count, expected", [(0, 1.0), (50, 0.75), (100, 0.5), (200, 0.25), (300, 0.0), (10**9, 0.0)])
def test_interp_schedule_interpolates_linearly_and_holds_the_last_value(count, expected):
    assert schedule_value(SCHEDULE, "interp", count) == pytest.approx(expected)


@pytest.mark.parametrize(
    "schedule, kind, error, match",
    [
        (SCHEDULE, "cosine", ValueError, r"`lr_schedule_kind` must be one of \['step', 'interp'\], got 'cosine'"),
        ([(10, 1.0)], "step", ValueError, "must start at 0 env transitions"),
        ([(0, 1.0), (200, 0.5), (100, 0.1)], "step", ValueError, r"sorted by env transitions.*\[0, 200, 100\]"),
        ([(0, 1.0), (0, 0.5)], "step", ValueError, "strictly increasing"),
        ([(0, -1.0)], "step", ValueError, "values must be >= 0"),
        ([(0.5, 1.0)], "step", TypeError, "pairs"),
        ([], "step", ValueError, "at least one"),
    ],
)
def test_bad_schedules_raise(schedule, kind, error, match):
    with pytest.raises(error, match=match):
        check_schedule("lr_schedule", schedule, kind)
