"""How an update slices its batch: minibatches of rows (transitions, or a recurrent
policy's sequences) and chunks of them per forward/backward pass.
"""

from __future__ import annotations

import torch

from ..core.config import AlgorithmConfig

CPU_CHUNK = 8192


RECURRENT_CPU_CHUNK = 4096


GPU_CHUNK = 1 << 20


def default_chunk_size(minibatch_size: int, device: torch.device, seq_len: int = 1) -> int:
    """Rows per forward/backward pass when ``sgd_chunk_size`` is None.

    The largest divisor of the minibatch (``minibatch_size`` rows, each a
    transition, or a recurrent policy's sequence of ``seq_len`` of them) up
    to a per-device bound in transitions: :data:`CPU_CHUNK` on CPU
    (:data:`RECURRENT_CPU_CHUNK` for sequences, whose replay keeps every
    step's gates), so activations stay cache-sized (measured in
    benchmarks/README.md), and :data:`GPU_CHUNK` elsewhere, where large
    batches are fastest and the bound keeps a huge minibatch's activations
    (1 GiB per 256-wide float32 layer at 2**20 rows) from exhausting device
    memory.
    """
    if device.type == "cpu":
        bound = CPU_CHUNK if seq_len == 1 else RECURRENT_CPU_CHUNK
    else:
        bound = GPU_CHUNK
    bound = max(1, bound // seq_len)
    if minibatch_size <= bound:
        return minibatch_size
    return next(d for d in range(bound, 0, -1) if minibatch_size % d == 0)


def minibatch_plan(
    config: AlgorithmConfig, size: int, device: torch.device, steps_per_row: int
) -> tuple[int, ...]:
    """How an update slices ``size`` rows (transitions, or sequences of
    ``steps_per_row``): ``(slices per epoch, slices per optimizer step,
    rows per slice)``; a slice is ``sgd_chunk_size`` rows (default
    :func:`default_chunk_size`), an optimizer call a minibatch.

    Raises:
        ValueError: if the minibatch does not divide the rows, or the chunk the minibatch.
    """
    mb_size = (config.sgd_minibatch_size or size * steps_per_row) // steps_per_row
    if size % mb_size:
        raise ValueError(
            f"`sgd_minibatch_size` {mb_size * steps_per_row} must divide the "
            f"{size * steps_per_row} transitions of `traj`."
        )
    chunk = (
        config.sgd_chunk_size // steps_per_row
        if config.sgd_chunk_size
        else default_chunk_size(mb_size, device, steps_per_row)
    )
    if mb_size % chunk:
        raise ValueError(
            f"`sgd_chunk_size` {chunk * steps_per_row} must divide the minibatch size "
            f"{mb_size * steps_per_row}."
        )
    num_slices = (size // mb_size) * (mb_size // chunk)
    return num_slices, mb_size // chunk, chunk
