import math

import pytest
import torch

from rlstack import Algorithm, random
from rlstack.core.spaces import Box, Discrete
from rlstack.env import (
    ContinuousDummyEnv,
    DiscreteDummyEnv,
    Env,
    StatefulEnvAdapter,
    check_env,
    make_env,
)
from rlstack.envs import ContinuousDummyEnv as ContinuousFromEnvs
from rlstack.envs import DiscreteDummyEnv as DiscreteFromEnvs


def test_dummy_envs_importable_from_both_modules():
    assert DiscreteDummyEnv is DiscreteFromEnvs and ContinuousDummyEnv is ContinuousFromEnvs


def test_discrete_dummy_env_moves_one_unit_and_rewards_minus_distance():
    env = DiscreteDummyEnv()
    state = torch.tensor([[3.0], [-0.5]])
    state2, obs, reward, terminated, truncated = env.step(
        random.key(2), state, torch.tensor([[0], [1]])
    )
    assert (
        not terminated.any() and not truncated.any() and terminated.dtype == torch.bool
    )  # its episodes never end
    torch.testing.assert_close(state2, torch.tensor([[2.0], [0.5]]))
    torch.testing.assert_close(obs, state2)
    torch.testing.assert_close(reward, torch.tensor([-2.0, -0.5]))


def test_continuous_dummy_env_adds_action():
    env = ContinuousDummyEnv()
    state, obs, reward, _, _ = env.step(
        random.key(2), torch.tensor([[1.5]]), torch.tensor([[-2.0]])
    )
    torch.testing.assert_close(state, torch.tensor([[-0.5]]))
    torch.testing.assert_close(reward, torch.tensor([0.5]).neg())


def test_reset_respects_bounds_config_and_rejects_unknown_keys():
    env = DiscreteDummyEnv()
    _, obs = env.reset(random.key(0), 10_000, config={"bounds": 2.0})
    assert obs.shape == (10_000, 1) and obs.abs().max() <= 2.0 and obs.abs().max() > 1.9
    with pytest.raises(ValueError, match=r"unknown keys \['bound'\]"):
        env.reset(random.key(0), 4, config={"bound": 2.0})
    with pytest.raises(ValueError, match=r"config\['bounds'\]"):
        env.reset(random.key(0), 4, config={"bounds": -1.0})


@pytest.mark.parametrize("env", [DiscreteDummyEnv(), ContinuousDummyEnv()])
def test_builtin_envs_pass_check_env_including_compile(env):
    check_env(env, num_envs=8, check_compile=True)


class _WrongRewardShape(DiscreteDummyEnv):
    def step(self, key, state, action):
        state, obs, reward, terminated, truncated = super().step(key, state, action)
        return state, obs, reward.unsqueeze(-1), terminated, truncated


class _WrongObsDtype(DiscreteDummyEnv):
    def step(self, key, state, action):
        state, obs, reward, terminated, truncated = super().step(key, state, action)
        return state, obs.double(), reward, terminated, truncated


class _Impure(DiscreteDummyEnv):
    def step(self, key, state, action):
        state += 1
        return self.no_episode_ends(state, state.clone(), -state.abs().squeeze(-1))


@pytest.mark.parametrize(
    "env_cls, error, match",
    [
        (
            _WrongRewardShape,
            ValueError,
            r"reward must have shape \[16\] \(\[num_envs\]\), got \[16, 1\]",
        ),
        (_WrongObsDtype, ValueError, "expected dtype torch.float32, got torch.float64"),
        (_Impure, ValueError, "mutated its inputs"),
    ],
)
def test_bad_env_is_rejected_when_algorithm_is_built(env_cls, error, match):
    with pytest.raises(error, match=match):
        Algorithm(env_cls, num_envs=16, horizon=4, compile=False)


# A stand-in for an rlstack 1.x env: stateful, torchrl-like specs read by duck typing.
class _Spec:
    def __init__(self, shape, dtype, n=None):
        self.shape, self.dtype = torch.Size(shape), dtype
        if n is not None:
            self.n = n


class LegacyDiscreteDummyEnv:
    def __init__(self, num_envs, /, horizon=None, *, config=None, device="cpu"):
        self.num_envs, self.config, self.device = num_envs, config or {}, device
        self.observation_spec = _Spec([1], torch.float32)
        self.action_spec = _Spec([1], torch.int64, n=2)

    def reset(self, *, config=None):
        self.state = torch.empty(self.num_envs, 1).uniform_(-10, 10)
        return self.state

    def step(self, action):
        self.state += 2 * action - 1  # in place, as 1.x's dummy env did
        return {"obs": self.state, "rewards": -self.state.abs()}


