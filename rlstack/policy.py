"""``Policy``: a model skeleton and a distribution, applied to a params dict."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from .distributions import Distribution
from .spaces import Space, describe_mismatch, sample
from .types import Params, Tree


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

    def init_params(self) -> Params:
        """A detached copy of the model's current parameters."""
        return {k: v.detach().clone() for k, v in self.model.named_parameters()}

    def apply(self, params: Params, obs: Tree) -> tuple[Any, torch.Tensor]:
        """``(dist_inputs, value [B])`` for a batch of observations ``[B, ...]``."""
        return functional_call(self.model, params, (obs,))

    def act(self, params: Params, obs: Tree, deterministic: bool = False) -> tuple[Tree, torch.Tensor, torch.Tensor]:
        """Choose actions for a batch of observations.

        Args:
            params: the model's parameters.
            obs: observations, leaves ``[B, ...]``.
            deterministic: take the distribution's mode instead of sampling.

        Returns:
            ``(action [B, ...], log_prob [B], value [B])``. ``log_prob`` is
            computed from the returned action with ``distribution.log_prob``,
            exactly as the PPO loss recomputes it.
        """
        dist_inputs, value = self.apply(params, obs)
        dist = self.distribution_cls
        action = dist.mode(dist_inputs) if deterministic else dist.sample(dist_inputs)
        return action, dist.log_prob(dist_inputs, action), value

    def check(self, params: Params, observation_space: Space, action_space: Space, device: Any = "cpu") -> None:
        """Run the policy on a small batch and check its outputs fit the spaces.

        Raises:
            ValueError: if the value, action or log-prob have the wrong shape.
            TypeError: if the action has the wrong dtype or type.
        """
        batch = 3
        obs = sample(observation_space, (batch,), device)
        model_name = type(self.model).__name__
        dist_name = getattr(self.distribution_cls, "__name__", repr(self.distribution_cls))
        with torch.no_grad():
            try:
                out = self.apply(params, obs)
            except Exception as e:
                raise ValueError(f"model {model_name} failed on observations of {observation_space!r}: {e}") from e
            if not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError(f"model {model_name}.forward must return (dist_inputs, value), got {type(out).__name__}.")
            dist_inputs, value = out
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != (batch,):
                raise ValueError(
                    f"model {model_name} must return a value of shape [B] = [{batch}], got "
                    f"{list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}."
                )
            try:
                action, log_prob, _ = self.act(params, obs)
                entropy = self.distribution_cls.entropy(dist_inputs)
            except Exception as e:
                raise ValueError(
                    f"model {model_name}'s outputs do not fit distribution {dist_name}: {e}"
                ) from e
        why = describe_mismatch(action_space, action, (batch,), box_bounds=False)
        if why:
            raise ValueError(
                f"distribution {dist_name} on model {model_name}'s outputs gives actions that do not fit "
                f"action_space {action_space!r}: {why}."
            )
        for name, x in (("log_prob", log_prob), ("entropy", entropy)):
            if not isinstance(x, torch.Tensor) or tuple(x.shape) != (batch,):
                raise ValueError(f"distribution {dist_name}.{name} must return shape [B] = [{batch}], got {getattr(x, 'shape', x)}.")
