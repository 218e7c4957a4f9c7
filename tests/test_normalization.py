import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlstack import Algorithm, optim, random
from rlstack.core.config import AlgorithmConfig
from rlstack.core.normalization import (
    RunningMoments,
    init_moments,
    init_norm_state,
    normalize,
    update_moments,
)
from rlstack.core.optim import adam
from rlstack.envs import CartPole, DiscreteDummyEnv
from rlstack.functional import RolloutCarry, make_rollout, make_update
from rlstack.policy.distributions import Categorical
from rlstack.policy.models import MLPModel
from rlstack.policy.policy import Policy


@settings(deadline=None, max_examples=25)
@given(sizes=st.lists(st.integers(1, 20), min_size=1, max_size=6), seed=st.integers(0, 2**16))
def test_running_moments_equal_moments_of_the_whole_stream(sizes, seed):
    g = torch.Generator().manual_seed(seed)
    batches = [torch.randn(n, 3, generator=g, dtype=torch.float64) * 5 + 2 for n in sizes]
    # A negligible prior count isolates the merge arithmetic (rlstack starts at 1e-4, as SB3).
    moments = RunningMoments(
        torch.zeros(3, dtype=torch.float64),
        torch.ones(3, dtype=torch.float64),
        torch.tensor(1e-12, dtype=torch.float64),
    )
    for batch in batches:
        moments = update_moments(moments, batch)
    data = torch.cat(batches).numpy()
    np.testing.assert_allclose(moments.mean.numpy(), data.mean(0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(moments.var.numpy(), data.var(0), rtol=1e-9, atol=1e-9)
    assert moments.count.item() == pytest.approx(len(data))
    assert init_moments((3,)).count.item() == pytest.approx(1e-4)


def _policy(env):
    torch.manual_seed(0)
    return Policy(MLPModel(env.observation_space, env.action_space, hiddens=(16,)), Categorical)


def test_rollout_normalizes_observations_and_rewards_with_running_statistics():
    env = CartPole()
    policy = _policy(env)
    N, T = 64, 10
    rollout = make_rollout(env, policy, T, normalize_obs=True, normalize_rewards=True, gamma=0.9)
    state, obs = env.reset(random.key(0), N)
    norm = init_norm_state((4,), N, normalize_obs=True, normalize_rewards=True)
    carry, traj = rollout(policy.init_params(), RolloutCarry(state, obs, random.key(1), norm))
    # The obs statistics saw every observation the policy acted on.
    raw_obs = [obs]
    s = state
    for t in range(T - 1):
        s, o, _, _, _ = env.step(random.key(2), s, traj.actions[t])
        raw_obs.append(o)
    raw = torch.cat(raw_obs)
    torch.testing.assert_close(carry.norm.obs.mean, raw.mean(0), rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(traj.obs[-1], normalize(carry.norm.obs, raw_obs[-1]))
    # Rewards: raw kept, learned ones divided by the std of the discounted return.
    assert torch.equal(traj.raw_rewards.abs(), torch.ones(T, N))
    returns = torch.zeros(N)
    for t in range(T):
        returns = 0.9 * returns + traj.raw_rewards[t]
    torch.testing.assert_close(carry.norm.returns, returns)
    torch.testing.assert_close(
        traj.rewards[-1], traj.raw_rewards[-1] / torch.sqrt(carry.norm.reward.var + 1e-8)
    )


def test_algorithm_freezes_statistics_at_eval_and_checkpoints_them(tmp_path):
    algo = Algorithm(
        CartPole,
        num_envs=32,
        horizon=8,
        model_config={"hiddens": (16,)},
        compile=False,
        normalize_obs=True,
        normalize_rewards=True,
        seed=0,
    )
    algo.collect()
    algo.step()
    norm = algo.carry.norm
    algo.evaluate()
    assert (
        torch.equal(algo.carry.norm.obs.mean, norm.obs.mean)
        and algo.carry.norm.obs.count == norm.obs.count
    )
    # predict() applies the frozen observation statistics.
    obs = torch.randn(5, 4)
    expected = algo.policy.distribution_cls.mode(
        algo.policy.apply(algo.params, normalize(norm.obs, obs))[0]
    )
    assert torch.equal(algo.predict(obs), expected)
    path = algo.save_checkpoint(tmp_path / "c.pt")
    restored = Algorithm.from_checkpoint(path)
    torch.testing.assert_close(restored.carry.norm.obs.var, norm.obs.var)
    torch.testing.assert_close(restored.carry.norm.reward.var, norm.reward.var)
    assert restored.collect()["returns/mean"] == algo.collect()["returns/mean"]


def test_target_kl_stops_the_update_once_kl_exceeds_it():
    env = DiscreteDummyEnv()
    policy = _policy(env)
    params = policy.init_params()
    _, traj = make_rollout(env, policy, 8)(
        params, RolloutCarry(*env.reset(random.key(0), 32), random.key(1))
    )
    hparams = {"num_envs": 32, "horizon": 8, "sgd_minibatch_size": 32}
    opt = adam(1e-2)
    torch.manual_seed(0)
    _, state, metrics = make_update(
        policy, opt, AlgorithmConfig(**{**hparams, "target_kl": 1e-12})
    )(random.key(3), params, opt.init(params), traj)
    # The first minibatch has KL 0 (nothing changed yet) and is applied; the next exceeds 1e-12.
    assert metrics["monitors/sgd_steps"].item() == 1 and optim.step_count(state).item() == 1
    torch.manual_seed(0)
    _, state, metrics = make_update(policy, opt, AlgorithmConfig(**{**hparams, "target_kl": 10.0}))(
        random.key(3), params, opt.init(params), traj
    )
    assert metrics["monitors/sgd_steps"].item() == 32 and optim.step_count(state).item() == 32


def test_bad_normalization_settings_raise():
    with pytest.raises(ValueError, match=r"`target_kl` must be > 0 \(or None\), got 0.0"):
        Algorithm(DiscreteDummyEnv, target_kl=0.0)
    with pytest.raises(TypeError, match="`normalize_obs` must be a bool"):
        Algorithm(DiscreteDummyEnv, normalize_obs=1)
