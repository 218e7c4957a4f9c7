"""Files logged to a run's MLflow artifacts off the training loop (a checkpoint
after it is written): a thread of their own, in order, waiting out a
tracking server that does not answer, as the metrics' writer does.

A checkpoint is on disk before it is queued, so a store that is away loses
nothing: training goes on, the upload is tried again after a pause that
grows to :data:`~rlstack.integrations.metric_writer.RETRY_MAX_S`, and a file
the run pruned meanwhile is skipped (newer ones follow it). A run's end
waits for the uploads up to a limit, then names in one line what stayed
local only.
"""

from __future__ import annotations

import collections
import sys
import threading
from pathlib import Path
from typing import Any

from . import metric_writer


class ArtifactWriter:
    """Uploads one run's files from a thread (see the module docstring).

    Args:
        client: the tracking client (its ``log_artifact``).
        run_id: the run the files go to.
    """

    def __init__(self, client: Any, run_id: str) -> None:
        self.client, self.run_id = client, run_id
        self._queue: collections.deque[tuple[str, str]] = collections.deque()
        self._busy = False
        self.failure: str | None = None  # why the last upload failed, while the store is away
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def put(self, path: str, artifact_path: str) -> None:
        """Queue ``path`` for the run's ``artifact_path`` folder; returns at once."""
        with self._changed:
            self._queue.append((str(path), artifact_path))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._upload_all, name="rlstack-artifacts", daemon=True
                )
                self._thread.start()
            self._changed.notify_all()

    def holds(self, path: Any) -> bool:
        """Whether ``path`` waits for its upload (a checkpoint not to be pruned yet)."""
        with self._changed:
            return any(Path(queued) == Path(path) for queued, _ in self._queue)

    def flush(self, timeout_s: float) -> bool:
        """Wait until every queued file is uploaded or skipped (True) or ``timeout_s`` pass."""
        with self._changed:
            return self._changed.wait_for(lambda: not (self._queue or self._busy), timeout_s)

    def close(self, wait_s: float) -> list[str]:
        """:meth:`flush` up to ``wait_s``; files not uploaded by then are named in one line
        and returned (they stay where they were written: not to be pruned).
        """
        if self.flush(wait_s):
            return []
        with self._changed:
            left = [path for path, _ in self._queue]
            self._queue.clear()
        print(
            f"rlstack: the tracking store did not take {len(left)} file(s) of run {self.run_id} "
            f"within {wait_s:.0f} s ({self.failure}); they stay local: {', '.join(left)}",
            file=sys.stderr,
            flush=True,
        )
        return left

    def _upload_all(self) -> None:
        """The thread: upload the first file, again after a pause where it fails."""
        pause = 1.0
        while True:
            with self._changed:
                if not self._queue:
                    self._thread = None
                    return
                (path, folder), self._busy = self._queue[0], True
            try:
                if Path(path).exists():  # else pruned by the run meanwhile: newer ones follow
                    self.client.log_artifact(self.run_id, path, artifact_path=folder)
            except Exception as e:  # the store is away: this file stays first
                with self._changed:
                    self._busy = False
                    self.failure = f"{type(e).__name__}: {e}".splitlines()[0]
                    self._changed.notify_all()
                metric_writer._sleep(pause)
                pause = min(2 * pause, metric_writer.RETRY_MAX_S)
                continue
            pause = 1.0
            with self._changed:
                if self._queue and self._queue[0] == (path, folder):  # not cleared meanwhile
                    self._queue.popleft()
                self._busy, self.failure = False, None
                self._changed.notify_all()
