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


class Checkpointer:
    """The folders a Trainer writes checkpoints into, and the files it wrote.

    Args:
        files: the files a resumed run wrote before (pruned with the new ones).

    Attributes:
        folders: the open (locked) folders by resolved path, released when
            the Trainer's run ends.
    """

    def __init__(self, files: Sequence[str] = ()) -> None:
        self.files = list(files)
        self.folders: dict[Path, ckpt.CheckpointDir] = {}

    def written(self) -> list[str]:
        """The checkpoint files of this run (a checkpoint records them)."""
        written = [str(p.resolve()) for d in self.folders.values() for p in d.written]
        return written or list(self.files)

    def folder(self, directory: str | os.PathLike) -> ckpt.CheckpointDir | None:
        """The open folder ``directory``, or ``None`` when it has not been opened."""
        return self.folders.get(Path(directory).resolve())

    def adopt(self, folder: ckpt.CheckpointDir) -> None:
        """Write into ``folder``, opened (checked and locked) by the Trainer."""
        self.folders[folder.directory.resolve()] = folder

    def save(
        self,
        directory: str | os.PathLike,
        state: Callable[[], dict[str, Any]],
        *,
        keep: int,
        steps: int,
    ) -> Path:
        """Write ``state()`` as ``directory/step-<steps>.pt`` (an open folder)
        and delete all but the ``keep`` newest files of this run there;
        returns its path. The file is claimed first, so the state names it
        (a resumed run prunes it too).
        """
        folder = self.folders[Path(directory).resolve()]
        folder.keep = keep
        folder.claim(steps)
        return folder.save(state(), steps)
