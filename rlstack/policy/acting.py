"""Acting in an env's spaces: a distribution's actions mapped into the env's action
space (:func:`to_action_space`), and a policy acting on raw observations with the
observation statistics it was trained with (:func:`act_in_env`).
"""

from __future__ import annotations

from typing import Any

import optree
import torch

from ..core.normalization import RunningMoments, normalize
from ..core.spaces import Box, Space
from ..core.types import Params, Tree
from .distributions import Distribution
from .policy import Policy


def to_action_space(
    distribution_cls: type[Distribution], action: Tree, action_space: Space
) -> Tree:
    """Map a distribution's actions ``[B, ...]`` into ``action_space``.

    For a squashing distribution (``distribution_cls.squashed``, e.g.
    :class:`~rlstack.policy.distributions.SquashedNormal`, actions in ``(-1, 1)``)
    a bounded ``Box`` action is scaled affinely to ``[low, high]``; every
    other ``Box`` action is clipped to the space's bounds (infinite bounds
    clip nothing). Discrete actions pass unchanged; dicts of spaces map key
    by key. The distribution's own actions (what log-probs are computed
    from) are left to the caller: the affine map changes no probability
    ratio, so PPO trains on the unmapped ones.
    """
    if isinstance(action_space, dict):
        return {
            k: to_action_space(distribution_cls, action[k], sub) for k, sub in action_space.items()
        }
    if not isinstance(action_space, Box):
        return action
    low, high = action_space.low, action_space.high
    if getattr(distribution_cls, "squashed", False) and action_space.bounded:
        action = low + (action + 1.0) * (0.5 * (high - low))
    return action.clamp(low, high)


def act_in_env(
    policy: Policy,
    params: Params,
    obs: Tree,
    memory: Tree | None,
    starts: torch.Tensor | None,
    action_space: Space,
    *,
    obs_moments: Any = (),
    deterministic: bool = True,
    key: torch.Tensor | None = None,
) -> tuple[Tree, torch.Tensor, torch.Tensor, Tree]:
    """:meth:`Policy.step` on raw observations, as a trained agent acts: the
    path :meth:`Algorithm.predict <rlstack.Algorithm.predict>`, exports and
    ``rlstack eval`` share.

    Observations are standardised by ``obs_moments`` (a
    :class:`~rlstack.core.normalization.RunningMoments`, or a dict of them
    for a dict observation: training's ``normalize_obs``; ``()`` for none); ``memory=None`` begins
    every env's episode now, ``starts`` (``[B]`` bool; ``None``: none) some of them;
    actions come back inside ``action_space`` (:func:`to_action_space`),
    without gradients.

    Returns:
        ``(action [B, ...], log_prob [B], value [B], memory)``.
    """
    if isinstance(obs_moments, (RunningMoments, dict)):
        obs = normalize(obs_moments, obs)
    first = optree.tree_leaves(obs)[0]
    if memory is None:
        memory = policy.initial_memory(obs)
    if starts is None:
        starts = torch.zeros(first.shape[0], dtype=torch.bool, device=first.device)
    with torch.no_grad():
        action, log_prob, value, memory = policy.step(
            key, params, obs, memory, starts, deterministic=deterministic
        )
    return to_action_space(policy.distribution_cls, action, action_space), log_prob, value, memory
