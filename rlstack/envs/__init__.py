"""Built-in pure, batched envs."""

from ._base import Env
from .dummy import ContinuousDummyEnv, DiscreteDummyEnv

BUILTIN_ENVS = {
    "DiscreteDummyEnv": DiscreteDummyEnv,
    "ContinuousDummyEnv": ContinuousDummyEnv,
}

__all__ = ["Env", "DiscreteDummyEnv", "ContinuousDummyEnv", "BUILTIN_ENVS"]
