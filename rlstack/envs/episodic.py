"""Gymnasium's episodic classic-control tasks on top of the infinite-horizon envs.

``CartPoleV1``, ``PendulumV1`` and ``MountainCarV0`` step with the same
dynamics as :class:`CartPole`, :class:`Pendulum` and :class:`MountainCar`
and add gymnasium's episodes: its termination conditions, its time limits
(500, 200 and 200 steps, as truncation) and its rewards (CartPole-v1: +1 per
step; Pendulum-v1: the same cost as :class:`Pendulum`; MountainCar-v0: -1
per step, or a shaped training reward on request). Ended episodes restart inside the same pure
``step`` (auto-reset) from gymnasium's initial distribution under the reset ``config``; physical
constants drawn at reset (domain randomisation) stay with their env.
``success`` reports gymnasium's own number: the mean undiscounted return of
every env's first episode.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import optree
import torch

from ..core import random
from ..core.types import Tree
from ._base import where_done
from .cartpole import CartPole, in_bounds, observe
from .mountain_car import GOAL_POSITION, MountainCar
from .pendulum import Pendulum


class EpisodeState(NamedTuple):
    """State of an episodic env.

    Attributes:
        env: the underlying env's state, leaves ``[N, ...]``.
        time: ``[N]`` int64 steps since the episode started.
        final_obs: ``[N, ...]`` the last step's observation before any
            auto-reset (what a truncated episode bootstraps from).
        respawn: ``dict[str, [N] tensor]`` of per-env constants kept from
            the reset ``config``: the initial-state ranges auto-resets draw
            from, and MountainCar-v0's reward choice.
    """

    env: Tree
    time: torch.Tensor
    final_obs: Tree
    respawn: dict[str, torch.Tensor]


class Episodic:
    """Mixin that turns an infinite-horizon env class into gymnasium's
    episodic task (list it before the env class). Subclasses set
    ``max_episode_steps`` and implement ``respawn_params``, ``respawn``,
    ``terminal`` and ``episode_reward(reward, terminated, params)``
    (``params``: what ``respawn_params`` kept).
    """

    episodic = True
    max_episode_steps: int

    def reset(self, key: torch.Tensor, num_envs: int, *, config: Mapping[str, Any] | None = None):
        """See :meth:`rlstack.envs.Env.reset`."""
        state, obs = super().reset(key, num_envs, config=config)
        params = self.respawn_params(self.resolve_config(config), num_envs, key.device)
        time = torch.zeros(num_envs, dtype=torch.int64, device=key.device)
        # Tensors of their own, as every step returns them (no leaf aliases another): a compiled
        # step compiles once.
        obs, final_obs = optree.tree_map(torch.clone, obs), optree.tree_map(torch.clone, obs)
        return EpisodeState(state, time, final_obs, params), obs

    def step(self, key: torch.Tensor, state: EpisodeState, action: Tree):
        """See :meth:`rlstack.envs.Env.step`."""
        inner, obs, reward, _, _ = super().step(key, state.env, action)
        terminated = self.terminal(inner)
        reward = self.episode_reward(reward, terminated, state.respawn)
        time = state.time + 1
        truncated = (time >= self.max_episode_steps) & ~terminated
        done = terminated | truncated
        fresh, fresh_obs = self.respawn(key, inner, state.respawn)
        next_state = EpisodeState(
            where_done(done, fresh, inner),
            torch.where(done, torch.zeros_like(time), time),
            obs,
            state.respawn,
        )
        return next_state, where_done(done, fresh_obs, obs), reward, terminated, truncated

    def final_observation(self, state: EpisodeState) -> Tree:
        """See :meth:`rlstack.envs.Env.final_observation`."""
        return state.final_obs

    def render_frame(self, state: EpisodeState, index: int = 0) -> Any:
        """Env ``index`` drawn as the infinite-horizon env draws it."""
        return super().render_frame(state.env, index)

    def success(
        self,
        act,
        *,
        num_envs: int = 1024,
        config: Mapping[str, Any] | None = None,
        key: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """``success/episode_return`` (gymnasium's mean episode return of the
        first episode of each env) and ``success/episode_length``.
        """
        return self.episode_success(
            act, num_envs=num_envs, config=config, key=random.key(0) if key is None else key
        )


def _uniform(
    key: torch.Tensor, shape: tuple[int, ...], low: torch.Tensor, high: torch.Tensor
) -> torch.Tensor:
    """Uniform in ``[low, high)`` with per-env bounds ``[N]`` broadcast over ``shape[1:]``."""
    u = random.uniform(key, shape)
    extra = [1] * (len(shape) - 1)
    return low.reshape(-1, *extra) + (high - low).reshape(-1, *extra) * u


class CartPoleV1(Episodic, CartPole):
    """CartPole-v1: +1 per step; terminates when ``|theta| >= 12 deg`` or
    ``|x| >= 2.4``; truncates at 500 steps.
    """

    max_episode_steps = 500
    eval_steps = 500

    def respawn_params(self, config, num_envs, device):
        """See :meth:`rlstack.envs.episodic.Episodic.respawn_params`."""
        return {
            k: torch.full((num_envs,), float(config[k]), device=device)
            for k in ("init_low", "init_high")
        }

    def respawn(self, key, state, params):
        """See :meth:`rlstack.envs.episodic.Episodic.respawn`."""
        physics = _uniform(
            key, (state.physics.shape[0], 4), params["init_low"], params["init_high"]
        )
        state = state._replace(physics=physics)
        return state, observe(state)  # hide_velocities hides them after a respawn too

    def terminal(self, state):
        """See :meth:`rlstack.envs.episodic.Episodic.terminal`."""
        return ~in_bounds(state.physics)

    def episode_reward(self, reward, terminated, params):
        """See :meth:`rlstack.envs.episodic.Episodic.episode_reward`."""
        return torch.ones_like(reward)


class PendulumV1(Episodic, Pendulum):
    """Pendulum-v1: gymnasium's cost as reward, never terminates, truncates at 200 steps."""

    max_episode_steps = 200
    eval_steps = 200

    def respawn_params(self, config, num_envs, device):
        """See :meth:`rlstack.envs.episodic.Episodic.respawn_params`."""
        return {
            k: torch.full((num_envs,), float(config[k]), device=device)
            for k in ("x_init", "y_init")
        }

    def respawn(self, key, state, params):
        """See :meth:`rlstack.envs.episodic.Episodic.respawn`."""
        theta = _uniform(
            random.fold_in(key, 0), (state.physics.shape[0],), -params["x_init"], params["x_init"]
        )
        theta_dot = _uniform(
            random.fold_in(key, 1), (state.physics.shape[0],), -params["y_init"], params["y_init"]
        )
        physics = torch.stack([theta, theta_dot], dim=-1)
        return state._replace(physics=physics), torch.stack(
            [torch.cos(theta), torch.sin(theta), theta_dot], dim=-1
        )

    def terminal(self, state):
        """See :meth:`rlstack.envs.episodic.Episodic.terminal`."""
        return torch.zeros(state.physics.shape[0], dtype=torch.bool, device=state.physics.device)

    def episode_reward(self, reward, terminated, params):
        """See :meth:`rlstack.envs.episodic.Episodic.episode_reward`."""
        return reward


