"""Default actor-critic models.

A model is an ``nn.Module`` built as ``model_cls(observation_space,
action_space, **model_config)`` whose ``forward(obs)`` returns
``(dist_inputs, value)`` with ``value`` ``[B]``. rlstack applies it
functionally (``torch.func.functional_call``) with a params dict, so
``forward`` must not mutate buffers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..core.spaces import Box, Discrete, Space
from .nn import ACTIVATIONS as _ACTIVATIONS
from .windows import ObsWindow


def mlp(in_features: int, hiddens: Sequence[int], activation_fn: str) -> nn.Sequential:
    """``Linear -> activation`` for each hidden width (PyTorch's default init)."""
    if activation_fn not in _ACTIVATIONS:
        raise ValueError(
            f"`activation_fn` must be one of {sorted(_ACTIVATIONS)}, got {activation_fn!r}."
        )
    if not hiddens or not all(isinstance(h, int) and h > 0 for h in hiddens):
        raise ValueError(
            f"`hiddens` must be a non-empty sequence of positive ints, got {hiddens!r}."
        )
    layers: list[nn.Module] = []
    for width in hiddens:
        layers += [nn.Linear(in_features, width), _ACTIVATIONS[activation_fn]()]
        in_features = width
    return nn.Sequential(*layers)


#: ``MLPModel(init=...)``: how the layers start.
INITS = ("default", "orthogonal")


def orthogonal_(hidden: nn.Sequential, head: nn.Linear, head_gain: float) -> None:
    """CleanRL's ``layer_init``, in place: every ``Linear`` of ``hidden``
    orthogonal with gain ``sqrt(2)``, ``head`` with ``head_gain`` (CleanRL:
    0.01 for the actor's mean, 1.0 for the critic), biases 0.
    """
    for layer in [*(m for m in hidden if isinstance(m, nn.Linear)), head]:
        nn.init.orthogonal_(layer.weight, math.sqrt(2.0) if layer is not head else head_gain)
        nn.init.zeros_(layer.bias)


def _small_head(in_features: int, out_features: int) -> nn.Linear:
    """Output head with weights uniform in ``[-1e-3, 1e-3]`` and zero bias, so
    the initial policy is near uniform / zero-mean (as in rlstack 1.x).
    """
    head = nn.Linear(in_features, out_features)
    nn.init.uniform_(head.weight, -1e-3, 1e-3)
    nn.init.zeros_(head.bias)
    return head


#: ``MLPModel(obs_groups=...)``: the observation sets a dict observation's keys are mapped to
# (rsl_rl's names).
OBS_SETS = ("actor", "critic")


def resolve_obs_groups(
    observation_space: Space, obs_groups: Mapping[str, Sequence[str]] | None
) -> dict[str, list[str] | None]:
    """The keys of a dict observation each of the actor and the critic reads
    (rsl_rl's ``obs_groups``; a set not given reads every key, in the
    space's order); ``None`` for each with a Box observation.

    Raises:
        ValueError: for ``obs_groups`` with a Box observation, a set other
            than ``actor``/``critic``, an empty one, or a key not in the space.
    """
    if not isinstance(observation_space, dict):
        if obs_groups:
            raise ValueError(
                "`obs_groups` maps a dict observation's keys; the observation space is "
                f"{observation_space!r}."
            )
        return {name: None for name in OBS_SETS}
    obs_groups = dict(obs_groups or {})
    unknown = sorted(set(obs_groups) - set(OBS_SETS))
    if unknown:
        raise ValueError(f"`obs_groups` has sets {unknown}; expected some of {list(OBS_SETS)}.")
    resolved = {}
    for name in OBS_SETS:
        keys = list(obs_groups.get(name, observation_space))
        missing = [k for k in keys if k not in observation_space]
        if not keys or missing:
            raise ValueError(
                f"`obs_groups[{name!r}]` must be a non-empty list of the observation's keys "
                f"{list(observation_space)}, got {obs_groups.get(name)!r}."
            )
        resolved[name] = keys
    return resolved


def _check_mlp_arguments(
    observation_space: Space,
    action_space: Space,
    *,
    obs_window: Any,
    init: Any,
    log_std_init: Any,
) -> dict[str, Box]:
    """Refuse what :class:`MLPModel` cannot build; its observation Boxes by key
    (``""`` for a single Box).

    Raises:
        TypeError, ValueError: naming the argument and what it must be.
    """
    boxes = observation_space if isinstance(observation_space, dict) else {"": observation_space}
    if not all(isinstance(space, Box) for space in boxes.values()):
        raise TypeError(
            "MLPModel needs a Box observation space or a dict of them, got "
            f"{observation_space!r}; pass `model_cls=`."
        )
    if not isinstance(action_space, (Box, Discrete)):
        raise TypeError(
            f"MLPModel needs a Box or Discrete action space, got {action_space!r}; pass "
            "`model_cls=`."
        )
    if isinstance(obs_window, bool) or not isinstance(obs_window, int) or obs_window < 1:
        raise ValueError(
            f"`obs_window` must be a positive int (observations per window), got {obs_window!r}."
        )
    if init not in INITS:
        raise ValueError(f"`init` must be one of {list(INITS)}, got {init!r}.")
    if log_std_init is not None and (
        isinstance(action_space, Discrete)
        or isinstance(log_std_init, bool)
        or not isinstance(log_std_init, (int, float))
        or not math.isfinite(log_std_init)
    ):
        raise ValueError(
            "`log_std_init` is a finite number for Box actions (or None), got "
            f"{log_std_init!r} for {action_space!r}."
        )
    return boxes


class MLPModel(nn.Module):
    """Separate policy and value MLPs for ``Box`` observations, or a dict of
    them (rlstack 1.x's defaults: hiddens ``(256, 256)``, ReLU).

    Observations ``[B, *obs_shape]`` are flattened to ``[B, prod(obs_shape)]``;
    a dict observation's values each so, concatenated in the space's key
    order. ``obs_groups={"actor": [...], "critic": [...]}`` (rsl_rl's name)
    says which of a dict observation's keys each network reads (default:
    every key): an asymmetric actor-critic whose critic sees privileged
    state the deployed actor never gets.
    ``dist_inputs`` are logits ``[B, *action_shape, n]`` for ``Discrete``
    actions and ``(mean, log_std)``, each ``[B, *action_shape]``, for ``Box``
    actions, with ``log_std = tanh(.)`` in ``[-1, 1]`` (std in
    ``[0.37, 2.72]``), as in rlstack 1.x; with ``log_std_init`` set,
    ``log_std`` is instead a state-independent parameter ``[*action_shape]``
    (the params' ``"log_std"``) that starts at that value, as in CleanRL
    (0.0) and rsl_rl (``log(init_noise_std)``).

    ``init``: ``"default"`` (rlstack 1.x's: PyTorch's default layers, the
    actor's head uniform in ``[-1e-3, 1e-3]``) or ``"orthogonal"``
    (CleanRL's: :func:`orthogonal_`, gain 0.01 on the actor's head, 1.0 on
    the critic's).

    With ``obs_window=K > 1`` the model sees the last ``K`` observations
    (:mod:`rlstack.policy.windows`; 1.x's view requirement ``shift=K - 1``): the
    window ``[B, K, *obs_shape]`` is flattened and its ``[B, K]`` padding
    mask appended as 0/1 features, so padding differs from a zero
    observation.
    """

    def __init__(
        self,
        observation_space: Space,
        action_space: Space,
        *,
        hiddens: Sequence[int] = (256, 256),
        activation_fn: str = "relu",
        obs_window: int = 1,
        log_std_init: float | None = None,
        init: str = "default",
        obs_groups: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        super().__init__()
        boxes = _check_mlp_arguments(
            observation_space,
            action_space,
            obs_window=obs_window,
            init=init,
            log_std_init=log_std_init,
        )
        #: A dict observation's keys, in the order their flattened values are concatenated (None: a
        # Box).
        self.obs_keys = list(observation_space) if isinstance(observation_space, dict) else None
        #: The keys the actor and the critic read (None: a Box), see :func:`resolve_obs_groups`.
        self.obs_groups = resolve_obs_groups(observation_space, obs_groups)
        self.action_shape = tuple(action_space.shape)
        self.discrete = isinstance(action_space, Discrete)
        self.num_categories = action_space.n if self.discrete else 0
        self.obs_window = obs_window

        def in_features(keys: list[str] | None) -> int:
            size = sum(math.prod(boxes[k].shape) for k in (keys if keys is not None else boxes))
            return size * obs_window + (obs_window if obs_window > 1 else 0)

        action_size = math.prod(self.action_shape)
        hiddens = tuple(hiddens)
        self.actor = mlp(in_features(self.obs_groups["actor"]), hiddens, activation_fn)
        outputs_log_std = not self.discrete and log_std_init is None
        out = (
            action_size * self.num_categories
            if self.discrete
            else (2 if outputs_log_std else 1) * action_size
        )
        self.actor_head = _small_head(hiddens[-1], out)
        self.critic = mlp(in_features(self.obs_groups["critic"]), hiddens, activation_fn)
        self.critic_head = nn.Linear(hiddens[-1], 1)
        self.log_std = (
            None
            if log_std_init is None
            else nn.Parameter(torch.full(self.action_shape, float(log_std_init)))
        )
        if init == "orthogonal":
            orthogonal_(self.actor, self.actor_head, 0.01)
            orthogonal_(self.critic, self.critic_head, 1.0)

    @staticmethod
    def _flat(obs: torch.Tensor | dict, keys: list[str] | None) -> torch.Tensor:
        """``[B, ...]`` (or a dict of them, the ``keys`` concatenated in order) -> ``[B,
        features]`` float.
        """
        parts = [obs] if keys is None else [obs[k] for k in keys]
        return torch.cat([x.reshape(x.shape[0], -1).float() for x in parts], -1)

    def _inputs(self, obs: torch.Tensor | dict | ObsWindow, keys: list[str] | None) -> torch.Tensor:
        """What one network reads: its keys flattened (a window's with its ``[B, K]`` padding
        mask).
        """
        if isinstance(obs, ObsWindow):  # [B, K, ...] and its [B, K] padding mask
            return torch.cat([self._flat(obs.inputs, keys), obs.padding_mask.float()], -1)
        return self._flat(obs, keys)

    def forward(self, obs: torch.Tensor | dict | ObsWindow):
        """The module's forward pass (see the class docstring for shapes)."""
        value = self.critic_head(self.critic(self._inputs(obs, self.obs_groups["critic"]))).squeeze(
            -1
        )
        return self.forward_actor(obs), value

    def forward_actor(self, obs: torch.Tensor | dict | ObsWindow):
        """The actor alone: ``dist_inputs`` from the keys it reads (a
        deployed policy needs no critic input, see :mod:`rlstack.integrations.deploy`).
        """
        out = self.actor_head(self.actor(self._inputs(obs, self.obs_groups["actor"])))
        if self.discrete:
            return out.reshape(out.shape[0], *self.action_shape, self.num_categories)
        shape = (out.shape[0], *self.action_shape)
        if self.log_std is not None:  # state-independent
            return out.reshape(shape), self.log_std.expand(shape)
        mean, log_std = out.chunk(2, dim=-1)
        return mean.reshape(shape), torch.tanh(log_std).reshape(shape)


class LSTMCell(nn.Module):
    """One LSTM step, written out (``i, f, g, o`` gates, as ``nn.LSTMCell``):
    ``(x [B, in], (h [B, H], c [B, H])) -> (h, c)``. Plain linear layers
    and pointwise ops, so it runs under ``functional_call``, ``vmap`` and
    ``torch.compile`` alike.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input = nn.Linear(input_size, 4 * hidden_size)
        self.recurrent = nn.Linear(hidden_size, 4 * hidden_size, bias=False)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The module's forward pass (see the class docstring for shapes)."""
        h, c = state
        i, f, g, o = (self.input(x) + self.recurrent(h)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class GRUCell(nn.Module):
    """One GRU step, written out (as ``nn.GRUCell``): ``(x [B, in], h [B, H]) -> h``."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input = nn.Linear(input_size, 3 * hidden_size)
        self.recurrent = nn.Linear(hidden_size, 3 * hidden_size)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The module's forward pass (see the class docstring for shapes)."""
        x_r, x_z, x_n = self.input(x).chunk(3, dim=-1)
        h_r, h_z, h_n = self.recurrent(h).chunk(3, dim=-1)
        reset, update = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        candidate = torch.tanh(x_n + reset * h_n)
        return (1.0 - update) * candidate + update * h


class RecurrentModel(nn.Module):
    """An LSTM (default) or GRU actor-critic for ``Box`` observations, one
    time step per call: ``forward(obs [B, ...], hidden) -> (dist_inputs,
    value [B], hidden)``, the recurrent-model contract
    (:func:`check_recurrent_model`). ``hidden`` is ``(h, c)``, each ``[B,
    num_layers, hidden_size]``, for an LSTM and ``h`` for a GRU;
    :meth:`initial_hidden` gives zeros. Observations pass an optional MLP
    encoder (``hiddens``), then the stacked cells; actor and critic heads
    read the last layer's output, with the heads of :class:`MLPModel`
    (rlstack 1.x's defaults: ``hidden_size`` 256, one layer).
    """

    def __init__(
        self,
        observation_space: Space,
        action_space: Space,
        *,
        hidden_size: int = 256,
        num_layers: int = 1,
        cell: str = "lstm",
        hiddens: Sequence[int] = (),
        activation_fn: str = "relu",
    ) -> None:
        super().__init__()
        if not isinstance(observation_space, Box):
            raise TypeError(
                f"RecurrentModel needs a Box observation space, got {observation_space!r}; pass "
                "`model_cls=`."
            )
        if not isinstance(action_space, (Box, Discrete)):
            raise TypeError(
                f"RecurrentModel needs a Box or Discrete action space, got {action_space!r}; pass "
                "`model_cls=`."
            )
        if cell not in ("lstm", "gru"):
            raise ValueError(f"`cell` must be 'lstm' or 'gru', got {cell!r}.")
        for name, value in (("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
        self.cell, self.hidden_size, self.num_layers = cell, hidden_size, num_layers
        self.action_shape = tuple(action_space.shape)
        self.discrete = isinstance(action_space, Discrete)
        self.num_categories = action_space.n if self.discrete else 0
        features = math.prod(observation_space.shape)
        self.encoder = mlp(features, tuple(hiddens), activation_fn) if hiddens else nn.Identity()
        features = hiddens[-1] if hiddens else features
        cell_cls = LSTMCell if cell == "lstm" else GRUCell
        self.cells = nn.ModuleList(
            [cell_cls(features if i == 0 else hidden_size, hidden_size) for i in range(num_layers)]
        )
        action_size = math.prod(self.action_shape)
        self.actor_head = _small_head(
            hidden_size, action_size * self.num_categories if self.discrete else 2 * action_size
        )
        self.critic_head = nn.Linear(hidden_size, 1)

    def initial_hidden(self, batch_size: int):
        """Zeros: ``(h, c)`` for an LSTM, ``h`` for a GRU, each ``[batch_size, num_layers,
        hidden_size]``.
        """
        zeros = torch.zeros(batch_size, self.num_layers, self.hidden_size)
        return (zeros, zeros.clone()) if self.cell == "lstm" else zeros

    def forward(self, obs: torch.Tensor, hidden):
        """The module's forward pass (see the class docstring for shapes)."""
        x = self.encoder(obs.reshape(obs.shape[0], -1).float())
        hs, cs = [], []
        for i, cell in enumerate(self.cells):
            if self.cell == "lstm":
                h, c = cell(x, (hidden[0][:, i], hidden[1][:, i]))
                cs.append(c)
            else:
                h = cell(x, hidden[:, i])
            hs.append(h)
            x = h
        new_hidden = (
            (torch.stack(hs, 1), torch.stack(cs, 1)) if self.cell == "lstm" else torch.stack(hs, 1)
        )
        value = self.critic_head(x).squeeze(-1)
        out = self.actor_head(x)
        if self.discrete:
            return (
                out.reshape(out.shape[0], *self.action_shape, self.num_categories),
                value,
                new_hidden,
            )
        mean, log_std = out.chunk(2, dim=-1)
        shape = (out.shape[0], *self.action_shape)
        return (mean.reshape(shape), torch.tanh(log_std).reshape(shape)), value, new_hidden
