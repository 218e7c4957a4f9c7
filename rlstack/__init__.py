"""rlstack: fast PPO for massively parallel, infinite-horizon environments.

Pure functions (env reset/step, policy apply, GAE, PPO loss, optimizer step)
composed into compiled ``rollout``/``update`` functions, under a thin
stateful shell (``Algorithm``, ``Trainer``) that logs to MLflow.
"""

from .integrations import openmp

# Before anything imports torch: libgomp reads its wait policy once, when torch loads it.
openmp.spin_briefly()

from . import conditions, distributions, env, envs, functional, models, nn, optim, spaces
from .core.config import AlgorithmConfig
from .core.version import __version__ as __version__
from .policy.distributions import Categorical, Distribution, Normal, SquashedNormal
from .policy.policy import Policy, RecurrentPolicy
from .shell.algorithm import Algorithm
from .shell.population import Population, grid
from .shell.recurrent import RecurrentAlgorithm, RecurrentTrainer
from .shell.trainer import Trainer

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
]
