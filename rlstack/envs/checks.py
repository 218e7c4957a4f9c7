"""Turning what a user passes as ``env`` into an :class:`Env`
(:func:`make_env`), and checking an env against the protocol
(:func:`check_env`).

Two kinds of env are accepted wherever rlstack takes an env:

* a pure :class:`Env` (an instance, or a subclass whose ``reset`` takes
  ``num_envs``): ``reset(key, num_envs, *, config) -> (state, obs)`` and
  ``step(key, state, action) -> (state, obs, reward, terminated,
  truncated)``, randomness drawn only from the keys
  (:mod:`rlstack.core.random`); or a factory with ``build_env`` (gymnasium);
* an rlstack 1.x style stateful class, wrapped by
  :class:`~rlstack.envs.stateful.StatefulEnvAdapter`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import optree
import torch

from ..core import random
from ..core.spaces import describe_mismatch, is_space, sample
from ._base import Env
from .stateful import StatefulEnvAdapter


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
    ``build_env(*, num_envs, device)``, and ``config=`` where a ``config``
    is given, such as
    :class:`rlstack.integrations.gymnasium_adapter.gymnasium_env`) builds one; any other
    class is treated as an rlstack 1.x stateful env and wrapped in
    :class:`StatefulEnvAdapter`.

    Raises:
        TypeError: if ``env`` is none of these.
        ValueError: for an instance built for another ``num_envs``.
    """
    if not isinstance(env, type) and callable(getattr(env, "build_env", None)):
        if config:  # a factory's options (gymnasium.make's keyword arguments)
            return env.build_env(num_envs=num_envs, device=device, config=config)
        return env.build_env(num_envs=num_envs, device=device)
    if not isinstance(env, type) and getattr(env, "num_envs", num_envs) != num_envs:
        raise ValueError(
            f"`env` {env!r} simulates {env.num_envs} envs, but `num_envs` is {num_envs}."
        )
    if isinstance(env, type):
        if _is_pure_env_class(env):
            return env()
        if callable(getattr(env, "reset", None)) and callable(getattr(env, "step", None)):
            return StatefulEnvAdapter(env, num_envs, horizon, config=config, device=device)
    elif all(hasattr(env, a) for a in ("reset", "step", "observation_space", "action_space")):
        return env
    raise TypeError(
        "`env` must be a pure env (an rlstack.envs.Env instance or subclass) or an "
        f"rlstack 1.x style env class with `reset` and `step`, got {env!r}."
    )


def env_defaults(env: Any) -> dict[str, Any]:
    """The hyperparameter defaults that fit ``env``, in place of rlstack
    1.x's where the user sets none: ``num_envs`` of an env built for a count
    (a vector env's instance) or an env factory's ``default_num_envs``, and
    ``horizons_per_env_reset = -1`` (never reset on a schedule) for an
    episodic env, which resets each sub-env where its episode ends (1.x's
    schedule would cut episodes into ``horizon``-step pieces).

    Examples:
        >>> from rlstack.envs import CartPoleV1, CartPole
        >>> env_defaults(CartPoleV1), env_defaults(CartPole)
        ({'horizons_per_env_reset': -1}, {})
    """
    defaults: dict[str, Any] = {}
    built_for = (
        getattr(env, "default_num_envs", None)
        if callable(getattr(env, "build_env", None))
        else (None if isinstance(env, type) else getattr(env, "num_envs", None))
    )
    if isinstance(built_for, int) and not isinstance(built_for, bool):
        defaults["num_envs"] = built_for
    if getattr(env, "episodic", False) is True:
        defaults["horizons_per_env_reset"] = -1
    return defaults


def _clone_tree(tree: Any) -> Any:
    return optree.tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, tree)


