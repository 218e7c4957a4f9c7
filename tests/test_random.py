"""rlstack.core.random: counter-based keys that give the same numbers eager, compiled and "
"vmapped.
"""

import pytest
import torch
import torch._dynamo
from hypothesis import given, settings
from hypothesis import strategies as st

from rlstack import Algorithm, Trainer, random
from rlstack.envs import CartPole, DiscreteDummyEnv

SMALL = dict(
    num_envs=32, horizon=8, sgd_minibatch_size=64, model_config={"hiddens": (16,)}, compile=False
)


@pytest.mark.parametrize(
    "key, counter, expected",
    [
        # Known-answer vectors of Threefry-2x32-20 (Random123's kat_vectors, also used by
        # jax.random's tests).
        ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
        ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
        ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
    ],
)
def test_threefry_matches_the_reference_vectors(key, counter, expected):
    y0, y1 = random.threefry2x32(
        torch.tensor(key), torch.tensor([counter[0]]), torch.tensor([counter[1]])
    )
    assert (y0.item(), y1.item()) == expected


def _draws(k):
    a, b, c, d, e = random.split(k, 5)
    return (
        random.uniform(a, (1000,)),
        random.normal(b, (1000,)),
        random.randint(c, (1000,), -3, 7),
        random.categorical(d, torch.zeros(1000, 5)),
        random.permutation(e, 257),
    )


def test_same_key_same_numbers_eager_compiled_and_vmapped():
    torch._dynamo.reset()
    k = random.key(2024)
    eager = _draws(k)
    explanation = torch._dynamo.explain(_draws)(k)
    assert explanation.graph_break_count == 0
    compiled = torch.compile(_draws, fullgraph=True)(k)
    keys = random.split(random.key(7), 3)
    batched = torch.func.vmap(_draws)(torch.stack([keys[0], k, keys[2]]))
    for e, c, b in zip(eager, compiled, batched, strict=True):
        torch.testing.assert_close(
            c, e, rtol=2e-6, atol=2e-6
        )  # exact but for log/cos rounding in `normal`
        assert torch.equal(
            b[1], e
        )  # a member's draws are exactly its key's, whatever the population
    for e, again in zip(eager, _draws(k), strict=True):
        assert torch.equal(e, again)
    for e, other in zip(eager[:4], _draws(random.key(2025))[:4], strict=True):
        assert not torch.equal(e, other)


def test_split_keys_do_not_collide_over_a_million_draws():
    keys = random.split(random.key(0), 1_000_000)
    assert keys.shape == (1_000_000, 2) and keys.min() >= 0 and keys.max() <= random.MASK
    assert torch.unique(keys[:, 0] * 2**32 + keys[:, 1]).numel() == 1_000_000
    folded = torch.stack([random.fold_in(random.key(0), i) for i in range(1000)])
    assert torch.unique(folded[:, 0] * 2**32 + folded[:, 1]).numel() == 1000


def test_uniform_and_normal_moments():
    u = random.uniform(random.key(1), (1_000_000,))
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 2e-3 and abs(u.var() - 1 / 12) < 1e-3
    z = random.normal(random.key(2), (1_000_000,))
    assert abs(z.mean()) < 5e-3 and abs(z.std() - 1) < 5e-3
    assert abs((z**3).mean()) < 2e-2 and abs((z**4).mean() - 3) < 5e-2  # skew 0, kurtosis 3
    d = random.uniform(random.key(3), (100_000,), dtype=torch.float64)
    assert d.dtype == torch.float64 and len(torch.unique(d)) == 100_000


def _chi_square(counts, expected):
    return float(((counts - expected) ** 2 / expected).sum())


def test_categorical_sampling_passes_a_chi_square_test():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    samples = random.categorical(random.key(5), probs.log().expand(200_000, 4))
    counts = torch.bincount(samples, minlength=4).double()
    assert _chi_square(counts, 200_000 * probs.double()) < 16.27  # chi2(3) at p = 0.001


