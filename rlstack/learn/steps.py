"""How a rollout's time loop takes its steps: one ``step`` piece with the
env inside (:func:`fused_steps`), or, around an env that runs eagerly,
``act`` once and then per step the env and ``learn_then_act``
(:func:`split_steps`). The pieces are :func:`~rlstack.learn.rollout.make_rollout`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import torch

from ..core.types import Params, RolloutCarry, Transition, Tree
from .transforms import contiguous, same_inputs_as_before, settled


class Acted(NamedTuple):
    """What a rollout step knows before the env steps (see ``make_rollout``)."""

    key: torch.Tensor
    step_key: torch.Tensor
    norm: Any
    policy_obs: Tree
    starts: torch.Tensor
    action: Tree
    log_prob: torch.Tensor
    value: torch.Tensor
    memory: Any
    env_action: Tree


def fused_steps(
    pieces: Mapping[str, Callable], params: Params, carry: RolloutCarry, discount: Any, horizon: int
) -> Iterator[tuple[RolloutCarry, Transition]]:
    """``horizon`` calls of the ``step`` piece (the env inside): each step's carry and
    transition.
    """
    stable = False
    for t in range(horizon):
        with same_inputs_as_before(t > 0):  # the carry: contiguous, the same shapes at every step
            carry, transition = pieces["step"](params, carry, discount)
        if not stable:
            carry, stable = settled(carry)
        yield carry, transition


def split_steps(
    pieces: Mapping[str, Callable], params: Params, carry: RolloutCarry, discount: Any, horizon: int
) -> Iterator[tuple[RolloutCarry, Transition]]:
    """The steps of an env that runs eagerly: ``act`` once, then per step the
    env (``env_step``) and ``learn_then_act``, one compiled call between env
    steps. The last step's next action is dropped: the next rollout acts
    again from the carry, with the same key and statistics, so it is the
    same action.
    """
    acted = contiguous(pieces["act"](params, carry))
    stable = False
    for t in range(horizon):
        stepped = contiguous(pieces["env_step"](acted.step_key, carry.env_state, acted.env_action))
        with same_inputs_as_before(
            t > 0
        ):  # carry, acted and stepped: contiguous, the same shapes at every step
            carry, transition, acted = pieces["learn_then_act"](
                params, carry, discount, acted, stepped
            )
        if not stable:
            (carry, acted), stable = settled((carry, acted))
        yield carry, transition
