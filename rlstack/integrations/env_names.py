"""Envs by name: the names the CLI, TOML files, checkpoints and exports use.

A built-in env's name (or its class's, as exports record it), ``gymnasium:ID``
for a gymnasium env id, ``envpool:ID`` for an EnvPool task, ``module:Class``
for a user's env class, or ``module:factory`` for a function
``factory(num_envs=, device=)`` that makes an env following rsl_rl's
``VecEnv`` protocol (Isaac Lab, ManiSkill3, mjlab; see
:func:`rlstack.integrations.rsl_rl_adapter.rsl_rl_env`). A ``module`` is
found as ``python -m`` finds it: the working directory first.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any

from ..envs import BUILTIN_ENVS


def load_env(name: str) -> Any:
    """The env (class, instance or factory) a name stands for.

    Raises:
        ValueError: for an unknown name or a module that cannot be imported,
            naming ``env`` and the forms it takes.
    """
    if name in BUILTIN_ENVS:
        return BUILTIN_ENVS[name]
    by_class = {cls.__name__: cls for cls in BUILTIN_ENVS.values()}  # what exports record
    if name in by_class:
        return by_class[name]
    if name.startswith("gymnasium:"):
        from .gymnasium_adapter import gymnasium_env

        return gymnasium_env(name.partition(":")[2])
    if name.startswith("envpool:"):
        from .envpool_adapter import envpool_env

        return envpool_env(name.partition(":")[2])
    if ":" not in name:
        raise ValueError(
            f"--env must be one of {sorted(BUILTIN_ENVS)}, gymnasium:ID, envpool:ID, "
            f"'module:Class' or 'module:factory', got {name!r}."
        )
    module_name, _, attr = name.partition(":")
    try:
        env = getattr(_import(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(
            f"--env {name!r} could not be loaded: {e} (modules are found as `python -m` "
            "finds them: the working directory first)."
        ) from e
    if inspect.isfunction(env):  # a function making an env that follows rsl_rl's VecEnv protocol
        from .rsl_rl_adapter import rsl_rl_env

        return rsl_rl_env(env)
    return env


def _import(module_name: str) -> Any:
    """Import ``module_name`` with the working directory searched first, as
    ``python -m`` does (a console script's ``sys.path`` lacks it).
    """
    cwd = os.getcwd()
    if cwd in sys.path or "" in sys.path:
        return importlib.import_module(module_name)
    sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    finally:
        sys.path.remove(cwd)
