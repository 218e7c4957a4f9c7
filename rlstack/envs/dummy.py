"""rlstack 1.x's dummy envs as pure functions: a point on a line.

The state is a position ``x`` (``[N, 1]`` float32, observed as is), drawn
uniformly from ``[-bounds, bounds]`` on reset. The reward is ``-|x|`` after
the move, so the optimal policy drives every point to the origin and keeps it
there. ``DiscreteDummyEnv`` moves by exactly one unit left (action 0) or right
(action 1); ``ContinuousDummyEnv`` moves by the action itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from ..core import random
from ..core.spaces import Box, Discrete
from ._base import Env, StepResult


class _DummyEnv(Env):
    observation_space = Box((1,))
    default_config = {"bounds": 100.0}

    def reset(
        self, key: torch.Tensor, num_envs: int, *, config: Mapping[str, Any] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions uniform in ``[-bounds, bounds]``; state = obs ``[N, 1]``.

        ``config["bounds"]``: positive float, half-width of the start range.
        """
        bounds = self.resolve_config(config)["bounds"]
        if not isinstance(bounds, (int, float)) or not (0 < bounds < math.inf):
            raise ValueError(
                f"`config['bounds']` must be a positive finite number, got {bounds!r}."
            )
        x = random.uniform(key, (num_envs, 1), low=-float(bounds), high=float(bounds))
        return x, x

    @staticmethod
    def _reward(x: torch.Tensor) -> torch.Tensor:
        return -x.abs().squeeze(-1)

    def success(
        self,
        act,
        *,
        num_envs: int = 1024,
        config: Mapping[str, Any] | None = None,
        key: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """Adds ``success/at_origin``: the fraction of envs within one unit of
        the origin after ``eval_steps`` (200) steps, enough to cross
        ``[-100, 100]`` at one unit per step.
        """
        total = 0.0
        key = random.key(0) if key is None else key
        steps = self.run_policy(act, num_envs=num_envs, config=config, key=key)
        for _, obs, reward in steps:  # noqa: B007 (the last observations are read below)
            total = total + reward
        return {
            "success/reward_per_step": (total.mean() / self.eval_steps).item(),
            "success/at_origin": (obs.abs() <= 1.0).float().mean().item(),
        }


class DiscreteDummyEnv(_DummyEnv):
    """Move one unit left (action 0) or right (action 1).

    Action space ``Discrete(2, shape=(1,))`` as in rlstack 1.x; reward
    ``-|x|``, in position units per step.

    Examples:
        >>> env = DiscreteDummyEnv()
        >>> from rlstack import random
        >>> state, obs = env.reset(random.key(0), 4)
        >>> state, obs, reward, terminated, truncated = env.step(random.key(1), state, torch.ones(4,
        1, dtype=torch.int64))
        >>> reward.shape
        torch.Size([4])
    """

    action_space = Discrete(2, shape=(1,))

    def step(self, key: torch.Tensor, state: torch.Tensor, action: torch.Tensor) -> StepResult:
        """See :meth:`rlstack.envs.Env.step`."""
        x = state + (2 * action - 1).to(state.dtype)
        return self.no_episode_ends(x, x, self._reward(x))


class ContinuousDummyEnv(_DummyEnv):
    """Move by the action: ``x <- x + a``, ``a`` in ``Box((1,))``; reward ``-|x|``."""

    action_space = Box((1,))

    def step(self, key: torch.Tensor, state: torch.Tensor, action: torch.Tensor) -> StepResult:
        """See :meth:`rlstack.envs.Env.step`."""
        x = state + action.to(state.dtype)
        return self.no_episode_ends(x, x, self._reward(x))
