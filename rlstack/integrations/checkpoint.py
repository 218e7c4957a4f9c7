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
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optree
import torch

from .atomic_files import atomic_save
from .folder_lock import FolderLock

FORMAT = "rlstack-checkpoint"
# The format's history: 2: random keys instead of torch RNG states; 3: optimizer transforms,
# trajectory structure stored; 4: optimizers as chains of small transforms (scale_by_adam,
# scale_by_learning_rate, ...); 5: one memory field in carries and trajectories
# (rlstack.policy.memory), carries hold starts and step; 6: one train state
# (rlstack.learn.train_state), accumulate_grads as the optimizer's AccumulateState, classes named
# by their layer modules (rlstack.policy.models:MLPModel); 7: the kind of run in the settings
# (num_members), the compile mode by name and its switch points.
VERSION = 7
#: The versions this rlstack reads (the shell upgrades the older ones when it loads them).
READABLE_VERSIONS = (6, 7)


class CheckpointError(ValueError):
    """A checkpoint is corrupted, truncated, unsafe or does not match."""


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
    verify_archive(path, what)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"Refused to load {what} {str(path)!r}: it holds objects other than tensors and plain "
            "containers "
            f"(a tampered or foreign file); nothing was executed. Details: {str(e).splitlines()[0]}"
        ) from e
    except (
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        OSError,
        ValueError,
        KeyError,
        IndexError,
    ) as e:
        raise CheckpointError(
            f"{what.capitalize()} {str(path)!r} is truncated or corrupted: {e}"
        ) from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an rlstack {what} (no '{FORMAT}' header).")
    if data.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{what.capitalize()} {str(path)!r} has format version {data.get('version')}; this "
            f"rlstack reads versions {list(READABLE_VERSIONS)} (older files were written by an "
            "earlier rlstack: train again, or evaluate them with the version that wrote them)."
        )
    for part in TRAINED_STATE:
        check_finite(data.get(part), path, what, prefix=part)
    return data


#: The parts of a checkpoint that training produced (weights, optimizer and
#: normalisation state, the rollout carry): all finite in a run that is.
TRAINED_STATE = ("params", "opt_state", "carry")


def check_finite(tree: Any, path: Path, what: str, *, prefix: str) -> None:
    """Refuse a file whose floating-point tensors in ``tree`` hold a NaN or an inf.

    Raises:
        CheckpointError: naming the file, the tensor's path in the file and how
            many of its values are not finite.
    """
    paths, leaves, _ = optree.tree_flatten_with_path(tree)
    for where, leaf in zip(paths, leaves, strict=True):
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point():
            bad = int((~torch.isfinite(leaf)).sum())
            if bad:
                name = "/".join(str(p) for p in (prefix, *where))
                raise CheckpointError(
                    f"Refused to load {what} {str(path)!r}: {name} holds {bad} non-finite value(s) "
                    f"of {leaf.numel()} (NaN or inf weights cannot act or train)."
                )


def verify_archive(path: Path, what: str = "checkpoint") -> None:
    """Check that ``path`` is a complete ``torch.save`` zip archive whose
    every record matches its stored CRC-32 (``torch.load`` checks neither).

    Raises:
        CheckpointError: naming the file (and the damaged record).
    """
    if not zipfile.is_zipfile(path):  # a cut archive loses its central directory
        raise CheckpointError(
            f"{what.capitalize()} {str(path)!r} is truncated or corrupted: not a complete torch "
            "zip archive."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{what.capitalize()} {str(path)!r} is truncated or corrupted: {e}"
        ) from e
    if bad is not None:
        raise CheckpointError(
            f"{what.capitalize()} {str(path)!r} is corrupted: record {bad!r} does not match its "
            "CRC-32 checksum."
        )


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
        raise CheckpointError(
            f"Checkpoint {name} has {len(stored)} tensors, the current setup expects "
            f"{len(template_leaves)}."
        )
    for i, (want, got) in enumerate(zip(template_leaves, stored, strict=True)):
        if not isinstance(got, torch.Tensor) or got.shape != want.shape or got.dtype != want.dtype:
            raise CheckpointError(
                f"Checkpoint {name} tensor {i} is {getattr(got, 'dtype', type(got))} "
                f"{list(getattr(got, 'shape', []))}, "
                f"the current setup expects {want.dtype} {list(want.shape)}."
            )
    return optree.tree_unflatten(spec, [t.to(device) for t in stored])


