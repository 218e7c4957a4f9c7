"""A rollout's carry made fresh (:func:`reset_carry`) or given what it lacks
(:func:`with_carry_defaults`): the one place a first memory, tally, starts
and step count are made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optree
import torch

from ..core import random
from ..core.types import EpisodeTally, RolloutCarry
from ..envs import Env
from ..policy.policy import Policy


def reset_carry(
    key: torch.Tensor,
    env: Env,
    num_envs: int,
    *,
    config: Any = None,
    norm: Any = (),
    policy: Policy | None = None,
    step: torch.Tensor | None = None,
) -> RolloutCarry:
    """A carry of ``num_envs`` freshly reset envs: ``key`` is split into the
    reset's key and the next rollout's; ``norm`` goes in as given; every env
    begins an episode (``starts`` all True, a zero
    :class:`~rlstack.core.types.EpisodeTally`, ``policy``'s first memory, see
    :func:`with_carry_defaults`); ``step`` (0-d int64, default 0) goes on
    counting a run's steps across resets.
    """
    reset_key, rollout_key = random.split(key)
    state, obs = env.reset(reset_key, num_envs, config=config)
    carry = RolloutCarry(state, obs, rollout_key, norm, step=() if step is None else step)
    return with_carry_defaults(policy)(carry)


def with_carry_defaults(policy: Policy | None) -> Callable[[RolloutCarry], RolloutCarry]:
    """A function giving a carry what it lacks (a carry made by hand, or
    fresh): a zero :class:`~rlstack.core.types.EpisodeTally` (``[N]`` float32
    returns, ``[N]`` int64 lengths), ``policy``'s first memory
    (:meth:`Policy.initial_memory <rlstack.policy.policy.Policy.initial_memory>`:
    the one place it is made), ``starts`` all True (every env begins an
    episode) and ``step`` 0.
    """

    def with_defaults(carry: RolloutCarry) -> RolloutCarry:
        n, device = _batch_size(carry.obs), carry.key.device
        if _absent(carry.episode):
            carry = carry._replace(
                episode=EpisodeTally(
                    torch.zeros(n, device=device), torch.zeros(n, dtype=torch.int64, device=device)
                )
            )
        if _absent(carry.memory) and policy is not None:
            carry = carry._replace(memory=policy.initial_memory(carry.obs))
        if _absent(carry.starts):
            carry = carry._replace(starts=torch.ones(n, dtype=torch.bool, device=device))
        if _absent(carry.step):
            carry = carry._replace(step=torch.zeros((), dtype=torch.int64, device=device))
        return carry

    return with_defaults


def _absent(field: Any) -> bool:
    """Whether a carry field is the empty default ``()``."""
    return isinstance(field, tuple) and not field


def _batch_size(obs) -> int:
    return optree.tree_leaves(obs)[0].shape[0]