def test_permutations_are_uniform_by_a_chi_square_test():
    keys = random.split(random.key(6), 48_000)
    perms = torch.func.vmap(lambda k: random.permutation(k, 4))(keys)
    assert torch.equal(
        perms.sort(-1).values, torch.arange(4).expand(48_000, 4)
    )  # each is a permutation
    codes = (perms * torch.tensor([64, 16, 4, 1])).sum(-1)
    counts = torch.bincount(codes, minlength=256).double()
    counts = counts[counts > 0]
    assert counts.numel() == 24
    assert (
        _chi_square(counts, torch.full((24,), 2000.0, dtype=torch.float64)) < 49.73
    )  # chi2(23), p = 0.001


@settings(deadline=None, max_examples=30)
@given(
    seed=st.integers(0, 2**64 - 1),
    low=st.integers(-1000, 1000),
    span=st.integers(1, 2**31),
    n=st.integers(1, 300),
)
def test_randint_and_uniform_stay_in_range(seed, low, span, n):
    k = random.key(seed)
    x = random.randint(k, (n,), low, low + span)
    assert x.dtype == torch.int64 and x.min() >= low and x.max() < low + span
    u = random.uniform(k, (n,), low=float(low), high=float(low + span))
    assert u.min() >= low and u.max() <= low + span


def test_bad_keys_are_named():
    with pytest.raises(ValueError, match=r"`seed` must be an int in \[0, 2\*\*64\), got -1"):
        random.key(-1)
    algo = Algorithm(DiscreteDummyEnv, **SMALL)
    rollout = algo.functions.rollout(False)
    carry = algo.fresh_carry(random.key(0), algo.env, None)
    with pytest.raises(
        ValueError,
        match=r"`carry.key` must be an int64 tensor of shape \[2\].*got torch.float32 \[2\]",
    ):
        rollout(algo.params, carry._replace(key=torch.zeros(2)))
    _, traj = rollout(algo.params, carry)
    with pytest.raises(
        ValueError, match=r"`key` must be an int64 tensor of shape \[2\].*got torch.int64 \[3\]"
    ):
        algo.functions.update(torch.zeros(3, dtype=torch.int64), algo.params, algo.opt_state, traj)
    with pytest.raises(
        ValueError, match=r"`key` must be a random key .* to sample actions, got None"
    ):
        algo.policy.step(
            None, algo.params, traj.obs[0], (), torch.zeros(traj.obs.shape[1], dtype=torch.bool)
        )


def _run(steps, **kw):
    algo = Algorithm(CartPole, seed=3, **{**SMALL, **kw})
    out = []
    for _ in range(steps):
        out.append(algo.collect()["returns/mean"])
        out.append(algo.step()["losses/total"])
    return algo, out


def test_an_algorithm_never_touches_the_global_generator_and_seeds_reproduce():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    _, a = _run(2)
    _, b = _run(2)
    assert a == b
    assert torch.equal(
        torch.get_rng_state(), state
    )  # construction, collect and step drew nothing from it


def test_seed_none_is_reproducible_after_torch_manual_seed():
    runs = []
    for _ in range(2):
        torch.manual_seed(42)
        algo = Algorithm(CartPole, **SMALL)
        runs.append((algo.seed, algo.collect()["returns/mean"], algo.step()["losses/total"]))
    assert runs[0] == runs[1]


def test_evaluation_and_predict_sampling_leave_training_unchanged():
    _, plain = _run(3)
    algo = Algorithm(CartPole, seed=3, **SMALL)
    with_eval = []
    for _ in range(3):
        with_eval.append(algo.collect()["returns/mean"])
        algo.evaluate(deterministic=False)
        algo.predict(torch.zeros(5, 4).numpy(), deterministic=False)
        with_eval.append(algo.step()["losses/total"])
        algo.evaluate()
    assert with_eval == plain


def test_training_with_and_without_steps_per_eval_is_identical():
    series = []
    for steps_per_eval in (None, 1):
        trainer = Trainer(CartPole, seed=5, **SMALL)
        seen = []
        trainer.run(
            callbacks=[lambda s, seen=seen: seen.append(s.get("losses/total"))],
            steps_per_eval=steps_per_eval,
            stop_conditions=[lambda s: s["algorithm/steps"] >= 3],
        )
        trainer.close()
        series.append([v for v in seen if v is not None])
    assert len(series[0]) == 3
    assert series[0] == series[1]
