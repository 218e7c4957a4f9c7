"""Default actor-critic models.

A model is an ``nn.Module`` built as ``model_cls(observation_space,
action_space, **model_config)`` whose ``forward(obs)`` returns
``(dist_inputs, value)`` with ``value`` ``[B]``. rlstack applies it
functionally (``torch.func.functional_call``) with a params dict, so
``forward`` must not mutate buffers.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .spaces import Box, Discrete, Space

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU}


def mlp(in_features: int, hiddens: Sequence[int], activation_fn: str) -> nn.Sequential:
    """``Linear -> activation`` for each hidden width (PyTorch's default init)."""
    if activation_fn not in _ACTIVATIONS:
        raise ValueError(f"`activation_fn` must be one of {sorted(_ACTIVATIONS)}, got {activation_fn!r}.")
    if not hiddens or not all(isinstance(h, int) and h > 0 for h in hiddens):
        raise ValueError(f"`hiddens` must be a non-empty sequence of positive ints, got {hiddens!r}.")
    layers: list[nn.Module] = []
    for width in hiddens:
        layers += [nn.Linear(in_features, width), _ACTIVATIONS[activation_fn]()]
        in_features = width
    return nn.Sequential(*layers)


def _small_head(in_features: int, out_features: int) -> nn.Linear:
    """Output head with weights uniform in ``[-1e-3, 1e-3]`` and zero bias, so
    the initial policy is near uniform / zero-mean (as in rlstack 1.x)."""
    head = nn.Linear(in_features, out_features)
    nn.init.uniform_(head.weight, -1e-3, 1e-3)
    nn.init.zeros_(head.bias)
    return head


class MLPModel(nn.Module):
    """Separate policy and value MLPs for ``Box`` observations (rlstack 1.x's
    defaults: hiddens ``(256, 256)``, ReLU).

    Observations ``[B, *obs_shape]`` are flattened to ``[B, prod(obs_shape)]``.
    ``dist_inputs`` are logits ``[B, *action_shape, n]`` for ``Discrete``
    actions and ``(mean, log_std)``, each ``[B, *action_shape]``, for ``Box``
    actions, with ``log_std = tanh(.)`` in ``[-1, 1]`` (std in
    ``[0.37, 2.72]``), as in rlstack 1.x.
    """

    def __init__(
        self,
        observation_space: Space,
        action_space: Space,
        *,
        hiddens: Sequence[int] = (256, 256),
        activation_fn: str = "relu",
    ) -> None:
        super().__init__()
        if not isinstance(observation_space, Box):
            raise TypeError(
                f"MLPModel needs a Box observation space, got {observation_space!r}; pass `model_cls=`."
            )
        if not isinstance(action_space, (Box, Discrete)):
            raise TypeError(f"MLPModel needs a Box or Discrete action space, got {action_space!r}; pass `model_cls=`.")
        self.action_shape = tuple(action_space.shape)
        self.discrete = isinstance(action_space, Discrete)
        self.num_categories = action_space.n if self.discrete else 0
        in_features = math.prod(observation_space.shape)
        action_size = math.prod(self.action_shape)
        hiddens = tuple(hiddens)
        self.actor = mlp(in_features, hiddens, activation_fn)
        out = action_size * self.num_categories if self.discrete else 2 * action_size
        self.actor_head = _small_head(hiddens[-1], out)
        self.critic = mlp(in_features, hiddens, activation_fn)
        self.critic_head = nn.Linear(hiddens[-1], 1)

    def forward(self, obs: torch.Tensor):
        x = obs.reshape(obs.shape[0], -1).float()
        value = self.critic_head(self.critic(x)).squeeze(-1)
        out = self.actor_head(self.actor(x))
        if self.discrete:
            return out.reshape(out.shape[0], *self.action_shape, self.num_categories), value
        mean, log_std = out.chunk(2, dim=-1)
        shape = (out.shape[0], *self.action_shape)
        return (mean.reshape(shape), torch.tanh(log_std).reshape(shape)), value
