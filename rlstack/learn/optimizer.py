"""PPO's optimizer for a config: clipping, the torch.optim twin, schedules keyed on env
transitions, and accumulation over an epoch's minibatches (:func:`make_optimizer`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..core import optim
from ..core.config import AlgorithmConfig
from ..core.optim import Schedule
from ..core.schedules import by_optimizer_steps, device_schedule
from ..core.torch_optimizers import from_torch


def minibatches_per_epoch(config: AlgorithmConfig) -> int:
    """Minibatches an epoch of the update is cut into."""
    return config.num_envs * config.horizon // config.minibatch_size


def steps_per_update(config: AlgorithmConfig) -> int:
    """Optimizer steps one update takes (when ``target_kl`` stops none):
    one per minibatch per epoch, or one per epoch with ``accumulate_grads``.
    """
    return config.num_sgd_iters * (1 if config.accumulate_grads else minibatches_per_epoch(config))


def _by_steps(config: AlgorithmConfig, schedule: Any, kind: str) -> Schedule:
    """A schedule of env transitions (rlstack 1.x's) as one of optimizer steps."""
    return by_optimizer_steps(
        device_schedule(schedule, kind),
        steps_per_update=steps_per_update(config),
        transitions_per_update=config.num_envs * config.horizon,
    )


def make_optimizer(
    config: AlgorithmConfig,
    optimizer_cls: type = torch.optim.Adam,
    optimizer_config: Mapping[str, Any] | None = None,
) -> optim.GradientTransformation:
    """PPO's optimizer for a config: ``apply_if_finite(chain(
    clip_by_global_norm(max_grad_norm), <torch.optim twin>))``, with the
    learning rate following ``lr_schedule`` (keyed on env transitions, see
    :func:`rlstack.core.schedules.by_optimizer_steps`) when the config has one,
    else ``optimizer_config['lr']``. With ``accumulate_grads`` it is wrapped
    in :func:`~rlstack.core.optim.accumulate_gradients` over the
    minibatches of an epoch: one step per epoch, on their mean gradient.

    Raises:
        ValueError: see :func:`rlstack.core.torch_optimizers.torch_optimizer_options`.
    """
    learning_rate = None
    if config.lr_schedule is not None:
        learning_rate = _by_steps(config, config.lr_schedule, config.lr_schedule_kind)
    base = from_torch(optimizer_cls, optimizer_config, learning_rate=learning_rate)
    optimizer = optim.apply_if_finite(
        optim.chain(optim.clip_by_global_norm(config.max_grad_norm), base)
    )
    if config.accumulate_grads:
        return optim.accumulate_gradients(optimizer, every_k=minibatches_per_epoch(config))
    return optimizer
