"""Building a :class:`~rlstack.policy.policy.Policy` from a model class: its
config checked before anything is built (:func:`check_model_config`), its
weights drawn from a seed and checked against the spaces
(:func:`build_policy`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch

from ..core.spaces import Space
from ..core.types import Params
from .distributions import Distribution
from .policy import Policy, check_recurrent_model, make_skeleton


def is_recurrent_model(model_cls: type) -> bool:
    """Whether ``model_cls`` builds a recurrent model: one with an
    ``initial_hidden(batch_size)`` method (the contract of
    :func:`~rlstack.policy.policy.check_recurrent_model`); known before it is built.
    """
    return callable(getattr(model_cls, "initial_hidden", None))


def check_model_config(model_cls: type, model_config: Mapping[str, Any]) -> None:
    """Refuse ``model_config`` keys that ``model_cls``'s constructor does not
    take (unless it takes ``**kwargs``), before anything is built.

    Raises:
        TypeError: naming ``model_config``, the unknown keys and the valid ones.
    """
    try:
        parameters = inspect.signature(model_cls).parameters
    except (TypeError, ValueError):  # no signature to read: the constructor will say
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    valid = [
        name
        for name, p in parameters.items()
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and name not in ("observation_space", "action_space")
    ]
    unknown = sorted(set(model_config) - set(valid))
    if unknown:
        raise TypeError(
            f"`model_config` has {unknown}, which {getattr(model_cls, '__name__', model_cls)} does "
            "not "
            f"take; its keys are {valid}."
        )


def build_policy(
    observation_space: Space,
    action_space: Space,
    model_cls: type,
    model_config: dict[str, Any],
    distribution_cls: type[Distribution],
    *,
    seed: int,
    device: torch.device,
) -> tuple[Policy, Params]:
    """Build ``model_cls(observation_space, action_space, **model_config)``
    with its initial weights drawn from ``seed`` (``nn.Module``
    initialisers use torch's global generator: a fork of it is seeded, so
    the process's generator is left as it was), check it against the spaces
    (:meth:`Policy.check`), and split it into a :class:`Policy` whose model
    is a weightless skeleton and its params.

    A recurrent model (one with ``initial_hidden``) is checked against the
    recurrent contract instead (:func:`check_recurrent_model`).

    Returns:
        ``(policy, params)``, the params on ``device``.
    """
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = model_cls(observation_space, action_space, **model_config)
    policy = Policy(model.to(device), distribution_cls)
    params = policy.init_params()
    make_skeleton(policy.model)  # one copy of the weights: params
    if policy.recurrent:
        check_recurrent_model(policy.model, params, observation_space, device)
    else:
        policy.check(params, observation_space, action_space, device)
    return policy, params
