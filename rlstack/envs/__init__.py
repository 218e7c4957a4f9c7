"""Built-in pure, batched envs."""

from ._base import Env
from .cartpole import CartPole
from .dummy import ContinuousDummyEnv, DiscreteDummyEnv
from .mountain_car import MountainCar
from .pendulum import Pendulum

BUILTIN_ENVS = {
    "DiscreteDummyEnv": DiscreteDummyEnv,
    "ContinuousDummyEnv": ContinuousDummyEnv,
    "CartPole": CartPole,
    "Pendulum": Pendulum,
    "MountainCar": MountainCar,
}

__all__ = ["Env", "DiscreteDummyEnv", "ContinuousDummyEnv", "CartPole", "Pendulum", "MountainCar", "BUILTIN_ENVS"]
