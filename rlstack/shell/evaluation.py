"""Acting without training: the functions behind an Algorithm's
``evaluate`` (rollouts on fresh envs), ``predict`` (a batch of
observations) and ``actor``. Those named ``*_algorithm`` read an
Algorithm's public attributes; the others take what they use as arguments.
None changes the training state (params, carry, training key).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from ..core import random
from ..core.spaces import as_batch, is_numpy, to_numpy
from ..learn.stats import env_rewards, reward_stats
from ..learn.train_state import to_host
from ..policy.acting import act_in_env
from ..policy.policy import Policy

#: An :class:`~rlstack.shell.algorithm.Algorithm` (read through its public
#: attributes; this module does not import it, the Algorithm imports this module).
Algorithm = Any

#: Key streams derived from the Algorithm's root key (stream 0 is training).
EVAL_STREAM, PREDICT_STREAM = 1, 2


def sync(stats: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Bring a dict of 0-d tensors to the host with a single device sync."""
    if not stats:
        return {}
    values = torch.stack([v.detach().float().reshape(()) for v in stats.values()]).tolist()
    return dict(zip(stats.keys(), values, strict=True))


def check_horizons(horizons: Any) -> None:
    """``horizons`` is a positive int, or a one-line error naming it."""
    if not isinstance(horizons, int) or isinstance(horizons, bool) or horizons < 1:
        raise ValueError(f"`horizons` must be a positive int, got {horizons!r}.")


def eval_key(root_key: torch.Tensor, steps: int) -> torch.Tensor:
    """Evaluation's key ``[2]`` after ``steps`` updates: from the seed and the
    step alone, so training is the same with or without evaluations.
    """
    return random.fold_in(random.fold_in(root_key, EVAL_STREAM), steps)


def predict_key(root_key: torch.Tensor, calls: int) -> torch.Tensor:
    """The key of the ``calls``-th stochastic ``predict`` (its own stream)."""
    return random.fold_in(random.fold_in(root_key, PREDICT_STREAM), calls)


def evaluate(
    rollout: Callable,
    params: Any,
    carry: Any,
    hparams: Any,
    horizons: int,
    each: Callable[[Callable], Callable],
) -> dict[str, torch.Tensor]:
    """Run ``horizons`` consecutive rollouts from ``carry`` and summarise the
    env's rewards.

    Args:
        rollout: ``rollout(params, carry, hparams) -> (carry, traj)``, as the
            Algorithm runs it (over members for a population).
        params: the policy's params (``[K, ...]`` leaves for a population).
        carry: the evaluation envs' carry to start from (fresh envs).
        hparams: the :class:`~rlstack.core.types.HParams` the rollout reads.
        horizons: how many rollouts of ``T`` steps to run.
        each: maps a member-level function over the members
            (:func:`rlstack.learn.train_state.each_member`).

    Returns:
        ``returns/*`` and ``rewards/*`` over all ``horizons * T`` steps, 0-d
        tensors (``[K]`` over members), not yet synced.
    """
    rewards = []
    for _ in range(horizons):
        carry, traj = rollout(params, carry, hparams)
        rewards.append(env_rewards(traj))
    return each(reward_stats)(each(lambda *parts: torch.cat(parts))(*rewards))


def predict(
    policy: Policy,
    params: Any,
    env: Any,
    obs: Any,
    memory: Any,
    starts: Any,
    *,
    key: torch.Tensor | None,
    obs_moments: Any,
    deterministic: bool,
    device: torch.device,
) -> tuple[Any, Any]:
    """Actions of ``policy`` for a batch of observations of ``env``.

    Args:
        policy: the :class:`~rlstack.policy.policy.Policy` that acts.
        params: its params.
        env: the env whose spaces ``obs`` and the actions belong to.
        obs: ``[B, *obs_shape]`` observations as a tensor, NumPy array (or
            dict of them for composite spaces).
        memory: what the last call returned for these envs; ``None``: every
            env's episode begins at ``obs``. Only for a policy with memory.
        starts: ``[B]`` bool, envs whose episode begins at ``obs`` (their
            memory starts over); ``None``: none.
        key: what a stochastic policy samples from (``None`` when
            ``deterministic``).
        obs_moments: the running observation statistics, or ``()``.
        deterministic: act with the distribution's mode instead of sampling.
        device: where the policy's params live.

    Returns:
        ``(actions, memory)``: ``[B, *action_shape]`` actions inside the
        env's action space (see :func:`rlstack.policy.policy.to_action_space`), a
        NumPy array if ``obs`` was one, else a tensor on ``device``; the
        memory to pass with the next observations (``()`` without memory).

    Raises:
        ValueError: if ``obs`` does not fit the observation space, or
            ``memory`` is passed to a policy without memory.
    """
    if not policy.has_memory and memory is not None:
        raise ValueError(
            f"`memory` is for a policy with memory (recurrent, or a window of observations); "
            f"{type(policy.model).__name__} has none: pass obs alone."
        )
    obs = with_critic_only_groups(policy.model, env.observation_space, obs)
    obs_t = as_batch(env.observation_space, obs, device)
    if starts is not None:
        starts = torch.as_tensor(starts, dtype=torch.bool, device=device)
    action, _, _, memory = act_in_env(
        policy,
        params,
        obs_t,
        memory,
        starts,
        env.action_space,
        obs_moments=obs_moments,
        deterministic=deterministic,
        key=key,
    )
    return (to_numpy(action) if is_numpy(obs) else action), memory


