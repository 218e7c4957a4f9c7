"""CartPole-v1's dynamics as an infinite-horizon, batched, pure env.

Dynamics, constants and the Euler integrator are gymnasium's CartPole-v1
(Barto, Sutton & Anderson, 1983); the observation is the state
``[x, x_dot, theta, theta_dot]`` (m, m/s, rad, rad/s), as in gymnasium.

Infinite horizon: nothing terminates. The pole may fall and be swung back,
the cart may leave the track. The reward is +1 per step while the pole is
upright and the cart on the track in gymnasium's sense (``|theta| < 12 deg``
and ``|x| < 2.4``) and -1 otherwise, so the return is the (discounted)
number of balanced steps minus the unbalanced ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch

from ..core import random
from ..core.spaces import Box, Discrete
from . import drawing
from ._base import Env, StepResult, check_positive, sample_constants

THETA_LIMIT = 12 * 2 * math.pi / 360  # gymnasium's termination angle, rad
X_LIMIT = 2.4  # gymnasium's termination position, m
_CONSTANTS = ("gravity", "masscart", "masspole", "length", "force_mag", "tau")


class CartPoleState(NamedTuple):
    """``physics``: ``[N, 4]`` float32 ``(x, x_dot, theta, theta_dot)``;
    ``constants``: per-env ``[N]`` physical constants (see ``default_config``);
    ``observed``: ``[4]`` float32, 1 for the state variables the agent sees
    and 0 for hidden ones (``hide_velocities``), or ``()``: all seen.
    """

    physics: torch.Tensor
    constants: dict[str, torch.Tensor]
    observed: Any = ()


def in_bounds(physics: torch.Tensor) -> torch.Tensor:
    """``[N]`` bool: the pole within 12 degrees and the cart within 2.4 m."""
    return (physics[:, 2].abs() < THETA_LIMIT) & (physics[:, 0].abs() < X_LIMIT)


def observe(state: CartPoleState) -> torch.Tensor:
    """``[N, 4]`` what the agent sees: the physics, hidden variables zeroed
    (a tensor of its own, never the state's: a compiled step sees the same
    aliasing at every call, so it compiles once).
    """
    if isinstance(state.observed, torch.Tensor):
        return state.physics * state.observed
    return state.physics.clone()


class CartPole(Env):
    """Balance a pole on a cart by pushing it left (0) or right (1).

    ``config`` (each constant a number or a ``[low, high]`` range drawn per
    env): ``gravity`` 9.8 m/s^2, ``masscart`` 1.0 kg, ``masspole`` 0.1 kg,
    ``length`` 0.5 m (half the pole), ``force_mag`` 10 N, ``tau`` 0.02 s;
    ``init_low``/``init_high`` -0.05/0.05, the uniform range of every state
    variable at reset; ``hide_velocities`` (False): observe 0 in place of
    ``x_dot`` and ``theta_dot``, a partially observed task (the policy must
    infer velocities from a history of positions; success is measured on
    the true state, as without it).
    """

    observation_space = Box((4,))
    action_space = Discrete(2)
    eval_steps = 500
    default_config = {
        "gravity": 9.8,
        "masscart": 1.0,
        "masspole": 0.1,
        "length": 0.5,
        "force_mag": 10.0,
        "tau": 0.02,
        "init_low": -0.05,
        "init_high": 0.05,
        "hide_velocities": False,
    }

    def reset(
        self, key: torch.Tensor, num_envs: int, *, config: Mapping[str, Any] | None = None
    ) -> tuple[CartPoleState, torch.Tensor]:
        """See :meth:`rlstack.envs.Env.reset`."""
        config = self.resolve_config(config)
        check_positive(config, _CONSTANTS)
        low, high = config["init_low"], config["init_high"]
        if not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and low <= high):
            raise ValueError(
                f"`config['init_low']` must be <= `config['init_high']`, got {low!r} and {high!r}."
            )
        if not isinstance(config["hide_velocities"], bool):
            raise TypeError(
                f"`config['hide_velocities']` must be a bool, got {config['hide_velocities']!r}."
            )
        init_key, constants_key = random.split(key)
        physics = random.uniform(init_key, (num_envs, 4), low=float(low), high=float(high))
        observed = (
            torch.tensor([1.0, 0.0, 1.0, 0.0], device=physics.device)
            if config["hide_velocities"]
            else ()
        )
        state = CartPoleState(
            physics, sample_constants(constants_key, config, _CONSTANTS, num_envs), observed
        )
        return state, observe(state)

    def step(self, key: torch.Tensor, state: CartPoleState, action: torch.Tensor) -> StepResult:
        """See :meth:`rlstack.envs.Env.step`."""
        c = state.constants
        x, x_dot, theta, theta_dot = state.physics.unbind(-1)
        force = torch.where(action == 1, c["force_mag"], -c["force_mag"])
        total_mass = c["masspole"] + c["masscart"]
        polemass_length = c["masspole"] * c["length"]
        cos, sin = torch.cos(theta), torch.sin(theta)
        temp = (force + polemass_length * theta_dot**2 * sin) / total_mass
        theta_acc = (c["gravity"] * sin - cos * temp) / (
            c["length"] * (4.0 / 3.0 - c["masspole"] * cos**2 / total_mass)
        )
        x_acc = temp - polemass_length * theta_acc * cos / total_mass
        tau = c["tau"]
        physics = torch.stack(
            [
                x + tau * x_dot,
                x_dot + tau * x_acc,
                theta + tau * theta_dot,
                theta_dot + tau * theta_acc,
            ],
            dim=-1,
        )
        reward = torch.where(in_bounds(physics), 1.0, -1.0)
        state = CartPoleState(physics, c, state.observed)
        return self.no_episode_ends(state, observe(state), reward)

    def render_frame(self, state: CartPoleState, index: int = 0) -> Any:
        """Env ``index`` of ``state`` drawn (``[H, W, 3]`` uint8, :mod:`rlstack.envs.drawing`)."""
        x, _, theta, _ = state.physics[index].tolist()
        return drawing.cartpole(x, theta)

    def success(
        self,
        act,
        *,
        num_envs: int = 1024,
        config: Mapping[str, Any] | None = None,
        key: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """``success/balanced``: fraction of envs kept within gymnasium's bounds
        for all 500 steps (CartPole-v1's full episode).
        """
        key = random.key(0) if key is None else key
        balanced = torch.ones(num_envs, dtype=torch.bool, device=key.device)
        total = torch.zeros(num_envs, device=key.device)
        for state, _, reward in self.run_policy(act, num_envs=num_envs, config=config, key=key):
            balanced &= in_bounds(state.physics)
            total += reward
        return {
            "success/balanced": balanced.float().mean().item(),
            "success/reward_per_step": (total.mean() / self.eval_steps).item(),
        }
