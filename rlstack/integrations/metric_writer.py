"""Metric batches written to MLflow off the training loop: a thread of their
own, in order, waiting out a tracking server that does not answer.

Training hands :class:`MetricWriter` each batch and goes on; the thread
writes the batches one request at a time, in the order they came. Where a
write fails (a server down, a network gone), the thread keeps that batch
first and tries it again after a pause that grows from 1 s to
:data:`RETRY_MAX_S`, so nothing is lost, reordered or written twice while
the server is away and training never waits for it. :meth:`MetricWriter.flush`
(a run's end, ``Trainer.flush_metrics``) waits for the batches to be
written, up to a limit; what a server that never came back did not take is
then kept in a local file (:meth:`MetricWriter.keep_unsent`), named in one
line. The points waiting are bounded (:data:`MAX_WAITING`): beyond it, the
oldest batches go to that file at once rather than into memory.
"""

from __future__ import annotations

import collections
import itertools
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

#: The longest pause between two tries of a write that failed, in seconds.
RETRY_MAX_S = 30.0
#: Metric values held in memory while the store does not answer (about 150 bytes each).
MAX_WAITING = 500_000
#: MLflow's limit on metrics in one ``log_batch`` request.
BATCH_LIMIT = 1000

_sleep = time.sleep  # the pause between tries (a test replaces it)


class MetricWriter:
    """Writes one run's metric batches from a thread (see the module docstring).

    Args:
        client: the tracking client (its ``log_batch``).
        run_id: the run written to.
        spill_name: the name of the file that keeps what could not be
            written (JSON lines of ``key``, ``value``, ``timestamp`` in ms,
            ``step``), in the working directory at the time (else the temp
            directory); its path is :attr:`spill_path` once written.
    """

    def __init__(self, client: Any, run_id: str, spill_name: str) -> None:
        self.client, self.run_id, self.spill_name = client, run_id, spill_name
        self.spill_path: Path | None = None
        self._batches: collections.deque[list[Any]] = collections.deque()
        self._waiting = 0  # metric values in _batches
        self._busy = False  # a batch taken by the thread and not yet written
        self._spilled = 0  # metric values written to spill_path
        self.failure: str | None = None  # why the last write failed, while the store is away
        self.error: Exception | None = None  # what it raised
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False  # the thread ends once nothing is queued

    def put(self, metrics: list[Any]) -> None:
        """Queue ``metrics`` (``mlflow.entities.Metric``) for writing, in order; returns at once."""
        if not metrics:
            return
        with self._changed:
            self._batches.extend(step_batches(metrics))
            self._waiting += len(metrics)
            # The oldest batches to the file, never the one being written (nor the newest).
            oldest = 1 if self._busy else 0
            while self._waiting > MAX_WAITING and len(self._batches) > oldest + 1:
                batch = self._batches[oldest]
                del self._batches[oldest]
                self._spill([batch])
            self._stopping = False
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._write_all, name="rlstack-metrics", daemon=True
                )
                self._thread.start()
            self._changed.notify_all()

    def flush(self, timeout_s: float) -> bool:
        """Wait until every queued batch is written (True) or ``timeout_s`` pass (False)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._batches or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def stop(self) -> None:
        """End the thread once nothing is queued (a later :meth:`put` starts another)."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()

    def unsent(self) -> list[Any]:
        """The metrics queued and not yet written (the one being written among them), in order."""
        with self._changed:
            return [m for batch in self._batches for m in batch]

    def keep_unsent(self) -> int:
        """Move every batch not written yet to :attr:`spill_path`; how many values
        that file now holds in all.
        """
        with self._changed:
            unsent = list(self._batches)
            self._batches.clear()
            self._spill(unsent)
            return self._spilled

    def _spill(self, batches: list[list[Any]]) -> None:
        """Append ``batches`` to the spill file (under the lock)."""
        lines = [
            json.dumps({"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step})
            for batch in batches
            for m in batch
        ]
        if lines:
            if self.spill_path is None:
                self.spill_path = _spill_folder() / self.spill_name
            try:
                _append(self.spill_path, lines)
            except OSError:  # its disk is full too (the store's, often): the temp directory
                self.spill_path = Path(tempfile.gettempdir()) / self.spill_name
                _append(self.spill_path, lines)
        count = sum(len(batch) for batch in batches)
        self._spilled += count
        self._waiting -= count

    def _write_all(self) -> None:
        """The thread: write the first batch, again after a pause where it fails."""
        pause = 1.0
        while True:
            with self._changed:
                while not self._batches:
                    if self._stopping:
                        self._thread = None
                        return
                    self._changed.wait()
                batch, self._busy = self._batches[0], True
            try:
                self.client.log_batch(self.run_id, metrics=batch)
            except Exception as e:  # the store is away: this batch stays first
                with self._changed:
                    self._busy = False
                    self.error, self.failure = e, f"{type(e).__name__}: {e}".splitlines()[0]
                    self._changed.notify_all()
                _sleep(pause)
                pause = min(2 * pause, RETRY_MAX_S)
                continue
            pause = 1.0
            with self._changed:
                if self._batches and self._batches[0] is batch:  # not spilled meanwhile
                    self._batches.popleft()
                    self._waiting -= len(batch)
                self._busy, self.error, self.failure = False, None, None
                self._changed.notify_all()


def step_batches(metrics: list[Any]) -> list[list[Any]]:
    """``metrics`` (in step order) cut into requests of at most :data:`BATCH_LIMIT`, never
    inside a step that fits in one: what the store holds is then whole steps, all of them up
    to the last it holds (a recovered run relies on it).
    """
    batches: list[list[Any]] = []
    current: list[Any] = []
    for _, grouped in itertools.groupby(metrics, key=lambda m: m.step):
        step = list(grouped)
        if current and len(current) + len(step) > BATCH_LIMIT:
            batches.append(current)
            current = []
        if len(step) > BATCH_LIMIT:  # one step beyond a request: requests of its own
            batches += [step[i : i + BATCH_LIMIT] for i in range(0, len(step), BATCH_LIMIT)]
        else:
            current += step
    return batches + ([current] if current else [])


def _append(path: Path, lines: list[str]) -> None:
    """Append ``lines`` to the text file ``path``."""
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n")


def _spill_folder() -> Path:
    """The working directory, or the temp directory where it is gone."""
    try:
        return Path.cwd()
    except OSError:
        return Path(tempfile.gettempdir())
