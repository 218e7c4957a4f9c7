"""Compiled pieces on disk, so that a later run of the same configuration
loads them instead of compiling them.

A piece (a rollout step, a minibatch gradient, ...) is compiled ahead of
time with ``torch.compile(fn, fullgraph=True).aot_compile(example_inputs)``
and saved with ``save_compiled_function``; a later run loads it with
``torch.compiler.load_compiled_function``: no Dynamo tracing, no Inductor
code generation. What the function closes over (the env, the policy, the
config, ...) is not stored: every object it reaches through closures is
handed back from the live run at load (``external_data``), so only code and
graphs are on disk and nothing a user's env holds needs to pickle. The
kernels Inductor compiled live in the cache's ``inductor/`` folder, which
rlstack makes Inductor's cache folder (``TORCHINDUCTOR_CACHE_DIR``) unless the
user has set one.

Layout: ``<root>/v<FORMAT>/<key[:2]>/<key>/function.bin`` beside
``meta.json`` (the description the key hashes, the function's size and
SHA-256); ``<root>/inductor/`` for kernels. ``<root>`` is the ``folder``
argument, else ``$RLSTACK_COMPILE_CACHE``, else
``$XDG_CACHE_HOME/rlstack/compile`` (``~/.cache/rlstack/compile``).

An entry is used only if its description equals the one asked for (the
piece, the config, the example inputs' structure, shapes, strides, dtypes
and devices, torch's, rlstack's and Python's versions), its bytes hash to
what ``meta.json`` says, the sources Dynamo inlined are unchanged, and the
loaded function's guards accept the example inputs; anything else is
rebuilt (:meth:`CompileCache.load` says why in ``rejected``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import inspect
import io
import json
import os
import platform
import sys
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optree
import torch

from ..core.version import __version__
from .atomic_files import atomic_write

#: The entry layout's version (a folder of its own).
FORMAT = 1
#: The environment variable naming the cache folder.
ENV_VAR = "RLSTACK_COMPILE_CACHE"
_NOTICES: set[str] = set()
#: The user's own Inductor cache folder, if any (Inductor writes its default into the
#: environment the first time it asks, so it is read before then).
_USER_KERNEL_FOLDER = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
_PLAIN = (int, float, str, bool, bytes, type(None))


def notice(text: str) -> None:
    """Print ``rlstack: <text>`` to stderr, once per process."""
    if text not in _NOTICES:
        _NOTICES.add(text)
        print(f"rlstack: {text}", file=sys.stderr, flush=True)


def missing_api() -> str | None:
    """The ahead-of-time compile API this torch lacks, or ``None`` when it has all."""
    if not hasattr(torch.compiler, "load_compiled_function"):
        return "torch.compiler.load_compiled_function"
    # Looked for on disk: importing Dynamo to ask would cost seconds before the first iteration.
    if not (Path(torch.__file__).parent / "_dynamo" / "aot_compile.py").is_file():
        return "torch.compile(fn).aot_compile"
    return None


def cache_root(folder: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``folder``, else ``$RLSTACK_COMPILE_CACHE``, else the user's cache."""
    if folder is not None:
        return Path(folder)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rlstack" / "compile"


def signature(args: Any) -> list[Any]:
    """What a compiled piece's inputs must keep: the tree structure, and per
    leaf a tensor's shape, strides, dtype and device or a plain value's type
    and value (JSON-able, comparable with ``==``).
    """
    leaves, spec = optree.tree_flatten(args, none_is_leaf=True)
    described: list[Any] = [str(spec)]
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            described.append(
                [list(leaf.shape), list(leaf.stride()), str(leaf.dtype), str(leaf.device)]
            )
        else:
            described.append([type(leaf).__name__, leaf if isinstance(leaf, _PLAIN) else None])
    return described


