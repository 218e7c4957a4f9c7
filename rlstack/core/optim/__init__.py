"""Optimizers as optax-style gradient transformations, in plain torch.

A :class:`GradientTransformation` is a pair of pure functions:

* ``init(params) -> state``, a NamedTuple of tensors (``()`` for a
  transform that keeps none);
* ``update(grads, state, params) -> (updates, state)``.

``apply_updates(params, updates)`` adds the updates to the params, and
``chain(t1, t2, ...)`` feeds one transform's updates to the next as their
gradients. ``params``, ``grads`` and ``updates`` are ``dict[str, Tensor]``
of the same structure. Nothing is updated in place, no host sync happens
inside, and every state is a tree of tensors: the whole optimizer works
under ``torch.compile`` and ``torch.func.vmap``, and checkpoints as a list
of tensors.

The optimizers are chains of small transforms, as optax composes them:
:func:`adam` is ``chain(scale_by_adam(...), scale_by_learning_rate(lr))``
(with :func:`add_decayed_weights` before for an L2 penalty, after for
:func:`adamw`), :func:`sgd` is ``chain(add_decayed_weights, trace,
scale_by_learning_rate)``. Their arithmetic follows ``torch.optim.Adam``,
``AdamW`` and ``SGD`` (single-tensor, non-fused) to float rounding (tested
step for step; torch's kernels fuse ``param + lr * direction`` into one
rounding, which additive updates cannot). Translating a ``torch.optim``
class and its config is :mod:`rlstack.core.torch_optimizers`' job.

The learning rate lives in :func:`scale_by_learning_rate`'s state as a
0-d tensor: :func:`set_learning_rate` replaces it without rebuilding or
recompiling anything (:func:`adapt_learning_rate` does so from the KL,
rsl_rl's adaptive schedule), and a population of runs can hold one rate per
member. Given a schedule instead of a number, the rate is the schedule
evaluated on device at the transform's step count before each step (see
:mod:`rlstack.core.schedules`).

Counting follows optax: a count is the number of steps a transform has
applied. A step skipped by :func:`apply_if_finite` (or masked out by the
caller, as PPO's ``target_kl`` does) leaves the inner state, counts
included, as it was.
"""

from __future__ import annotations

from .base import (
    AccumulateState,
    ApplyIfFiniteState,
    ClipByGlobalNormState,
    GradientTransformation,
    LearningRate,
    ScaleByAdamState,
    ScaleByLearningRateState,
    Schedule,
    TraceState,
    apply_updates,
    chain,
    global_norm,
)
from .transforms import (
    adam,
    adamw,
    add_decayed_weights,
    clip_by_global_norm,
    scale_by_adam,
    scale_by_learning_rate,
    sgd,
    trace,
)
from .wrappers import (
    accumulate_gradients,
    adapt_learning_rate,
    apply_if_finite,
    learning_rate,
    set_learning_rate,
    step_count,
    tree_select,
)

__all__ = [
    "AccumulateState",
    "ApplyIfFiniteState",
    "ClipByGlobalNormState",
    "GradientTransformation",
    "LearningRate",
    "ScaleByAdamState",
    "ScaleByLearningRateState",
    "Schedule",
    "TraceState",
    "accumulate_gradients",
    "adapt_learning_rate",
    "adam",
    "adamw",
    "add_decayed_weights",
    "apply_if_finite",
    "apply_updates",
    "chain",
    "clip_by_global_norm",
    "global_norm",
    "learning_rate",
    "scale_by_adam",
    "scale_by_learning_rate",
    "set_learning_rate",
    "sgd",
    "step_count",
    "trace",
    "tree_select",
]
