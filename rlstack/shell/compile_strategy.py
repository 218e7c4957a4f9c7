"""Compiled speed without the wait: a run starts with its pieces eager and
switches each to its compiled form as soon as it is ready.

The pieces are those a :class:`~rlstack.learn.transforms.Staged` function
names compilable (a rollout's step, an update's minibatch step, ...). Each
piece's first call records its inputs. Once the first iteration has run at
eager speed, undisturbed, a background thread loads the pieces the compile
cache (:mod:`rlstack.integrations.compile_cache`) has, and a forked child
process compiles the others ahead of time for those inputs, stores them
there and hands them back
(:mod:`rlstack.shell.compile_worker`). At the start of a
collect (rollout pieces) or of an update (update pieces) the strategy
swaps in the pieces that are ready and records the update count at which
each switched (:attr:`CompileStrategy.switched`). Told switch points
(``compile_switches``), it switches exactly there, waiting for a piece that
is not ready, so a run reproduces a recorded one bit for bit: a compiled
piece computes what the eager one does up to float rounding, and the
random streams are data.

From the first iteration's end until every piece has switched, training
runs one intra-op thread fewer: a team of threads that has to share its
cores with the compiling child (or the loading thread) stalls at every
parallel region. Given switch points, the count follows from them alone,
so a replay, or a run resumed anywhere, runs at the recorded run's counts.
A run resumed past a piece's switch point runs that piece compiled from
its first call, as the recorded run did. Pieces are traced on one thread
(:data:`rlstack.integrations.compile_cache.TRACE_THREADS`, their kernels
generated for the training's count) and their guards are checked at it.

A switched piece runs without torch's guards (:class:`CheckedPiece`):
rlstack checks the inputs' structure, shapes, strides, dtypes and devices
on every call but those a loop makes on inputs of the layout its previous
call had (:func:`rlstack.learn.transforms.same_inputs_as_before`), and runs
the eager piece for inputs of another layout.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..integrations import compile_cache
from ..learn import transforms
from ..learn.transforms import Staged
from .compile_worker import Job, Loader, can_fork, compile_here, fork_compiler, kill


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
        jobs: piece name -> its :class:`~rlstack.shell.compile_worker.Job`, from its first call on.
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
        self.jobs: dict[str, Job] = {}
        self._loader: Loader | None = None
        self._started = False  # whether the first iteration has ended (lookups started)
        self._threads: int | None = None  # the training's intra-op threads, from the start on
        self._steps = 0  # the update count of the iteration under way
        self._checked: dict[str, CheckedPiece] = {}  # the switched pieces

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
            if name in self._checked:  # switched at its first call (a resumed run)
                return self._checked[name](*args)
            job = self.jobs.get(name)
            if job is None:
                threads = self._threads or torch.get_num_threads()  # training's own count
                description = {**self.describe(name, args), "intra_op_threads": threads}
                self.jobs[name] = job = Job(name, fn, args, description)
                passed = self.given.get(name, self._steps + 1) <= self._steps
                if self._started or passed:  # first called after the first iteration
                    self._look_up(job)
                if passed:
                    return self._switch_passed(job)(*args)
            else:
                job.calls += 1
            start = time.perf_counter()
            out = fn(*args)
            job.eager_seconds += time.perf_counter() - start
            return out

        return piece

    def _switch_passed(self, job: Job) -> Callable:
        """The piece of ``job`` first called at an update past its given
        switch point (a run resumed after it switched): compiled now, as the
        recorded run had it; the eager piece where none can be had.
        """
        self._wait_for(job)
        return self._switch(job, self.given[job.name]) or job.fn

    # ---------------------------------------------------------- switching
    def before(self, kind: str, staged: Staged, steps: int) -> Staged:
        """``staged`` (``kind`` ``"rollout"`` or ``"update"``) with the pieces
        due at ``steps`` updates swapped for their compiled forms: a given
        switch point reached (waiting for the piece), else, when ``free``,
        any piece ready. From the second iteration on, the pieces the cache
        did not have are compiled in the background, those that cost the
        most time eagerly first.
        """
        self._start(steps)
        pieces = dict(staged.pieces)
        for name, job in self.jobs.items():
            if not name.startswith(kind + "/") or name in self.switched:
                continue
            if name in self.given and steps >= self.given[name]:
                self._wait_for(job)
            elif name in self.given or not (self.free and job.done.is_set()):
                continue
            self._switch(job, steps)
        for name, checked in self._checked.items():
            if name.startswith(kind + "/"):
                pieces[name.partition("/")[2]] = checked
        self._set_threads(kind, steps)
        return staged._replace(pieces=pieces)

    def begin(self, kind: str, steps: int) -> None:
        """Note that ``kind`` (``"rollout"`` or ``"update"``) runs next, at
        ``steps`` updates (:meth:`before` does it; called alone before a
        rollout that is not built yet).
        """
        self._start(steps)
        self._set_threads(kind, steps)

    def _start(self, steps: int) -> None:
        """Note the update count; from the second iteration on, look up the
        pieces and compile those the cache lacks.
        """
        self._steps = steps
        if steps >= 1:
            if not self._started:  # the first iteration ran undisturbed
                self._started = True
                self._threads = torch.get_num_threads()
                for name, job in self.jobs.items():
                    if name not in self.switched:
                        self._look_up(job)
            self._compile()

    def _wait_for(self, job: Job) -> None:
        """Wait for ``job``'s compiled form: loaded, or compiled (in a child,
        or here) where the cache lacks it.
        """
        self._compile(job)
        job.done.wait()

    def _set_threads(self, kind: str, steps: int) -> None:
        """One intra-op thread fewer while :meth:`_still_compiling`, else the training's own."""
        if self._threads is not None:
            fewer = self._still_compiling(kind, steps)
            wanted = max(1, self._threads - 1) if fewer else self._threads
            if torch.get_num_threads() != wanted:
                torch.set_num_threads(wanted)

    def _switch(self, job: Job, steps: int) -> CheckedPiece | None:
        """Record ``job``'s piece switched at ``steps`` and return it checked;
        ``None`` where it has no compiled form (it stays eager, for good).
        """
        if job.compiled is not None and not compile_cache.guards_accept(job.compiled, job.args):
            self.cache.refuse(job.description, "its guards refuse the example inputs")
            job.compiled = None
            job.error = "its guards refuse the inputs it was compiled for"
        if job.compiled is None:
            compile_cache.notice(f"{job.name} stays eager: {job.error}")
            self.switched[job.name] = -1  # never again
            return None
        checked = CheckedPiece(job.name, job.compiled, job.fn, compile_cache.signature(job.args))
        self._checked[job.name] = checked
        self.switched[job.name] = steps
        job.args = ()  # the example inputs are no longer needed
        return checked

    def _still_compiling(self, kind: str, steps: int) -> bool:
        """Whether training runs one intra-op thread fewer from here (``kind``
        at ``steps`` updates) on: a piece still to switch at a later given
        point (the update's after this update count's rollout), or, when
        ``free``, one called and not switched yet. A team of threads that
        shares its cores with the compiling child or the loading thread
        stalls at every parallel region. A function of the switch points,
        so a replay, or a run resumed anywhere, has the recorded run's
        thread counts.
        """
        later = {"rollout": ("update/",), "update": ()}[kind]
        return steps >= 1 and (
            any(
                point > steps or (point == steps and name.startswith(later))
                for name, point in self.given.items()
            )
            or (
                self.free
                and any(name not in self.switched and name not in self.given for name in self.jobs)
            )
        )

    def follow(self, record: Mapping[str, int]) -> None:
        """Switch the pieces in a resumed run's ``record`` at the update counts
        recorded there (waiting for them); the others as this strategy would.
        """
        self.given.update(record)

    @property
    def record(self) -> dict[str, int]:
        """The switch points so far (pieces that never switched left out)."""
        return {name: steps for name, steps in self.switched.items() if steps >= 0}

    # --------------------------------------------------------- the work
    def _look_up(self, job: Job) -> None:
        """Start ``job``'s cache lookup: a miss at once, a load in the loader thread."""
        if not self.cache.has(job.description):
            job.looked_up.set()
            return
        self._loader_thread().look_up(job)

    def _loader_thread(self) -> Loader:
        """The loader thread, started on first use."""
        if self._loader is None:
            self._loader = Loader(self.cache)
            weakref.finalize(self, self._loader.stop)  # a strategy gone: no more work
        return self._loader

    def _compile(self, *wanted: Job) -> None:
        """Compile the pieces the cache did not have and no child compiles yet
        (of ``wanted``, or of all), the costliest eagerly first, in a forked
        child (or here, where none can be forked). The child is forked while
        the loader is idle: with lookups in flight this waits for them where
        pieces are ``wanted`` (at a given switch point), else tries again at
        the next boundary.
        """
        if any(not job.looked_up.is_set() for job in self.jobs.values()):
            if not wanted:
                return
            for job in self.jobs.values():
                job.looked_up.wait()
        jobs = list(wanted or self.jobs.values())
        missing = sorted(
            (job for job in jobs if not job.done.is_set() and not job.compiling),
            key=lambda job: -job.eager_seconds,  # what costs the most eagerly first
        )
        if not missing:
            return
        for job in missing:
            job.compiling = True
        if not can_fork():
            compile_cache.notice(
                "no child process can compile here (no fork, or CUDA is initialised): the pieces "
                "compile in this process, between two iterations."
            )
            compile_here(missing, self.cache)
            return
        pid, fd = fork_compiler(missing, self.cache)
        # A strategy collected: its child too; at a normal exit the child finishes storing.
        weakref.finalize(self, kill, pid).atexit = False
        self._loader_thread().receive(pid, fd, missing)
