"""The :class:`~rlstack.shell.trainer.Trainer`'s checkpoints: whole-state files
that also name its MLflow runs, written atomically into locked folders
(:class:`~rlstack.integrations.checkpoint.CheckpointDir`) and logged as artifacts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..integrations import checkpoint as ckpt
from ..integrations import distributed, tracking
from ..integrations.folder_lock import dead_owner

if TYPE_CHECKING:
    from .trainer import Trainer


class TrainerCheckpoints:
    """The checkpoint part of :class:`~rlstack.shell.trainer.Trainer` (it uses the
    Trainer's public attributes and its own folders only).
    """

    def _open_checkpoints(self, checkpoint_files: Sequence[str]) -> dict[Path, ckpt.CheckpointDir]:
        """Start with no open folder; ``checkpoint_files`` are the files a
        resumed run wrote before (pruned with the new ones). Returns the
        folders' dict (released when the run ends).
        """
        self._checkpoint_files = list(checkpoint_files)
        self._checkpoint_dirs: dict[Path, ckpt.CheckpointDir] = {}
        return self._checkpoint_dirs

    def save_checkpoint(self: Trainer, path: str | os.PathLike) -> str:
        """Write the whole train state (Algorithm state, counters, the MLflow
        run id) to ``path`` atomically; see :mod:`rlstack.integrations.checkpoint`. Under
        torch.distributed every rank calls it and rank 0 writes.
        """
        data = self._state_dict()
        return str(ckpt.atomic_save(data, path)) if distributed.rank() == 0 else str(path)

    def _state_dict(self: Trainer) -> dict[str, Any]:
        data = self.algorithm.state_dict()
        written = [str(p.resolve()) for d in self._checkpoint_dirs.values() for p in d.written]
        data["trainer"] = {
            "run_id": self.run_id,
            "checkpoint_files": written or list(self._checkpoint_files),
        }
        if self.member_run_ids:
            data["trainer"]["member_run_ids"] = self.member_run_ids
        return data

    def _checkpoint_dir(
        self: Trainer, directory: str | os.PathLike, keep: int
    ) -> ckpt.CheckpointDir:
        """The open (locked) :class:`~rlstack.integrations.checkpoint.CheckpointDir` for "
        "``directory``.
        """
        key = Path(directory).resolve()
        if key not in self._checkpoint_dirs:
            self.adopt_checkpoint_dir(
                ckpt.CheckpointDir(
                    directory,
                    step=self.algorithm.steps,
                    owner=f"MLflow run {self.run_id}",
                    keep=keep,
                    adopt=self._checkpoint_files,
                )
            )
        self._checkpoint_dirs[key].keep = keep
        return self._checkpoint_dirs[key]

    def adopt_checkpoint_dir(self: Trainer, folder: ckpt.CheckpointDir) -> None:
        """Write checkpoints into ``folder``, opened (checked and locked) before
        this Trainer existed (as ``rlstack train`` does, so that a refused folder
        creates or changes no MLflow run). A run that died holding the folder
        (its lock's process gone) and is still RUNNING is ended as KILLED.
        """
        tracking.mark_dead_run_killed(
            self.run_log.client, dead_owner(folder.previous_owner), self.run_id
        )
        folder.relabel(f"MLflow run {self.run_id}")
        self._checkpoint_dirs[folder.directory.resolve()] = folder

    def checkpoint_to(self: Trainer, directory: str | os.PathLike, keep: int = 3) -> str:
        """Save ``directory/step-<N>.pt``, log it to the MLflow run under
        ``checkpoints/`` and delete all but the ``keep`` newest checkpoints
        this run wrote there; returns its path (which exists).

        Under torch.distributed every rank calls it (each rank's envs and
        key are gathered into the file) and rank 0 writes; the other ranks
        return ``""``.

        Raises:
            ValueError: see :class:`rlstack.integrations.checkpoint.CheckpointDir`.
        """
        if distributed.rank() != 0:
            self._state_dict()  # this rank's part goes to rank 0
            return ""
        folder = self._checkpoint_dir(directory, keep)
        self.run_log.flush(
            quiet=sys.exc_info()[0] is not None
        )  # MLflow holds what the checkpoint holds
        folder.claim(
            self.algorithm.steps
        )  # so the state it saves names the file: a resumed run prunes it too
        path = str(folder.save(self._state_dict(), self.algorithm.steps))
        self.run_log.client.log_artifact(self.run_id, path, artifact_path="checkpoints")
        return path
