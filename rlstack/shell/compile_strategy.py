"""Compiled speed without the wait: a run starts with its pieces eager and
switches each to its compiled form as soon as a background thread has it.

The pieces are those a :class:`~rlstack.learn.transforms.Staged` function
names compilable (a rollout's step, an update's minibatch step, ...). Each
piece's first call records its inputs; a background thread then loads the
piece from the compile cache (:mod:`rlstack.integrations.compile_cache`) at
once, or, once the first iteration has run at eager speed, compiles it
ahead of time for those inputs and stores it there. At the start of a
collect (rollout pieces) or of an update (update pieces) the strategy
swaps in the pieces that are ready and records the update count at which
each switched (:attr:`CompileStrategy.switched`). Told switch points
(``compile_switches``), it switches exactly there, waiting for a piece that
is not ready, so a run reproduces a recorded one bit for bit: a compiled
piece computes what the eager one does up to float rounding, and the
random streams are data.

A switched piece runs without torch's guards (:class:`CheckedPiece`):
rlstack checks the inputs' structure, shapes, strides, dtypes and devices
on every call but those a loop makes on inputs of the layout its previous
call had (:func:`rlstack.learn.transforms.same_inputs_as_before`), and runs
the eager piece for inputs of another layout.
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from ..integrations import compile_cache
from ..learn import transforms
from ..learn.transforms import Staged


class CheckedPiece:
    """A compiled piece called without torch's guards, behind rlstack's own
    check of its inputs against those it was compiled for.

    Args:
        name: the piece (``"rollout/step"``), for the notice.
        compiled: the ahead-of-time compiled function (its guards are turned off).
        eager: the piece itself, run for inputs of another layout.
        signature: :func:`rlstack.integrations.compile_cache.signature` of
            the inputs it was compiled for.
    """

    def __init__(self, name: str, compiled: Any, eager: Callable, signature: list) -> None:
        compiled.disable_guard_check()
        self.name = name
        self.compiled = compiled
        self.eager = eager
        self.signature = signature

    def __call__(self, *args: Any) -> Any:
        """The compiled piece on ``args``, or the eager one for inputs of another layout."""
        if transforms.inputs_as_before() or compile_cache.signature(args) == self.signature:
            return self.compiled(*args)
        compile_cache.notice(
            f"{self.name} got inputs of another layout than it was compiled for: runs eagerly."
        )
        return self.eager(*args)


class _Job:
    """One piece's way to its compiled form: its first inputs, then a result."""

    def __init__(self, name: str, fn: Callable, args: tuple, description: dict[str, Any]) -> None:
        self.name = name
        self.fn = fn
        self.args = args
        self.description = description  # its key in the cache
        self.calls = 1
        self.compiled: Any = None  # the compiled function, once there is one
        self.how = ""  # "loaded" or "compiled"
        self.seconds = 0.0
        self.error: str | None = None
        self.looked_up = threading.Event()  # the cache was asked
        self.done = threading.Event()  # compiled, loaded, or given up
        self.compile_asked = False


