"""Data-parallel training with ``torch.distributed``.

Launched by ``torchrun --nproc_per_node=P -m rlstack train ...`` (or any
launcher that sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``), each process (rank) simulates its own ``num_envs`` envs
from its own random key, and every optimizer step averages the gradient
over ranks with one all-reduce of one flat buffer (the gradient's leaves
and the metrics the target-KL decision reads, concatenated): params start
identical (broadcast from rank 0) and stay identical. The backend is gloo
on CPU and NCCL on CUDA. Stats are combined over ranks by their rules in
:mod:`rlstack.learn.stats` before they are returned, so every rank logs the same numbers; only
rank 0 writes to MLflow and checkpoints.

Everything here is a no-op in a single process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import optree
import torch
import torch.distributed as dist

from ..learn.stats import combine

Params = dict[str, torch.Tensor]


def world_size() -> int:
    """Processes in the default group (1 when ``torch.distributed`` is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 when ``torch.distributed`` is not initialised)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def init_from_env(device: str | torch.device | None = None) -> bool:
    """Join the process group a launcher describes in the environment
    (``WORLD_SIZE`` > 1): gloo for CPU, NCCL for CUDA (each rank on GPU
    ``LOCAL_RANK``). Returns whether this process is distributed.

    Raises:
        ValueError: for a CUDA device without CUDA.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if dist.is_initialized():
        return True
    cuda = device is not None and torch.device(device).type == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            raise ValueError(f"`device` {str(device)!r} needs CUDA, which this machine lacks.")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return True


def local_device(device: torch.device) -> torch.device:
    """On CUDA, this rank's GPU (``LOCAL_RANK``) unless an index was given."""
    if device.type == "cuda" and device.index is None and world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def _comm_device() -> torch.device:
    """Where host values travel for a collective: the current GPU for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(
    grads: Params, metrics: Mapping[str, torch.Tensor]
) -> tuple[Params, dict[str, torch.Tensor]]:
    """The mean over ranks of a gradient and its metrics, with one all-reduce.

    Every leaf is flattened into one buffer (float32), summed across ranks by
    a single ``all_reduce`` (one bucket, not one call per tensor), divided by
    the world size and split back. Used as ``make_update(...,
    reduce_grads=all_reduce_mean)``: each rank's gradient is the mean over
    its own transitions, so the result is the gradient of the mean over all
    ranks' transitions (equal numbers per rank).
    """
    leaves, spec = optree.tree_flatten((grads, dict(metrics)))
    flat = torch.cat([leaf.reshape(-1).float() for leaf in leaves])
    dist.all_reduce(flat)
    return _unflatten(flat / world_size(), leaves, spec)


def broadcast_tree(tree: Any, src: int = 0) -> Any:
    """``tree``'s tensors as rank ``src`` has them (one broadcast of a flat buffer)."""
    leaves, spec = optree.tree_flatten(tree)
    if not leaves:
        return tree
    flat = torch.cat([leaf.reshape(-1).double() for leaf in leaves])
    dist.broadcast(flat, src)
    return _unflatten(flat, leaves, spec)


def _unflatten(flat: torch.Tensor, leaves: list[torch.Tensor], spec: Any) -> Any:
    """Split a flat buffer back into the shapes and dtypes of ``leaves`` (in
    order) and rebuild the tree ``spec`` describes.
    """
    pieces, start = [], 0
    for leaf in leaves:
        pieces.append(flat[start : start + leaf.numel()].reshape(leaf.shape).to(leaf.dtype))
        start += leaf.numel()
    return optree.tree_unflatten(spec, pieces)


def reduce_stats(stats: Mapping[str, float]) -> dict[str, float]:
    """Stats of every rank combined by each stat's rule in
    :mod:`rlstack.learn.stats` (counts summed, episode means weighted by their
    counts, minima and maxima taken, the rest averaged), with one
    all-gather. Every rank must pass the same keys.
    """
    if world_size() == 1 or not stats:
        return dict(stats)
    values = torch.tensor(list(stats.values()), dtype=torch.float64, device=_comm_device())
    gathered = [torch.empty_like(values) for _ in range(world_size())]
    dist.all_gather(gathered, values)
    table = torch.stack(gathered).cpu().tolist()  # [ranks][stats]
    return combine([dict(zip(stats, row, strict=True)) for row in table])


def check_same_config(config: Mapping[str, Any]) -> None:
    """Raise, on every rank, if any rank's ``config`` differs from rank 0's.

    Raises:
        ValueError: naming the first rank that differs and the keys.
    """
    if world_size() == 1:
        return
    configs: list[Any] = [None] * world_size()
    dist.all_gather_object(configs, {k: repr(v) for k, v in config.items()})
    reference = configs[0]
    for other_rank, other in enumerate(configs[1:], start=1):
        differ = sorted(k for k in set(reference) | set(other) if reference.get(k) != other.get(k))
        if differ:
            details = ", ".join(
                f"{k}: {reference.get(k)} on rank 0, {other.get(k)} on rank {other_rank}"
                for k in differ
            )
            raise ValueError(
                f"Ranks disagree on their configuration ({details}); every rank must be started "
                "alike."
            )


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` holds on any rank (every rank gets the same answer)."""
    if world_size() == 1:
        return flag
    value = torch.tensor([float(flag)], device=_comm_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_objects(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` on rank 0 (a list by rank), ``None`` elsewhere."""
    if world_size() == 1:
        return [obj]
    gathered: list[Any] | None = [None] * world_size() if rank() == 0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered
