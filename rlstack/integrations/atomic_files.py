"""Files written atomically: a temp file beside the target, fsynced, renamed
over it (:func:`atomic_write`, :func:`atomic_save`), so a reader never sees
half a file and a full disk is one line naming the folder and the bytes.
Temp files a killed writer left are removed by the next writer in that
folder (:func:`remove_stale_temp_files`).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optree
import torch

from .folder_lock import pid_alive

_TEMP_NAME = re.compile(r"\.(?P<target>.+)\.(?P<pid>\d+)\.[^.]+\.tmp")


def remove_stale_temp_files(directory: Path) -> list[Path]:
    """Delete temp files that a killed :func:`atomic_save` left in ``directory``.

    Temp files are named ``.<target>.<pid>.<random>.tmp``; one whose writer
    process no longer exists is stale. Files of live writers are kept.

    Returns:
        The paths removed.
    """
    removed = []
    for tmp in directory.glob(".*.tmp"):
        match = _TEMP_NAME.fullmatch(tmp.name)
        if match and not pid_alive(int(match.group("pid"))):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _new_file_mode() -> int:
    """The permissions ``open(path, "w")`` gives a new file: ``0o666`` less the umask."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


#: Read once, at import (changing the umask is process-wide, so not done per write).
_NEW_FILE_MODE = _new_file_mode()


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], size_hint: int = 0) -> Path:
    """Write ``path`` atomically: ``write(temp path)`` beside it, fsync, rename.

    A reader never sees half a file, and a writer killed mid-write leaves
    only a temp file, removed by the next writer in that folder (see
    :func:`remove_stale_temp_files`). The file gets the permissions a plain
    ``open`` would give it (the umask's), not the temp file's private ``0600``.

    Args:
        path: the file to write.
        write: writes the whole file to the path it is given (a ``str``).
        size_hint: about how many bytes the file takes (for the message of a
            full disk).

    Raises:
        OSError: ``ENOSPC`` in one line naming the folder and the bytes
            needed, where the folder's disk is full, or where
            :data:`DISK_FULL_HOOK` names the folder (torch's writer says
            ``unexpected pos`` in a 30-line traceback); the temp file removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
    )
    os.close(fd)
    try:
        os.chmod(tmp, _NEW_FILE_MODE)
        if _test_disk_full(path.parent):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tmp)
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        written = Path(tmp).stat().st_size if Path(tmp).exists() else 0
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError | RuntimeError) and _disk_full(e, path.parent):
            needed = max(size_hint, written)
            free = shutil.disk_usage(path.parent).free
            raise OSError(
                errno.ENOSPC,
                f"No space left in {path.parent} for {path.name}: it needs about {needed:,} "
                f"bytes and {free:,} are free (nothing was written)",
            ) from None
        raise
    return path


#: A test hook (``benchmarks/chaos.py`` where it cannot mount a small tmpfs): writes into the
#: folder this environment variable names fail as on a full disk.
DISK_FULL_HOOK = "RLSTACK_TEST_DISK_FULL"


def _test_disk_full(folder: Path) -> bool:
    """Whether :data:`DISK_FULL_HOOK` names ``folder``."""
    named = os.environ.get(DISK_FULL_HOOK)
    return bool(named) and Path(named).resolve() == folder.resolve()


def _disk_full(error: BaseException, folder: Path) -> bool:
    """Whether ``error`` is a write that stopped because ``folder``'s disk is full."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(error, RuntimeError) and "unexpected pos" in str(error):  # torch's zip writer
        return shutil.disk_usage(folder).free < 1 << 20
    return False


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically (:func:`atomic_write`)."""
    size = sum(leaf.nbytes for leaf in optree.tree_leaves(obj) if isinstance(leaf, torch.Tensor))
    return atomic_write(path, lambda tmp: torch.save(obj, tmp), size_hint=size)
