"""The pure API in one place: env-agnostic learning functions and records.

Examples:
    >>> from rlstack.functional import gae, ppo_loss, make_rollout, make_update
"""

from .core.optim import (
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
from .core.schedules import linear_anneal
from .core.torch_optimizers import from_torch
from .core.types import Batch, RolloutCarry, Trajectory, Transition
from .learn.loss import gae, make_ppo_loss, ppo_loss, prepare_batch, value_loss_terms
from .learn.optimizer import make_optimizer
from .learn.rollout import make_rollout
from .learn.stats import trajectory_stats
from .learn.transforms import Staged, compiled, over_members
from .learn.update import make_update

__all__ = [
    "gae",
    "ppo_loss",
    "value_loss_terms",
    "prepare_batch",
    "linear_anneal",
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
