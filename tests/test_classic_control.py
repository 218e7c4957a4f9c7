"""The classic-control envs step exactly like gymnasium's, state for state.

gymnasium is the independent reference: its env is put into each sampled
state, stepped with the same action, and its next state, observation (and
Pendulum's reward) are compared with ours.
"""

import math

import gymnasium
import numpy as np
import pytest
import torch

from rlstack import random
from rlstack.env import check_env
from rlstack.envs import CartPole, MountainCar, Pendulum
from rlstack.envs.cartpole import CartPoleState
from rlstack.envs.pendulum import PendulumState

N = 256


def _constants(env, n=N):
    return {
        k: torch.full((n,), float(v))
        for k, v in env.default_config.items()
        if not k.endswith(("_init", "_low", "_high"))
    }


def test_cartpole_matches_gymnasium_step_for_step():
    env = CartPole()
    gym_env = gymnasium.make("CartPole-v1").unwrapped
    gym_env.reset(seed=0)
    g = torch.Generator().manual_seed(0)
    physics = (torch.rand(N, 4, generator=g) - 0.5) * torch.tensor([4.0, 4.0, 1.0, 4.0])
    action = torch.randint(0, 2, (N,), generator=g)
    state = CartPoleState(
        physics,
        {
            k: torch.full((N,), float(env.default_config[k]))
            for k in ("gravity", "masscart", "masspole", "length", "force_mag", "tau")
        },
    )
    _, obs, reward, _, _ = env.step(random.key(2), state, action)
    for i in range(N):
        gym_env.state, gym_env.steps_beyond_terminated = physics[i].double().numpy(), None
        gym_obs, _, terminated, _, _ = gym_env.step(int(action[i]))
        np.testing.assert_allclose(obs[i].numpy(), gym_obs, rtol=1e-5, atol=1e-6)
        assert reward[i].item() == (
            -1.0 if terminated else 1.0
        )  # in gymnasium's bounds <=> not terminated


