"""Where the background compile strategy's work happens, away from the
training loop: a thread that loads pieces from the compile cache
(:class:`Loader`), and a forked child process that compiles the pieces the
cache did not have (:func:`fork_compiler`) and hands each back through a pipe.

Compiling runs in a child process, not a thread: tracing a piece races with
the training thread's own eager ``torch.func`` transforms (their interpreter
levels are process state), and Python holds one lock for both. The child
is forked at an iteration boundary, so the training thread holds no torch
lock; it is killed when its strategy is garbage collected and by Ctrl-C or
SIGTERM (the default handlers), but a run that ends normally before its
pieces compiled leaves it to finish storing them for the next run of the
same configuration (:func:`children`). Where a child cannot be forked (no ``fork``, or CUDA is
initialised: a forked child cannot use it), the pieces compile in the
training process between two iterations instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import torch

from ..integrations import compile_cache
from ..learn.transforms import INDUCTOR_OPTIONS


class Job:
    """One piece's way to its compiled form: its first inputs, then a result.

    Attributes:
        name: the piece (``"rollout/step"``).
        fn: the piece itself (eager).
        args: its first call's inputs (dropped once it has switched).
        description: its key in the cache (what shapes its graph).
        calls: how often it was called.
        eager_seconds: the time its eager calls took (the costliest compile first).
        compiling: whether a child (or this process) was asked to compile it.
        compiled: the compiled function, once there is one.
        how: ``"loaded"`` or ``"compiled"``.
        error: why it has none, where it failed.
        seconds: the time spent loading or compiling it.
        looked_up: set once the cache was asked.
        done: set once it is compiled, loaded, or given up.
    """

    def __init__(self, name: str, fn: Any, args: tuple, description: dict[str, Any]) -> None:
        self.name = name
        self.fn = fn
        self.args = args
        self.description = description
        self.calls = 1
        self.eager_seconds = 0.0
        self.compiling = False
        self.compiled: Any = None
        self.how = ""
        self.error: str | None = None
        self.seconds = 0.0
        self.looked_up = threading.Event()
        self.done = threading.Event()


class Loader:
    """The thread that looks pieces up in the cache and takes compiled pieces
    from a child; it ends after the item at hand once :meth:`stop` is called.
    """

    def __init__(self, cache: compile_cache.CompileCache) -> None:
        self.cache = cache
        self.queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._work, name="rlstack-compile", daemon=True).start()

    def look_up(self, job: Job) -> None:
        """Queue a cache lookup of ``job`` (done only if found)."""
        self.queue.put(("look up", job))

    def receive(self, pid: int, fd: int, jobs: Sequence[Job]) -> None:
        """Queue the results of the child ``pid`` compiling ``jobs``, read from ``fd``."""
        self.queue.put(("receive", (pid, fd, jobs)))

    def stop(self) -> None:
        """End the thread after the item at hand."""
        self.queue.put(None)

    def _work(self) -> None:
        while (item := self.queue.get()) is not None:
            what, payload = item
            if what == "look up":
                self._look_up(payload)
            else:
                self._receive(*payload)

    def _look_up(self, job: Job) -> None:
        start = time.perf_counter()
        job.compiled = self.cache.load(job.description, job.fn)
        job.seconds += time.perf_counter() - start
        if job.compiled is not None:
            job.how = "loaded"
            job.done.set()
        job.looked_up.set()

    def _receive(self, pid: int, fd: int, jobs: Sequence[Job]) -> None:
        by_name = {job.name: job for job in jobs}
        with os.fdopen(fd, "rb") as pipe:
            while header := pipe.readline():
                result = json.loads(header)
                job = by_name[result["name"]]
                data = pipe.read(result["size"])
                job.seconds = result["seconds"]
                if result.get("error"):
                    job.error = result["error"]
                else:
                    job.compiled = self.cache.from_bytes(job.description, data, job.fn)
                    job.how = "compiled"
                job.done.set()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        _CHILDREN.discard(pid)
        for job in jobs:  # a child that died before handing a piece back
            if not job.done.is_set():
                job.error = "the compiling process ended before it"
                job.done.set()


#: The compiling children of this process not yet reaped.
_CHILDREN: set[int] = set()


def children() -> set[int]:
    """The compiling children of this process that have not ended."""
    return set(_CHILDREN)


def kill(pid: int) -> None:
    """Kill the compiling child ``pid`` if it still runs, and reap it."""
    with contextlib.suppress(ProcessLookupError, ChildProcessError):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    _CHILDREN.discard(pid)


def can_fork() -> bool:
    """Whether pieces can compile in a forked child (see the module docstring)."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    return hasattr(os, "fork") and not cuda


