"""MountainCar-v0's dynamics as an infinite-horizon, batched, pure env.

State = observation ``[position, velocity]``; 3 actions: push left (0), none
(1), right (2). Dynamics, constants and the left-wall velocity reset are
gymnasium's MountainCar-v0.

Infinite horizon: reaching the goal (``position >= 0.5``) does not end
anything; the right wall at 0.6 can hold the car there. Reward: ``1`` per
step at or past the goal, else ``(velocity / 0.07)^2`` in ``[0, 1)``, the
car's kinetic energy relative to its top speed. Speed is what a car must
build to escape the valley, and unlike height it cannot be farmed by
pushing one way and resting on a slope; parking at the goal still pays
most. No constant per-step cost: in an infinite-horizon task it only shifts
every value by ``-1 / (1 - gamma)``, which drowned the swinging signal in
value error when tried (see benchmarks/README.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..core import random
from ..core.spaces import Box, Discrete
from . import drawing
from ._base import Env, StepResult

MIN_POSITION, MAX_POSITION, MAX_SPEED = -1.2, 0.6, 0.07
GOAL_POSITION, FORCE, GRAVITY = 0.5, 0.001, 0.0025


class MountainCar(Env):
    """Drive an under-powered car up a hill by swinging back and forth.

    ``config``: ``init_low``/``init_high`` -0.6/-0.4, the uniform range of the
    initial position (velocity starts at 0).
    """

    observation_space = Box((2,))
    action_space = Discrete(3)
    eval_steps = 200
    default_config = {"init_low": -0.6, "init_high": -0.4}

    def reset(
        self, key: torch.Tensor, num_envs: int, *, config: Mapping[str, Any] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`rlstack.envs.Env.reset`."""
        config = self.resolve_config(config)
        low, high = config["init_low"], config["init_high"]
        if not (
            isinstance(low, (int, float))
            and isinstance(high, (int, float))
            and MIN_POSITION <= low <= high <= MAX_POSITION
        ):
            raise ValueError(
                f"`config['init_low']` <= `config['init_high']` must lie in [{MIN_POSITION}, "
                f"{MAX_POSITION}], got {low!r} and {high!r}."
            )
        position = random.uniform(key, (num_envs,), low=float(low), high=float(high))
        physics = torch.stack([position, torch.zeros_like(position)], dim=-1)
        return physics, physics

    def step(self, key: torch.Tensor, state: torch.Tensor, action: torch.Tensor) -> StepResult:
        """See :meth:`rlstack.envs.Env.step`."""
        position, velocity = state.unbind(-1)
        velocity = (
            velocity + (action - 1).to(state.dtype) * FORCE + torch.cos(3 * position) * (-GRAVITY)
        )
        velocity = velocity.clamp(-MAX_SPEED, MAX_SPEED)
        position = (position + velocity).clamp(MIN_POSITION, MAX_POSITION)
        velocity = torch.where(
            (position == MIN_POSITION) & (velocity < 0), torch.zeros_like(velocity), velocity
        )
        physics = torch.stack([position, velocity], dim=-1)
        speed = (velocity / MAX_SPEED) ** 2
        reward = torch.where(position >= GOAL_POSITION, torch.ones_like(position), speed)
        return self.no_episode_ends(physics, physics, reward)

    def render_frame(self, state: torch.Tensor, index: int = 0) -> Any:
        """Env ``index`` of ``state`` drawn (``[H, W, 3]`` uint8, :mod:`rlstack.envs.drawing`)."""
        return drawing.mountain_car(float(state[index, 0]), GOAL_POSITION)

    def success(
        self,
        act,
        *,
        num_envs: int = 1024,
        config: Mapping[str, Any] | None = None,
        key: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """``success/reached_goal``: fraction of envs reaching ``position >= 0.5``
        within 200 steps (MountainCar-v0's episode).
        """
        key = random.key(0) if key is None else key
        reached = torch.zeros(num_envs, dtype=torch.bool, device=key.device)
        for state, _, _ in self.run_policy(act, num_envs=num_envs, config=config, key=key):
            reached |= state[:, 0] >= GOAL_POSITION
        return {"success/reached_goal": reached.float().mean().item()}
