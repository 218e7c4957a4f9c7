"""Checks of plain argument values, each failing with one line that names the
argument and what it must be: numbers and ints, and the arguments of
Algorithm and Trainer.run that are not hyperparameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch


def check_int(name: str, value: Any, minimum: int | None = None) -> None:
    """``value`` is an int (not a bool), at least ``minimum`` if given.

    Raises:
        TypeError, ValueError: naming ``name`` and the value.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"`{name}` must be an int, got {value!r} ({type(value).__name__}).")
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value!r}.")


def check_number(name: str, value: Any, minimum: float | None = None) -> None:
    """``value`` is a finite int or float (not a bool), at least ``minimum`` if given.

    Raises:
        TypeError, ValueError: naming ``name`` and the value.
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"`{name}` must be a number, got {value!r} ({type(value).__name__}).")
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value!r}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value!r}.")


def check_build_arguments(
    *,
    env_config: Any,
    model_config: Any,
    seed: Any,
    compile: Any,
    cuda_graphs: Any,
    allow_tf32: Any,
    device: torch.device,
) -> None:
    """Validate ``Algorithm``'s arguments besides the hyperparameters, before
    anything is built.

    Raises:
        TypeError, ValueError: naming the argument and what it must be.
    """
    for name, value in (("env_config", env_config), ("model_config", model_config)):
        if value is not None and not isinstance(value, Mapping):
            raise TypeError(f"`{name}` must be a dict or None, got {type(value).__name__}.")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise ValueError(f"`seed` must be a non-negative int or None, got {seed!r}.")
    if compile is not None and not isinstance(compile, bool):
        raise TypeError(
            f"`compile` must be a bool or None (the background strategy), got {compile!r}."
        )
    for name, value in (("cuda_graphs", cuda_graphs), ("allow_tf32", allow_tf32)):
        if not isinstance(value, bool):
            raise TypeError(f"`{name}` must be a bool, got {value!r}.")
    if cuda_graphs and device.type != "cuda":
        raise ValueError(f"`cuda_graphs=True` needs a CUDA device, got device={str(device)!r}.")


def check_log_every_s(log_every_s: Any) -> None:
    """``log_every_s`` is seconds >= 0, or a one-line error naming it."""
    if (
        isinstance(log_every_s, bool)
        or not isinstance(log_every_s, (int, float))
        or not log_every_s >= 0
    ):
        raise ValueError(
            f"`log_every_s` must be seconds >= 0 (0: every step), got {log_every_s!r}."
        )


def check_run_arguments(
    *,
    steps_per_eval: Any,
    checkpoint_every: Any,
    checkpoint_dir: Any,
    checkpoint_every_s: Any,
    keep_checkpoints: Any,
    member_stop: Any,
) -> None:
    """:meth:`Trainer.run`'s arguments, or a one-line error naming the first bad one."""
    for name, value in (("steps_per_eval", steps_per_eval), ("checkpoint_every", checkpoint_every)):
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise ValueError(f"`{name}` must be a positive int or None, got {value!r}.")
    if checkpoint_every is not None and checkpoint_dir is None:
        raise ValueError("`checkpoint_every` needs a `checkpoint_dir` to write to.")
    if checkpoint_every_s is not None and (
        isinstance(checkpoint_every_s, bool)
        or not isinstance(checkpoint_every_s, (int, float))
        or not checkpoint_every_s >= 0
    ):
        raise ValueError(
            f"`checkpoint_every_s` must be seconds >= 0 or None (off), got {checkpoint_every_s!r}."
        )
    if (
        not isinstance(keep_checkpoints, int)
        or isinstance(keep_checkpoints, bool)
        or keep_checkpoints < 1
    ):
        raise ValueError(f"`keep_checkpoints` must be a positive int, got {keep_checkpoints!r}.")
    if member_stop not in ("each", "any", "mean"):
        raise ValueError(f"`member_stop` must be 'each', 'any' or 'mean', got {member_stop!r}.")