def with_critic_only_groups(model: Any, observation_space: Any, obs: Any) -> Any:
    """``obs`` with zeros for the observation groups only the critic reads
    (``model_config["obs_groups"]``, rsl_rl's privileged observations) where
    they are missing: acting needs the actor's groups alone, as a deployed
    actor does, and the critic's value is not used by an action.
    """
    groups = getattr(model, "obs_groups", None)
    if not isinstance(obs, dict) or not groups or not groups.get("critic"):
        return obs
    missing = [k for k in groups["critic"] if k not in groups["actor"] and k not in obs]
    if not missing or not obs:
        return obs
    first = next(iter(obs.values()))
    batch = first.shape[0] if hasattr(first, "shape") else len(first)
    filled = dict(obs)
    for key in missing:
        shape = (batch, *observation_space[key].shape)
        filled[key] = (
            torch.zeros(shape, device=first.device)
            if isinstance(first, torch.Tensor)
            else np.zeros(shape, dtype=np.float32)
        )
    return filled


def actor(
    predict_fn: Callable[[Any, Any], tuple[Any, Any]], has_memory: bool
) -> Callable[[Any], Any]:
    """``act(obs) -> actions`` over successive observations of the same envs:
    ``predict_fn(obs, memory) -> (actions, memory)`` with the memory carried
    from one call to the next (every episode beginning at the first call).
    """
    memory = None

    def act(obs: Any) -> Any:
        nonlocal memory
        actions, new_memory = predict_fn(obs, memory)
        memory = new_memory if has_memory else None
        return actions

    return act


def evaluate_algorithm(
    algo: Algorithm,
    *,
    env_config: Mapping[str, Any] | None = None,
    deterministic: bool = True,
    horizons: int = 1,
) -> list[dict[str, float]]:
    """Roll ``algo``'s current policy out on freshly reset envs for
    ``horizons`` rollouts with normalisation statistics frozen, from
    evaluation's own key (the seed and the step: training is the same with or
    without it); the training carry and key are untouched.

    Args:
        algo: the :class:`~rlstack.Algorithm`.
        env_config: reset config for the evaluation envs (default: the Algorithm's).
        deterministic: act with the distribution's mode.
        horizons: consecutive rollouts of ``horizon`` steps to run.

    Returns:
        ``returns/*`` and ``rewards/*`` over all evaluation steps, one dict
        per member (one for a single run).
    """
    check_horizons(horizons)
    env, rollout = algo.functions.evaluation_rollout(deterministic)
    key = algo.each(lambda root: eval_key(root, algo.steps))(algo.root_key)
    carry = algo.fresh_carry(key, env, env_config)
    with algo.matmul_precision():
        stats = evaluate(rollout, algo.params, carry, algo.train_state.hparams, horizons, algo.each)
    return to_host(stats, algo.num_members)


def predict_algorithm(
    algo: Algorithm, obs: Any, deterministic: bool, memory: Any, starts: Any
) -> tuple[Any, Any]:
    """:func:`predict` with ``algo``'s policy, params and observation
    statistics; a stochastic call draws from the predict key stream, one fold
    per call (training's key is untouched).

    Raises:
        TypeError: for a population (act with one member).
    """
    if algo.num_members is not None:
        raise TypeError(
            "A population has K policies: act with one member, `population.member(k).predict(obs)`."
        )
    key = None
    if not deterministic:
        key = predict_key(algo.root_key, algo.predict_calls)
        algo.predict_calls += 1
    return predict(
        algo.policy,
        algo.params,
        algo.env,
        obs,
        memory,
        starts,
        key=key,
        obs_moments=algo.obs_moments,
        deterministic=deterministic,
        device=algo.device,
    )


def record_video(
    algo: Algorithm,
    path: Any,
    deterministic: bool = True,
    env_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One episode of ``algo``'s policy on one env of its env, written to ``path`` (see
    :func:`rlstack.integrations.video.record_video`, which this returns).
    """
    from ..integrations import video

    return video.record_video(
        path,
        algo.env_spec,
        algo.actor(deterministic),
        config=env_config or algo.env_config,
    )
