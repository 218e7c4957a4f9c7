"""EnvPool's gymnasium env pools through rlstack.integrations.envpool_adapter: next-step
autoreset turned into the one env protocol, checked on hand-made episodes of a stand-in
with EnvPool's API (and on EnvPool itself where it is installed).
"""

import itertools

import gymnasium
import numpy as np
import pytest
import torch

from rlstack import Algorithm, random
from rlstack.envs import check_env
from rlstack.integrations.envpool_adapter import EnvPoolEnv


class StandInPool:
    """EnvPool's gymnasium API with its next-step autoreset: env ``i``'s
    episodes last ``lengths[i]`` steps (terminated), or stop at
    ``max_episode_steps`` (truncated); the step after an episode's end
    ignores the action, returns the next episode's first observation and
    reward 0. Observation ``[i, episode, t]``; reward ``1 + t`` otherwise.
    """

    def __init__(self, lengths, max_episode_steps=1000):
        self.num_envs = len(lengths)
        self.lengths = np.asarray(lengths)
        self.config = {
            "num_envs": self.num_envs,
            "batch_size": self.num_envs,
            "max_episode_steps": max_episode_steps,
        }
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (3,), np.float64)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.calls = []  # (env ids, actions) of every step call

    def _obs(self, ids):
        return np.stack([[i, self.episode[i], self.t[i]] for i in ids]).astype(np.float64)

    def reset(self, seed=None):
        self.t = np.zeros(self.num_envs, dtype=int)
        self.episode = np.zeros(self.num_envs, dtype=int)
        self.pending = np.zeros(self.num_envs, dtype=bool)
        return self._obs(range(self.num_envs)), {"env_id": np.arange(self.num_envs)}

    def step(self, action, env_id=None):
        ids = np.arange(self.num_envs) if env_id is None else np.asarray(env_id)
        self.calls.append((ids.copy(), np.array(action, copy=True)))
        reward, terminated, truncated = (
            np.zeros(len(ids)),
            np.zeros(len(ids), bool),
            np.zeros(len(ids), bool),
        )
        for k, i in enumerate(ids):
            if self.pending[i]:  # the reset step
                self.pending[i], self.t[i] = False, 0
                self.episode[i] += 1
                continue
            self.t[i] += 1
            reward[k] = 1 + self.t[i]
            terminated[k] = self.t[i] >= self.lengths[i]
            truncated[k] = not terminated[k] and self.t[i] >= self.config["max_episode_steps"]
            self.pending[i] = terminated[k] or truncated[k]
        return self._obs(ids), reward, terminated, truncated, {"env_id": ids}


def test_next_step_autoreset_becomes_same_step_and_reset_steps_never_reach_training():
    pool = StandInPool([2, 3, 5], max_episode_steps=4)
    env = EnvPoolEnv(pool)
    check_env(env, num_envs=3)
    state, obs = env.reset(random.key(0), 3)
    pool.calls.clear()
    for _ in range(12):
        episodes = pool.episode.copy()
        state, obs, reward, terminated, truncated = env.step(
            random.key(1), state, torch.full((3, 1), 0.5)
        )
        done = terminated | truncated
        assert (reward > 0).all()  # no reset step's reward 0
        for i in np.flatnonzero(done.numpy()):
            length = min(pool.lengths[i], 4)
            assert env.final_observation(state)[i].tolist() == [
                i,
                episodes[i],
                length,
            ]  # the true last observation
            assert obs[i].tolist() == [i, episodes[i] + 1, 0]  # the next episode's first
            assert bool(truncated[i]) == (pool.lengths[i] > 4)
        for i in np.flatnonzero(~done.numpy()):
            assert obs[i].tolist() == env.final_observation(state)[i].tolist()
    # Every reset step was taken at once, for the envs that ended only, with an idle action.
    for (ids, _), (next_ids, next_action) in itertools.pairwise(pool.calls):
        if len(next_ids) < 3:
            assert len(ids) == 3 and not next_action.any()


def test_a_trainer_on_an_env_pool_counts_true_episodes():
    pool = StandInPool([2, 3, 5, 4])
    algo = Algorithm(
        EnvPoolEnv(pool), num_envs=4, horizon=20, compile=False, model_config={"hiddens": (8,)}
    )
    assert algo.config.horizons_per_env_reset == -1  # episodic: never reset on a schedule
    stats = algo.collect()
    # 20 steps: 10 + 6 + 4 + 5 episodes, each of return sum(2 .. length + 1)
    assert stats["episodes/count"] == 25
    returns = {2: 5, 3: 9, 4: 14, 5: 20}
    assert stats["episodes/return/mean"] == pytest.approx(
        (10 * returns[2] + 6 * returns[3] + 4 * returns[5] + 5 * returns[4]) / 25
    )
    assert (algo.trajectory.raw_rewards > 0).all()
    algo.step()


