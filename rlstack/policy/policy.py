"""``Policy``: a model skeleton and a distribution, applied to a params dict."""

from __future__ import annotations

import copy
import functools
from typing import Any

import optree
import torch
from torch import nn
from torch.func import functional_call

from ..core import random
from ..core.spaces import Box, Space, describe_mismatch, sample
from ..core.types import Params, Tree
from . import windows
from .distributions import Distribution, Normal
from .memory import NoMemory, RecurrentMemory, WindowMemory, memory_kind


def make_skeleton(model: nn.Module) -> nn.Module:
    """Replace ``model``'s parameters (in place) by weightless ``meta``
    tensors of the same shapes, and make a direct call raise a clear error.

    The module then only describes the computation, which
    ``functional_call`` runs with a params dict; memory holds one copy of
    the weights (the dict), and nobody can call the untrained network by
    mistake. Buffers are kept.
    """
    for name, param in list(model.named_parameters()):
        owner_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        setattr(
            owner,
            attr,
            nn.Parameter(torch.empty_like(param, device="meta"), requires_grad=param.requires_grad),
        )
    model.register_forward_pre_hook(_refuse_weightless_call)
    return model


def _refuse_weightless_call(module: nn.Module, args: Any) -> None:
    first = next(module.parameters(), None)
    if first is not None and first.is_meta:
        raise RuntimeError(
            f"{type(module).__name__} is a weightless skeleton: its trained parameters live in the "
            "params dict "
            "(`algorithm.params`); call it through `policy.apply(params, obs)`, or get an ordinary "
            "module "
            "holding them with `policy.module(params)`."
        )


