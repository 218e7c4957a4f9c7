"""rlstack: fast PPO for massively parallel, infinite-horizon environments.

Pure functions (env reset/step, policy apply, GAE, PPO loss, optimizer step)
composed into compiled ``rollout``/``update`` functions, under a thin
stateful shell (``Algorithm``, ``Trainer``) that logs to MLflow.
"""

from importlib.metadata import PackageNotFoundError, version

from . import conditions, distributions, env, envs, functional, models, nn, optim, spaces, windows
from .algorithm import Algorithm
from .config import AlgorithmConfig
from .distributions import Categorical, Distribution, Normal, SquashedNormal
from .policy import Policy, RecurrentPolicy
from .population import Population, grid
from .recurrent import RecurrentAlgorithm
from .trainer import RecurrentTrainer, Trainer

try:
    __version__ = version("rlstack")
except PackageNotFoundError:  # running from a source tree
    __version__ = "2.0.0.dev0"

__all__ = [
    "Algorithm",
    "AlgorithmConfig",
    "Trainer",
    "RecurrentAlgorithm",
    "RecurrentTrainer",
    "Population",
    "grid",
    "Policy",
    "RecurrentPolicy",
    "Distribution",
    "Categorical",
    "Normal",
    "SquashedNormal",
    "conditions",
    "distributions",
    "env",
    "envs",
    "functional",
    "models",
    "nn",
    "optim",
    "spaces",
    "windows",
]
