"""Action distributions as classes of pure static methods over ``dist_inputs``.

A distribution never holds state: every method takes the model's
``dist_inputs`` (a tensor or pytree of tensors with batch dim ``B``) and
returns tensors. ``log_prob`` and ``entropy`` sum over the action's own
dimensions, so both are ``[B]``. Write your own by subclassing
:class:`Distribution` and pass it as ``distribution_cls=``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core import random
from ..core.spaces import Box, Discrete, Space

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _sum_event(x: torch.Tensor) -> torch.Tensor:
    """``[B, *event]`` -> ``[B]``: sum over every dim after the first."""
    return x.reshape(x.shape[0], -1).sum(-1)


class Distribution:
    """Interface of an action distribution (all methods are static).

    Set the class attribute ``squashed = True`` when actions lie in
    ``(-1, 1)`` and should be scaled to a bounded ``Box`` action space; else
    actions sent to an env are clipped to its bounds.
    """

    squashed: bool = False

    @staticmethod
    def sample(key: torch.Tensor, dist_inputs: Any) -> Any:
        """A random action ``[B, ...]`` drawn from ``key`` (a ``[2]`` int64
        key of :mod:`rlstack.core.random`; never torch's global generator).
        """
        raise NotImplementedError

    @staticmethod
    def log_prob(dist_inputs: Any, action: Any) -> torch.Tensor:
        """``[B]`` log-probability (density) of ``action``."""
        raise NotImplementedError

    @staticmethod
    def entropy(dist_inputs: Any) -> torch.Tensor:
        """``[B]`` entropy, in nats."""
        raise NotImplementedError

    @staticmethod
    def mode(dist_inputs: Any) -> Any:
        """The deterministic action ``[B, ...]``."""
        raise NotImplementedError


class Categorical(Distribution):
    """Independent categorical choices; multi-discrete via the action shape.

    ``dist_inputs`` are logits ``[B, *shape, n]``; actions are int64
    ``[B, *shape]``. Sampling uses the Gumbel-max trick, which compiles to
    elementwise ops.
    """

    @staticmethod
    def sample(key: torch.Tensor, dist_inputs: torch.Tensor) -> torch.Tensor:
        """See :meth:`rlstack.policy.distributions.Distribution.sample`."""
        return random.categorical(key, dist_inputs)

    @staticmethod
    def log_prob(dist_inputs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """See :meth:`rlstack.policy.distributions.Distribution.log_prob`."""
        logp = F.log_softmax(dist_inputs, dim=-1)
        return _sum_event(logp.gather(-1, action.unsqueeze(-1)).squeeze(-1))

    @staticmethod
    def entropy(dist_inputs: torch.Tensor) -> torch.Tensor:
        """See :meth:`rlstack.policy.distributions.Distribution.entropy`."""
        logp = F.log_softmax(dist_inputs, dim=-1)
        return _sum_event(-(logp.exp() * logp).sum(-1))

    @staticmethod
    def mode(dist_inputs: torch.Tensor) -> torch.Tensor:
        """See :meth:`rlstack.policy.distributions.Distribution.mode`."""
        return torch.argmax(dist_inputs, dim=-1)


class Normal(Distribution):
    """Diagonal Gaussian. ``dist_inputs = (mean, log_std)``, each ``[B, *shape]``."""

    @staticmethod
    def sample(key: torch.Tensor, dist_inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """See :meth:`rlstack.policy.distributions.Distribution.sample`."""
        mean, log_std = dist_inputs
        return mean + log_std.exp() * random.normal(key, mean.shape, dtype=mean.dtype)

    @staticmethod
    def log_prob(
        dist_inputs: tuple[torch.Tensor, torch.Tensor], action: torch.Tensor
    ) -> torch.Tensor:
        """See :meth:`rlstack.policy.distributions.Distribution.log_prob`."""
        mean, log_std = dist_inputs
        z = (action - mean) * torch.exp(-log_std)
        return _sum_event(-0.5 * z * z - log_std - _LOG_SQRT_2PI)

    @staticmethod
    def entropy(dist_inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """See :meth:`rlstack.policy.distributions.Distribution.entropy`."""
        _, log_std = dist_inputs
        return _sum_event(0.5 + _LOG_SQRT_2PI + log_std)

    @staticmethod
    def mode(dist_inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """See :meth:`rlstack.policy.distributions.Distribution.mode`."""
        return dist_inputs[0]


# Gauss-Hermite nodes/weights for E[f(Z)], Z ~ N(0, 1): E ~= sum w_i f(sqrt(2) x_i) / sqrt(pi).
_GH_X, _GH_W = np.polynomial.hermite.hermgauss(16)
_GH_NODES = tuple(float(x) * math.sqrt(2.0) for x in _GH_X)
_GH_WEIGHTS = tuple(float(w) / math.sqrt(math.pi) for w in _GH_W)


def _log1m_tanh_sq(u: torch.Tensor) -> torch.Tensor:
    """``log(1 - tanh(u)^2)``, stable for large ``|u|``."""
    return 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))


class SquashedNormal(Normal):
    """``tanh`` of a diagonal Gaussian: actions in ``(-1, 1)``, which the
    policy scales to a bounded action space's ``[low, high]`` before the env
    sees them.

    ``log_prob`` includes the change-of-variables term
    ``-sum log(1 - tanh(u)^2)``; actions are clamped to ``1 - 1e-6`` in
    magnitude before ``atanh``. ``entropy`` is the exact entropy of the squashed
    variable, ``H(u) + E[log(1 - tanh(u)^2)]``, with the expectation taken by
    16-point Gauss-Hermite quadrature (deterministic and differentiable).
    """

    EPS = 1e-6
    #: Actions lie in (-1, 1): :func:`rlstack.policy.policy.to_action_space` scales
    #: them to a bounded ``Box``'s ``[low, high]``.
    squashed = True

    @staticmethod
    def sample(key: torch.Tensor, dist_inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """See :meth:`rlstack.policy.distributions.Distribution.sample`."""
        return torch.tanh(Normal.sample(key, dist_inputs))

    @staticmethod
    def log_prob(
        dist_inputs: tuple[torch.Tensor, torch.Tensor], action: torch.Tensor
    ) -> torch.Tensor:
        """See :meth:`rlstack.policy.distributions.Distribution.log_prob`."""
        eps = SquashedNormal.EPS
        u = torch.atanh(action.clamp(-1.0 + eps, 1.0 - eps))
        return Normal.log_prob(dist_inputs, u) - _sum_event(_log1m_tanh_sq(u))

    @staticmethod
    def entropy(dist_inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """See :meth:`rlstack.policy.distributions.Distribution.entropy`."""
        mean, log_std = dist_inputs
        std = log_std.exp()
        correction = sum(
            w * _log1m_tanh_sq(mean + std * x) for x, w in zip(_GH_NODES, _GH_WEIGHTS, strict=True)
        )
        return Normal.entropy(dist_inputs) + _sum_event(correction)

    @staticmethod
    def mode(dist_inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """See :meth:`rlstack.policy.distributions.Distribution.mode`."""
        return torch.tanh(dist_inputs[0])


def default_distribution_cls(action_space: Space) -> type[Distribution]:
    """``Categorical`` for ``Discrete`` actions, ``Normal`` for ``Box``.

    Raises:
        TypeError: for composite (dict) action spaces, which need a user
            ``distribution_cls``.
    """
    if isinstance(action_space, Discrete):
        return Categorical
    if isinstance(action_space, Box):
        return Normal
    raise TypeError(
        f"No default distribution for action space {action_space!r}; pass `distribution_cls=`."
    )