def test_pendulum_matches_gymnasium_step_for_step_including_reward():
    env = Pendulum()
    gym_env = gymnasium.make("Pendulum-v1").unwrapped
    gym_env.reset(seed=0)
    g = torch.Generator().manual_seed(1)
    physics = torch.stack(
        [
            (torch.rand(N, generator=g) * 2 - 1) * 2 * math.pi,
            (torch.rand(N, generator=g) * 2 - 1) * 8,
        ],
        -1,
    )
    action = (torch.rand(N, 1, generator=g) * 2 - 1) * 3  # beyond the limits too: both clip
    state = PendulumState(physics, _constants(env))
    new_state, obs, reward, _, _ = env.step(random.key(2), state, action)
    for i in range(N):
        gym_env.state = physics[i].double().numpy()
        gym_obs, gym_reward, _, _, _ = gym_env.step(action[i].numpy())
        np.testing.assert_allclose(obs[i].numpy(), gym_obs, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(reward[i].item(), gym_reward, rtol=1e-5, atol=1e-5)
    # The observation of a state is gymnasium's observation of that state.
    gym_env.state = new_state.physics[0].double().numpy()
    np.testing.assert_allclose(obs[0].numpy(), gym_env._get_obs(), rtol=1e-6, atol=1e-6)


def test_mountain_car_matches_gymnasium_step_for_step_including_left_wall():
    env = MountainCar()
    gym_env = gymnasium.make("MountainCar-v0").unwrapped
    gym_env.reset(seed=0)
    g = torch.Generator().manual_seed(2)
    position = -1.2 + 1.8 * torch.rand(N, generator=g)
    position[:32] = -1.19  # near the left wall, moving left: velocity must reset to 0
    velocity = (torch.rand(N, generator=g) * 2 - 1) * 0.07
    velocity[:32] = -0.05
    state = torch.stack([position, velocity], -1)
    action = torch.randint(0, 3, (N,), generator=g)
    _, obs, _, _, _ = env.step(random.key(2), state, action)
    assert (obs[:32, 1] == 0).all() and (obs[:32, 0] == -1.2).all()
    for i in range(N):
        gym_env.state = state[i].double().numpy()
        gym_obs, _, _, _, _ = gym_env.step(int(action[i]))
        np.testing.assert_allclose(obs[i].numpy(), gym_obs, rtol=1e-5, atol=1e-6)


def test_mountain_car_reward_is_one_at_goal_and_squared_relative_speed_elsewhere():
    env = MountainCar()
    state = torch.tensor([[0.55, 0.01], [-0.5236, 0.0], [-0.2, 0.035]])
    new_state, _, reward, _, _ = env.step(random.key(2), state, torch.tensor([1, 1, 1]))
    assert reward[0] == 1.0
    torch.testing.assert_close(reward[1:], (new_state[1:, 1] / 0.07) ** 2)
    assert reward[1] < 1e-6 and 0.0 < reward[2] < 1.0  # below the goal's 1 at any speed


@pytest.mark.parametrize(
    "env", [CartPole(), Pendulum(), MountainCar()], ids=lambda e: type(e).__name__
)
def test_classic_control_envs_pass_check_env_and_compile(env):
    check_env(env, num_envs=16, check_compile=True)


def test_reset_ranges_and_domain_randomisation():
    state, obs = CartPole().reset(
        random.key(0), 4096, config={"masspole": [0.05, 0.2], "init_low": -0.1, "init_high": 0.1}
    )
    assert obs.abs().max() <= 0.1 and obs.abs().max() > 0.09
    m = state.constants["masspole"]
    assert (
        0.05 <= m.min() < 0.06
        and 0.19 < m.max() <= 0.2
        and state.constants["gravity"].unique().tolist() == [pytest.approx(9.8)]
    )
    state, obs = Pendulum().reset(random.key(0), 4096)
    assert state.physics[:, 0].abs().max() <= math.pi and state.physics[:, 1].abs().max() <= 1.0
    torch.testing.assert_close(obs[:, 0] ** 2 + obs[:, 1] ** 2, torch.ones(4096))
    state, obs = MountainCar().reset(random.key(0), 4096)
    assert obs[:, 0].min() >= -0.6 and obs[:, 0].max() <= -0.4 and (obs[:, 1] == 0).all()


@pytest.mark.parametrize(
    "env, config, match",
    [
        (CartPole(), {"gravity": -1.0}, r"`config\['gravity'\]` must be > 0, got -1.0"),
        (
            CartPole(),
            {"masspole": [0.2, 0.1]},
            r"`config\['masspole'\]` must be a number or a \[low, high\] range",
        ),
        (CartPole(), {"init_low": 0.1, "init_high": -0.1}, r"`config\['init_low'\]` must be <="),
        (CartPole(), {"mass": 1.0}, r"unknown keys \['mass'\]"),
        (Pendulum(), {"dt": 0.0}, r"`config\['dt'\]` must be > 0"),
        (Pendulum(), {"x_init": -1.0}, r"`config\['x_init'\]` must be a number >= 0"),
        (MountainCar(), {"init_low": -2.0}, r"must lie in \[-1.2, 0.6\]"),
    ],
)
def test_bad_env_config_raises(env, config, match):
    with pytest.raises(ValueError, match=match):
        env.reset(random.key(0), 4, config=config)


def test_success_measures():
    cartpole = CartPole()
    # Pushing always right topples the pole: nothing stays balanced for 500 steps.
    assert (
        cartpole.success(lambda obs: torch.ones(obs.shape[0], dtype=torch.int64), num_envs=64)[
            "success/balanced"
        ]
        == 0.0
    )
    # The energy-pumping controller (push along the velocity) escapes the valley.
    pump = MountainCar().success(lambda obs: torch.where(obs[:, 1] >= 0, 2, 0), num_envs=256)
    assert pump["success/reached_goal"] == 1.0
    idle = MountainCar().success(
        lambda obs: torch.ones(obs.shape[0], dtype=torch.int64), num_envs=256
    )
    assert idle["success/reached_goal"] == 0.0
    stats = Pendulum().success(lambda obs: torch.zeros(obs.shape[0], 1), num_envs=256)
    assert -10 < stats["success/reward_per_step"] < -1


# ---------------------------------------------------------------- gymnasium's episodic tasks
from rlstack.envs import CartPoleV1, MountainCarV0, PendulumV1  # noqa: E402
from rlstack.envs.episodic import EpisodeState  # noqa: E402


def _episodic(env, inner, n, time=0):
    _, first_obs = env.reset(random.key(0), n)
    params = env.respawn_params(env.resolve_config(None), n, "cpu")
    return EpisodeState(inner, torch.full((n,), time, dtype=torch.int64), first_obs, params)


def test_cartpole_v1_terminates_and_rewards_exactly_like_gymnasium():
    env = CartPoleV1()
    gym_env = gymnasium.make("CartPole-v1").unwrapped
    gym_env.reset(seed=0)
    g = torch.Generator().manual_seed(1)
    physics = (torch.rand(N, 4, generator=g) - 0.5) * torch.tensor(
        [5.0, 2.0, 0.45, 2.0]
    )  # many near the bounds
    action = torch.randint(0, 2, (N,), generator=g)
    inner = CartPoleState(physics, _constants(CartPole()))
    state, obs, reward, terminated, truncated = env.step(
        random.key(3), _episodic(env, inner, N), action
    )
    assert not truncated.any() and torch.equal(reward, torch.ones(N))
    for i in range(N):
        gym_env.state, gym_env.steps_beyond_terminated = physics[i].double().numpy(), None
        gym_obs, gym_reward, gym_terminated, _, _ = gym_env.step(int(action[i]))
        assert bool(terminated[i]) == gym_terminated and gym_reward == 1.0
        np.testing.assert_allclose(
            env.final_observation(state)[i].numpy(), gym_obs, rtol=1e-5, atol=1e-6
        )
        if gym_terminated:  # auto-reset: a fresh start in gymnasium's [-0.05, 0.05], time back to 0
            assert obs[i].abs().max() <= 0.05 and state.time[i] == 0
    assert terminated.any() and (~terminated).any()
    # The 500-step time limit truncates (not terminates) an upright pole.
    upright = CartPoleState(torch.zeros(4, 4), _constants(CartPole(), 4))
    _, _, _, terminated, truncated = env.step(
        random.key(4), _episodic(env, upright, 4, time=499), torch.ones(4, dtype=torch.int64)
    )
    assert truncated.all() and not terminated.any()


def test_mountain_car_v0_terminates_at_the_goal_like_gymnasium_and_truncates_at_200():
    env = MountainCarV0()
    gym_env = gymnasium.make("MountainCar-v0").unwrapped
    gym_env.reset(seed=0)
    g = torch.Generator().manual_seed(2)
    physics = torch.stack(
        [0.45 + 0.1 * torch.rand(N, generator=g), (torch.rand(N, generator=g) - 0.5) * 0.1], -1
    )
    action = torch.randint(0, 3, (N,), generator=g)
    _, _, reward, terminated, truncated = env.step(
        random.key(3), _episodic(env, physics, N), action
    )
    assert torch.equal(reward, torch.full((N,), -1.0)) and not truncated.any()
    for i in range(N):
        gym_env.state = physics[i].double().numpy()
        _, gym_reward, gym_terminated, _, _ = gym_env.step(int(action[i]))
        assert bool(terminated[i]) == gym_terminated and gym_reward == -1.0
    assert terminated.any() and (~terminated).any()
    valley = torch.tensor([[-0.5, 0.0]]).expand(3, 2)
    _, _, _, terminated, truncated = env.step(
        random.key(4), _episodic(env, valley, 3, time=199), torch.ones(3, dtype=torch.int64)
    )
    assert truncated.all() and not terminated.any()


def test_mountain_car_v0_speed_reward_pays_kinetic_energy_and_a_goal_bonus_on_gymnasiums_dynamics():
    """``reward="speed"`` (the MountainCar-v0 preset's training reward) changes
    the reward only: gymnasium's dynamics and termination, ``(v / 0.07)^2``
    per step (1 at or past the goal), plus 100 on the step that ends at the goal.
    """
    env = MountainCarV0()
    gym_env = gymnasium.make("MountainCar-v0").unwrapped
    gym_env.reset(seed=0)
    g = torch.Generator().manual_seed(5)
    physics = torch.stack(
        [-1.2 + 1.7 * torch.rand(N, generator=g), (torch.rand(N, generator=g) - 0.5) * 0.14], -1
    )
    action = torch.randint(0, 3, (N,), generator=g)
    _, first_obs = env.reset(random.key(0), N, config={"reward": "speed"})
    params = env.respawn_params(env.resolve_config({"reward": "speed"}), N, "cpu")
    shaped_state = EpisodeState(physics, torch.zeros(N, dtype=torch.int64), first_obs, params)
    state, _, reward, terminated, truncated = env.step(random.key(3), shaped_state, action)
    plain_state, _, plain_reward, plain_terminated, _ = env.step(
        random.key(3), _episodic(env, physics, N), action
    )
    assert torch.equal(terminated, plain_terminated) and torch.equal(
        plain_reward, torch.full((N,), -1.0)
    )
    for i in range(N):
        gym_env.state = physics[i].double().numpy()
        (position, velocity), _, gym_terminated, _, _ = gym_env.step(int(action[i]))
        expected = (1.0 if position >= 0.5 else (velocity / 0.07) ** 2) + (
            100.0 if gym_terminated else 0.0
        )
        assert bool(terminated[i]) == gym_terminated
        assert reward[i].item() == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert terminated.any() and (~terminated).any() and not truncated.any()
    # Whatever reward trained, success reports gymnasium's return: minus the episode's length.
    pump = lambda obs: torch.where(obs[:, 1] >= 0, 2, 0)  # noqa: E731  (push along the velocity)
    shaped = env.success(pump, num_envs=64, config={"reward": "speed"})
    assert (
        shaped == env.success(pump, num_envs=64) and -200 < shaped["success/episode_return"] < -80
    )
    assert shaped["success/episode_return"] == -shaped["success/episode_length"]
    with pytest.raises(
        ValueError,
        match=r"`config\['reward'\]` must be one of \['gymnasium', 'speed'\], got 'shaped'",
    ):
        env.reset(random.key(0), 2, config={"reward": "shaped"})


def test_pendulum_v1_only_truncates_and_keeps_gymnasiums_reward():
    env, plain = PendulumV1(), Pendulum()
    state, obs = env.reset(random.key(0), 8)
    plain_state, plain_obs = plain.reset(random.key(0), 8)
    assert torch.equal(obs, plain_obs)
    torque = torch.full((8, 1), 0.5)
    for t in range(200):
        state, obs, reward, terminated, truncated = env.step(random.key(t), state, torque)
        plain_state, _, plain_reward, _, _ = plain.step(random.key(t), plain_state, torque)
        assert not terminated.any() and bool(truncated.all()) == (t == 199)
        if t < 199:
            assert torch.equal(reward, plain_reward)
    assert state.time.eq(0).all()  # restarted after the time limit


def test_episodic_envs_pass_check_env_and_measure_gymnasiums_episode_return():
    for env in (CartPoleV1(), PendulumV1(), MountainCarV0()):
        check_env(env, num_envs=8, check_compile=True)
    # Always pushing right topples the pole in ~10 steps: a return of ~10, as in gymnasium.
    stats = CartPoleV1().success(
        lambda obs: torch.ones(obs.shape[0], dtype=torch.int64), num_envs=64
    )
    assert (
        5 <= stats["success/episode_return"] <= 20
        and stats["success/episode_return"] == stats["success/episode_length"]
    )
    stats = MountainCarV0().success(
        lambda obs: torch.ones(obs.shape[0], dtype=torch.int64), num_envs=16
    )
    assert stats["success/episode_return"] == -200.0  # doing nothing never reaches the goal


def test_cartpole_can_hide_its_velocities_and_moves_the_same():
    from rlstack import random

    env = CartPole()
    seen_state, seen = env.reset(random.key(3), 8)
    hidden_state, hidden = env.reset(random.key(3), 8, config={"hide_velocities": True})
    assert torch.equal(hidden[:, [0, 2]], seen[:, [0, 2]]) and not hidden[:, [1, 3]].any()
    action = torch.ones(8, dtype=torch.int64)
    for _ in range(5):
        seen_state, seen, seen_reward, _, _ = env.step(random.key(0), seen_state, action)
        hidden_state, hidden, hidden_reward, _, _ = env.step(random.key(0), hidden_state, action)
    assert torch.equal(hidden_state.physics, seen_state.physics) and torch.equal(
        hidden_reward, seen_reward
    )
    assert (
        torch.equal(hidden, seen * torch.tensor([1.0, 0.0, 1.0, 0.0]))
        and seen[:, [1, 3]].abs().sum() > 0
    )
    with pytest.raises(TypeError, match=r"`config\['hide_velocities'\]` must be a bool"):
        env.reset(random.key(0), 2, config={"hide_velocities": "yes"})


def test_cartpole_v1_hides_its_velocities_after_every_respawn_too():
    # Regression: the episodic CartPole crashed on the [4] mask and showed velocities after a
    # respawn.
    from rlstack import random
    from rlstack.envs import CartPoleV1

    env = CartPoleV1()
    state, obs = env.reset(random.key(3), 8, config={"hide_velocities": True})
    action = torch.ones(8, dtype=torch.int64)  # pushing right: every pole falls within ~10 steps
    ended = torch.zeros(8, dtype=torch.bool)
    for t in range(40):
        state, obs, _, terminated, truncated = env.step(
            random.fold_in(random.key(0), t), state, action
        )
        ended |= terminated
        assert not obs[:, [1, 3]].any()
        assert torch.equal(env.final_observation(state)[:, [1, 3]], torch.zeros(8, 2))
    assert ended.all()
