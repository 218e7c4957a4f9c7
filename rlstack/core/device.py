"""Device and precision settings of the shell: which device, TF32 matmuls,
and memory statistics. Nothing here is called inside ``rollout``/``update``.
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Iterator
from typing import Any

import torch


def resolve_device(device: Any) -> torch.device:
    """``device`` as a :class:`torch.device` that exists on this machine.

    Raises:
        ValueError: for something that is not a device, or CUDA without a GPU.
    """
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"`device` must be a torch device such as 'cpu' or 'cuda', got {device!r}."
        ) from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"`device` is {str(device)!r} but CUDA is not available on this machine; use 'cpu'."
        )
    return device


@contextlib.contextmanager
def matmul_precision(device: torch.device, allow_tf32: bool) -> Iterator[None]:
    """While inside, float32 matmuls on CUDA may use TF32 tensor cores
    (``torch.set_float32_matmul_precision("high")``) when ``allow_tf32``;
    the global setting is restored on exit. No effect on CPU.
    """
    if not (allow_tf32 and device.type == "cuda"):
        yield
        return
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def memory_stats(device: torch.device) -> dict[str, float]:
    """Host memory (``memory/free``, ``memory/total`` in bytes,
    ``memory/percent`` used, ``memory/max_rss_mb`` of this process) and, on
    CUDA, the device's (``memory/cuda_free``, ``memory/cuda_total`` in bytes,
    ``memory/cuda_max_allocated_mb``).
    """
    page = os.sysconf("SC_PAGE_SIZE")
    total = os.sysconf("SC_PHYS_PAGES") * page
    free = os.sysconf("SC_AVPHYS_PAGES") * page
    stats = {
        "memory/free": float(free),
        "memory/total": float(total),
        "memory/percent": 100.0 * (total - free) / total,
        "memory/max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    if device.type == "cuda":
        cuda_free, cuda_total = torch.cuda.mem_get_info(device)
        stats["memory/cuda_free"] = float(cuda_free)
        stats["memory/cuda_total"] = float(cuda_total)
        stats["memory/cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return stats