class CheckpointDir:
    """A folder of ``step-<N>.pt`` checkpoints written by one run.

    While open it holds an exclusive lock (``flock`` on ``.rlstack.lock``;
    the OS releases it when the process dies), so a second live run cannot
    write into the same folder. It prunes only the files this run wrote, so
    checkpoints of other runs, or of an older branch of this one, are never
    deleted. Opening it checks, before any training, that the folder is
    writable and holds no checkpoint newer than ``step``, which this run
    would overwrite.

    Args:
        directory: the folder (created if missing).
        step: the run's current step count.
        owner: who is writing, for the message another run gets.
        keep: how many of this run's newest checkpoints to keep (>= 1).
        adopt: paths of checkpoints this run wrote before (a resumed run's),
            pruned like new ones when they are in this folder.

    Raises:
        ValueError: if the folder cannot be written, is locked by another
            live run, or holds newer checkpoints.
    """

    LOCK = ".rlstack.lock"

    def __init__(
        self, directory: str | os.PathLike, *, step: int, owner: str, keep: int = 3, adopt: Any = ()
    ) -> None:
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
            raise ValueError(f"`keep_checkpoints` must be a positive int, got {keep!r}.")
        self.directory, self.keep = Path(directory), keep
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(
                f"`checkpoint_dir` {str(self.directory)!r} is not writable: {e.strerror or e}."
            ) from e
        self._lock = FolderLock(self.directory / self.LOCK, "checkpoint_dir", str(self.directory))
        newer = sorted(
            p.name for p in self.directory.glob("step-*.pt") if (_step_of(p) or 0) > step
        )
        if newer:
            self.close()
            raise ValueError(
                f"`checkpoint_dir` {str(self.directory)!r} holds checkpoints newer than this run's "
                f"step {step} "
                f"({', '.join(newer)}), which this run would overwrite; choose another directory."
            )
        #: Who held the folder before (``"<owner> (pid N)"``, as :meth:`FolderLock.take` wrote it),
        # or "".
        self.previous_owner = self._lock.take(owner)
        here = self.directory.resolve()
        self.written = [
            Path(p) for p in adopt if Path(p).parent.resolve() == here and Path(p).is_file()
        ]

    def relabel(self, owner: str) -> None:
        """Name another owner in the lock (a run whose id was not known when the folder was
        opened).
        """
        self._lock.take(owner)

    def path(self, step: int) -> Path:
        """The file of the checkpoint taken after ``steps`` updates (``step-<steps>.pt``)."""
        return self.directory / f"step-{step:08d}.pt"

    def claim(self, step: int) -> Path:
        """Record ``step-<step>.pt`` as this run's newest file (before it is
        written, so the state saved in it can name it); returns its path.
        """
        path = self.path(step)
        self.written = [p for p in self.written if p.resolve() != path.resolve()] + [path]
        return path

    def save(self, data: Any, step: int, held: Callable[[Path], bool] = lambda path: False) -> Path:
        """Write ``data`` as ``step-<step>.pt`` atomically, then delete this
        run's checkpoints beyond the ``keep`` newest, oldest first, up to the
        first one ``held`` (one MLflow has not taken yet: deleted by a later
        save once it has); returns the path.
        """
        path = atomic_save(data, self.claim(step))
        self.prune(held)
        return path

    def prune(self, held: Callable[[Path], bool] = lambda path: False) -> None:
        """Delete this run's checkpoints beyond the ``keep`` newest, oldest first, up to the
        first one ``held``.
        """
        while len(self.written) > self.keep and not held(self.written[0]):
            self.written.pop(0).unlink(missing_ok=True)

    def close(self) -> None:
        """Release the lock (idempotent)."""
        self._lock.close()


def newest_in_folder(path: str | os.PathLike, step: int) -> bool:
    """Whether no ``step-<N>.pt`` beside ``path`` is newer than ``step`` (the checkpoint a
    killed run wrote last).
    """
    return not any((_step_of(p) or 0) > step for p in Path(path).parent.glob("step-*.pt"))


def _step_of(path: Path) -> int | None:
    digits = path.stem.removeprefix("step-")
    return int(digits) if digits.isdigit() else None


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
            f"The checkpoint was trained with {what} {name!r}, which is not part of rlstack: pass "
            f"`{what}=` "
            "to rebuild it (checkpoints never import user code by themselves)."
        )
    return import_qualified(name)
