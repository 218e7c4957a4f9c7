"""Optimizers as optax-style gradient transformations, in plain torch.

A :class:`GradientTransformation` is a pair of pure functions:

* ``init(params) -> state``, a NamedTuple of tensors (one per transform);
* ``update(grads, state, params) -> (updates, state)``.

``apply_updates(params, updates)`` adds the updates to the params, and
``chain(t1, t2, ...)`` feeds one transform's updates to the next as their
gradients. ``params``, ``grads`` and ``updates`` are ``dict[str, Tensor]``
of the same structure. Nothing is updated in place, no host sync happens
inside, and every state is a tree of tensors: the whole optimizer works
under ``torch.compile`` and ``torch.func.vmap``, and checkpoints as a list
of tensors.

The learning rate of :func:`adam`, :func:`adamw` and :func:`sgd` lives in
their state as a 0-d tensor (``state.learning_rate``): replacing it
(``state._replace(learning_rate=...)``) changes the rate without rebuilding
or recompiling anything, and a population of runs can hold one rate per
member. Given a schedule instead of a number, the rate is the schedule
evaluated on device at the transform's step count before each step (see
:mod:`rlstack.schedules`). Their arithmetic follows ``torch.optim.Adam``,
``AdamW`` and ``SGD`` (single-tensor, non-fused), so results match them to
float rounding (tested step for step).

Counting follows optax: a count is the number of steps a transform has
applied. A step skipped by :func:`apply_if_finite` (or masked out by the
caller, as PPO's ``target_kl`` does) leaves the inner state, counts
included, as it was.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, NamedTuple, Union

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


class EmptyState(NamedTuple):
    """The state of a transform that keeps none."""


class ClipByGlobalNormState(NamedTuple):
    """``grad_norm``: 0-d global norm of the last gradients, before clipping."""

    grad_norm: torch.Tensor


class AdamState(NamedTuple):
    """``count``: 0-d float32 steps applied; ``mu``/``nu``: first and second
    moments; ``learning_rate``: 0-d float32 rate of the next step (the last
    step's, when scheduled)."""

    count: torch.Tensor
    mu: Params
    nu: Params
    learning_rate: torch.Tensor


class SGDState(NamedTuple):
    """``count``: 0-d float32 steps applied; ``momentum``: momentum buffers;
    ``learning_rate``: as in :class:`AdamState`."""

    count: torch.Tensor
    momentum: Params
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


def adam(
    learning_rate: LearningRate = 1e-3,
    *,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled: bool = False,
) -> GradientTransformation:
    """Adam (``decoupled=False``, L2 penalty added to the gradient) or AdamW
    (``decoupled=True``, weights shrunk by ``learning_rate * weight_decay``),
    as ``torch.optim.Adam``/``AdamW`` compute them. The updates already
    include the negative sign and the learning rate."""
    b1, b2 = betas
    rate, schedule = _learning_rate(learning_rate)

    def init(params: Params) -> AdamState:
        return AdamState(_scalar(0.0, params), _zeros_like(params), _zeros_like(params), _initial_rate(rate, schedule, params))

    def update(grads: Params, state: AdamState, params: Params) -> tuple[Params, AdamState]:
        lr = state.learning_rate if schedule is None else schedule(state.count).to(torch.float32)
        count = state.count + 1
        # Bias corrections in float64, as torch.optim computes them in Python floats.
        bias1 = 1 - b1 ** count.double()
        bias2_sqrt = (1 - b2 ** count.double()).sqrt()
        updates, mu, nu = {}, {}, {}
        for k, p in params.items():
            g = grads[k]
            if weight_decay and not decoupled:
                g = g + weight_decay * p
            mu[k] = torch.lerp(state.mu[k], g, 1 - b1)
            nu[k] = state.nu[k] * b2 + (1 - b2) * g * g
            denom = nu[k].sqrt() / bias2_sqrt + eps
            updates[k] = -(lr / bias1) * mu[k] / denom
            if weight_decay and decoupled:
                updates[k] = updates[k] - (lr * weight_decay) * p
        return updates, AdamState(count, mu, nu, lr)

    return GradientTransformation(init, update)


def adamw(
    learning_rate: LearningRate = 1e-3, *, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
    weight_decay: float = 1e-2,
) -> GradientTransformation:
    """AdamW (decoupled weight decay) with ``torch.optim.AdamW``'s defaults."""
    return adam(learning_rate, betas=betas, eps=eps, weight_decay=weight_decay, decoupled=True)


def sgd(
    learning_rate: LearningRate = 1e-3,
    *,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """SGD with optional (Nesterov) momentum, dampening and L2 weight decay.

    As in ``torch.optim.SGD``, the momentum buffer starts as the first
    gradient (no dampening on the first step).
    """
    rate, schedule = _learning_rate(learning_rate)

    def init(params: Params) -> SGDState:
        return SGDState(_scalar(0.0, params), _zeros_like(params), _initial_rate(rate, schedule, params))

    def update(grads: Params, state: SGDState, params: Params) -> tuple[Params, SGDState]:
        lr = state.learning_rate if schedule is None else schedule(state.count).to(torch.float32)
        updates, bufs = {}, {}
        for k, p in params.items():
            d_p = grads[k]
            if weight_decay:
                d_p = d_p + weight_decay * p
            if momentum:
                later = state.momentum[k] * momentum + (1 - dampening) * d_p
                bufs[k] = torch.where(state.count > 0, later, d_p)
                d_p = d_p + momentum * bufs[k] if nesterov else bufs[k]
            else:
                bufs[k] = state.momentum[k]
            updates[k] = -lr * d_p
        return updates, SGDState(state.count + 1, bufs, lr)

    return GradientTransformation(init, update)


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
    if hasattr(state, "_fields"):
        if "count" in state._fields:
            return state.count
        children = list(state)
    elif isinstance(state, (tuple, list)):
        children = list(state)
    else:
        children = []
    for child in children:
        try:
            return step_count(child)
        except ValueError:
            continue
    raise ValueError("The optimizer state has no step `count`: include adam, adamw or sgd in the optimizer.")


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


# torch.optim class -> (factory, accepted config keys other than lr, default lr).
_TORCH_OPTIMIZERS: dict[type, tuple[Callable[..., GradientTransformation], dict[str, Any], float]] = {
    torch.optim.Adam: (adam, {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}, 1e-3),
    torch.optim.AdamW: (adamw, {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2}, 1e-3),
    torch.optim.SGD: (sgd, {"momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0}, 1e-3),
}
TORCH_OPTIMIZERS_BY_NAME = {cls.__name__: cls for cls in _TORCH_OPTIMIZERS}
# Implementation switches of torch.optim that do not change the mathematics.
_IGNORED_KEYS = {"foreach", "fused", "capturable", "differentiable"}
# Options accepted only at their default value.
_DEFAULT_ONLY = {"amsgrad": False, "maximize": False}


def _check_option(key: str, value: Any, default: Any) -> Any:
    """``value`` if it has the form of the option's ``default`` (a bool, a
    number >= 0, or a pair of numbers in [0, 1) for ``betas``).

    Raises:
        ValueError: naming the option and the expected form.
    """
    def is_number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"`optimizer_config[{key!r}]` must be true or false, got {value!r}.")
        return value
    if isinstance(default, tuple):
        if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(is_number(v) and 0 <= v < 1 for v in value)):
            raise ValueError(f"`optimizer_config[{key!r}]` must be a pair of numbers in [0, 1) such as {list(default)}, got {value!r}.")
        return tuple(float(v) for v in value)
    if not (is_number(value) and value >= 0):
        raise ValueError(f"`optimizer_config[{key!r}]` must be a number >= 0 such as {default}, got {value!r}.")
    return float(value)


def torch_optimizer_options(optimizer_cls: type, optimizer_config: Mapping[str, Any] | None = None) -> tuple[float, dict[str, Any]]:
    """Validate a ``torch.optim`` class and its keyword config.

    Supported: ``torch.optim.Adam``, ``AdamW`` and ``SGD`` with their usual
    options. ``foreach``/``fused``/``capturable``/``differentiable`` are
    accepted and ignored (they do not change the result).

    Returns:
        ``(lr, options)``: the learning rate (default 1e-3, rlstack 1.x's)
        and the other keyword arguments of the matching factory.

    Raises:
        ValueError: for an unsupported class or option.
    """
    config = dict(optimizer_config or {})
    if optimizer_cls not in _TORCH_OPTIMIZERS:
        raise ValueError(
            f"`optimizer_cls` {getattr(optimizer_cls, '__name__', optimizer_cls)!r} is not supported; "
            f"expected one of {[c.__name__ for c in _TORCH_OPTIMIZERS]} (torch.optim classes)."
        )
    _, defaults, default_lr = _TORCH_OPTIMIZERS[optimizer_cls]
    lr = config.pop("lr", default_lr)
    if isinstance(lr, torch.Tensor):
        lr = float(lr)
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
        raise ValueError(f"`optimizer_config['lr']` must be a positive number, got {lr!r}.")
    options = dict(defaults)
    for key, value in config.items():
        if key in _IGNORED_KEYS:
            continue
        if key in _DEFAULT_ONLY:
            if value != _DEFAULT_ONLY[key]:
                raise ValueError(f"`optimizer_config[{key!r}]={value!r}` is not supported; expected {_DEFAULT_ONLY[key]!r}.")
            continue
        if key not in options:
            raise ValueError(
                f"`optimizer_config` key {key!r} is not supported for {optimizer_cls.__name__}; "
                f"expected some of {['lr', *options]}."
            )
        options[key] = _check_option(key, value, options[key])
    if optimizer_cls is torch.optim.SGD and options["nesterov"] and (options["momentum"] <= 0 or options["dampening"] != 0):
        raise ValueError("`optimizer_config`: Nesterov momentum requires momentum > 0 and dampening == 0.")
    return float(lr), options


def from_torch(
    optimizer_cls: type, optimizer_config: Mapping[str, Any] | None = None, *, learning_rate: LearningRate | None = None
) -> GradientTransformation:
    """The pure transform matching a ``torch.optim`` class and its config
    (see :func:`torch_optimizer_options`); ``learning_rate`` (a schedule,
    say) replaces the config's ``lr``.

    Examples:
        >>> opt = from_torch(torch.optim.AdamW, {"lr": 3e-4, "weight_decay": 0.1})
    """
    lr, options = torch_optimizer_options(optimizer_cls, optimizer_config)
    factory = _TORCH_OPTIMIZERS[optimizer_cls][0]
    return factory(lr if learning_rate is None else learning_rate, **options)
