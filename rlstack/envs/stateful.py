"""rlstack 1.x stateful envs, presented as pure-looking :class:`Env` instances.

A 1.x env is a class ``cls(num_envs, horizon, config=, device=)`` with
``reset(config=) -> obs`` and ``step(action) -> {"obs", "rewards"}`` and
torchrl-like ``observation_spec``/``action_spec``. :class:`StatefulEnvAdapter`
wraps one; it runs eagerly (never compiled).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import optree
import torch

from ..core.spaces import Box, Discrete, Space
from ._base import Env, StepResult, check_num_envs


def space_from_spec(spec: Any, name: str = "spec") -> Space:
    """Read a torchrl-like tensor spec by duck typing into a space.

    Discrete specs are recognised by a number of categories (``spec.n`` or
    ``spec.space.n``); anything else with a floating dtype becomes a ``Box``
    (bounds from ``spec.space.low/high`` when present). Composite specs
    (mapping-like with ``keys()``) become dicts of spaces.

    Raises:
        TypeError: if the spec has no ``shape``/``dtype``.
    """
    if hasattr(spec, "keys") and not hasattr(spec, "dtype"):
        return {k: space_from_spec(spec[k], f"{name}[{k!r}]") for k in spec.keys()}  # noqa: SIM118 (a spec, not a dict)
    if not hasattr(spec, "shape") or not hasattr(spec, "dtype"):
        raise TypeError(
            f"`{name}` must have `shape` and `dtype` (a torchrl-like spec), got {spec!r}."
        )
    shape = tuple(int(d) for d in spec.shape)
    n = getattr(spec, "n", None) or getattr(getattr(spec, "space", None), "n", None)
    if n is not None:
        return Discrete(int(n), shape=shape)
    low, high = -math.inf, math.inf
    box = getattr(spec, "space", None)
    if box is not None and hasattr(box, "low") and hasattr(box, "high"):
        low = float(torch.as_tensor(box.low).min())
        high = float(torch.as_tensor(box.high).max())
    dtype = spec.dtype if spec.dtype.is_floating_point else torch.float32
    return Box(shape, low=low, high=high, dtype=dtype)


class StatefulEnvAdapter(Env):
    """Presents an rlstack 1.x stateful env class as a pure-looking :class:`Env`.

    The wrapped instance keeps the real state; the adapter's ``state`` is a
    placeholder 0-d tensor. It is not pure, so it is never compiled
    (``compilable = False``) and cannot be vmapped. Observations are cloned so
    that envs that update their state tensor in place (as 1.x's dummy envs
    did) do not rewrite stored trajectories.
    """

    compilable = False

    def __init__(
        self,
        env_cls: type,
        num_envs: int,
        horizon: int | None = None,
        *,
        config: Mapping[str, Any] | None = None,
        device: Any = "cpu",
    ) -> None:
        self.env_cls = env_cls
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.env = env_cls(num_envs, horizon, config=dict(config or {}), device=device)
        for attr in ("observation_spec", "action_spec"):
            if not hasattr(self.env, attr):
                raise TypeError(f"1.x env {env_cls.__name__} has no `{attr}`.")
        self.observation_space = space_from_spec(self.env.observation_spec, "observation_spec")
        self.action_space = space_from_spec(self.env.action_spec, "action_spec")

    def reset(
        self, key: torch.Tensor, num_envs: int, *, config: Mapping[str, Any] | None = None
    ) -> tuple[Any, Any]:
        """Reset the wrapped env (its own randomness: ``key`` is unused)."""
        check_num_envs(num_envs, self.num_envs, "1.x env (fixed at construction)")
        obs = self.env.reset(config=dict(config) if config else None)
        return torch.zeros((), device=self.device), optree.tree_map(torch.clone, obs)

    def step(self, key: torch.Tensor, state: Any, action: Any) -> StepResult:
        """Step the wrapped env (its own randomness: ``key`` is unused)."""
        out = self.env.step(action)
        obs = optree.tree_map(torch.clone, out["obs"])
        reward = torch.as_tensor(out["rewards"]).reshape(self.num_envs).clone()
        return self.no_episode_ends(state, obs, reward)

    def __repr__(self) -> str:
        return f"StatefulEnvAdapter({self.env_cls.__name__})"
