"""``torch.optim`` classes and their keyword configs translated into
:mod:`rlstack.core.optim` chains: what rlstack 1.x's ``optimizer_cls`` and
``optimizer_config`` name, the shell validates here once and
:func:`from_torch` builds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .optim import GradientTransformation, LearningRate, adam, adamw, sgd

# torch.optim class -> (factory, accepted config keys other than lr, default lr).
_TORCH_OPTIMIZERS: dict[
    type, tuple[Callable[..., GradientTransformation], dict[str, Any], float]
] = {
    torch.optim.Adam: (adam, {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}, 1e-3),
    torch.optim.AdamW: (adamw, {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2}, 1e-3),
    torch.optim.SGD: (
        sgd,
        {"momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0},
        1e-3,
    ),
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
        if not (
            isinstance(value, (tuple, list))
            and len(value) == 2
            and all(is_number(v) and 0 <= v < 1 for v in value)
        ):
            raise ValueError(
                f"`optimizer_config[{key!r}]` must be a pair of numbers in [0, 1) such as "
                f"{list(default)}, got {value!r}."
            )
        return tuple(float(v) for v in value)
    if not (is_number(value) and value >= 0):
        raise ValueError(
            f"`optimizer_config[{key!r}]` must be a number >= 0 such as {default}, got {value!r}."
        )
    return float(value)


def torch_optimizer_options(
    optimizer_cls: type, optimizer_config: Mapping[str, Any] | None = None
) -> tuple[float, dict[str, Any]]:
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
            f"`optimizer_cls` {getattr(optimizer_cls, '__name__', optimizer_cls)!r} is not "
            "supported; "
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
                raise ValueError(
                    f"`optimizer_config[{key!r}]={value!r}` is not supported; expected "
                    f"{_DEFAULT_ONLY[key]!r}."
                )
            continue
        if key not in options:
            raise ValueError(
                f"`optimizer_config` key {key!r} is not supported for {optimizer_cls.__name__}; "
                f"expected some of {['lr', *options]}."
            )
        options[key] = _check_option(key, value, options[key])
    if (
        optimizer_cls is torch.optim.SGD
        and options["nesterov"]
        and (options["momentum"] <= 0 or options["dampening"] != 0)
    ):
        raise ValueError(
            "`optimizer_config`: Nesterov momentum requires momentum > 0 and dampening == 0."
        )
    return float(lr), options


def from_torch(
    optimizer_cls: type,
    optimizer_config: Mapping[str, Any] | None = None,
    *,
    learning_rate: LearningRate | None = None,
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
