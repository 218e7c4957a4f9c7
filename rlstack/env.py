"""The env protocol, the adapter for rlstack 1.x stateful envs, and ``check_env``.

Two kinds of env are accepted wherever rlstack takes an env:

* a pure :class:`Env` (an instance, or a subclass whose ``reset`` takes
  ``num_envs``): ``reset(key, num_envs, *, config) -> (state, obs)`` and
  ``step(state, action, key) -> (state, obs, reward)``, randomness drawn
  only from the keys (:mod:`rlstack.random`);
* an rlstack 1.x style stateful class, ``cls(num_envs, horizon, config=,
  device=)`` with ``reset(config=) -> obs`` and ``step(action) -> {"obs",
  "rewards"}`` and torchrl-like ``observation_spec``/``action_spec``. It is
  wrapped by :class:`StatefulEnvAdapter` and runs eagerly (never compiled).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Mapping

import optree
import torch

from .envs import ContinuousDummyEnv, DiscreteDummyEnv, Env
from .spaces import Box, Discrete, Space, describe_mismatch, is_space, sample

__all__ = [
    "Env",
    "StatefulEnvAdapter",
    "check_env",
    "make_env",
    "space_from_spec",
    "DiscreteDummyEnv",
    "ContinuousDummyEnv",
]


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
        return {k: space_from_spec(spec[k], f"{name}[{k!r}]") for k in spec.keys()}
    if not hasattr(spec, "shape") or not hasattr(spec, "dtype"):
        raise TypeError(f"`{name}` must have `shape` and `dtype` (a torchrl-like spec), got {spec!r}.")
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

    def reset(self, key: torch.Tensor, num_envs: int, *, config: Mapping[str, Any] | None = None) -> tuple[Any, Any]:
        """Reset the wrapped env (its own randomness: ``key`` is unused)."""
        if num_envs != self.num_envs:
            raise ValueError(f"`num_envs` must be {self.num_envs} for this 1.x env (fixed at construction), got {num_envs}.")
        obs = self.env.reset(config=dict(config) if config else None)
        return torch.zeros((), device=self.device), optree.tree_map(torch.clone, obs)

    def step(self, state: Any, action: Any, key: torch.Tensor) -> tuple[Any, Any, torch.Tensor]:
        """Step the wrapped env (its own randomness: ``key`` is unused)."""
        out = self.env.step(action)
        obs = optree.tree_map(torch.clone, out["obs"])
        reward = torch.as_tensor(out["rewards"]).reshape(self.num_envs).clone()
        return state, obs, reward

    def __repr__(self) -> str:
        return f"StatefulEnvAdapter({self.env_cls.__name__})"


def _is_pure_env_class(cls: type) -> bool:
    return issubclass(cls, Env) and "num_envs" in inspect.signature(cls.reset).parameters


def make_env(
    env: Any,
    *,
    num_envs: int,
    horizon: int | None = None,
    config: Mapping[str, Any] | None = None,
    device: Any = "cpu",
) -> Env:
    """Turn what a user passed as ``env`` into an :class:`Env` instance.

    A pure env instance is returned as is; a pure env class is instantiated
    with no arguments; an env factory (an object with
    ``build_env(*, num_envs, device)``, such as
    :class:`rlstack.gymnasium_adapter.gymnasium_env`) builds one; any other
    class is treated as an rlstack 1.x stateful env and wrapped in
    :class:`StatefulEnvAdapter`.

    Raises:
        TypeError: if ``env`` is none of these.
        ValueError: for an instance built for another ``num_envs``.
    """
    if not isinstance(env, type) and callable(getattr(env, "build_env", None)):
        return env.build_env(num_envs=num_envs, device=device)
    if not isinstance(env, type) and getattr(env, "num_envs", num_envs) != num_envs:
        raise ValueError(f"`env` {env!r} simulates {env.num_envs} envs, but `num_envs` is {num_envs}.")
    if isinstance(env, type):
        if _is_pure_env_class(env):
            return env()
        if callable(getattr(env, "reset", None)) and callable(getattr(env, "step", None)):
            return StatefulEnvAdapter(env, num_envs, horizon, config=config, device=device)
    elif all(hasattr(env, a) for a in ("reset", "step", "observation_space", "action_space")):
        return env
    raise TypeError(
        "`env` must be a pure env (an rlstack.env.Env instance or subclass) or an "
        f"rlstack 1.x style env class with `reset` and `step`, got {env!r}."
    )


def _clone_tree(tree: Any) -> Any:
    return optree.tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, tree)


def _trees_equal(a: Any, b: Any) -> bool:
    leaves_a, spec_a = optree.tree_flatten(a)
    leaves_b, spec_b = optree.tree_flatten(b)
    if spec_a != spec_b:
        return False
    return all(
        torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y for x, y in zip(leaves_a, leaves_b)
    )


def check_env(
    env: Env,
    *,
    num_envs: int = 4,
    config: Mapping[str, Any] | None = None,
    device: Any = "cpu",
    check_compile: bool = False,
) -> None:
    """Validate an env: spaces, shapes and dtypes of ``reset``/``step``,
    purity (inputs left unchanged) and, optionally, that ``step`` compiles
    with no graph break.

    Raises:
        TypeError: if the spaces are not spaces, or an output has the wrong
            type or dtype.
        ValueError: if an output has the wrong shape or is impure.
    """
    name = type(env).__name__
    for attr in ("observation_space", "action_space"):
        if not is_space(getattr(env, attr, None)):
            raise TypeError(f"{name}.{attr} must be a Discrete, Box or dict of spaces, got {getattr(env, attr, None)!r}.")
    from . import random

    reset_key, action_key, step_key = random.split(random.key(0, device), 3)
    out = env.reset(reset_key, num_envs, config=config)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(f"{name}.reset must return (state, obs), got {type(out).__name__}.")
    state, obs = out
    why = describe_mismatch(env.observation_space, obs, (num_envs,))
    if why:
        raise ValueError(f"{name}.reset returned an observation not in observation_space: {why}.")
    action = sample(env.action_space, (num_envs,), key=action_key)
    state_before, action_before = _clone_tree(state), _clone_tree(action)
    out = env.step(state, action, step_key)
    episodic = bool(getattr(env, "episodic", False))
    expected = "(state, obs, reward, terminated, truncated)" if episodic else "(state, obs, reward)"
    if not (isinstance(out, tuple) and len(out) == (5 if episodic else 3)):
        got = f"a tuple of {len(out)}" if isinstance(out, tuple) else type(out).__name__
        raise TypeError(f"{name}.step must return {expected}" + (" (it is episodic)" if episodic else "") + f", got {got}.")
    new_state, obs, reward = out[:3]
    if episodic:
        for flag_name, flag in zip(("terminated", "truncated"), out[3:]):
            if not isinstance(flag, torch.Tensor) or flag.dtype != torch.bool or tuple(flag.shape) != (num_envs,):
                got = f"{flag.dtype} {list(flag.shape)}" if isinstance(flag, torch.Tensor) else type(flag).__name__
                raise TypeError(f"{name}.step must return `{flag_name}` as a bool tensor of shape [{num_envs}], got {got}.")
        why = describe_mismatch(env.observation_space, env.final_observation(new_state), (num_envs,))
        if why:
            raise ValueError(f"{name}.final_observation is not in observation_space: {why}.")
    why = describe_mismatch(env.observation_space, obs, (num_envs,))
    if why:
        raise ValueError(f"{name}.step returned an observation not in observation_space: {why}.")
    if not isinstance(reward, torch.Tensor) or not reward.dtype.is_floating_point:
        raise TypeError(f"{name}.step must return a floating reward tensor, got {getattr(reward, 'dtype', type(reward))}.")
    if tuple(reward.shape) != (num_envs,):
        raise ValueError(f"{name}.step reward must have shape [{num_envs}] ([num_envs]), got {list(reward.shape)}.")
    if env.compilable and not (_trees_equal(state, state_before) and _trees_equal(action, action_before)):
        raise ValueError(f"{name}.step mutated its inputs; a pure env must return new tensors instead.")
    if check_compile and env.compilable:
        from torch._dynamo import explain

        explanation = explain(env.step)(new_state, action, step_key)
        if explanation.graph_break_count:
            raise ValueError(
                f"{name}.step has {explanation.graph_break_count} graph break(s) under torch.compile: "
                f"{[str(b.reason) for b in explanation.break_reasons]}"
            )
