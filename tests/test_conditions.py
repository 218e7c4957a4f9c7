import pytest

from rlstack.shell.conditions import (
    And,
    HitsLowerBound,
    HitsUpperBound,
    Plateaus,
    StopsDecreasing,
    StopsIncreasing,
)


def _feed(condition, values, key="x"):
    return [condition({key: v}) for v in values]


def test_bounds():
    assert _feed(HitsLowerBound("x", 1.0), [3, 2, 1, 0]) == [False, False, True, True]
    assert _feed(HitsUpperBound("x", 1.0), [-1, 0, 1, 2]) == [False, False, True, True]


def test_plateaus_after_patience_calls_within_rtol():
    values = [10.0, 5.0, 5.01, 5.02, 5.0, 7.0]
    assert _feed(Plateaus("x", patience=3, rtol=0.01), values) == [
        False,
        False,
        False,
        False,
        True,
        False,
    ]


def test_stops_decreasing_and_increasing():
    assert _feed(StopsDecreasing("x", patience=2), [5, 4, 4, 4.5, 3]) == [
        False,
        False,
        False,
        True,
        False,
    ]
    assert _feed(StopsIncreasing("x", patience=2), [1, 2, 2, 1.5, 3]) == [
        False,
        False,
        False,
        True,
        False,
    ]


def test_and_requires_all():
    cond = And([HitsUpperBound("a", 1.0), HitsLowerBound("b", 0.0)])
    assert not cond({"a": 2.0, "b": 1.0}) and cond({"a": 2.0, "b": -1.0})


def test_missing_key_and_bad_patience_raise():
    with pytest.raises(KeyError, match="'returns/mean' is not among the train stats"):
        HitsUpperBound("returns/mean", 0.0)({"x": 1.0})
    with pytest.raises(ValueError, match="`patience` must be a positive int, got 0"):
        Plateaus("x", patience=0)
