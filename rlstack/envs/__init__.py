"""Envs: the protocol (:class:`Env`), built-in pure batched envs,
:func:`make_env` / :func:`check_env`, and the adapter for rlstack 1.x stateful envs.
"""

from ._base import Env, StepResult
from .cartpole import CartPole
from .checks import check_env, env_defaults, make_env
from .dummy import ContinuousDummyEnv, DiscreteDummyEnv
from .episodic import CartPoleV1, MountainCarV0, PendulumV1
from .mountain_car import MountainCar
from .pendulum import Pendulum

BUILTIN_ENVS = {
    "DiscreteDummyEnv": DiscreteDummyEnv,
    "ContinuousDummyEnv": ContinuousDummyEnv,
    "CartPole": CartPole,
    "Pendulum": Pendulum,
    "MountainCar": MountainCar,
    # gymnasium's episodic tasks (termination, time limits, rewards):
    "CartPole-v1": CartPoleV1,
    "Pendulum-v1": PendulumV1,
    "MountainCar-v0": MountainCarV0,
}

__all__ = [
    "Env",
    "StepResult",
    "check_env",
    "make_env",
    "DiscreteDummyEnv",
    "ContinuousDummyEnv",
    "CartPole",
    "Pendulum",
    "MountainCar",
    "CartPoleV1",
    "PendulumV1",
    "MountainCarV0",
    "BUILTIN_ENVS",
    "env_defaults",
]
