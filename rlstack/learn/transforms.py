"""Populations and compilation, applied from outside the functions they transform.

:func:`~rlstack.learn.rollout.make_rollout` and :func:`~rlstack.learn.update.make_update`
return a :class:`Staged` function: member-level pure *pieces* (a rollout
step, a minibatch gradient, an optimizer step, ...) and the Python loop
that calls them. The pieces know nothing of how they are run; the two
transforms here rebuild a staged function with its pieces transformed:

* :func:`over_members` maps every piece over a new leading member axis
  (``torch.func.vmap``): params, carries, trajectories, keys and hparams
  get a leading ``K``, and member ``k`` computes what it would alone;
* :func:`compiled` hands the pieces that may be compiled to
  ``torch.compile`` (``fullgraph=True``), leaving the loops in Python so
  that compile time does not grow with the horizon or the epochs.

Compile outermost: ``compiled(over_members(f))`` compiles the mapped pieces
(one graph for all members); ``over_members(compiled(f))`` is refused, as
``torch.func.vmap`` of compiled code is unsupported. Each piece is wrapped
under a function of its own, since ``torch.compile`` keeps compiled code
per Python function and every ``vmap`` wrapper is the same one.

Examples:
    >>> from rlstack.envs import DiscreteDummyEnv
    >>> from rlstack.policy.models import MLPModel
    >>> from rlstack.policy.distributions import Categorical
    >>> from rlstack.policy.policy import Policy
    >>> from rlstack.learn.rollout import make_rollout
    >>> env = DiscreteDummyEnv()
    >>> policy = Policy(MLPModel(env.observation_space, env.action_space, hiddens=(8,)),
    Categorical)
    >>> rollout = compiled(over_members(make_rollout(env, policy, horizon=4)))
    >>> rollout.member_axes, sorted(rollout.compile)
    (1, ['bootstrap_value', 'step'])
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import optree
import torch

from ..core.types import Tree

#: Inductor options of every compiled piece. ``realize_reads_threshold=1``
#: stores each intermediate read more than once instead of recomputing it
#: inline: Threefry's rounds (:mod:`rlstack.core.random`) read each word
#: twice, and the default threshold (4) inlined them until the kernel body
#: grew exponentially (36 s of Inductor code generation for one
#: ``random.bits`` on a 2-core CPU, 9 s with it; the same kernels after
#: fusion). benchmarks/README.md has the first iteration before and after.
INDUCTOR_OPTIONS = {"realize_reads_threshold": 1}


class Staged(NamedTuple):
    """A function made of pure pieces and the loop that calls them.

    Attributes:
        pieces: name -> member-level pure function (after any transforms).
        loop: ``loop(pieces, member_axes, *args, **kwargs)``, the Python
            driver; ``member_axes`` (0 or 1) tells it where time and batch
            axes sit, nothing else.
        member_axes: leading member axes the pieces are mapped over (0: one run).
        compile: names of the pieces :func:`compiled` may compile.
        in_dims: name -> ``vmap`` ``in_dims`` for pieces not mapped over
            every argument (default 0 for all).
        compiled: whether :func:`compiled` has been applied.
    """

    pieces: Mapping[str, Callable]
    loop: Callable[..., Any]
    member_axes: int = 0
    compile: frozenset = frozenset()
    in_dims: Mapping[str, Any] = {}
    compiled: bool = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the loop over the pieces."""
        return self.loop(self.pieces, self.member_axes, *args, **kwargs)


def over_members(staged: Staged) -> Staged:
    """``staged`` with every piece ``torch.func.vmap``-ed over a leading
    member axis, each under a function of its own.

    Raises:
        ValueError: for a staged function already compiled.
    """
    if staged.compiled:
        raise ValueError(
            "over_members must be applied before compiled: torch.compile the mapped pieces "
            "(compiled(over_members(f))), vmap of compiled code is unsupported."
        )
    pieces = {
        name: _mapped(fn, staged.in_dims.get(name, 0), name) for name, fn in staged.pieces.items()
    }
    return staged._replace(pieces=pieces, member_axes=staged.member_axes + 1)


