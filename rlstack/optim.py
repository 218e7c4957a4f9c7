"""Optimizers as optax-style gradient transformations, in plain torch.

A :class:`GradientTransformation` is a pair of pure functions:

* ``init(params) -> state``, a NamedTuple of tensors (``()`` for a
  transform that keeps none);
* ``update(grads, state, params) -> (updates, state)``.

``apply_updates(params, updates)`` adds the updates to the params, and
``chain(t1, t2, ...)`` feeds one transform's updates to the next as their
gradients. ``params``, ``grads`` and ``updates`` are ``dict[str, Tensor]``
of the same structure. Nothing is updated in place, no host sync happens
inside, and every state is a tree of tensors: the whole optimizer works
under ``torch.compile`` and ``torch.func.vmap``, and checkpoints as a list
of tensors.

The optimizers are chains of small transforms, as optax composes them:
:func:`adam` is ``chain(scale_by_adam(...), scale_by_learning_rate(lr))``
(with :func:`add_decayed_weights` before for an L2 penalty, after for
:func:`adamw`), :func:`sgd` is ``chain(add_decayed_weights, trace,
scale_by_learning_rate)``. Their arithmetic follows ``torch.optim.Adam``,
``AdamW`` and ``SGD`` (single-tensor, non-fused) to float rounding (tested
step for step; torch's kernels fuse ``param + lr * direction`` into one
rounding, which additive updates cannot). Translating a ``torch.optim``
class and its config is :mod:`rlstack.torch_optimizers`' job.

The learning rate lives in :func:`scale_by_learning_rate`'s state as a
0-d tensor: :func:`set_learning_rate` replaces it without rebuilding or
recompiling anything, and a population of runs can hold one rate per
member. Given a schedule instead of a number, the rate is the schedule
evaluated on device at the transform's step count before each step (see
:mod:`rlstack.schedules`).

Counting follows optax: a count is the number of steps a transform has
applied. A step skipped by :func:`apply_if_finite` (or masked out by the
caller, as PPO's ``target_kl`` does) leaves the inner state, counts
included, as it was.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Union

import optree
import torch

from .types import Params

#: A schedule maps a 0-d float32 step count to a 0-d float32 value.
Schedule = Callable[[torch.Tensor], torch.Tensor]
#: A learning rate: a number, a 0-d tensor or a schedule.
LearningRate = Union[float, torch.Tensor, Schedule]


class GradientTransformation(NamedTuple):
    """``init(params) -> state`` and ``update(grads, state, params) -> (updates, state)``."""

    init: Callable[[Params], Any]
    update: Callable[[Params, Any, Params], tuple[Params, Any]]


class ClipByGlobalNormState(NamedTuple):
    """``grad_norm``: 0-d global norm of the last gradients, before clipping."""

    grad_norm: torch.Tensor


class ScaleByAdamState(NamedTuple):
    """``count``: 0-d float32 steps applied; ``mu``/``nu``: first and second
    moments of the gradients."""

    count: torch.Tensor
    mu: Params
    nu: Params


class TraceState(NamedTuple):
    """``count``: 0-d float32 steps applied; ``momentum``: the momentum
    buffers (zeros before the first step)."""

    count: torch.Tensor
    momentum: Params


class ScaleByLearningRateState(NamedTuple):
    """``count``: 0-d float32 steps applied; ``learning_rate``: 0-d float32
    rate of the next step (the last step's, when scheduled)."""

    count: torch.Tensor
    learning_rate: torch.Tensor


class AccumulateState(NamedTuple):
    """``mini_step``: 0-d int64 gradients summed since the last step;
    ``grad_sum``: their sum; ``inner``: the wrapped transform's state."""

    mini_step: torch.Tensor
    grad_sum: Params
    inner: Any


class ApplyIfFiniteState(NamedTuple):
    """``notfinite_count``: 0-d int64 consecutive skipped steps;
    ``total_notfinite``: 0-d int64 steps skipped in all; ``inner``: the
    wrapped transform's state."""

    notfinite_count: torch.Tensor
    total_notfinite: torch.Tensor
    inner: Any


def _device_of(params: Params) -> torch.device:
    return next(iter(params.values())).device


def _scalar(value: float, params: Params, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.full((), value, dtype=dtype, device=_device_of(params))


def _zeros_like(params: Params) -> Params:
    return optree.tree_map(torch.zeros_like, params)


def apply_updates(params: Params, updates: Params) -> Params:
    """``params + updates``, leaf by leaf (new tensors; inputs untouched)."""
    return {k: p + updates[k] for k, p in params.items()}


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Apply ``transforms`` in order; the state is the tuple of their states."""

    def init(params: Params) -> tuple:
        return tuple(t.init(params) for t in transforms)

    def update(grads: Params, state: tuple, params: Params) -> tuple[Params, tuple]:
        new_states = []
        for t, s in zip(transforms, state):
            grads, s = t.update(grads, s, params)
            new_states.append(s)
        return grads, tuple(new_states)

    return GradientTransformation(init, update)


def global_norm(tree: Params) -> torch.Tensor:
    """0-d L2 norm of all leaves together."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in optree.tree_leaves(tree)]))


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Scale gradients so their global norm is at most ``max_norm``, as
    ``torch.nn.utils.clip_grad_norm_`` does (coefficient
    ``min(1, max_norm / (norm + 1e-6))``). The state records the norm before
    clipping.
    """
    if not (isinstance(max_norm, (int, float)) and not isinstance(max_norm, bool) and max_norm > 0):
        raise ValueError(f"`max_norm` must be a number > 0, got {max_norm!r}.")

    def init(params: Params) -> ClipByGlobalNormState:
        return ClipByGlobalNormState(_scalar(0.0, params))

    def update(grads: Params, state: ClipByGlobalNormState, params: Params) -> tuple[Params, ClipByGlobalNormState]:
        norm = global_norm(grads)
        coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        return optree.tree_map(lambda g: g * coef, grads), ClipByGlobalNormState(norm)

    return GradientTransformation(init, update)


def _learning_rate(learning_rate: LearningRate) -> tuple[float | torch.Tensor, Schedule | None]:
    """Split a learning rate into its initial value and its schedule (if any).

    Raises:
        ValueError: for a number that is not finite and > 0.
    """
    if callable(learning_rate) and not isinstance(learning_rate, torch.Tensor):
        return 0.0, learning_rate
    value = learning_rate.detach().clone() if isinstance(learning_rate, torch.Tensor) else learning_rate
    if not isinstance(value, torch.Tensor) and not (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    ):
        raise ValueError(f"`learning_rate` must be a number > 0, a 0-d tensor or a schedule, got {learning_rate!r}.")
    return value, None


def _initial_rate(value: float | torch.Tensor, schedule: Schedule | None, params: Params) -> torch.Tensor:
    if schedule is not None:
        return schedule(_scalar(0.0, params)).to(torch.float32)
    if isinstance(value, torch.Tensor):
        return value.to(dtype=torch.float32, device=_device_of(params)).reshape(())
    return _scalar(float(value), params)


def _check_number(name: str, value: Any, low: float = 0.0, high: float = math.inf) -> None:
    """Raise ValueError naming ``name`` unless ``low <= value < high``."""
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value < high):
        raise ValueError(f"`{name}` must be a number in [{low}, {high}), got {value!r}.")


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    """Adam's direction ``mu_hat / (sqrt(nu_hat) + eps)``, where ``mu``/``nu``
    are running means of the gradient and its square and ``mu_hat``/
    ``nu_hat`` their bias-corrected values (optax's ``scale_by_adam``, as
    ``torch.optim.Adam`` computes it: ``eps`` added after the square root,
    bias corrections in float64). Not yet scaled by a learning rate."""
    _check_number("b1", b1, 0.0, 1.0)
    _check_number("b2", b2, 0.0, 1.0)
    _check_number("eps", eps)

    def init(params: Params) -> ScaleByAdamState:
        return ScaleByAdamState(_scalar(0.0, params), _zeros_like(params), _zeros_like(params))

    def update(grads: Params, state: ScaleByAdamState, params: Params) -> tuple[Params, ScaleByAdamState]:
        count = state.count + 1
        bias1 = 1 - b1 ** count.double()
        bias2_sqrt = (1 - b2 ** count.double()).sqrt()
        mu = {k: torch.lerp(state.mu[k], g, 1 - b1) for k, g in grads.items()}
        nu = {k: state.nu[k] * b2 + (1 - b2) * g * g for k, g in grads.items()}
        updates = {k: (mu[k] / bias1) / (nu[k].sqrt() / bias2_sqrt + eps) for k in grads}
        return updates, ScaleByAdamState(count, mu, nu)

    return GradientTransformation(init, update)


def add_decayed_weights(weight_decay: float) -> GradientTransformation:
    """``updates + weight_decay * params`` (optax's ``add_decayed_weights``):
    before :func:`scale_by_adam` an L2 penalty's gradient (Adam, SGD), after
    it AdamW's decoupled decay. Keeps no state."""
    _check_number("weight_decay", weight_decay)

    def init(params: Params) -> tuple:
        return ()

    def update(grads: Params, state: tuple, params: Params) -> tuple[Params, tuple]:
        return {k: g + weight_decay * params[k] for k, g in grads.items()}, state

    return GradientTransformation(init, update)


def trace(decay: float, *, dampening: float = 0.0, nesterov: bool = False) -> GradientTransformation:
    """Momentum as ``torch.optim.SGD`` computes it: the buffer starts as the
    first gradient, then ``buf = decay * buf + (1 - dampening) * g``; the
    updates are ``buf``, or ``g + decay * buf`` with ``nesterov`` (optax's
    ``trace``, with torch's first step and dampening)."""
    _check_number("decay", decay, 0.0, 1.0 + 1e-12)
    _check_number("dampening", dampening, 0.0, 1.0 + 1e-12)

    def init(params: Params) -> TraceState:
        return TraceState(_scalar(0.0, params), _zeros_like(params))

    def update(grads: Params, state: TraceState, params: Params) -> tuple[Params, TraceState]:
        momentum = {k: torch.where(state.count > 0, state.momentum[k] * decay + (1 - dampening) * g, g)
                    for k, g in grads.items()}
        updates = {k: g + decay * momentum[k] for k, g in grads.items()} if nesterov else momentum
        return updates, TraceState(state.count + 1, momentum)

    return GradientTransformation(init, update)


def scale_by_learning_rate(learning_rate: LearningRate) -> GradientTransformation:
    """``-learning_rate * updates`` (optax's ``scale_by_learning_rate``).

    The rate lives in the state as a 0-d float32 tensor
    (:class:`ScaleByLearningRateState`), so :func:`set_learning_rate`
    changes it without recompiling; a schedule is evaluated on device at the
    transform's step count before each step.

    Raises:
        ValueError: for a number that is not finite and > 0.
    """
    rate, schedule = _learning_rate(learning_rate)

    def init(params: Params) -> ScaleByLearningRateState:
        return ScaleByLearningRateState(_scalar(0.0, params), _initial_rate(rate, schedule, params))

    def update(grads: Params, state: ScaleByLearningRateState, params: Params) -> tuple[Params, ScaleByLearningRateState]:
        lr = state.learning_rate if schedule is None else schedule(state.count).to(torch.float32)
        return {k: -lr * g for k, g in grads.items()}, ScaleByLearningRateState(state.count + 1, lr)

    return GradientTransformation(init, update)


def adam(
    learning_rate: LearningRate = 1e-3,
    *,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """``torch.optim.Adam``: ``chain(add_decayed_weights(weight_decay)`` (an
    L2 penalty, left out at 0), ``scale_by_adam, scale_by_learning_rate)``."""
    decay = (add_decayed_weights(weight_decay),) if weight_decay else ()
    return chain(*decay, scale_by_adam(*betas, eps), scale_by_learning_rate(learning_rate))


def adamw(
    learning_rate: LearningRate = 1e-3, *, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
    weight_decay: float = 1e-2,
) -> GradientTransformation:
    """``torch.optim.AdamW`` (with its defaults): ``chain(scale_by_adam,
    add_decayed_weights(weight_decay), scale_by_learning_rate)``, so the
    weights shrink by ``learning_rate * weight_decay`` each step."""
    return chain(scale_by_adam(*betas, eps), add_decayed_weights(weight_decay), scale_by_learning_rate(learning_rate))


def sgd(
    learning_rate: LearningRate = 1e-3,
    *,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """``torch.optim.SGD``: ``chain(add_decayed_weights(weight_decay), trace(
    momentum, dampening, nesterov), scale_by_learning_rate)``, each left out
    where it would do nothing (zero decay, zero momentum)."""
    decay = (add_decayed_weights(weight_decay),) if weight_decay else ()
    heavy_ball = (trace(momentum, dampening=dampening, nesterov=nesterov),) if momentum else ()
    return chain(*decay, *heavy_ball, scale_by_learning_rate(learning_rate))


def tree_select(condition: torch.Tensor, new: Any, old: Any) -> Any:
    """Leafwise ``torch.where(condition, new, old)`` over two trees of one
    structure: ``new`` where the 0-d bool ``condition`` holds, else ``old``
    (how a step is kept or discarded on device, without a host sync)."""
    return optree.tree_map(lambda n, o: torch.where(condition, n, o), new, old)


def accumulate_gradients(inner: GradientTransformation, every_k: int) -> GradientTransformation:
    """Sum gradients over ``every_k`` calls and let ``inner`` take one step on
    their mean on the ``every_k``-th call (optax's ``MultiSteps``); the other
    calls return zero updates. With equal-sized batches the step equals one
    step on the union of the batches.
    """
    if not isinstance(every_k, int) or isinstance(every_k, bool) or every_k < 1:
        raise ValueError(f"`every_k` must be a positive int, got {every_k!r}.")

    def init(params: Params) -> AccumulateState:
        return AccumulateState(_scalar(0, params, torch.int64), _zeros_like(params), inner.init(params))

    def update(grads: Params, state: AccumulateState, params: Params) -> tuple[Params, AccumulateState]:
        grad_sum = optree.tree_map(torch.add, state.grad_sum, grads)
        emit = state.mini_step + 1 >= every_k
        mean = optree.tree_map(lambda g: g / every_k, grad_sum)
        updates, inner_state = inner.update(mean, state.inner, params)
        updates = optree.tree_map(lambda u: torch.where(emit, u, torch.zeros_like(u)), updates)
        return updates, AccumulateState(
            torch.where(emit, torch.zeros_like(state.mini_step), state.mini_step + 1),
            optree.tree_map(lambda g: torch.where(emit, torch.zeros_like(g), g), grad_sum),
            tree_select(emit, inner_state, state.inner),
        )

    return GradientTransformation(init, update)


def apply_if_finite(inner: GradientTransformation) -> GradientTransformation:
    """Skip ``inner``'s step when any gradient is NaN or infinite (optax's
    ``apply_if_finite``): zero updates, ``inner``'s state kept, and the skip
    counted on device (``notfinite_count`` consecutive, ``total_notfinite``
    in all), so a bad minibatch never reaches the params.
    """

    def init(params: Params) -> ApplyIfFiniteState:
        zero = _scalar(0, params, torch.int64)
        return ApplyIfFiniteState(zero, zero.clone(), inner.init(params))

    def update(grads: Params, state: ApplyIfFiniteState, params: Params) -> tuple[Params, ApplyIfFiniteState]:
        finite = torch.stack([torch.isfinite(g).all() for g in optree.tree_leaves(grads)]).all()
        updates, inner_state = inner.update(grads, state.inner, params)
        updates = optree.tree_map(lambda u: torch.where(finite, u, torch.zeros_like(u)), updates)
        skipped = (~finite).long()
        return updates, ApplyIfFiniteState(
            torch.where(finite, torch.zeros_like(state.notfinite_count), state.notfinite_count + 1),
            state.total_notfinite + skipped,
            tree_select(finite, inner_state, state.inner),
        )

    return GradientTransformation(init, update)


def step_count(state: Any) -> torch.Tensor:
    """The 0-d float32 ``count`` of the first state in ``state`` that has one
    (depth first): the number of steps the optimizer has applied.

    Raises:
        ValueError: if no state in the tree counts steps.
    """
    found = _first_field(state, "count")
    if found is None:
        raise ValueError("The optimizer state has no step `count`: include adam, adamw or sgd in the optimizer.")
    return found


def set_learning_rate(state: Any, learning_rate: torch.Tensor) -> Any:
    """``state`` with every ``learning_rate`` field (of :func:`adam`,
    :func:`sgd`, ..., at any depth) replaced by ``learning_rate`` (a 0-d
    float32 tensor): a new rate for the next steps, without rebuilding or
    recompiling anything. A schedule-driven transform ignores the field.
    """
    if hasattr(state, "_fields"):
        children = [set_learning_rate(child, learning_rate) for child in state]
        state = type(state)(*children)
        if "learning_rate" in state._fields:
            state = state._replace(learning_rate=learning_rate.to(state.learning_rate))
        return state
    if isinstance(state, (tuple, list)):
        return type(state)(set_learning_rate(child, learning_rate) for child in state)
    return state


def learning_rate(state: Any) -> torch.Tensor:
    """The 0-d float32 ``learning_rate`` of the first state in ``state`` that
    has one (depth first): the rate of the next step, or the last step's
    when scheduled.

    Raises:
        ValueError: if no state in the tree holds a learning rate.
    """
    found = _first_field(state, "learning_rate")
    if found is None:
        raise ValueError("The optimizer state has no `learning_rate`: include scale_by_learning_rate (adam, adamw, "
                         "sgd) in the optimizer.")
    return found


def _first_field(state: Any, name: str) -> Any:
    """The field ``name`` of the first NamedTuple in ``state`` (depth first) that has one, else None."""
    if hasattr(state, "_fields") and name in state._fields:
        return getattr(state, name)
    if isinstance(state, (tuple, list)):
        for child in state:
            found = _first_field(child, name)
            if found is not None:
                return found
    return None
