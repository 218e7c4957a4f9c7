"""Episodes that end: terminated/truncated flags, auto-reset, GAE across episode ends, episode "
"stats.
"""

from typing import NamedTuple

import optree
import pytest
import torch
import torch._dynamo

from rlstack import Algorithm, random
from rlstack.core.spaces import Box, Discrete
from rlstack.env import Env, check_env
from rlstack.functional import RolloutCarry, gae, make_rollout
from rlstack.learn.loss import prepare_batch
from rlstack.learn.transforms import compiled
from rlstack.policy.distributions import Categorical
from rlstack.policy.memory import NoMemory
from rlstack.policy.models import MLPModel
from rlstack.policy.policy import Policy

GOAL, LIMIT = 4.0, 12


class CorridorState(NamedTuple):
    x: torch.Tensor  # [N] float position
    t: torch.Tensor  # [N] int64 steps into the episode
    final_obs: torch.Tensor  # [N, 1] the last step's observation before any auto-reset


class Corridor(Env):
    """Walk left (0) or right (1) from a random start in [-2, 2]; reaching x = 4 terminates
    (reward +1), 12 steps truncate; -0.1 per step otherwise. Auto-resets ended episodes.
    """

    observation_space = Box((1,))
    action_space = Discrete(2)
    episodic = True

    def reset(self, key, num_envs, *, config=None):
        x = random.randint(key, (num_envs,), -2, 3).float()
        return CorridorState(
            x, torch.zeros(num_envs, dtype=torch.int64, device=key.device), x[:, None]
        ), x[:, None]

    def step(self, key, state, action):
        x = state.x + (2 * action - 1).float()
        t = state.t + 1
        terminated = x >= GOAL
        truncated = (t >= LIMIT) & ~terminated
        reward = torch.where(terminated, 1.0, -0.1)
        done = terminated | truncated
        fresh, fresh_obs = self.reset(key, x.shape[0])
        new = CorridorState(
            torch.where(done, fresh.x, x), torch.where(done, fresh.t, t), x[:, None]
        )
        return new, new.x[:, None], reward, terminated, truncated

    def final_observation(self, state):
        return state.final_obs


class _NoFlags(Corridor):
    def step(self, key, state, action):
        return super().step(key, state, action)[:3]


class _IntFlags(Corridor):
    def step(self, key, state, action):
        state, obs, reward, terminated, truncated = super().step(key, state, action)
        return state, obs, reward, terminated.long(), truncated


def test_auto_reset_returns_the_reset_observation_and_keeps_the_true_final_one():
    env = Corridor()
    state, obs = env.reset(random.key(0), 6)
    right = torch.ones(6, dtype=torch.int64)
    for t in range(7):
        before = state.x.clone()
        state, obs, reward, terminated, truncated = env.step(random.key(t + 1), state, right)
        ended = before + 1 >= GOAL
        assert torch.equal(terminated, ended) and not truncated.any()
        # The final observation is the true last one; the returned one a fresh start in [-2, 2].
        assert torch.equal(env.final_observation(state)[:, 0], before + 1)
        assert torch.equal(obs[ended, 0], state.x[ended]) and (obs[ended].abs() <= 2).all()
        assert torch.equal(obs[~ended, 0], before[~ended] + 1)
        assert torch.equal(reward[ended], torch.ones(int(ended.sum())))


def test_check_env_names_an_episodic_env_without_flags_or_with_wrong_ones():
    check_env(Corridor(), num_envs=5, check_compile=True)
    with pytest.raises(
        TypeError,
        match=r"_NoFlags.step must return \(state, obs, reward, terminated, truncated\) "
        r"\(an env whose episodes never end returns `self.no_episode_ends\(state, obs, "
        r"reward\)`\), got a tuple of 3",
    ):
        check_env(_NoFlags(), num_envs=5)
    with pytest.raises(
        TypeError,
        match=r"must return `terminated` as a bool tensor of shape \[5\], got torch.int64 \[5\]",
    ):
        check_env(_IntFlags(), num_envs=5)
    with pytest.raises(TypeError, match="tuple of 3"):
        Algorithm(_NoFlags, num_envs=8, horizon=4, compile=False)