def _trees_equal(a: Any, b: Any) -> bool:
    leaves_a, spec_a = optree.tree_flatten(a)
    leaves_b, spec_b = optree.tree_flatten(b)
    if spec_a != spec_b:
        return False
    return all(
        torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
        for x, y in zip(leaves_a, leaves_b, strict=True)
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
            raise TypeError(
                f"{name}.{attr} must be a Discrete, Box or dict of spaces, got "
                f"{getattr(env, attr, None)!r}."
            )
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
    new_state, obs, reward, terminated, truncated = _step_result(
        name, env.step(step_key, state, action), num_envs
    )
    _check_episode_ends(env, name, new_state, terminated | truncated, num_envs)
    why = describe_mismatch(env.observation_space, obs, (num_envs,))
    if why:
        raise ValueError(f"{name}.step returned an observation not in observation_space: {why}.")
    _check_reward(name, reward, num_envs)
    if env.compilable and not (
        _trees_equal(state, state_before) and _trees_equal(action, action_before)
    ):
        raise ValueError(
            f"{name}.step mutated its inputs; a pure env must return new tensors instead."
        )
    if check_compile and env.compilable:
        from torch._dynamo import explain

        explanation = explain(env.step)(step_key, new_state, action)
        if explanation.graph_break_count:
            raise ValueError(
                f"{name}.step has {explanation.graph_break_count} graph break(s) under "
                "torch.compile: "
                f"{[str(b.reason) for b in explanation.break_reasons]}"
            )


def _step_result(name: str, out: Any, num_envs: int) -> tuple:
    """``step``'s 5-tuple, its flags checked: ``[num_envs]`` bool tensors.

    Raises:
        TypeError: for another return or flags of another dtype or shape.
    """
    if not (isinstance(out, tuple) and len(out) == 5):
        got = f"a tuple of {len(out)}" if isinstance(out, tuple) else type(out).__name__
        hint = (
            " (an env whose episodes never end returns `self.no_episode_ends(state, obs, reward)`)"
            if (isinstance(out, tuple) and len(out) == 3)
            else ""
        )
        raise TypeError(
            f"{name}.step must return (state, obs, reward, terminated, truncated){hint}, got {got}."
        )
    for flag_name, flag in (("terminated", out[3]), ("truncated", out[4])):
        if (
            not isinstance(flag, torch.Tensor)
            or flag.dtype != torch.bool
            or tuple(flag.shape) != (num_envs,)
        ):
            got = (
                f"{flag.dtype} {list(flag.shape)}"
                if isinstance(flag, torch.Tensor)
                else type(flag).__name__
            )
            raise TypeError(
                f"{name}.step must return `{flag_name}` as a bool tensor of shape [{num_envs}], "
                f"got {got}."
            )
    return out


def _check_episode_ends(env: Env, name: str, state: Any, done: torch.Tensor, num_envs: int) -> None:
    """An episodic env's final observation fits its space; an env that ends
    episodes (``done`` ``[N]`` bool) says it is episodic.

    Raises:
        ValueError: naming what is wrong.
    """
    final = env.final_observation(state)
    if getattr(env, "episodic", False) is True:
        why = (
            describe_mismatch(env.observation_space, final, (num_envs,))
            if final is not None
            else "it is None"
        )
        if why:
            raise ValueError(f"{name}.final_observation is not in observation_space: {why}.")
    elif bool(done.any()) or final is not None:
        raise ValueError(
            f"{name} ends episodes (a True flag or a final_observation) but does not set `episodic "
            "= True`."
        )


def _check_reward(name: str, reward: Any, num_envs: int) -> None:
    """The reward is a ``[num_envs]`` floating tensor.

    Raises:
        TypeError, ValueError: for another type, dtype or shape.
    """
    if not isinstance(reward, torch.Tensor) or not reward.dtype.is_floating_point:
        raise TypeError(
            f"{name}.step must return a floating reward tensor, got "
            f"{getattr(reward, 'dtype', type(reward))}."
        )
    if tuple(reward.shape) != (num_envs,):
        raise ValueError(
            f"{name}.step reward must have shape [{num_envs}] ([num_envs]), got "
            f"{list(reward.shape)}."
        )
