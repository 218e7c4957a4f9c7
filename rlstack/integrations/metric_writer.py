"""A run's metrics: recorded and thinned in time (:class:`MetricLog`), and
written to MLflow off the training loop (:class:`MetricWriter`), a thread of
their own, in order, waiting out a tracking server that does not answer.

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
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .store_errors import store_full_error

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

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
        with self._changed:
            return self._changed.wait_for(lambda: not (self._batches or self._busy), timeout_s)

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


_clock = time.monotonic  # the clock of MetricLog's points and writes (a test replaces it)


#: Longest time, in seconds, recorded points wait in memory before they are
#: written (TensorBoard's ``SummaryWriter`` waits up to 120 s).
FLUSH_EVERY_S = 30.0
#: How long a flush during training (a checkpoint's) waits for the writes to land, in seconds.
FLUSH_WAIT_S = 10.0
#: How long a run's end waits for the tracking store to take its last metrics, in seconds.
END_WAIT_S = 120.0


class MetricLog:
    """A run's metrics, thinned out in time and written to MLflow in batches.

    A point (the stats of one step, stamped with its ``step``) is recorded
    at most every ``log_every_s`` seconds (0: every step); the first step,
    every forced point (evaluations) and the last step are always recorded:
    the latest step not recorded is held, and recorded by :meth:`flush`, or
    with the next forced point. Recorded points wait in memory and are
    handed to a :class:`~rlstack.integrations.metric_writer.MetricWriter`
    (a thread that writes them in order, one request per 1000 metrics,
    waiting out a store that does not answer) once ``flush_every_s``
    seconds have passed since the last write, and on :meth:`flush`. Each
    write to the store has a fixed cost (a SQLite transaction, or a round
    trip to a server: 11 ms on a slow 2-core machine) on top of its cost per
    metric (70-280 us into SQLite, in SQLAlchemy's ORM), which is why writes
    are rare (MLflow's own asynchronous logging writes every call, which
    measured slower on 2 cores: benchmarks/README.md); training never waits
    for a store that is away, but a flush waits up to :data:`FLUSH_WAIT_S`
    and :meth:`close` up to :data:`END_WAIT_S` for the writes to land.

    Args:
        client: the tracking client.
        run_id: the run written to.
        flush_every_s: longest time, in seconds, recorded points wait in memory.
        log_every_s: shortest time, in seconds, between two recorded points.
    """

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        *,
        flush_every_s: float = FLUSH_EVERY_S,
        log_every_s: float = 1.0,
        logged_until: int = 0,
    ) -> None:
        self.client, self.run_id = client, run_id
        self.flush_every_s, self.log_every_s = flush_every_s, log_every_s
        self.logged_until = logged_until
        self.writer = MetricWriter(client, run_id, f"rlstack-unsent-metrics-{run_id}.jsonl")
        self.pending: list[Any] = []
        self.held: tuple[Mapping[str, float], int, int] | None = (
            None  # the latest step's (stats, step, ms), not recorded
        )
        self._last_flush = _clock()
        self._last_point: float | None = None

    def log(self, stats: Mapping[str, float], step: int, *, force: bool = False) -> None:
        """Record ``stats`` at ``step`` (timestamped now) if it is time to, or ``force``;
        never a step up to :attr:`logged_until` (a recovered run's replay: the run holds them).
        """
        if step <= self.logged_until:
            return
        timestamp, now = int(time.time() * 1000), _clock()
        if force:  # with the held step: the stats of the step this point belongs to
            self._record_held()
            self._record(stats, step, timestamp)
        elif self._last_point is None or now - self._last_point >= self.log_every_s:
            self._record(stats, step, timestamp)
            self.held, self._last_point = None, now
        else:
            self.held = (dict(stats), step, timestamp)  # a copy: the caller's dict may change
        if now - self._last_flush >= self.flush_every_s:
            self._write()

    def flush(self, wait_s: float = FLUSH_WAIT_S) -> bool:
        """Record the held step and hand every recorded point to the writer;
        wait up to ``wait_s`` seconds for them to land (True if they did).
        """
        self._record_held()
        self._write()
        return self.writer.flush(wait_s)

    def unsent(self) -> list[list[Any]]:
        """The points handed to the writer and not yet written, as ``[key, value, timestamp in
        ms, step]`` (what a checkpoint keeps, so that a killed run loses none of them).
        """
        return [[m.key, m.value, m.timestamp, m.step] for m in self.writer.unsent()]

    def resend(self, points: list[list[Any]]) -> None:
        """Queue a checkpoint's :meth:`unsent` points of steps after :attr:`logged_until`
        (with their own timestamps: one the store holds already is not written twice).
        """
        from mlflow.entities import Metric

        self.writer.put(
            [
                Metric(key, float(value), int(timestamp), int(step))
                for key, value, timestamp, step in points
                if step > self.logged_until
            ]
        )

    def close(self, wait_s: float = END_WAIT_S) -> None:
        """:meth:`flush`, waiting up to ``wait_s``; what the store did not take
        by then is kept in a local file, named in one line on stderr.
        """
        landed = self.flush(wait_s)
        self.writer.stop()
        if landed:
            return
        kept = self.writer.keep_unsent()
        uri = getattr(self.client, "tracking_uri", None)
        full = self.writer.error and uri and store_full_error(self.writer.error, uri)
        store = f"the tracking store {uri}" if uri else "the tracking store"
        print(
            f"rlstack: {store} did not take run {self.run_id}'s metrics within "
            f"{wait_s:.0f} s ({full or self.writer.failure}); {kept} metric values are kept in "
            f"{self.writer.spill_path} (JSON lines: key, value, timestamp in ms, step).",
            file=sys.stderr,
            flush=True,
        )

    def _record(self, stats: Mapping[str, float], step: int, timestamp: int) -> None:
        from mlflow.entities import Metric

        self.pending += [Metric(k, float(v), timestamp, step) for k, v in stats.items()]

    def _record_held(self) -> None:
        if self.held is not None:
            self._record(*self.held)
            self.held = None

    def _write(self) -> None:
        pending, self.pending = self.pending, []
        self.writer.put(pending)
        self._last_flush = _clock()
