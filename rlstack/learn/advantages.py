"""Advantages standardised per minibatch (CleanRL, SB3; rsl_rl's
``normalize_advantage_per_mini_batch``): the ``epoch_batch`` piece of
:func:`~rlstack.learn.update.make_update`, which re-standardises a prepared
batch's advantages within each minibatch of an epoch's order. Standardising
over the whole buffer is :func:`~rlstack.learn.loss.prepare_batch`'s.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..core.config import AlgorithmConfig
from ..core.types import Batch


def minibatch_rows(config: AlgorithmConfig, recurrent: bool) -> int | None:
    """Rows per minibatch: transitions, or a recurrent policy's sequences of
    ``seq_len``; None for the whole buffer.
    """
    if config.sgd_minibatch_size is None:
        return None
    return config.sgd_minibatch_size // (config.seq_len if recurrent else 1)


def per_minibatch_standardised(
    advantages: torch.Tensor, order: torch.Tensor, rows: int | None
) -> torch.Tensor:
    """Advantages ``[R, ...]`` standardised, ``(A - mean) / (std + 1e-8)``,
    within each minibatch of ``rows`` consecutive entries of ``order``
    (``[R]`` int64, a permutation); None: one minibatch of all ``R``. Each
    minibatch's statistics cover all its elements (a sequence row's ``L``
    steps too).
    """
    rows = order.shape[0] if rows is None else rows
    ordered = advantages[order]
    groups = ordered.reshape(order.shape[0] // rows, -1)
    standardised = (groups - groups.mean(1, keepdim=True)) / (groups.std(1, keepdim=True) + 1e-8)
    return standardised.reshape(ordered.shape)[torch.argsort(order)]


def make_epoch_batch(
    config: AlgorithmConfig, recurrent: bool
) -> Callable[[Batch, torch.Tensor], Batch]:
    """``epoch_batch(batch, order) -> batch``: the batch an epoch slices in
    ``order`` (``[rows]`` int64), its advantages standardised within each
    minibatch of that order (:func:`per_minibatch_standardised`); the
    update has this piece with ``normalize_advantages_per_minibatch`` only.
    """
    rows = minibatch_rows(config, recurrent)

    def epoch_batch(batch: Batch, order: torch.Tensor) -> Batch:
        return batch._replace(advantages=per_minibatch_standardised(batch.advantages, order, rows))

    return epoch_batch