def fork_compiler(jobs: Sequence[Job], cache: compile_cache.CompileCache) -> tuple[int, int]:
    """Fork a child that compiles ``jobs`` in order, stores each in ``cache``
    (where it can) and writes it to a pipe; ``(pid, read end)``.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read)
        code = 0
        try:
            _compile_and_send(jobs, cache, write)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    _CHILDREN.add(pid)
    return pid, read


def _compile_and_send(jobs: Sequence[Job], cache: compile_cache.CompileCache, fd: int) -> None:
    """The child's work: a header line and the bytes of each compiled piece,
    each stored in the cache first; a parent gone (the pipe broken), it goes
    on storing them.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):  # a stop kills the child, quietly
        signal.signal(sig, signal.SIG_DFL)
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (the child's to the end)
    _compile_alone(max(int(job.description.get("intra_op_threads", 1)) for job in jobs))
    pipe = os.fdopen(fd, "wb")
    for job in jobs:
        start = time.perf_counter()
        data, error = b"", None
        try:
            compiled = compile_cache.aot_compile(job.fn, job.args, INDUCTOR_OPTIONS)
            data = compile_cache.to_bytes(compiled, job.fn)
            cache.save(job.description, data)
        except Exception as e:  # a piece Dynamo cannot compile stays eager
            error = f"{type(e).__name__}: {e}".splitlines()[0]
        seconds = time.perf_counter() - start
        header = {"name": job.name, "size": len(data), "seconds": seconds, "error": error}
        with contextlib.suppress(OSError):  # the parent has ended: store the rest
            pipe.write(json.dumps(header).encode() + b"\n" + data)
            pipe.flush()


def _compile_alone(threads: int) -> None:
    """Make a forked child compile on its own thread, with no worker the parent
    started, kernels parallelised for the training's ``threads``.

    A fork copies the parent's thread pools without their threads: Inductor's
    pool of compile threads (which a parent that compiled before, with
    ``compile=True``, has started) would queue work that no thread takes, and
    an OpenMP team would wait for threads that are not there. So the child
    compiles synchronously (``compile_threads = 1``, Inductor's pools
    forgotten) and runs any op on one thread, as PyTorch's forked DataLoader
    workers do, while its kernels are generated for the threads the training
    runs them on.
    """
    torch.set_num_threads(1)
    import torch._inductor.config as inductor_config

    inductor_config.compile_threads = 1
    inductor_config.cpp.threads = threads
    async_compile = sys.modules.get("torch._inductor.async_compile")
    if async_compile is not None:  # loaded in the parent: its pools are the parent's
        async_compile.AsyncCompile.pool.cache_clear()
        async_compile.after_fork()


def compile_here(jobs: Sequence[Job], cache: compile_cache.CompileCache) -> None:
    """Compile ``jobs`` in this process (where no child can be forked), their
    kernels for the training's threads (traced at one, as in a child).
    """
    import torch._inductor.config as inductor_config

    for job in jobs:
        start = time.perf_counter()
        threads = int(job.description.get("intra_op_threads", torch.get_num_threads()))
        try:
            with inductor_config.patch({"cpp.threads": threads}):
                job.compiled = compile_cache.aot_compile(job.fn, job.args, INDUCTOR_OPTIONS)
            job.how = "compiled"
            cache.save(job.description, compile_cache.to_bytes(job.compiled, job.fn))
        except Exception as e:
            job.error = f"{type(e).__name__}: {e}".splitlines()[0]
        job.seconds += time.perf_counter() - start
        job.done.set()