class Policy:
    """Joins a model and an action distribution; holds no parameters itself.

    ``params`` are a flat ``dict[str, Tensor]`` keyed by the model's
    ``named_parameters()`` names; the module is only a skeleton called through
    ``torch.func.functional_call``, so every method is pure in ``params``.

    Args:
        model: ``nn.Module`` whose ``forward(obs)`` returns
            ``(dist_inputs, value [B])``.
        distribution_cls: class with static ``sample``, ``log_prob``,
            ``entropy`` and ``mode`` over ``dist_inputs``.
    """

    def __init__(self, model: nn.Module, distribution_cls: type[Distribution]) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}.")
        for name in ("sample", "log_prob", "entropy", "mode"):
            if not callable(getattr(distribution_cls, name, None)):
                raise TypeError(f"`distribution_cls` {distribution_cls!r} has no `{name}` method.")
        self.model = model
        self.distribution_cls = distribution_cls
        #: The memory kind, fixed here (:func:`rlstack.policy.memory.memory_kind`).
        self.memory = memory_kind(model, self.initial_hidden)

    def init_params(self) -> Params:
        """A detached copy of the model's current parameters.

        Raises:
            RuntimeError: if the model is a skeleton (see :func:`make_skeleton`).
        """
        params = {k: v.detach().clone() for k, v in self.model.named_parameters()}
        if any(v.is_meta for v in params.values()):
            raise RuntimeError(
                f"{type(self.model).__name__} is a weightless skeleton; its parameters are the "
                "params dict you hold."
            )
        return params

    def module(self, params: Params) -> nn.Module:
        """An ordinary ``nn.Module`` (a copy of the model) holding ``params``:
        ``policy.module(params)(obs)`` equals ``policy.apply(params, obs)``.
        Parameters are copied, so training the copy leaves ``params`` alone.
        """
        module = copy.deepcopy(self.model)
        state = {k: nn.Parameter(v.detach().clone(), requires_grad=True) for k, v in params.items()}
        module.load_state_dict(state, strict=False, assign=True)
        return module

    def apply(self, params: Params, *inputs: Tree) -> Any:
        """The network on a batch: ``(dist_inputs, value [B])`` for a
        feedforward model's observations ``[B, ...]`` (a windowed model's
        :class:`~rlstack.policy.windows.ObsWindow`); ``(dist_inputs, value,
        hidden)`` for a recurrent model's ``(obs, hidden)``.
        """
        return functional_call(self.model, params, inputs)

    @property
    def recurrent(self) -> bool:
        """Whether the model is recurrent (its memory is a hidden state)."""
        return isinstance(self.memory, RecurrentMemory)

    @property
    def obs_window(self) -> int:
        """``K``, observations the model sees per step: its ``obs_window``
        attribute (see :mod:`rlstack.policy.windows`), 1 when it has none.
        """
        return self.memory.size if isinstance(self.memory, WindowMemory) else 1

    @property
    def has_memory(self) -> bool:
        """Whether acting needs state from earlier steps: a recurrent model,
        or a window of past observations.
        """
        return not isinstance(self.memory, NoMemory)

    def initial_memory(self, obs: Tree) -> Tree:
        """The memory of envs whose episodes begin at ``obs`` (leaves
        ``[B, ...]``): a recurrent model's initial hidden state, a windowed
        model's empty :class:`~rlstack.policy.windows.WindowCarry`, else ``()``.
        """
        return self.memory.initial(obs)

    def initial_hidden(self, batch_size: int, device: Any = "cpu") -> Tree:
        """The recurrent model's initial hidden state for ``batch_size``
        envs, leaves ``[batch_size, ...]`` on ``device``.
        """
        return optree.tree_map(lambda x: x.to(device), self.model.initial_hidden(batch_size))

    def init_states(self, n: int, /, device: Any = "cpu") -> Tree:
        """Rlstack 1.x's name for :meth:`Policy.initial_hidden`: the hidden
        state that starts an episode, for ``n`` envs (leaves ``[n, ...]``).
        """
        return self.initial_hidden(n, device)

    def forward(
        self, params: Params, obs: Tree, memory: Tree, starts: torch.Tensor
    ) -> tuple[Any, torch.Tensor, Tree]:
        """``(dist_inputs, value [B], memory)`` on observations ``[B, ...]``
        with the memory of earlier steps, started over where ``starts``
        (``[B]`` bool: episodes beginning at ``obs``).
        """
        return self.memory.forward(functools.partial(self.apply, params), obs, memory, starts)

    def step(
        self,
        key: torch.Tensor | None,
        params: Params,
        obs: Tree,
        memory: Tree,
        starts: torch.Tensor,
        *,
        deterministic: bool = False,
    ) -> tuple[Tree, torch.Tensor, torch.Tensor, Tree]:
        """Act: the one acting path, for every memory kind.

        Args:
            key: ``[2]`` int64 random key the sample is drawn from (unused,
                and may be ``None``, when ``deterministic``).
            params: the model's parameters.
            obs: observations, leaves ``[B, ...]`` (normalised as the policy
                sees them).
            memory: what this returned last time for these envs
                (:meth:`initial_memory` for a first step): a recurrent
                model's hidden state, a windowed model's
                :class:`~rlstack.policy.windows.WindowCarry`, ``()`` for none.
            starts: ``[B]`` bool, ``True`` where ``obs`` begins an episode:
                the memory starts over there.
            deterministic: take the distribution's mode instead of sampling.

        Returns:
            ``(action [B, ...], log_prob [B], value [B], memory)``; the
            distribution's own action (see :func:`to_action_space`) and its
            log-prob, exactly as the PPO loss recomputes it.
        """
        if not deterministic and not isinstance(key, torch.Tensor):
            raise ValueError(
                "`key` must be a random key (rlstack.core.random.key) to sample actions, got "
                f"{key!r}; "
                "or pass deterministic=True."
            )
        dist_inputs, value, memory = self.forward(params, obs, memory, starts)
        dist = self.distribution_cls
        action = dist.mode(dist_inputs) if deterministic else dist.sample(key, dist_inputs)
        return action, dist.log_prob(dist_inputs, action), value, memory

    def value(self, params: Params, obs: Tree, memory: Tree, starts: torch.Tensor) -> torch.Tensor:
        """``[B]`` the critic's value of ``obs`` with ``memory`` (see :meth:`step`)."""
        return self.forward(params, obs, memory, starts)[1]

    def replay(self, params: Params, batch: Any) -> tuple[Any, torch.Tensor]:
        """``(dist_inputs, values)`` of the network re-run on an update's
        rows (:meth:`memory.batch <rlstack.policy.memory.NoMemory.batch>`),
        flattened to ``[B]`` transitions: a recurrent model over whole
        sequences from their stored hidden states, exactly as it acted.
        """
        return self.memory.replay(functools.partial(self.apply, params), batch)

    def check(
        self, params: Params, observation_space: Space, action_space: Space, device: Any = "cpu"
    ) -> None:
        """Run the policy on a small batch and check its outputs fit the spaces.

        Raises:
            ValueError: if the value, action or log-prob have the wrong shape.
            TypeError: if the action has the wrong dtype or type.
        """
        batch, size = 3, self.obs_window
        obs_key, act_key = random.split(random.key(0, device))
        obs = sample(observation_space, (batch,) if size == 1 else (batch, size), key=obs_key)
        if size > 1:  # a windowed model sees ObsWindow(inputs [B, K, ...], padding_mask [B, K])
            obs = windows.ObsWindow(obs, torch.zeros(batch, size, dtype=torch.bool, device=device))
        model_name = type(self.model).__name__
        if self.recurrent:
            raise TypeError(
                f"model {model_name} is recurrent (it has initial_hidden): check it with "
                "rlstack.policy.policy.check_recurrent_model; this check is for "
                "forward(obs) -> (dist_inputs, value)."
            )
        dist_name = getattr(self.distribution_cls, "__name__", repr(self.distribution_cls))
        is_normal = isinstance(self.distribution_cls, type) and issubclass(
            self.distribution_cls, Normal
        )
        if is_normal and not isinstance(action_space, Box):
            raise ValueError(
                f"distribution {dist_name} is for Box action spaces, got action_space "
                f"{action_space!r}: leave `distribution` at its default for this env."
            )
        with torch.no_grad():
            try:
                out = self.apply(params, obs)
            except Exception as e:
                raise ValueError(
                    f"model {model_name} failed on observations of {observation_space!r}: {e}"
                ) from e
            if not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError(
                    f"model {model_name}.forward must return (dist_inputs, value), got "
                    f"{type(out).__name__}."
                )
            dist_inputs, value = out
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != (batch,):
                got = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(
                    f"model {model_name} must return a value of shape [B] = [{batch}], got {got}."
                )
            try:
                action = self.distribution_cls.sample(act_key, dist_inputs)
                log_prob = self.distribution_cls.log_prob(dist_inputs, action)
                entropy = self.distribution_cls.entropy(dist_inputs)
            except Exception as e:
                raise ValueError(
                    f"model {model_name}'s outputs do not fit distribution {dist_name}: {e}"
                ) from e
        why = describe_mismatch(action_space, action, (batch,), box_bounds=False)
        if why:
            raise ValueError(
                f"distribution {dist_name} on model {model_name}'s outputs gives actions that do "
                "not fit "
                f"action_space {action_space!r}: {why}."
            )
        for name, x in (("log_prob", log_prob), ("entropy", entropy)):
            if not isinstance(x, torch.Tensor) or tuple(x.shape) != (batch,):
                raise ValueError(
                    f"distribution {dist_name}.{name} must return shape [B] = [{batch}], got "
                    f"{getattr(x, 'shape', x)}."
                )


