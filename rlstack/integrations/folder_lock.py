"""Folder locks: an exclusive ``flock`` naming its owner, which the OS
releases when the owning process dies (checkpoint and export folders use
them to keep a second live run out). A lock closed by its owner removes its
file; a dead owner's file stays, naming it.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


class FolderLock:
    """An exclusive ``flock`` on the file ``path`` (the OS releases it when the
    process dies), holding its owner's name: what keeps a second live run out
    of a checkpoint or export folder.

    Args:
        path: the lock file (created if missing).
        what: the argument the folder came from, for the message.
        folder: the folder it guards, for the message.

    Raises:
        ValueError: if the file cannot be written, or another live process holds it.
    """

    def __init__(self, path: Path, what: str, folder: str) -> None:
        self.path = path
        while True:
            try:
                self._file = open(path, "a+")  # noqa: SIM115 (held open: the lock lives as long as it)
            except OSError as e:
                raise ValueError(f"`{what}` {folder!r} is not writable: {e.strerror or e}.") from e
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._file.seek(0)
                holder = self._file.read().strip() or "another run"
                self._file.close()
                raise ValueError(
                    f"`{what}` {folder!r} is in use by {holder}; give this run its own directory."
                ) from None
            if self._is_the_file_at_path():
                return
            self._file.close()  # its holder closed it (and removed it) meanwhile: lock anew

    def _is_the_file_at_path(self) -> bool:
        """Whether the locked file is still the one at :attr:`path` (a closing holder removes
        it; a lock on the removed file would keep no one out).
        """
        try:
            return os.stat(self.path).st_ino == os.fstat(self._file.fileno()).st_ino
        except FileNotFoundError:
            return False

    def take(self, owner: str) -> str:
        """Write ``"<owner> (pid <this pid>)"`` into the lock; returns what it held before."""
        self._file.seek(0)
        before = self._file.read().strip()
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"{owner} (pid {os.getpid()})\n")
        self._file.flush()
        return before

    def close(self) -> None:
        """Remove the lock file and release the lock (idempotent): a folder a run closed holds
        no lock file; one whose run died keeps it, naming the dead owner.
        """
        if not self._file.closed:
            self.path.unlink(missing_ok=True)  # while still held: no one locks it meanwhile
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()


def dead_owner(text: str) -> str | None:
    """The owner named in a lock's ``"<owner> (pid N)"`` text if process N is no
    longer alive (its run died without ending), else None.
    """
    match = re.fullmatch(r"(?P<owner>.+) \(pid (?P<pid>\d+)\)", text.strip())
    if match is None or int(match["pid"]) == os.getpid():
        return None
    try:
        os.kill(int(match["pid"]), 0)
    except ProcessLookupError:
        return match["owner"]
    except PermissionError:  # alive, another user's
        return None
    return None