def compiled(staged: Staged) -> Staged:
    """``staged`` with the pieces it names compilable handed to
    ``torch.compile(fullgraph=True)``; the loops stay in Python.
    """
    pieces = {
        name: torch.compile(fn, fullgraph=True, options=INDUCTOR_OPTIONS)
        if name in staged.compile
        else fn
        for name, fn in staged.pieces.items()
    }
    return staged._replace(pieces=pieces, compiled=True)


def _mapped(fn: Callable, in_dims: Any, name: str) -> Callable:
    """``vmap(fn, in_dims)`` under a function of its own, named after the
    piece; called directly when its arguments hold no tensor to map over
    (nothing there differs by member).
    """
    vmapped = torch.func.vmap(fn, in_dims=in_dims)

    def piece(*args: Any) -> Any:
        if not any(isinstance(x, torch.Tensor) for x in optree.tree_leaves(args)):
            return fn(*args)
        return vmapped(*args)

    return _own_code(piece, f"{name}_over_members")


def _own_code(fn: Callable, name: str) -> Callable:
    """``fn`` with a code object of its own, named ``name``.

    ``torch.compile`` keeps compiled code per code object: wrappers made by
    one ``def`` share one, so every mapped piece would pile its graphs into
    a single cache (and hit its size limit) unless each gets its own.
    """
    code = fn.__code__.replace(co_name=name, co_qualname=name)
    return types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)


#: Set inside :func:`same_inputs_as_before` (read by :func:`inputs_as_before`).
_SAME_INPUTS: contextvars.ContextVar[bool] = contextvars.ContextVar("same_inputs", default=False)


@contextlib.contextmanager
def same_inputs_as_before(same: bool) -> Iterator[None]:
    """A context for a call of compiled pieces whose inputs have exactly the
    layout (types, shapes, dtypes, strides, devices) of the call before it in
    the same loop, when ``same``: ``torch.compile`` then runs only the guards
    that tell its compiled graphs apart (``skip_guard_eval_unsafe``), which
    on a small CPU step took a third of the call (benchmarks/README.md), and
    a piece compiled ahead of time skips rlstack's own check of its inputs
    (:func:`inputs_as_before`). The loops that use it (a rollout's steps, an
    update's minibatches) make the first call of each loop with every check,
    and pass the carries they make through ``contiguous``, so the layouts are
    the same by construction. A no-op when not ``same``, and eagerly; before
    anything in the process has imported Dynamo (nothing compiled can run
    then) it leaves Dynamo unimported, which would cost seconds.
    """
    if not same:
        yield
        return
    token = _SAME_INPUTS.set(True)
    try:
        if "torch._dynamo" not in sys.modules:
            yield
        else:
            with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
                yield
    finally:
        _SAME_INPUTS.reset(token)


def inputs_as_before() -> bool:
    """Whether the current call is inside :func:`same_inputs_as_before` (``same=True``)."""
    return _SAME_INPUTS.get()


def contiguous(tree: Tree) -> Tree:
    """One layout in at every step, whatever made the carry (a member's key is a strided view into
    the split; a vmapped reset, and compiled code, can give stride-0 leaves): one compiled graph, no
    recompile.
    """
    return optree.tree_map(torch.Tensor.contiguous, tree)


def settled(tree: Tree) -> tuple[Tree, bool]:
    """``contiguous(tree)``, and whether ``tree`` already was (every leaf came back as itself).

    A loop's step runs the same pieces on inputs of the same layouts, so its
    outputs have the same layouts at every step: once a step's outputs come
    out contiguous, every later step's do, and the loop stops copying
    (a copy's call costs about as much as a small kernel on a CPU).
    """
    made = contiguous(tree)
    return made, all(
        a is b for a, b in zip(optree.tree_leaves(made), optree.tree_leaves(tree), strict=True)
    )