class RecurrentPolicy(Policy):
    """rlstack 1.x's name for a :class:`Policy` over a recurrent model: the
    same class, refusing a model without ``initial_hidden`` (see
    :func:`check_recurrent_model` for the whole contract).
    """

    def __init__(self, model: nn.Module, distribution_cls: type[Distribution]) -> None:
        if not callable(getattr(model, "initial_hidden", None)):
            raise TypeError(
                f"RecurrentPolicy needs a recurrent model (with `initial_hidden(batch_size)`), got "
                f"{type(model).__name__}; use Policy for a feedforward one."
            )
        super().__init__(model, distribution_cls)


def check_recurrent_model(
    model: nn.Module, params: Params, observation_space: Space, device: Any = "cpu"
) -> None:
    """Check a model against the recurrent contract on a small batch:
    ``initial_hidden(batch_size)`` returns a tensor or pytree of tensors
    with leading dimension ``batch_size``, and ``forward(obs, hidden)``
    returns ``(dist_inputs, value [B], hidden)`` with the hidden state in
    the structure, shapes and dtypes of ``initial_hidden``'s.

    Raises:
        TypeError, ValueError: naming the model and what differs.
    """
    name, batch = type(model).__name__, 3
    if not callable(getattr(model, "initial_hidden", None)):
        raise TypeError(f"recurrent model {name} needs an `initial_hidden(batch_size)` method.")
    try:
        initial = model.initial_hidden(batch)
    except Exception as e:
        raise ValueError(f"recurrent model {name}.initial_hidden({batch}) failed: {e}") from e
    leaves, spec = optree.tree_flatten(initial)
    if not leaves or not all(
        isinstance(x, torch.Tensor) and x.dim() >= 1 and x.shape[0] == batch for x in leaves
    ):
        raise ValueError(
            f"recurrent model {name}.initial_hidden({batch}) must return tensors (or a pytree of "
            "them) with leading "
            f"dimension {batch}, got {optree.tree_map(lambda x: getattr(x, 'shape', x), initial)}."
        )
    obs = sample(observation_space, (batch,), key=random.key(0, device))
    hidden = optree.tree_map(lambda x: x.to(device), initial)
    with torch.no_grad():
        try:
            out = functional_call(model, params, (obs, hidden))
        except Exception as e:
            raise ValueError(
                f"recurrent model {name} failed on (observations of {observation_space!r}, its "
                f"initial_hidden): {e}"
            ) from e
    if not (isinstance(out, tuple) and len(out) == 3):
        raise TypeError(
            f"recurrent model {name}.forward(obs, hidden) must return (dist_inputs, value, "
            "hidden), "
            f"got {type(out).__name__}{f' of {len(out)}' if isinstance(out, tuple) else ''}."
        )
    _, value, new_hidden = out
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != (batch,):
        raise ValueError(
            f"recurrent model {name} must return a value of shape [B] = [{batch}], got "
            f"{list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}."
        )
    new_leaves, new_spec = optree.tree_flatten(new_hidden)
    if new_spec != spec or any(
        a.shape != b.shape or a.dtype != b.dtype for a, b in zip(new_leaves, leaves, strict=True)
    ):
        raise ValueError(
            f"recurrent model {name}'s hidden state does not match its initial_hidden: forward "
            "returned "
            f"{optree.tree_map(lambda x: (tuple(x.shape), x.dtype), new_hidden)}, initial_hidden "
            "gives "
            f"{optree.tree_map(lambda x: (tuple(x.shape), x.dtype), initial)}."
        )
