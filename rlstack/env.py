"""rlstack 1.x's module for envs, kept so that 1.x imports keep working
(``from rlstack.env import DiscreteDummyEnv``). The code lives in
:mod:`rlstack.envs`: the env protocol (:class:`~rlstack.envs.Env`), the
built-in envs, :func:`~rlstack.envs.checks.make_env` and
:func:`~rlstack.envs.checks.check_env`, and the adapter for 1.x stateful envs
(:mod:`rlstack.envs.stateful`).
"""

from .envs import ContinuousDummyEnv, DiscreteDummyEnv, Env
from .envs.checks import check_env, make_env
from .envs.stateful import StatefulEnvAdapter, space_from_spec

__all__ = [
    "Env",
    "StatefulEnvAdapter",
    "check_env",
    "make_env",
    "space_from_spec",
    "DiscreteDummyEnv",
    "ContinuousDummyEnv",
]
