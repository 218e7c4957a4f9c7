"""MountainCar-v0's dynamics as an infinite-horizon, batched, pure env.

State = observation ``[position, velocity]``; 3 actions: push left (0), none
(1), right (2). Dynamics, constants and the left-wall velocity reset are
gymnasium's MountainCar-v0.

Infinite horizon: reaching the goal (``position >= 0.5``) does not end
anything; the car may stay there (the right wall at 0.6 holds it). Reward:
``1`` per step at or past the goal, else ``-1 + e`` where
``e = clip((E(s') - E_valley) / (E_goal - E_valley), 0, 1)`` is the
mechanical energy of the dynamics, ``E = g sin(3 x) / 3 + v^2 / 2``
(conserved when no force is applied), scaled to 0 at rest in the valley and
1 at rest at the goal. Building energy is what a car has to do to escape the
valley, so the dense term points PPO at swinging; The goal
indicator dominates: parking at the goal earns 1 per step, more than any
swinging.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from ..spaces import Box, Discrete
from ._base import Env

MIN_POSITION, MAX_POSITION, MAX_SPEED = -1.2, 0.6, 0.07
GOAL_POSITION, FORCE, GRAVITY = 0.5, 0.001, 0.0025


def height(position: torch.Tensor) -> torch.Tensor:
    """gymnasium's track height ``0.45 sin(3 x) + 0.55``."""
    return 0.45 * torch.sin(3 * position) + 0.55


def energy(physics: torch.Tensor) -> torch.Tensor:
    """``[N]`` mechanical energy ``g sin(3 x) / 3 + v^2 / 2`` of the dynamics
    (``v' = v - g cos(3 x)``, ``x' = x + v``)."""
    position, velocity = physics.unbind(-1)
    return GRAVITY * torch.sin(3 * position) / 3 + 0.5 * velocity**2


_GOAL_ENERGY = GRAVITY * math.sin(3 * GOAL_POSITION) / 3
_VALLEY_ENERGY = -GRAVITY / 3


class MountainCar(Env):
    """Drive an under-powered car up a hill by swinging back and forth.

    ``config``: ``init_low``/``init_high`` -0.6/-0.4, the uniform range of the
    initial position (velocity starts at 0).
    """

    observation_space = Box((2,))
    action_space = Discrete(3)
    eval_steps = 200
    default_config = {"init_low": -0.6, "init_high": -0.4}

    def reset(self, num_envs: int, *, config: Mapping[str, Any] | None = None, device: Any = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        config = self.resolve_config(config)
        low, high = config["init_low"], config["init_high"]
        if not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and MIN_POSITION <= low <= high <= MAX_POSITION):
            raise ValueError(
                f"`config['init_low']` <= `config['init_high']` must lie in [{MIN_POSITION}, {MAX_POSITION}], got {low!r} and {high!r}."
            )
        position = low + (high - low) * torch.rand(num_envs, device=device)
        physics = torch.stack([position, torch.zeros_like(position)], dim=-1)
        return physics, physics

    def step(self, state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        position, velocity = state.unbind(-1)
        velocity = velocity + (action - 1).to(state.dtype) * FORCE + torch.cos(3 * position) * (-GRAVITY)
        velocity = velocity.clamp(-MAX_SPEED, MAX_SPEED)
        position = (position + velocity).clamp(MIN_POSITION, MAX_POSITION)
        velocity = torch.where((position == MIN_POSITION) & (velocity < 0), torch.zeros_like(velocity), velocity)
        physics = torch.stack([position, velocity], dim=-1)
        at_goal = position >= GOAL_POSITION
        level = ((energy(physics) - _VALLEY_ENERGY) / (_GOAL_ENERGY - _VALLEY_ENERGY)).clamp(0.0, 1.0)
        reward = torch.where(at_goal, torch.ones_like(position), level - 1.0)
        return physics, physics, reward

    def success(self, act, *, num_envs: int = 1024, config: Mapping[str, Any] | None = None, device: Any = "cpu") -> dict[str, float]:
        """``success/reached_goal``: fraction of envs reaching ``position >= 0.5``
        within 200 steps (MountainCar-v0's episode)."""
        state, obs = self.reset(num_envs, config=config, device=device)
        reached = torch.zeros(num_envs, dtype=torch.bool, device=device)
        with torch.no_grad():
            for _ in range(self.eval_steps):
                state, obs, _ = self.step(state, act(obs))
                reached |= state[:, 0] >= GOAL_POSITION
        return {"success/reached_goal": reached.float().mean().item()}
