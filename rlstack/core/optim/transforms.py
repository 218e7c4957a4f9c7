"""The transforms optimizers are chained from (:func:`clip_by_global_norm`,
:func:`scale_by_adam`, :func:`add_decayed_weights`, :func:`trace`,
:func:`scale_by_learning_rate`) and the chains :func:`adam`,
:func:`adamw` and :func:`sgd` (see :mod:`rlstack.core.optim`).
"""

from __future__ import annotations

import math
from typing import Any

import optree
import torch

from ..types import Params
from .base import (
    ClipByGlobalNormState,
    GradientTransformation,
    LearningRate,
    ScaleByAdamState,
    ScaleByLearningRateState,
    Schedule,
    TraceState,
    _device_of,
    _scalar,
    _zeros_like,
    chain,
    global_norm,
)


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

    def update(
        grads: Params, state: ClipByGlobalNormState, params: Params
    ) -> tuple[Params, ClipByGlobalNormState]:
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
    value = (
        learning_rate.detach().clone() if isinstance(learning_rate, torch.Tensor) else learning_rate
    )
    if not isinstance(value, torch.Tensor) and not (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    ):
        raise ValueError(
            "`learning_rate` must be a number > 0, a 0-d tensor or a schedule, got "
            f"{learning_rate!r}."
        )
    return value, None


def _initial_rate(
    value: float | torch.Tensor, schedule: Schedule | None, params: Params
) -> torch.Tensor:
    if schedule is not None:
        return schedule(_scalar(0.0, params)).to(torch.float32)
    if isinstance(value, torch.Tensor):
        return value.to(dtype=torch.float32, device=_device_of(params)).reshape(())
    return _scalar(float(value), params)


def _check_number(name: str, value: Any, low: float = 0.0, high: float = math.inf) -> None:
    """Raise ValueError naming ``name`` unless ``low <= value < high``."""
    if not (
        isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value < high
    ):
        raise ValueError(f"`{name}` must be a number in [{low}, {high}), got {value!r}.")


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    """Adam's direction ``mu_hat / (sqrt(nu_hat) + eps)``, where ``mu``/``nu``
    are running means of the gradient and its square and ``mu_hat``/
    ``nu_hat`` their bias-corrected values (optax's ``scale_by_adam``, as
    ``torch.optim.Adam`` computes it: ``eps`` added after the square root,
    bias corrections in float64). Not yet scaled by a learning rate.
    """
    _check_number("b1", b1, 0.0, 1.0)
    _check_number("b2", b2, 0.0, 1.0)
    _check_number("eps", eps)

    def init(params: Params) -> ScaleByAdamState:
        return ScaleByAdamState(_scalar(0.0, params), _zeros_like(params), _zeros_like(params))

    def update(
        grads: Params, state: ScaleByAdamState, params: Params
    ) -> tuple[Params, ScaleByAdamState]:
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
    it AdamW's decoupled decay. Keeps no state.
    """
    _check_number("weight_decay", weight_decay)

    def init(params: Params) -> tuple:
        return ()

    def update(grads: Params, state: tuple, params: Params) -> tuple[Params, tuple]:
        return {k: g + weight_decay * params[k] for k, g in grads.items()}, state

    return GradientTransformation(init, update)


def trace(
    decay: float, *, dampening: float = 0.0, nesterov: bool = False
) -> GradientTransformation:
    """Momentum as ``torch.optim.SGD`` computes it: the buffer starts as the
    first gradient, then ``buf = decay * buf + (1 - dampening) * g``; the
    updates are ``buf``, or ``g + decay * buf`` with ``nesterov`` (optax's
    ``trace``, with torch's first step and dampening).
    """
    _check_number("decay", decay, 0.0, 1.0 + 1e-12)
    _check_number("dampening", dampening, 0.0, 1.0 + 1e-12)

    def init(params: Params) -> TraceState:
        return TraceState(_scalar(0.0, params), _zeros_like(params))

    def update(grads: Params, state: TraceState, params: Params) -> tuple[Params, TraceState]:
        momentum = {
            k: torch.where(state.count > 0, state.momentum[k] * decay + (1 - dampening) * g, g)
            for k, g in grads.items()
        }
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

    def update(
        grads: Params, state: ScaleByLearningRateState, params: Params
    ) -> tuple[Params, ScaleByLearningRateState]:
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
    L2 penalty, left out at 0), ``scale_by_adam, scale_by_learning_rate)``.
    """
    decay = (add_decayed_weights(weight_decay),) if weight_decay else ()
    return chain(*decay, scale_by_adam(*betas, eps), scale_by_learning_rate(learning_rate))


def adamw(
    learning_rate: LearningRate = 1e-3,
    *,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
) -> GradientTransformation:
    """``torch.optim.AdamW`` (with its defaults): ``chain(scale_by_adam,
    add_decayed_weights(weight_decay), scale_by_learning_rate)``, so the
    weights shrink by ``learning_rate * weight_decay`` each step.
    """
    return chain(
        scale_by_adam(*betas, eps),
        add_decayed_weights(weight_decay),
        scale_by_learning_rate(learning_rate),
    )


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
    where it would do nothing (zero decay, zero momentum).
    """
    decay = (add_decayed_weights(weight_decay),) if weight_decay else ()
    heavy_ball = (trace(momentum, dampening=dampening, nesterov=nesterov),) if momentum else ()
    return chain(*decay, *heavy_ball, scale_by_learning_rate(learning_rate))