class CompileStrategy:
    """The background compile strategy over an Algorithm's staged functions.

    Args:
        describe: ``describe(piece, args) -> dict``, everything that shapes
            the piece's graph for these inputs (its key in the cache).
        folder: the compile cache folder (see
            :func:`rlstack.integrations.compile_cache.cache_root`).
        switches: piece name -> the update count at which it switches
            (a recorded run's :attr:`switched`).
        free: whether pieces not in ``switches`` switch as soon as ready
            (a resumed run) or never (a run reproducing a recorded one).

    Attributes:
        switched: piece name -> the update count at which it switched.
        jobs: piece name -> its :class:`_Job`, from its first call on.
    """

    def __init__(
        self,
        describe: Callable[[str, tuple], dict[str, Any]],
        *,
        folder: str | None,
        switches: Mapping[str, int],
        free: bool,
    ) -> None:
        self.describe = describe
        self.cache = compile_cache.CompileCache(folder)
        if self.cache.writable:
            compile_cache.use_kernel_folder(self.cache.root)
        self.given = dict(switches)
        self.free = free
        self.switched: dict[str, int] = {}
        self.jobs: dict[str, _Job] = {}
        self._worker: _Worker | None = None
        self._first_iteration_done = False

    # ------------------------------------------------------------ recording
    def recording(self, kind: str, staged: Staged) -> Staged:
        """``staged`` with each compilable piece recording its first call
        (and starting its cache lookup); the pieces run eagerly.
        """
        pieces = dict(staged.pieces)
        for name in staged.compile:
            pieces[name] = self._recorder(f"{kind}/{name}", staged.pieces[name])
        return staged._replace(pieces=pieces)

    def _recorder(self, name: str, fn: Callable) -> Callable:
        def piece(*args: Any) -> Any:
            job = self.jobs.get(name)
            if job is None:
                self.jobs[name] = job = _Job(name, fn, args, self.describe(name, args))
                self._submit(job, compile=name in self.given)
            else:
                job.calls += 1
            return fn(*args)

        return piece

    # ---------------------------------------------------------- switching
    def before(self, kind: str, staged: Staged, steps: int) -> Staged:
        """``staged`` (``kind`` ``"rollout"`` or ``"update"``) with the pieces
        due at ``steps`` updates swapped for their compiled forms: a given
        switch point reached (waiting for the piece), else, when ``free``,
        any piece ready. From the second iteration on, the pieces the cache
        did not have are compiled in the background, the most called first.
        """
        if steps >= 1 and not self._first_iteration_done:
            self._first_iteration_done = True
            for job in sorted(self.jobs.values(), key=lambda j: -j.calls):
                self._submit(job, compile=True)
        pieces = dict(staged.pieces)
        for name, job in self.jobs.items():
            piece = name.partition("/")[2]
            if not name.startswith(kind + "/") or name in self.switched:
                continue
            if name in self.given and steps >= self.given[name]:
                job.done.wait()
            elif name in self.given or not (self.free and job.done.is_set()):
                continue
            if job.compiled is not None and not job.compiled.guard_check(*job.args):
                self.cache.refuse(job.description, "its guards refuse the example inputs")
                job.compiled = None  # compiled anew (waited for at a given switch point)
                job.done.clear()
                job.compile_asked = False
                self._submit(job, compile=True)
                if name in self.given:
                    job.done.wait()
            if job.compiled is None:
                compile_cache.notice(f"{name} stays eager: {job.error}")
                self.switched[name] = -1  # never again
                continue
            pieces[piece] = CheckedPiece(
                name, job.compiled, job.fn, compile_cache.signature(job.args)
            )
            self.switched[name] = steps
            job.args = ()  # the example inputs are no longer needed
        return staged._replace(pieces=pieces)

    def follow(self, record: Mapping[str, int]) -> None:
        """Switch the pieces in a resumed run's ``record`` at the update counts
        recorded there (waiting for them); the others as this strategy would.
        """
        self.given.update(record)

    @property
    def record(self) -> dict[str, int]:
        """The switch points so far (pieces that never switched left out)."""
        return {name: steps for name, steps in self.switched.items() if steps >= 0}

    # -------------------------------------------------------- the thread
    def _submit(self, job: _Job, *, compile: bool) -> None:
        """Queue ``job``'s cache lookup, or (``compile``) its compilation
        after a lookup that found nothing.
        """
        if compile:
            if job.compile_asked:
                return
            job.compile_asked = True
        if self._worker is None:
            self._worker = _Worker(self.cache)
            weakref.finalize(self, self._worker.stop)  # a strategy gone: no more jobs
        self._worker.put(job, compile)


class _Worker:
    """The background thread: looks pieces up in the cache and compiles them,
    one job at a time; it ends after the job at hand once :meth:`stop` is called.
    """

    def __init__(self, cache: compile_cache.CompileCache) -> None:
        self.cache = cache
        self.queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._work, name="rlstack-compile", daemon=True).start()

    def put(self, job: _Job, compile: bool) -> None:
        """Queue a lookup (and, with ``compile``, a compilation) of ``job``."""
        self.queue.put((job, compile))

    def stop(self) -> None:
        """End the thread after the job at hand."""
        self.queue.put(None)

    def _work(self) -> None:
        while (item := self.queue.get()) is not None:
            job, compile = item
            if not job.done.is_set():
                self._run(job, compile)

    def _run(self, job: _Job, compile: bool) -> None:
        start = time.perf_counter()
        try:
            if not job.looked_up.is_set():
                job.compiled = self.cache.load(job.description, job.fn)
                job.how = "loaded"
                job.looked_up.set()
            if job.compiled is None and compile:
                job.compiled = compile_cache.aot_compile(
                    job.fn, job.args, transforms.INDUCTOR_OPTIONS
                )
                job.how = "compiled"
                self.cache.save(job.description, job.fn, job.compiled)
        except Exception as e:  # a piece Dynamo cannot compile stays eager
            job.error = f"{type(e).__name__}: {e}".splitlines()[0]
            job.compiled = None
            job.done.set()
            return
        job.seconds += time.perf_counter() - start
        if job.compiled is not None or compile:
            job.done.set()
