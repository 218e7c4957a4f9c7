"""The pure API in one place: env-agnostic learning functions and records.

Examples:
    >>> from rlstack.functional import gae, ppo_loss, make_rollout, make_update
"""

from .optim import (
    GradientTransformation,
    accumulate_gradients,
    adam,
    adamw,
    apply_if_finite,
    apply_updates,
    chain,
    clip_by_global_norm,
    from_torch,
    sgd,
)
from .ppo import gae, make_optimizer, make_ppo_loss, make_update, ppo_loss, prepare_batch
from .rollout import make_rollout, trajectory_stats
from .types import Batch, RolloutCarry, Trajectory, Transition

__all__ = [
    "gae",
    "ppo_loss",
    "prepare_batch",
    "make_rollout",
    "make_optimizer",
    "make_ppo_loss",
    "make_update",
    "trajectory_stats",
    "GradientTransformation",
    "accumulate_gradients",
    "adam",
    "adamw",
    "apply_if_finite",
    "apply_updates",
    "chain",
    "clip_by_global_norm",
    "from_torch",
    "sgd",
    "Batch",
    "RolloutCarry",
    "Trajectory",
    "Transition",
]
