import pytest
import torch

from rlstack.core.spaces import Box, Discrete, describe_mismatch, is_space, sample


def test_discrete_sample_shape_dtype_and_range():
    space = Discrete(3, shape=(2,))
    x = space.sample((5,))
    assert x.shape == (5, 2) and x.dtype == torch.int64
    assert space.contains(x)
    assert not space.contains(x + 3)


def test_box_bounded_sample_within_bounds():
    space = Box((4,), low=-2.0, high=3.0)
    x = space.sample((1000,))
    assert x.shape == (1000, 4) and x.dtype == torch.float32
    assert space.contains(x) and x.min() >= -2 and x.max() <= 3


def test_dict_space_sample_and_mismatch_messages():
    space = {"pos": Box((2,)), "mode": Discrete(4)}
    assert is_space(space)
    x = sample(space, (3,))
    assert describe_mismatch(space, x, (3,)) is None
    x["pos"] = torch.zeros(3, 5)
    assert "['pos']: expected shape [3, 2], got [3, 5]" in describe_mismatch(space, x, (3,))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Discrete(0), "`n` must be a positive int"),
        (lambda: Box((0,)), "`shape` must be a tuple of positive ints"),
        (lambda: Box((1,), low=1.0, high=0.0), "low"),
        (lambda: Box((1,), dtype=torch.int64), "floating dtype"),
    ],
)
def test_bad_space_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()