def versions() -> dict[str, str]:
    """The versions a compiled entry depends on."""
    return {
        "torch": torch.__version__,
        "rlstack": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def entry_key(description: Mapping[str, Any]) -> str:
    """The SHA-256 of the description's canonical JSON (its key in the cache)."""
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def closure_data(fn: Callable) -> dict[str, Any]:
    """Every object ``fn`` reaches through closures and default values (of
    nested functions and of ``functools.partial`` objects, recursively), by a path of
    variable names: what a saved piece takes from the live run at load.
    Plain values, modules, classes and functions are not data (functions are
    followed instead).
    """
    found: dict[str, Any] = {}
    seen: set[int] = set()

    def visit(obj: Any, path: str) -> None:
        if isinstance(obj, _PLAIN) or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, types.FunctionType):
            cells = zip(obj.__code__.co_freevars, obj.__closure__ or (), strict=True)
            for name, cell in cells:
                visit(cell.cell_contents, f"{path}.{name}")
            for i, value in enumerate(obj.__defaults__ or ()):
                visit(value, f"{path}.default{i}")
        elif isinstance(obj, functools.partial):
            visit(obj.func, f"{path}.func")
            for i, value in enumerate(obj.args):
                visit(value, f"{path}.arg{i}")
            for name, value in obj.keywords.items():
                visit(value, f"{path}.{name}")
        elif not isinstance(obj, (types.ModuleType, type, types.BuiltinFunctionType)):
            found[path] = obj

    visit(fn, "piece")
    return found


#: The intra-op thread count pieces are traced at (a compiling child runs
#: on one thread), whatever count their kernels are generated for. Dynamo's
#: guards hold the count a piece was traced at, so :func:`guards_accept`
#: checks them at this count: a training run switches pieces in at its own.
TRACE_THREADS = 1