class MountainCarV0(Episodic, MountainCar):
    """MountainCar-v0: -1 per step; terminates at ``position >= 0.5`` (with
    velocity >= 0, as gymnasium); truncates at 200 steps.

    ``config``: MountainCar's, and ``reward``: ``"gymnasium"`` (default, -1
    per step) or ``"speed"``, a training reward for exploration:
    :class:`MountainCar`'s speed reward (``(velocity / 0.07)^2`` per step,
    in ``[0, 1)``) plus :data:`GOAL_BONUS` on the step that reaches the
    goal. The -1 reward gives a policy that never reaches the goal nothing to
    learn from; the speed reward pays for the swinging that gets there, and
    the bonus makes ending the episode at the goal worth more than swinging
    on. ``success`` always reports gymnasium's return (minus the episode
    length), whichever reward trained the policy.
    """

    max_episode_steps = 200
    eval_steps = 200
    default_config = {**MountainCar.default_config, "reward": "gymnasium"}

    def respawn_params(self, config, num_envs, device):
        """See :meth:`rlstack.envs.episodic.Episodic.respawn_params`."""
        if config["reward"] not in REWARDS:
            raise ValueError(
                f"`config['reward']` must be one of {list(REWARDS)}, got {config['reward']!r}."
            )
        params = {
            k: torch.full((num_envs,), float(config[k]), device=device)
            for k in ("init_low", "init_high")
        }
        params["speed_reward"] = torch.full(
            (num_envs,), float(config["reward"] == "speed"), device=device
        )
        return params

    def respawn(self, key, state, params):
        """See :meth:`rlstack.envs.episodic.Episodic.respawn`."""
        position = _uniform(key, (state.shape[0],), params["init_low"], params["init_high"])
        physics = torch.stack([position, torch.zeros_like(position)], dim=-1)
        return physics, physics

    def terminal(self, state):
        """See :meth:`rlstack.envs.episodic.Episodic.terminal`."""
        return (state[:, 0] >= GOAL_POSITION) & (state[:, 1] >= 0)

    def episode_reward(self, reward, terminated, params):
        """See :meth:`rlstack.envs.episodic.Episodic.episode_reward`."""
        shaped = reward + GOAL_BONUS * terminated.to(
            reward.dtype
        )  # MountainCar's reward is the speed one
        return torch.where(params["speed_reward"] > 0, shaped, torch.full_like(reward, -1.0))

    def success(
        self,
        act,
        *,
        num_envs: int = 1024,
        config: Mapping[str, Any] | None = None,
        key: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """``success/episode_return``: gymnasium's MountainCar-v0 return (the
        -1 reward, whatever ``config['reward']``) of each env's first
        episode, and ``success/episode_length``.
        """
        config = {**self.resolve_config(config), "reward": "gymnasium"}
        return self.episode_success(
            act, num_envs=num_envs, config=config, key=random.key(0) if key is None else key
        )


#: MountainCar-v0's training rewards (``config['reward']``).
REWARDS = ("gymnasium", "speed")
#: What ``reward="speed"`` pays on reaching the goal: 100, the discounted value (gamma 0.99) of
#: :class:`MountainCar`'s reward of 1 per step held at the goal.
GOAL_BONUS = 100.0


__all__ = [
    "CartPoleV1",
    "EpisodeState",
    "Episodic",
    "GOAL_BONUS",
    "MountainCarV0",
    "PendulumV1",
    "REWARDS",
]
