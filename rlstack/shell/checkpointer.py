"""A :class:`~rlstack.shell.trainer.Trainer`'s checkpoint files: whole-state
files that also name its MLflow runs, written atomically into locked folders
(:class:`~rlstack.integrations.checkpoint.CheckpointDir`), the newest few kept.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..integrations import checkpoint as ckpt
from ..integrations import tracking
from ..integrations.folder_lock import dead_owner


class Checkpointer:
    """The folders a Trainer writes checkpoints into, and the files it wrote.

    Args:
        files: the files a resumed run wrote before (pruned with the new ones).
        folders: the open (locked) folders by resolved path (the Trainer's
            run releases them when it ends).
        client: the MLflow client of the Trainer's run.
        run_id: the Trainer's MLflow run, the owner named in each folder's lock.
        uploads: the run's :class:`~rlstack.integrations.artifact_writer.ArtifactWriter`:
            each checkpoint is queued to it, and not pruned before it is uploaded.
    """

    def __init__(
        self,
        files: Sequence[str],
        *,
        folders: dict[Path, ckpt.CheckpointDir],
        client: Any,
        run_id: str | None,
        uploads: Any,
    ) -> None:
        self.files = list(files)
        self.uploads = uploads
        self.folders = folders
        self.client = client
        self.owner = f"MLflow run {run_id}"
        self.run_id = run_id

    def written(self) -> list[str]:
        """The checkpoint files of this run (a checkpoint records them)."""
        written = [str(p.resolve()) for d in self.folders.values() for p in d.written]
        return written or list(self.files)

    def open(self, directory: str | os.PathLike, *, keep: int, steps: int) -> ckpt.CheckpointDir:
        """The open folder ``directory``, checked and locked the first time,
        keeping the ``keep`` newest files of this run.

        Raises:
            ValueError: see :class:`rlstack.integrations.checkpoint.CheckpointDir`.
        """
        folder = self.folders.get(Path(directory).resolve())
        if folder is None:
            folder = ckpt.CheckpointDir(
                directory, step=steps, owner=self.owner, keep=keep, adopt=self.files
            )
            self.adopt(folder)
        folder.keep = keep
        return folder

    def adopt(self, folder: ckpt.CheckpointDir) -> None:
        """Write into ``folder``, opened (checked and locked) before the Trainer
        existed (as ``rlstack train`` does, so that a refused folder creates or
        changes no MLflow run). A run that died holding the folder (its lock's
        process gone) and is still RUNNING is ended as KILLED.
        """
        tracking.mark_dead_run_killed(self.client, dead_owner(folder.previous_owner), self.run_id)
        folder.relabel(self.owner)
        self.folders[folder.directory.resolve()] = folder

    def save(
        self,
        directory: str | os.PathLike,
        state: Callable[[], dict[str, Any]],
        *,
        keep: int,
        steps: int,
    ) -> Path:
        """Write ``state()`` as ``directory/step-<steps>.pt`` (an open folder),
        queue it for the run's MLflow artifacts (``checkpoints/``, uploaded off
        the training loop) and delete all but the ``keep`` newest files of this
        run there (not those still to be uploaded); returns its path. The file
        is claimed first, so the state names it (a resumed run prunes it too).
        """
        folder = self.open(directory, keep=keep, steps=steps)
        folder.claim(steps)
        path = folder.save(state(), steps, self.uploads.holds)
        self.uploads.put(str(path), "checkpoints")
        return path
