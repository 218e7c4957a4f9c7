"""Checkpoints: the whole train state as tensors and plain containers.

A checkpoint is written with ``torch.save`` to a temporary file beside the
target, fsynced, then renamed over it, so a crash mid-write leaves the
previous checkpoint intact. It holds only tensors, numbers, strings, lists,
dicts and None, so it loads with ``torch.load(weights_only=True)``: opening a
checkpoint from elsewhere runs no code. NamedTuple states (optimizer state,
env state, trajectory) are stored as their flat lists of leaves and rebuilt
against the structure of a freshly built Algorithm, which also detects
mismatches.
"""

from __future__ import annotations

import importlib
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import optree
import torch

FORMAT = "rlstack-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is corrupted, truncated, unsafe or does not match."""


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def safe_load(path: str | os.PathLike, what: str = "checkpoint") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with errors that say what is wrong.

    Raises:
        FileNotFoundError: if there is no such file.
        CheckpointError: if the file is truncated or corrupted, or holds
            anything but tensors and plain containers (nothing is executed).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No {what} at {str(path)!r}.")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; a cut one loses its directory
        raise CheckpointError(f"{what.capitalize()} {str(path)!r} is truncated or corrupted: not a complete torch zip archive.")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"Refused to load {what} {str(path)!r}: it holds objects other than tensors and plain containers "
            f"(a tampered or foreign file); nothing was executed. Details: {str(e).splitlines()[0]}"
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError) as e:
        raise CheckpointError(f"{what.capitalize()} {str(path)!r} is truncated or corrupted: {e}") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an rlstack {what} (no '{FORMAT}' header).")
    if data.get("version") != VERSION:
        raise CheckpointError(f"{what.capitalize()} {str(path)!r} has format version {data.get('version')}; this rlstack reads {VERSION}.")
    return data


def leaves(tree: Any) -> list[torch.Tensor] | None:
    """The flat list of tensor leaves of a pytree (None stays None)."""
    return None if tree is None else list(optree.tree_leaves(tree))


def rebuild(template: Any, stored: list[torch.Tensor], name: str, device: torch.device) -> Any:
    """Put ``stored`` leaves into the structure of ``template``.

    Raises:
        CheckpointError: if the number, shapes or dtypes of leaves differ.
    """
    template_leaves, spec = optree.tree_flatten(template)
    if len(template_leaves) != len(stored):
        raise CheckpointError(f"Checkpoint {name} has {len(stored)} tensors, the current setup expects {len(template_leaves)}.")
    for i, (want, got) in enumerate(zip(template_leaves, stored)):
        if not isinstance(got, torch.Tensor) or got.shape != want.shape or got.dtype != want.dtype:
            raise CheckpointError(
                f"Checkpoint {name} tensor {i} is {getattr(got, 'dtype', type(got))} {list(getattr(got, 'shape', []))}, "
                f"the current setup expects {want.dtype} {list(want.shape)}."
            )
    return optree.tree_unflatten(spec, [t.to(device) for t in stored])


def qualified_name(obj: Any) -> str:
    """``module:QualName`` of a class."""
    return f"{obj.__module__}:{obj.__qualname__}"


def import_qualified(name: str) -> Any:
    """Import the object named ``module:QualName``."""
    module, _, qualname = name.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def resolve(name: str, what: str) -> Any:
    """Import an rlstack class from its ``module:QualName``.

    Only classes of rlstack itself are imported from a checkpoint's text; a
    user's own class must be passed by the caller, so a checkpoint never
    makes rlstack import arbitrary modules.

    Raises:
        CheckpointError: for a name outside rlstack.
    """
    module = name.partition(":")[0]
    if module != "rlstack" and not module.startswith("rlstack."):
        raise CheckpointError(
            f"The checkpoint was trained with {what} {name!r}, which is not part of rlstack: pass `{what}=` "
            "to rebuild it (checkpoints never import user code by themselves)."
        )
    return import_qualified(name)
