"""The pure API in one place: env-agnostic learning functions and records.

Examples:
    >>> from rlstack.functional import gae, ppo_loss, make_rollout, make_update
"""

from .optim import Optimizer, adam, adamw, clip_by_global_norm, from_torch, sgd
from .ppo import gae, make_update, ppo_loss, prepare_batch
from .rollout import make_rollout, trajectory_stats
from .types import Batch, RolloutCarry, Trajectory, Transition, UpdateCoeffs

__all__ = [
    "gae",
    "ppo_loss",
    "prepare_batch",
    "make_rollout",
    "make_update",
    "trajectory_stats",
    "Optimizer",
    "adam",
    "adamw",
    "sgd",
    "clip_by_global_norm",
    "from_torch",
    "Batch",
    "RolloutCarry",
    "Trajectory",
    "Transition",
    "UpdateCoeffs",
]
