"""Records that cross ``torch.compile``, ``torch.func.grad`` and ``vmap``.

Every record is a :class:`typing.NamedTuple`, so ``optree`` and ``torch.func``
flatten it without registration. Shape notes use ``T`` for the horizon
(time steps per rollout), ``N`` for the number of parallel envs and ``B`` for
a flat batch of transitions (``B = T * N``). ``Tree`` is a tensor or a pytree
(dict / NamedTuple) of tensors, e.g. a composite observation.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

Tree = Any
Params = dict[str, torch.Tensor]


class RolloutCarry(NamedTuple):
    """What a rollout hands to the next one.

    Attributes:
        env_state: the env's state pytree, leaves ``[N, ...]``.
        obs: the last (raw) observation, leaves ``[N, ...]``.
        key: ``[2]`` int64 random key (:mod:`rlstack.core.random`) the next
            rollout draws actions and env randomness from; the rollout
            returns a new one.
        norm: a :class:`~rlstack.core.normalization.NormState` when observations
            or rewards are normalised, else ``()``.
        episode: the running :class:`EpisodeTally` of the episodes in
            progress (``()``: the rollout starts it at zero).
        memory: the policy's memory (:mod:`rlstack.policy.memory`): a recurrent
            model's hidden state, a windowed model's
            :class:`~rlstack.policy.windows.WindowCarry`, ``()`` for none (or, in a
            carry made by hand, for the rollout to start it).
        starts: ``[N]`` bool, ``True`` where ``obs`` begins an episode (a
            fresh env, an episode's end): the memory starts over before the
            next step there (``()``: every env).
        step: 0-d int64, steps taken since the run began (the
            ``seqs_per_state_reset`` schedule counts from it; ``()``: 0).
    """

    env_state: Tree
    obs: Tree
    key: torch.Tensor
    norm: Tree = ()
    episode: Tree = ()
    memory: Tree = ()
    starts: Tree = ()
    step: Tree = ()


class EpisodeTally(NamedTuple):
    """The episodes in progress of ``N`` envs, for episode statistics.

    Attributes:
        returns: ``[N]`` float, undiscounted sum of the env's rewards so far.
        lengths: ``[N]`` int64, steps so far.
    """

    returns: torch.Tensor
    lengths: torch.Tensor


class Transition(NamedTuple):
    """One time step of all envs, as produced by the rollout body.

    Attributes:
        obs: observation the action was taken in (normalised if asked),
            leaves ``[N, ...]``.
        action: action taken, leaves ``[N, ...]``.
        log_prob: ``[N]`` float, log-probability of ``action`` under the
            policy that took it.
        value: ``[N]`` float, the critic's value of ``obs``.
        reward: ``[N]`` float, reward learned from (scaled if rewards are
            normalised).
        raw_reward: ``[N]`` float, the env's own reward.
        terminated, truncated: ``[N]`` bool episode ends (all False where
            episodes never end).
        final_value: ``[N]`` float, the critic's value of the step's final
            observation (before an auto-reset); ``()`` for an env without
            final observations, whose final values are the next values.
        episode_return, episode_length: ``[N]`` the return (env rewards) and
            length of the episode this step ended, 0 where none ended.
        memory: what the policy's memory kind keeps of the step for the
            update (:meth:`~rlstack.policy.memory.NoMemory.step_record`): a
            recurrent policy's hidden state entering the step and its
            ``[N]`` reset, a windowed policy's ``[N]`` ages, else ``()``.
    """

    obs: Tree
    action: Tree
    log_prob: torch.Tensor
    value: torch.Tensor
    reward: torch.Tensor
    raw_reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    final_value: Tree
    episode_return: torch.Tensor
    episode_length: torch.Tensor
    memory: Tree = ()


class Trajectory(NamedTuple):
    """A time-major rollout of ``T`` steps of ``N`` envs.

    Attributes:
        obs: leaves ``[T, N, ...]``; ``obs[t]`` is the observation at step t.
        actions: leaves ``[T, N, ...]``.
        log_probs: ``[T, N]`` float, behaviour-policy log-probabilities.
        values: ``[T + 1, N]`` float; ``values[T]`` is the value of the
            observation after the last step (the bootstrap value).
        rewards: ``[T, N]`` float, the rewards learned from (scaled when
            rewards are normalised).
        raw_rewards: ``[T, N]`` float, the env's own rewards (equal to
            ``rewards`` unless rewards are normalised).
        terminated, truncated: ``[T, N]`` bool episode ends (all False for
            an env whose episodes never end).
        final_values: ``[T, N]`` float, the value of each step's final
            observation, which :func:`~rlstack.learn.loss.gae` bootstraps a
            truncated episode from (``values[1:]`` where episodes never
            end: the final observation is the next one).
        episode_returns, episode_lengths: ``[T, N]`` return and length of
            the episodes that ended at each step, 0 elsewhere.
        memory: what the policy's memory kind recorded
            (:mod:`rlstack.policy.memory`) so the update sees exactly what the
            rollout acted on: a :class:`~rlstack.policy.memory.RecurrentRecord`
            (the hidden state at each sequence start, the resets), a
            :class:`~rlstack.policy.memory.WindowRecord` (the observations before
            the first, each step's age in its episode) or a
            :class:`~rlstack.policy.memory.NoRecord`.
    """

    obs: Tree
    actions: Tree
    log_probs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    raw_rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    final_values: torch.Tensor
    episode_returns: torch.Tensor
    episode_lengths: torch.Tensor
    memory: Tree = ()


class HParams(NamedTuple):
    """The hyperparameters that enter ``rollout`` and ``update`` as data, so
    the members of a population (:mod:`rlstack.shell.population`) may differ in
    them: Python floats, or 0-d float32 tensors (``[K]`` across a
    population, one per member). The learning rate is the fourth such
    hyperparameter; it lives in the optimizer state
    (:func:`rlstack.core.optim.set_learning_rate`).

    Attributes:
        gamma: discount factor (GAE; the return whose std scales rewards).
        gae_lambda: GAE's lambda.
        clip_param: PPO's ratio clip epsilon.
        entropy_coeff: weight of the entropy bonus (a schedule, when the
            config has one, replaces it).
    """

    gamma: Any
    gae_lambda: Any
    clip_param: Any
    entropy_coeff: Any


class Batch(NamedTuple):
    """A flat batch of transitions ready for the PPO loss, or, for a
    recurrent policy, a batch of ``B`` whole sequences of ``L = seq_len``
    steps (every field ``[B, L, ...]``).

    Attributes:
        obs: leaves ``[B, ...]``; for a windowed policy the trajectory's
            :class:`~rlstack.policy.windows.ObsFrames`, from which a minibatch's
            windows are gathered (:meth:`rlstack.policy.memory.WindowMemory.rows`).
        actions: leaves ``[B, ...]``.
        log_probs: ``[B]`` float, behaviour-policy log-probabilities.
        values: ``[B]`` float, behaviour-time value estimates.
        advantages: ``[B]`` float, GAE advantages (normalised if asked).
        returns: ``[B]`` float, value targets (``advantages + values`` before
            normalisation).
        memory: recurrent: a :class:`~rlstack.policy.memory.RecurrentRecord` of
            each sequence's first hidden state ``[B, ...]`` and resets
            ``[B, L]``; else a :class:`~rlstack.policy.memory.NoRecord`.
    """

    obs: Tree
    actions: Tree
    log_probs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    memory: Tree = ()
