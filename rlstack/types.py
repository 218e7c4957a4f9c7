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
        key: ``[2]`` int64 random key (:mod:`rlstack.random`) the next
            rollout draws actions and env randomness from; the rollout
            returns a new one.
        norm: a :class:`~rlstack.normalization.NormState` when observations
            or rewards are normalised, else ``()``.
        episode: for an episodic env, the running :class:`EpisodeTally` of
            the episodes in progress (``()``: starts at zero); else ``()``.
        memory: for a recurrent policy, its :class:`RecurrentCarry`; else ``()``.
    """

    env_state: Tree
    obs: Tree
    key: torch.Tensor
    norm: Tree = ()
    episode: Tree = ()
    memory: Tree = ()


class RecurrentCarry(NamedTuple):
    """A recurrent policy's state between steps and rollouts.

    Attributes:
        hidden: the model's hidden state, leaves ``[N, ...]``.
        starts: ``[N]`` bool, ``True`` where ``carry.obs`` begins an episode
            (after an env reset or an episode's end): the hidden state is
            reset before the next step there.
        step: 0-d int64, steps taken since the run began (sequences and the
            ``seqs_per_state_reset`` schedule count from it).
    """

    hidden: Tree
    starts: torch.Tensor
    step: torch.Tensor


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
        hidden: a recurrent policy's hidden state entering the step (before
            ``reset``), leaves ``[N, ...]``; else ``()``.
        reset: ``[N]`` bool, where a recurrent policy reset its hidden state
            before the step; else ``()``.
        age: ``[N]`` int64, for a windowed policy (:mod:`rlstack.windows`)
            steps since the episode of ``obs`` began; else ``()``.
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
    hidden: Tree = ()
    reset: Tree = ()
    age: Tree = ()


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
            observation, which :func:`~rlstack.ppo.gae` bootstraps a
            truncated episode from (``values[1:]`` where episodes never
            end: the final observation is the next one).
        episode_returns, episode_lengths: ``[T, N]`` return and length of
            the episodes that ended at each step, 0 elsewhere.
        hiddens: a recurrent policy's hidden state at the start of each
            sequence of ``seq_len`` steps (before that step's reset),
            leaves ``[T / seq_len, N, ...]``; else ``()``.
        resets: ``[T, N]`` bool, where a recurrent policy reset its hidden
            state before the step; else ``()``. The update replays the
            model from ``hiddens`` with these resets, exactly as it acted.
        obs_history: a windowed policy's ``K - 1`` observations before
            ``obs[0]`` (:mod:`rlstack.windows`), leaves ``[K - 1, N, ...]``;
            else ``()``.
        obs_ages: ``[T, N]`` int64, for a windowed policy the steps since
            the episode of ``obs[t]`` began (its window's padding); else ``()``.
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
    hiddens: Tree = ()
    resets: Tree = ()
    obs_history: Tree = ()
    obs_ages: Tree = ()


class HParams(NamedTuple):
    """The hyperparameters that enter ``rollout`` and ``update`` as data, so
    the members of a population (:mod:`rlstack.population`) may differ in
    them: Python floats, or 0-d float32 tensors (``[K]`` across a
    population, one per member). The learning rate is the fourth such
    hyperparameter; it lives in the optimizer state
    (:func:`rlstack.optim.set_learning_rate`).

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
    steps (every field but ``hiddens`` ``[B, L, ...]``).

    Attributes:
        obs: leaves ``[B, ...]``; for a windowed policy the trajectory's
            :class:`~rlstack.windows.ObsFrames`, from which a minibatch's
            windows are gathered (:func:`rlstack.ppo.minibatch`).
        actions: leaves ``[B, ...]``.
        log_probs: ``[B]`` float, behaviour-policy log-probabilities.
        values: ``[B]`` float, behaviour-time value estimates.
        advantages: ``[B]`` float, GAE advantages (normalised if asked).
        returns: ``[B]`` float, value targets (``advantages + values`` before
            normalisation).
        hiddens: recurrent: the hidden state at each sequence's start,
            leaves ``[B, ...]``; else ``()``.
        resets: recurrent: ``[B, L]`` bool resets before each step; else ``()``.
    """

    obs: Tree
    actions: Tree
    log_probs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    hiddens: Tree = ()
    resets: Tree = ()