def test_legacy_stateful_env_is_adapted_and_trains():
    env = make_env(LegacyDiscreteDummyEnv, num_envs=8, horizon=4)
    assert isinstance(env, StatefulEnvAdapter) and not env.compilable
    assert env.observation_space == Box((1,)) and env.action_space == Discrete(2, shape=(1,))
    algo = Algorithm(LegacyDiscreteDummyEnv, num_envs=8, horizon=4, model_config={"hiddens": (8,)})
    algo.collect()
    traj = algo.trajectory
    # Observations were cloned, so in-place env updates did not rewrite the trajectory.
    moves = (traj.obs[1:] - traj.obs[:-1]).abs()
    torch.testing.assert_close(moves, torch.ones_like(moves))
    assert "losses/total" in algo.step()


def test_pure_env_instance_is_used_as_is():
    env = DiscreteDummyEnv()
    assert make_env(env, num_envs=4) is env
    assert isinstance(make_env(DiscreteDummyEnv, num_envs=4), Env)
    with pytest.raises(TypeError, match="`env` must be a pure env"):
        make_env(42, num_envs=4)


class _DictObsDummyEnv(DiscreteDummyEnv):
    """DiscreteDummyEnv observed as a dict of two Boxes: the position and its sign."""

    observation_space = {"position": Box((1,)), "side": Box((2,), low=-1.0, high=1.0)}

    @staticmethod
    def _observe(x):
        return {"position": x, "side": torch.cat([x.sign(), -x.sign()], -1)}

    def reset(self, key, num_envs, *, config=None):
        state, x = super().reset(key, num_envs, config=config)
        return state, self._observe(x)

    def step(self, key, state, action):
        state, x, reward, terminated, truncated = super().step(key, state, action)
        return state, self._observe(x), reward, terminated, truncated


def test_the_default_model_trains_on_a_dict_of_boxes_each_flattened_and_concatenated():
    from rlstack import Algorithm
    from rlstack.policy.models import MLPModel

    env = _DictObsDummyEnv()
    model = MLPModel(env.observation_space, env.action_space, hiddens=(8,))
    assert model.actor[0].in_features == 1 + 2 and model.obs_keys == ["position", "side"]
    obs = {"position": torch.tensor([[3.0]]), "side": torch.tensor([[1.0, -1.0]])}
    flat = torch.tensor([[3.0, 1.0, -1.0]])
    logits, value = model(obs)
    torch.testing.assert_close(logits.reshape(1, -1), model.actor_head(model.actor(flat)))
    torch.testing.assert_close(value, model.critic_head(model.critic(flat)).squeeze(-1))
    algo = Algorithm(
        _DictObsDummyEnv, num_envs=16, horizon=8, compile=False, model_config={"hiddens": (8,)}
    )
    algo.collect()
    assert math.isfinite(algo.step()["losses/total"])
    with pytest.raises(TypeError, match="MLPModel needs a Box observation space or a dict of them"):
        MLPModel({"position": Box((1,)), "button": Discrete(2)}, env.action_space)


def test_a_dict_observation_is_normalised_group_by_group_and_mapped_to_actor_and_critic():
    """rsl_rl's observation groups on rlstack's own envs: each key has its own
    running statistics, updated and applied exactly as a Box observation's
    alone, and ``obs_groups`` decides what the actor and the critic read,
    in a population too.
    """
    from rlstack import Algorithm
    from rlstack.core.normalization import NormState, init_norm_state, observe

    g = torch.Generator().manual_seed(0)
    norm = init_norm_state(
        {"position": (1,), "side": (2,)}, 16, normalize_obs=True, normalize_rewards=False
    )
    alone = {
        k: init_norm_state(shape, 16, normalize_obs=True, normalize_rewards=False)
        for k, shape in (("position", (1,)), ("side", (2,)))
    }
    for _ in range(3):
        obs = {
            "position": torch.randn(16, 1, generator=g) * 4 + 1,
            "side": torch.randn(16, 2, generator=g) - 3,
        }
        norm, seen = observe(norm, obs, normalize_obs=True, update=True)
        for k in obs:
            alone[k], seen_alone = observe(alone[k], obs[k], normalize_obs=True, update=True)
            torch.testing.assert_close(seen[k], seen_alone)
            torch.testing.assert_close(norm.obs[k].var, alone[k].obs.var)
    assert isinstance(norm, NormState)

    groups = {"actor": ["position"], "critic": ["position", "side"]}
    algo = Algorithm(
        _DictObsDummyEnv,
        num_envs=16,
        horizon=8,
        compile=False,
        normalize_obs=True,
        num_members=2,
        model_config={"hiddens": (8,), "obs_groups": groups},
    )
    assert (
        algo.policy.model.actor[0].in_features == 1 and algo.policy.model.critic[0].in_features == 3
    )
    algo.collect()
    moments = algo.obs_moments
    assert set(moments) == {"position", "side"} and moments["side"].mean.shape == (
        2,
        2,
    )  # [members, 2]
    assert all(math.isfinite(s["losses/total"]) for s in algo.step())