def test_an_asynchronous_pool_and_a_reset_config_are_refused():
    pool = StandInPool([2, 2])
    pool.config["batch_size"] = 1
    with pytest.raises(
        ValueError,
        match=r"`pool` must step all its envs at once \(batch_size = num_envs = 2\), got "
        "batch_size 1",
    ):
        EnvPoolEnv(pool)
    env = EnvPoolEnv(StandInPool([2, 2]), config={"frame_skip": 2})
    with pytest.raises(ValueError, match="EnvPool takes its options at creation"):
        env.reset(random.key(0), 2, config={"frame_skip": 4})


def test_envpool_itself_when_installed():
    pytest.importorskip("envpool")
    from rlstack.cli import load_env

    algo = Algorithm(
        load_env("envpool:CartPole-v1"),
        num_envs=4,
        horizon=64,
        compile=False,
        model_config={"hiddens": (8,)},
    )
    stats = algo.collect()
    assert stats["episodes/count"] > 0 and torch.equal(
        algo.trajectory.raw_rewards, torch.ones(64, 4)
    )
    algo.step()


def test_without_envpool_the_factory_names_the_extra(monkeypatch):
    import sys

    from rlstack.integrations.envpool_adapter import envpool_env

    monkeypatch.setitem(sys.modules, "envpool", None)  # `import envpool` fails
    with pytest.raises(
        ImportError, match=r"envpool is not installed: pip install 'rlstack\[envpool\]'"
    ):
        envpool_env("HalfCheetah-v5")


class SeededStandIn(StandInPool):
    """A pool as ``envpool.make`` returns it: its seed is fixed at creation
    (env ``i`` gets ``seed + i``; EnvPool's default is 42), ``reset(seed=)``
    is ignored, and the first observation comes from the seed.
    """

    def __init__(self, num_envs, seed=42):
        super().__init__([5] * num_envs)
        self.seed, self.closed = seed, False

    def reset(self, seed=None):
        super().reset()
        first = np.stack([np.random.default_rng(self.seed + i).normal(size=3) for i in range(3)])
        return first[: self.num_envs], {"env_id": np.arange(self.num_envs)}

    def close(self):
        self.closed = True


class StandInEnvPool:
    """The ``envpool`` module's ``make``, recording the options of every pool it made."""

    def __init__(self):
        self.made = []

    def make(self, task_id, env_type, num_envs, seed=42, **options):
        assert env_type == "gymnasium"
        self.made.append({"num_envs": num_envs, "seed": seed, **options})
        return SeededStandIn(num_envs, seed)


def test_the_run_key_seeds_envpool_at_make_since_envpool_ignores_reset_seeds(monkeypatch):
    import sys

    from rlstack.integrations.envpool_adapter import envpool_env

    module = StandInEnvPool()
    monkeypatch.setitem(sys.modules, "envpool", module)
    env = envpool_env("HalfCheetah-v5", frame_skip=2).build_env(num_envs=3)

    def first_obs(seed):
        return env.reset(random.key(seed), 3)[1]

    zero, one, zero_again = first_obs(0), first_obs(1), first_obs(0)
    assert not torch.equal(zero, one)  # two seeds, two env streams
    assert torch.equal(zero, zero_again)  # one seed repeats
    seeds = [made["seed"] for made in module.made[1:]]
    assert all(0 <= seed < 2**31 for seed in seeds)
    assert seeds[0] == seeds[2] != seeds[1]
    assert all(made["frame_skip"] == 2 and made["num_envs"] == 3 for made in module.made)
    with pytest.raises(ValueError, match="takes its seed from the run's key"):
        envpool_env("HalfCheetah-v5", seed=3).build_env(num_envs=3)


def test_members_of_a_seed_sweep_get_different_envpool_seeds(monkeypatch):
    import sys

    from rlstack.integrations.envpool_adapter import envpool_env

    monkeypatch.setitem(sys.modules, "envpool", StandInEnvPool())

    def pool_seed(seed):
        algo = Algorithm(
            envpool_env("HalfCheetah-v5"),
            num_envs=3,
            seed=seed,
            compile=False,
            model_config={"hiddens": (8,)},
        )
        algo.collect()  # the first rollout resets the envs from the run's key
        return algo.env.vector_env.seed

    zero, one, zero_again = pool_seed(0), pool_seed(1), pool_seed(0)
    assert zero != one and zero == zero_again