@contextlib.contextmanager
def intra_op_threads(count: int) -> Any:
    """Run the block at ``count`` intra-op threads, then at those before."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def aot_compile(fn: Callable, args: tuple, options: Mapping[str, Any]) -> Any:
    """``fn`` compiled ahead of time for ``args`` (``fullgraph``, Inductor
    ``options``), traced at :data:`TRACE_THREADS`.
    """
    with intra_op_threads(TRACE_THREADS):
        return torch.compile(fn, fullgraph=True, options=dict(options)).aot_compile((args, {}))


def guards_accept(compiled: Any, args: tuple) -> bool:
    """Whether ``compiled``'s guards accept ``args``, checked at the thread
    count it was traced at (:data:`TRACE_THREADS`).
    """
    with intra_op_threads(TRACE_THREADS):
        return compiled.guard_check(*args)


def to_bytes(compiled: Any, fn: Callable) -> bytes:
    """``compiled`` (made from ``fn``) serialised without what ``fn`` closes
    over (:func:`closure_data`: the loading run hands its own back).

    Raises:
        RuntimeError: for a graph torch cannot serialise.
    """
    return type(compiled).serialize(compiled, closure_data(fn)).serialized_data


def sources_unchanged(compiled: Any) -> bool:
    """Whether every source Dynamo inlined into ``compiled`` still reads as it
    did (the same SHA-256 of its lines, Dynamo's own rule): a changed env or
    model makes its entry stale even at the same rlstack version.
    """
    for source in compiled.source_info().inlined_sources:
        try:
            lines = inspect.getsourcelines(importlib.import_module(source.module))[0]
        except (ImportError, OSError, TypeError):
            return False
        text = "".join(lines[source.firstlineno - 1 : source.lastlineno - 1])
        if hashlib.sha256(text.encode()).hexdigest() != source.checksum:
            return False
    return True


def _loading_context() -> Any:
    """A throwaway Dynamo tracing context around a load: unpickling some guard
    sources installs guards into the current one (torch 2.13), and a load
    runs outside any trace.
    """
    guards = getattr(torch, "_guards", None)
    if guards is None or not hasattr(guards, "tracing"):
        return contextlib.nullcontext()
    return guards.tracing(guards.TracingContext(None))


def use_kernel_folder(root: Path) -> None:
    """Make ``root/inductor`` Inductor's cache folder (where it keeps compiled
    kernels), unless the user chose one with ``TORCHINDUCTOR_CACHE_DIR``.
    """
    if _USER_KERNEL_FOLDER is None:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(root / "inductor")


class CompileCache:
    """The folder of compiled pieces (see the module docstring).

    Args:
        folder: the cache folder (default: :func:`cache_root`'s).

    Attributes:
        root: the folder.
        writable: whether entries can be written there (else compiled
            pieces live in memory only; reading still works).
        rejected: why each entry looked up but not used was refused, by key.
    """

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        self.root = cache_root(folder)
        self.writable = _writable(self.root)
        self.rejected: dict[str, str] = {}

    def entry(self, key: str) -> Path:
        """The folder of the entry ``key``."""
        return self.root / f"v{FORMAT}" / key[:2] / key

    def has(self, description: Mapping[str, Any]) -> bool:
        """Whether an entry is stored for ``description`` (not yet whether it may be used)."""
        return (self.entry(entry_key(description)) / "meta.json").is_file()

    def load(self, description: Mapping[str, Any], fn: Callable) -> Any | None:
        """The compiled ``fn`` stored for ``description``; ``None`` (the reason
        in :attr:`rejected`) when there is none or it may not be used. Its
        guards are for the caller to check, on the thread that will call it
        (they read thread-local and process-wide state).
        """
        key = entry_key(description)
        folder = self.entry(key)
        if not (folder / "meta.json").is_file():
            return None
        try:
            meta = json.loads((folder / "meta.json").read_text())
            data = (folder / "function.bin").read_bytes()
        except (OSError, ValueError) as e:
            return self._reject(key, f"unreadable: {e}")
        if meta.get("description") != json.loads(json.dumps(description, default=str)):
            return self._reject(key, "its description differs (a foreign entry)")
        if meta.get("size") != len(data) or meta.get("sha256") != hashlib.sha256(data).hexdigest():
            return self._reject(key, "its bytes do not match meta.json (truncated or corrupt)")
        return self.from_bytes(description, data, fn)

    def from_bytes(self, description: Mapping[str, Any], data: bytes, fn: Callable) -> Any | None:
        """The compiled ``fn`` that :func:`to_bytes` made ``data``; ``None``
        (the reason in :attr:`rejected`) when it does not load or is stale.
        """
        key = entry_key(description)
        try:
            with _loading_context():
                compiled = torch.compiler.load_compiled_function(
                    io.BytesIO(data), external_data=closure_data(fn)
                )
        except Exception as e:  # a pickle or a torch artefact that cannot be loaded here
            return self._reject(key, f"it does not load: {type(e).__name__}: {e}")
        if not sources_unchanged(compiled):
            return self._reject(key, "a source it inlined has changed")
        return compiled

    def refuse(self, description: Mapping[str, Any], why: str) -> None:
        """Record that the entry for ``description`` was loaded but not used, and why."""
        self._reject(entry_key(description), why)

    def save(self, description: Mapping[str, Any], data: bytes) -> bool:
        """Store a compiled piece's bytes (:func:`to_bytes`) for ``description``;
        whether they were written (an unwritable folder: one notice, ``False``).
        """
        if not self.writable:
            return False
        meta = {
            "format": FORMAT,
            "key": entry_key(description),
            "description": description,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        folder = self.entry(meta["key"])
        try:
            atomic_write(folder / "function.bin", lambda path: Path(path).write_bytes(data))
            text = json.dumps(meta, indent=1, sort_keys=True, default=str)
            atomic_write(folder / "meta.json", lambda path: Path(path).write_text(text))
        except OSError as e:
            notice(f"the compile cache {str(self.root)!r} cannot be written ({e}): in memory.")
            self.writable = False
            return False
        return True

    def _reject(self, key: str, why: str) -> None:
        self.rejected[key] = why
        return None


def _writable(root: Path) -> bool:
    """Whether files can be created in ``root`` (made if missing); one notice when not."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError as e:
        notice(
            f"the compile cache {str(root)!r} cannot be written ({e.strerror or e}): compiled "
            f"pieces stay in memory (set {ENV_VAR} or `compile_cache=` to a writable folder)."
        )
        return False
