import pytest

from rlstack.core.schedules import check_schedule, schedule_value

SCHEDULE = [(0, 1.0), (100, 0.5), (300, 0.0)]


@pytest.mark.parametrize(
    "count, expected", [(0, 1.0), (99, 1.0), (100, 0.5), (299, 0.5), (300, 0.0), (10**9, 0.0)]
)
def test_step_schedule_holds_each_value_until_the_next_point(count, expected):
    assert schedule_value(SCHEDULE, "step", count) == expected


@pytest.mark.parametrize(
    "count, expected", [(0, 1.0), (50, 0.75), (100, 0.5), (200, 0.25), (300, 0.0), (10**9, 0.0)]
)
def test_interp_schedule_interpolates_linearly_and_holds_the_last_value(count, expected):
    assert schedule_value(SCHEDULE, "interp", count) == pytest.approx(expected)


@pytest.mark.parametrize(
    "schedule, kind, error, match",
    [
        (
            SCHEDULE,
            "cosine",
            ValueError,
            r"`lr_schedule_kind` must be one of \['step', 'interp'\], got 'cosine'",
        ),
        ([(10, 1.0)], "step", ValueError, "must start at 0 env transitions"),
        (
            [(0, 1.0), (200, 0.5), (100, 0.1)],
            "step",
            ValueError,
            r"sorted by env transitions.*\[0, 200, 100\]",
        ),
        ([(0, 1.0), (0, 0.5)], "step", ValueError, "strictly increasing"),
        ([(0, -1.0)], "step", ValueError, "values must be >= 0"),
        ([(0.5, 1.0)], "step", TypeError, "pairs"),
        ([], "step", ValueError, "at least one"),
    ],
)
def test_bad_schedules_raise(schedule, kind, error, match):
    with pytest.raises(error, match=match):
        check_schedule("lr_schedule", schedule, kind)


import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from rlstack.core.schedules import by_optimizer_steps, device_schedule  # noqa: E402


@st.composite
def _schedules(draw):
    steps = sorted(set(draw(st.lists(st.integers(1, 10**6), max_size=4))))
    values = draw(st.lists(st.floats(0.0, 10.0), min_size=len(steps) + 1, max_size=len(steps) + 1))
    return list(zip([0, *steps], values, strict=True))


@settings(deadline=None, max_examples=60)
@given(
    _schedules(),
    st.sampled_from(["step", "interp"]),
    st.lists(st.integers(0, 2 * 10**6), min_size=1, max_size=8),
)
def test_the_device_schedule_equals_the_host_schedule_bit_for_bit(schedule, kind, counts):
    """What the shell logs (host) is what the compiled update uses (device)."""
    f = device_schedule(schedule, kind)
    got = f(torch.tensor(counts, dtype=torch.float32)).tolist()
    host = [
        torch.tensor(schedule_value(schedule, kind, c), dtype=torch.float32).item() for c in counts
    ]
    assert got == host


def test_the_device_schedule_compiles_without_graph_breaks_and_follows_a_changing_count():
    f = torch.compile(device_schedule(SCHEDULE, "interp"), fullgraph=True)
    assert [f(torch.tensor(float(c))).item() for c in (0, 50, 400)] == [1.0, 0.75, 0.0]


def test_optimizer_steps_map_to_the_env_transitions_of_their_update():
    """Update u (steps u*S ... u*S + S-1) trains after (u + 1) * N*T transitions."""
    f = by_optimizer_steps(
        lambda transitions: transitions, steps_per_update=4, transitions_per_update=100
    )
    assert f(torch.arange(10.0)).tolist() == [100.0] * 4 + [200.0] * 4 + [300.0] * 2
