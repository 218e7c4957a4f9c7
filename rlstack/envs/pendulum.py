"""Pendulum-v1 as a batched, pure env (gymnasium's dynamics and reward).

State ``(theta, theta_dot)`` (rad, rad/s; theta = 0 is upright), observation
``[cos theta, sin theta, theta_dot]``, action a torque in ``[-2, 2]`` N m
(clipped). Reward, as gymnasium's: ``-(angle_normalize(theta)^2 + 0.1
theta_dot^2 + 0.001 u^2)``, in ``[-16.3, 0]`` per step. Pendulum-v1 has no
terminal state either; gymnasium only truncates at 200 steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch

from ..core import random
from ..core.spaces import Box
from . import drawing
from ._base import Env, StepResult, check_positive, sample_constants

_CONSTANTS = ("g", "m", "l", "dt", "max_speed", "max_torque")


class PendulumState(NamedTuple):
    """``physics``: ``[N, 2]`` float32 ``(theta, theta_dot)``; ``constants``: per-env ``[N]``."""

    physics: torch.Tensor
    constants: dict[str, torch.Tensor]


def angle_normalize(x: torch.Tensor) -> torch.Tensor:
    """Wrap angles to ``[-pi, pi)``."""
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


def _observe(physics: torch.Tensor) -> torch.Tensor:
    theta, theta_dot = physics.unbind(-1)
    return torch.stack([torch.cos(theta), torch.sin(theta), theta_dot], dim=-1)


class Pendulum(Env):
    """Swing a pendulum up and hold it upright with a limited torque.

    ``config`` (constants are numbers or ``[low, high]`` ranges drawn per env):
    ``g`` 10.0, ``m`` 1.0, ``l`` 1.0, ``dt`` 0.05, ``max_speed`` 8.0,
    ``max_torque`` 2.0; ``x_init`` pi and ``y_init`` 1.0, the half-widths of
    the uniform initial angle and angular velocity.
    """

    observation_space = Box((3,))
    action_space = Box((1,), low=-2.0, high=2.0)
    eval_steps = 200
    default_config = {
        "g": 10.0,
        "m": 1.0,
        "l": 1.0,
        "dt": 0.05,
        "max_speed": 8.0,
        "max_torque": 2.0,
        "x_init": math.pi,
        "y_init": 1.0,
    }

    def reset(
        self, key: torch.Tensor, num_envs: int, *, config: Mapping[str, Any] | None = None
    ) -> tuple[PendulumState, torch.Tensor]:
        """See :meth:`rlstack.envs.Env.reset`."""
        config = self.resolve_config(config)
        check_positive(config, _CONSTANTS)
        for name in ("x_init", "y_init"):
            if not isinstance(config[name], (int, float)) or config[name] < 0:
                raise ValueError(f"`config[{name!r}]` must be a number >= 0, got {config[name]!r}.")
        init_key, constants_key = random.split(key)
        high = torch.tensor(
            [config["x_init"], config["y_init"]], device=key.device, dtype=torch.float32
        )
        physics = random.uniform(init_key, (num_envs, 2), low=-1.0, high=1.0) * high
        return PendulumState(
            physics, sample_constants(constants_key, config, _CONSTANTS, num_envs)
        ), _observe(physics)

    def step(self, key: torch.Tensor, state: PendulumState, action: torch.Tensor) -> StepResult:
        """See :meth:`rlstack.envs.Env.step`."""
        c = state.constants
        theta, theta_dot = state.physics.unbind(-1)
        u = torch.minimum(torch.maximum(action[:, 0], -c["max_torque"]), c["max_torque"])
        cost = angle_normalize(theta) ** 2 + 0.1 * theta_dot**2 + 0.001 * u**2
        new_theta_dot = (
            theta_dot
            + (3 * c["g"] / (2 * c["l"]) * torch.sin(theta) + 3.0 / (c["m"] * c["l"] ** 2) * u)
            * c["dt"]
        )
        new_theta_dot = torch.minimum(torch.maximum(new_theta_dot, -c["max_speed"]), c["max_speed"])
        physics = torch.stack([theta + new_theta_dot * c["dt"], new_theta_dot], dim=-1)
        return self.no_episode_ends(PendulumState(physics, c), _observe(physics), -cost)

    def render_frame(self, state: PendulumState, index: int = 0) -> Any:
        """Env ``index`` of ``state`` drawn (``[H, W, 3]`` uint8, :mod:`rlstack.envs.drawing`)."""
        return drawing.pendulum(float(state.physics[index, 0]))
