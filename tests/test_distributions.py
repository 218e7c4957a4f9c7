import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlstack import random
from rlstack.policy.distributions import Categorical, Normal, SquashedNormal


@settings(deadline=None, max_examples=25)
@given(
    batch=st.integers(1, 6), n=st.integers(2, 5), k=st.integers(1, 3), seed=st.integers(0, 2**16)
)
def test_categorical_log_prob_and_entropy_match_torch(batch, n, k, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, k, n, generator=g) * 3
    action = torch.randint(0, n, (batch, k), generator=g)
    ref = torch.distributions.Independent(torch.distributions.Categorical(logits=logits), 1)
    torch.testing.assert_close(Categorical.log_prob(logits, action), ref.log_prob(action))
    torch.testing.assert_close(Categorical.entropy(logits), ref.entropy())
    torch.testing.assert_close(Categorical.mode(logits), logits.argmax(-1))


def test_categorical_sample_frequencies_match_probabilities():
    logits = torch.log(torch.tensor([0.1, 0.2, 0.7])).expand(200_000, 3)
    counts = (
        torch.bincount(Categorical.sample(random.key(0), logits), minlength=3).float() / 200_000
    )
    torch.testing.assert_close(counts, torch.tensor([0.1, 0.2, 0.7]), atol=5e-3, rtol=0)


@settings(deadline=None, max_examples=25)
@given(batch=st.integers(1, 6), d=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_normal_log_prob_and_entropy_match_torch(batch, d, seed):
    g = torch.Generator().manual_seed(seed)
    mean, log_std = (
        torch.randn(batch, d, generator=g),
        torch.randn(batch, d, generator=g).clamp(-2, 2),
    )
    action = torch.randn(batch, d, generator=g) * 2
    ref = torch.distributions.Independent(torch.distributions.Normal(mean, log_std.exp()), 1)
    torch.testing.assert_close(Normal.log_prob((mean, log_std), action), ref.log_prob(action))
    torch.testing.assert_close(Normal.entropy((mean, log_std)), ref.entropy())


@settings(deadline=None, max_examples=25)
@given(batch=st.integers(1, 6), d=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_squashed_normal_log_prob_matches_torch_tanh_transform(batch, d, seed):
    g = torch.Generator().manual_seed(seed)
    mean, log_std = (
        torch.randn(batch, d, generator=g),
        torch.randn(batch, d, generator=g).clamp(-1, 1),
    )
    base = torch.distributions.Normal(mean.double(), log_std.double().exp())
    ref = torch.distributions.Independent(
        torch.distributions.TransformedDistribution(base, [torch.distributions.TanhTransform()]), 1
    )
    action = torch.tanh(torch.randn(batch, d, generator=g, dtype=torch.float64) * 1.5)
    ours = SquashedNormal.log_prob((mean.double(), log_std.double()), action)
    torch.testing.assert_close(ours, ref.log_prob(action), rtol=1e-6, atol=1e-6)


def test_squashed_normal_entropy_matches_monte_carlo():
    mean = torch.tensor([[0.0, 1.5, -3.0]], dtype=torch.float64)
    log_std = torch.tensor([[0.0, -1.0, 0.5]], dtype=torch.float64)
    samples = SquashedNormal.sample(
        random.key(1), (mean.expand(400_000, 3), log_std.expand(400_000, 3))
    )
    mc = -SquashedNormal.log_prob(
        (mean.expand(400_000, 3), log_std.expand(400_000, 3)), samples
    ).mean()
    torch.testing.assert_close(
        SquashedNormal.entropy((mean, log_std)), mc.reshape(1), atol=2e-2, rtol=0
    )
    # The tanh correction makes it strictly smaller than the Gaussian's entropy.
    assert SquashedNormal.entropy((mean, log_std)) < Normal.entropy((mean, log_std))


def test_squashed_normal_samples_and_mode_are_in_open_interval():
    inputs = (torch.randn(1000, 2) * 5, torch.zeros(1000, 2))
    x = SquashedNormal.sample(random.key(0), inputs)
    assert x.abs().max() <= 1.0
    torch.testing.assert_close(SquashedNormal.mode(inputs), torch.tanh(inputs[0]))
    assert torch.isfinite(SquashedNormal.log_prob(inputs, torch.ones(1000, 2))).all()


def test_normal_sample_moments():
    inputs = (torch.full((200_000, 1), 2.0), torch.full((200_000, 1), math.log(0.5)))
    x = Normal.sample(random.key(0), inputs)
    assert abs(x.mean().item() - 2.0) < 0.01 and abs(x.std().item() - 0.5) < 0.01
