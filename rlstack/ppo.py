"""PPO's pure pieces under one name: the mathematics (:mod:`rlstack.loss`:
``gae``, ``ppo_loss``, ``make_ppo_loss``, ``prepare_batch``) and the update
(:mod:`rlstack.update`: ``make_optimizer``, ``make_update``).

Time-major shapes: ``T`` steps, ``N`` envs, ``B`` transitions in a flat batch.
"""

from __future__ import annotations

from .loss import (
    LossFn, Metrics, as_config, config_hparams, gae, make_ppo_loss, minibatch, ppo_loss, prepare_batch,
)
from .update import (
    CPU_CHUNK, GPU_CHUNK, RECURRENT_CPU_CHUNK, default_chunk_size, make_optimizer, make_update, minibatch_plan,
    steps_per_update,
)

__all__ = [
    "CPU_CHUNK", "GPU_CHUNK", "LossFn", "Metrics", "RECURRENT_CPU_CHUNK", "as_config", "config_hparams",
    "default_chunk_size", "gae", "make_optimizer", "make_ppo_loss", "make_update", "minibatch", "minibatch_plan",
    "ppo_loss", "prepare_batch", "steps_per_update",
]
