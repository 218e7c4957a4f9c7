"""Optimizers as optax-style pairs of pure functions.

An :class:`Optimizer` is ``(init, step)``:

* ``init(params) -> state``
* ``step(grads, state, params, lr) -> (params, state)``

``params`` and ``grads`` are ``dict[str, Tensor]``; ``lr`` is a float or a
0-d tensor (pass a tensor inside compiled code so a changing learning rate
does not recompile). The arithmetic follows ``torch.optim.Adam``, ``AdamW``
and ``SGD`` (single-tensor, non-fused) so results match them to float
rounding.
"""

from __future__ import annotations

import math

from typing import Any, Callable, Mapping, NamedTuple

import optree
import torch

from .types import Params


class Optimizer(NamedTuple):
    """A pure optimizer: ``init(params) -> state`` and
    ``step(grads, state, params, lr) -> (params, state)``."""

    init: Callable[[Params], Any]
    step: Callable[[Params, Any, Params, Any], tuple[Params, Any]]


class AdamState(NamedTuple):
    """``count``: 0-d float32 steps taken; ``mu``/``nu``: first and second moments."""

    count: torch.Tensor
    mu: Params
    nu: Params


class SGDState(NamedTuple):
    """``count``: 0-d float32 steps taken; ``momentum``: momentum buffers."""

    count: torch.Tensor
    momentum: Params


def _count_like(params: Params) -> torch.Tensor:
    first = next(iter(params.values()))
    return torch.zeros((), dtype=torch.float32, device=first.device)


def _zeros_like(params: Params) -> Params:
    return optree.tree_map(torch.zeros_like, params)


def adam(
    *, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0, decoupled: bool = False
) -> Optimizer:
    """Adam (``decoupled=False``, L2 penalty added to the gradient) or AdamW
    (``decoupled=True``, weights shrunk by ``lr * weight_decay``)."""
    b1, b2 = betas

    def init(params: Params) -> AdamState:
        return AdamState(_count_like(params), _zeros_like(params), _zeros_like(params))

    def step(grads: Params, state: AdamState, params: Params, lr: Any) -> tuple[Params, AdamState]:
        count = state.count + 1
        # Bias corrections in float64, as torch.optim computes them in Python floats.
        bias1 = 1 - b1 ** count.double()
        bias2_sqrt = (1 - b2 ** count.double()).sqrt()
        new_params, mu, nu = {}, {}, {}
        for k, p in params.items():
            g = grads[k]
            if weight_decay and decoupled:
                p = p * (1 - lr * weight_decay)
            elif weight_decay:
                g = g + weight_decay * p
            mu[k] = torch.lerp(state.mu[k], g, 1 - b1)
            nu[k] = state.nu[k] * b2 + (1 - b2) * g * g
            denom = nu[k].sqrt() / bias2_sqrt + eps
            new_params[k] = p - (lr / bias1) * mu[k] / denom
        return new_params, AdamState(count, mu, nu)

    return Optimizer(init, step)


def adamw(*, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2) -> Optimizer:
    """AdamW (decoupled weight decay), ``torch.optim.AdamW``'s defaults."""
    return adam(betas=betas, eps=eps, weight_decay=weight_decay, decoupled=True)


def sgd(*, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0) -> Optimizer:
    """SGD with optional (Nesterov) momentum, dampening and L2 weight decay.

    As in ``torch.optim.SGD``, the momentum buffer starts as the first
    gradient (no dampening on the first step).
    """

    def init(params: Params) -> SGDState:
        return SGDState(_count_like(params), _zeros_like(params))

    def step(grads: Params, state: SGDState, params: Params, lr: Any) -> tuple[Params, SGDState]:
        new_params, bufs = {}, {}
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
            new_params[k] = p - lr * d_p
        return new_params, SGDState(state.count + 1, bufs)

    return Optimizer(init, step)


def global_norm(tree: Params) -> torch.Tensor:
    """0-d L2 norm of all leaves together."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in optree.tree_leaves(tree)]))


def clip_by_global_norm(grads: Params, max_norm: float) -> tuple[Params, torch.Tensor]:
    """Scale ``grads`` so their global norm is at most ``max_norm``, as
    ``torch.nn.utils.clip_grad_norm_`` does (coefficient
    ``min(1, max_norm / (norm + 1e-6))``).

    Returns:
        ``(clipped_grads, norm)`` where ``norm`` is the norm before clipping.
    """
    norm = global_norm(grads)
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    return optree.tree_map(lambda g: g * coef, grads), norm


# torch.optim class -> (factory, accepted config keys other than lr, default lr).
_TORCH_OPTIMIZERS: dict[type, tuple[Callable[..., Optimizer], dict[str, Any], float]] = {
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


def from_torch(optimizer_cls: type, optimizer_config: Mapping[str, Any] | None = None) -> tuple[Optimizer, float]:
    """Map a ``torch.optim`` class and its keyword config onto a pure optimizer.

    Supported: ``torch.optim.Adam``, ``AdamW`` and ``SGD`` with their usual
    options. ``foreach``/``fused``/``capturable``/``differentiable`` are
    accepted and ignored (they do not change the result).

    Returns:
        ``(optimizer, lr)``; ``lr`` defaults to 1e-3 (rlstack 1.x's default).

    Raises:
        ValueError: for an unsupported class or option.
    """
    config = dict(optimizer_config or {})
    if optimizer_cls not in _TORCH_OPTIMIZERS:
        raise ValueError(
            f"`optimizer_cls` {getattr(optimizer_cls, '__name__', optimizer_cls)!r} is not supported; "
            f"expected one of {[c.__name__ for c in _TORCH_OPTIMIZERS]} (torch.optim classes)."
        )
    factory, defaults, default_lr = _TORCH_OPTIMIZERS[optimizer_cls]
    lr = config.pop("lr", default_lr)
    if isinstance(lr, torch.Tensor):
        lr = float(lr)
    if not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"`optimizer_config['lr']` must be a positive number, got {lr!r}.")
    kwargs = dict(defaults)
    for key, value in config.items():
        if key in _IGNORED_KEYS:
            continue
        if key in _DEFAULT_ONLY:
            if value != _DEFAULT_ONLY[key]:
                raise ValueError(f"`optimizer_config[{key!r}]={value!r}` is not supported; expected {_DEFAULT_ONLY[key]!r}.")
            continue
        if key not in kwargs:
            raise ValueError(
                f"`optimizer_config` key {key!r} is not supported for {optimizer_cls.__name__}; "
                f"expected some of {['lr', *kwargs]}."
            )
        kwargs[key] = _check_option(key, value, kwargs[key])
    if optimizer_cls is torch.optim.SGD and kwargs["nesterov"] and (kwargs["momentum"] <= 0 or kwargs["dampening"] != 0):
        raise ValueError("`optimizer_config`: Nesterov momentum requires momentum > 0 and dampening == 0.")
    return factory(**kwargs), float(lr)
