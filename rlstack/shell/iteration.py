"""How an Algorithm advances: one rollout (:func:`collect`) and one update
(:func:`update`), each reading and replacing the Algorithm's train state and
counters through its public attributes (this module does not import it),
the pure functions inside run as the Algorithm's
:class:`~rlstack.shell.functions.RunFunctions` hold them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch

from ..core.normalization import reset_returns
from ..core.schedules import logged_coefficients
from ..core.types import RolloutCarry
from ..integrations import distributed
from ..learn.carry import reset_carry
from ..learn.stats import drop_empty_episode_means, trajectory_stats
from ..learn.train_state import split_key, to_host

#: An :class:`~rlstack.shell.algorithm.Algorithm`.
Algorithm = Any


def fresh_carry(
    key: torch.Tensor, algo: Algorithm, env: Any, env_config: Mapping[str, Any] | None
) -> RolloutCarry:
    """Every env of every member of ``algo`` reset from ``key`` (``[2]``,
    ``[K, 2]`` for a population), with ``env_config`` (default: the
    Algorithm's): each begins an episode with the policy's first memory;
    normalisation statistics and the step count carry over (returns zeroed).
    """
    num_envs, config, policy = algo.config.num_envs, env_config or algo.env_config, algo.policy
    reset = algo.each(lambda k: reset_carry(k, env, num_envs, config=config, policy=policy))
    carry = reset(key)
    if algo.carry is None:
        return carry._replace(norm=algo.initial_norm)
    return carry._replace(norm=reset_returns(algo.carry.norm), step=algo.carry.step)


def collect(
    algo: Algorithm, *, env_config: Mapping[str, Any] | None, deterministic: bool
) -> list[dict[str, float]]:
    """One rollout of ``algo``'s envs (all reset first every
    ``horizons_per_env_reset`` collects, with ``env_config`` if given): the
    carry and trajectory replaced, the counters advanced, one stats dict per
    member synced from the device once (see :meth:`Algorithm.collect
    <rlstack.Algorithm.collect>`). A member whose rewards are not finite
    stops; when none is left, :class:`FloatingPointError`.
    """
    start = time.perf_counter()
    algo.functions.before_collect(algo.steps)
    before = algo.train_state
    every = algo.config.horizons_per_env_reset
    reset = algo.carry is None or (every > 0 and algo.collects % every == 0)
    if reset:
        key, reset_key = split_key(before.key, algo.num_members)
        carry = fresh_carry(reset_key, algo, algo.env, env_config)
        algo.train_state = before._replace(key=key, carry=carry)
    with algo.matmul_precision():
        rollout = algo.functions.rollout(deterministic)
        carry, traj = rollout(algo.params, algo.carry, algo.train_state.hparams)
    env_log = getattr(
        algo.env, "rollout_log", dict
    )()  # a simulator's own stats (rsl_rl's extras["log"])
    host = to_host({**algo.each(trajectory_stats)(traj), **env_log}, algo.num_members)
    stats = [
        distributed.reduce_stats({k: v for k, v in s.items() if k not in env_log}) for s in host
    ]
    algo.members.stop_non_finite(
        stats,
        f"in the rewards of collect {algo.collects + 1}",
        population=algo.num_members is not None,
    )
    collected = algo.train_state._replace(carry=carry, trajectory=traj)
    algo.train_state = algo.members.keep_stopped(collected, before, ("carry", "key"))
    algo.collects += 1
    transitions = algo.config.num_envs * algo.config.horizon
    algo.env_steps += transitions
    elapsed = 1000.0 * (time.perf_counter() - start)
    for member_stats, member_host in zip(stats, host, strict=True):
        member_stats.update({k: member_host[k] for k in env_log})  # this rank's own
        drop_empty_episode_means(member_stats)
        member_stats["env/steps"] = transitions
        member_stats["env/resets"] = algo.config.num_envs if reset else 0
        member_stats["profiling/collect_ms"] = elapsed
    return stats


def update(algo: Algorithm) -> list[dict[str, float]]:
    """One update of ``algo``'s policy on its last trajectory: params,
    optimizer state and key replaced, the trajectory dropped, one stats dict
    per member (see :meth:`Algorithm.step <rlstack.Algorithm.step>`). A
    member whose update is not finite stops with the state of its last good
    step (the others carry on); :class:`FloatingPointError` when none is left.

    Raises:
        RuntimeError: if nothing was collected since the last update.
    """
    if algo.trajectory is None:
        raise RuntimeError(
            f"{type(algo).__name__}.step() needs a trajectory: call collect() first."
        )
    if not any(algo.members.training()):
        raise RuntimeError(f"Every member has stopped: {algo.members.stopped}.")
    start = time.perf_counter()
    algo.functions.before_step(algo.steps)
    before = algo.train_state
    key, update_key = split_key(before.key, algo.num_members)
    with algo.matmul_precision():
        params, opt_state, metrics = algo.functions.update(
            update_key, before.params, before.opt_state, before.trajectory, before.hparams
        )
    stats = to_host(metrics, algo.num_members)  # reduced across ranks with the gradients
    where = (
        f"at step {algo.steps + 1} (after {algo.env_steps} env transitions); the update was "
        f"discarded and params kept from step {algo.steps}"
    )
    algo.members.stop_non_finite(stats, where, population=algo.num_members is not None)
    new = before._replace(params=params, opt_state=opt_state, key=key, trajectory=None)
    algo.train_state = algo.members.keep_stopped(new, before, ("params", "opt_state", "key"))
    algo.steps += 1
    training = algo.members.training()
    algo.members.steps = [n + int(on) for n, on in zip(algo.members.steps, training, strict=True)]
    elapsed = 1000.0 * (time.perf_counter() - start)
    for k, member_stats in enumerate(stats):
        member_stats.update({**coefficients(algo, k), **member_stats})  # an adapted rate wins
        member_stats["profiling/step_ms"] = elapsed
    return stats


def coefficients(algo: Algorithm, member: int = 0) -> dict[str, float]:
    """Learning rate and entropy coefficient of ``member``'s next update, as
    logged (see :func:`rlstack.core.schedules.logged_coefficients`).
    """
    entropy = algo.member_config[member].entropy_coeff
    return logged_coefficients(algo.config, algo.member_lrs[member], entropy, algo.env_steps)
