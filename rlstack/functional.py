"""The pure API in one place: env-agnostic learning functions and records.

Examples:
    >>> from rlstack.functional import gae, ppo_loss, make_rollout, make_update
"""

from .optim import (
    GradientTransformation,
    accumulate_gradients,
    adam,
    adamw,
    add_decayed_weights,
    apply_if_finite,
    apply_updates,
    chain,
    clip_by_global_norm,
    scale_by_adam,
    scale_by_learning_rate,
    sgd,
    trace,
)
from .ppo import gae, make_optimizer, make_ppo_loss, make_update, ppo_loss, prepare_batch
from .rollout import make_rollout, trajectory_stats
from .torch_optimizers import from_torch
from .transforms import Staged, compiled, over_members
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
    "Staged",
    "compiled",
    "over_members",
    "GradientTransformation",
    "accumulate_gradients",
    "adam",
    "adamw",
    "add_decayed_weights",
    "apply_if_finite",
    "apply_updates",
    "chain",
    "clip_by_global_norm",
    "from_torch",
    "scale_by_adam",
    "scale_by_learning_rate",
    "sgd",
    "trace",
    "Batch",
    "RolloutCarry",
    "Trajectory",
    "Transition",
]