def _rollout(compile=False, horizon=30, num_envs=16):
    env = Corridor()
    torch.manual_seed(0)
    policy = Policy(MLPModel(env.observation_space, env.action_space, hiddens=(16,)), Categorical)
    params = policy.init_params()
    reset_key, key = random.split(random.key(1))
    rollout = make_rollout(env, policy, horizon)
    rollout = compiled(rollout) if compile else rollout
    return rollout(params, RolloutCarry(*env.reset(reset_key, num_envs), key)), policy, params


def test_an_episodic_rollout_records_flags_final_values_and_completed_episodes():
    (carry, traj), policy, params = _rollout()
    T, N = traj.rewards.shape
    done = traj.terminated | traj.truncated
    assert traj.terminated.dtype == torch.bool and traj.truncated.shape == (T, N) and done.any()
    assert not (traj.terminated & traj.truncated).any()
    # Episode returns/lengths: recomputed from the rewards, episode by episode.
    for n in range(N):
        total, length = 0.0, 0
        for t in range(T):
            total, length = total + float(traj.rewards[t, n]), length + 1
            if done[t, n]:
                assert abs(float(traj.episode_returns[t, n]) - total) < 1e-5
                assert int(traj.episode_lengths[t, n]) == length
                total, length = 0.0, 0
            else:
                assert traj.episode_returns[t, n] == 0 and traj.episode_lengths[t, n] == 0
        assert (
            abs(float(carry.episode.returns[n]) - total) < 1e-5
            and int(carry.episode.lengths[n]) == length
        )
    # A truncated episode (12 steps of -0.1) and the returned stats.
    assert torch.allclose(traj.episode_returns[traj.truncated], torch.tensor(-1.2))
    # GAE in the update uses the flags and the final observations' values.
    batch = prepare_batch(
        traj, gamma=0.9, gae_lambda=0.8, normalize_advantages=False, memory=NoMemory()
    )
    adv, _ = gae(
        traj.rewards,
        traj.values,
        gamma=0.9,
        gae_lambda=0.8,
        terminated=traj.terminated,
        truncated=traj.truncated,
        final_values=traj.final_values,
    )
    torch.testing.assert_close(batch.advantages, adv.reshape(-1))
    with torch.no_grad():
        truncated_final = traj.final_values[traj.truncated]
    assert truncated_final.numel() > 0 and torch.isfinite(truncated_final).all()


def test_compiled_episodic_rollout_equals_eager_without_graph_breaks():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    (_, eager), _, _ = _rollout(compile=False, horizon=6)
    (_, compiled), _, _ = _rollout(compile=True, horizon=6)
    for a, b in zip(optree.tree_leaves(eager), optree.tree_leaves(compiled), strict=True):
        torch.testing.assert_close(a, b)
    assert sum(torch._dynamo.utils.counters["graph_break"].values()) == 0
    torch._dynamo.reset()


def test_episode_stats_reach_the_shell_and_ppo_learns_to_walk_to_the_goal():
    algo = Algorithm(
        Corridor,
        num_envs=64,
        horizon=16,
        horizons_per_env_reset=-1,
        gamma=0.9,
        sgd_minibatch_size=256,
        compile=False,
        seed=0,
        model_config={"hiddens": (32,)},
        optimizer_config={"lr": 3e-3},
    )
    first = algo.collect()
    algo.step()
    assert first["episodes/count"] > 0 and 1 <= first["episodes/length/mean"] <= LIMIT
    for _ in range(25):
        stats = algo.collect()
        algo.step()
    # Walking right from [-2, 2] reaches x = 4 in 2 to 6 steps: return 1 - 0.1 * (steps - 1) >= 0.5.
    assert stats["episodes/terminated"] > 0.95 and stats["episodes/return/mean"] > 0.5, stats
    assert first["episodes/return/mean"] < 0.2
