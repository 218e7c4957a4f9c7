"""What a rollout's stats are (:func:`trajectory_stats`: rewards, returns,
the episodes that ended) and how each logged stat combines over population
members and over ranks.

A stat is a float named by a path (``returns/mean``, ``episodes/count``).
When several groups of transitions each report their stats (the ranks of a
torchrun job, the members of a population logged to the parent run), the
combined value depends on what the stat *is*: a count adds up, a minimum
takes the smallest, a mean over episodes weighs each group by its episode
count. This module is the one place that says so: :data:`REDUCTIONS`
declares the rule of every stat that is not a plain mean, and
:func:`combine` applies it. ``rlstack.integrations.distributed.reduce_stats`` (ranks)
and the Trainer's parent run (members) both call :func:`combine`.

The rules are exact for groups of equal size (every rank and member has
the same ``num_envs`` and ``horizon``): the combined stats of the groups
equal the stats of their transitions taken together
(``tests/test_stats.py`` checks this identity).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch

from ..core.types import EpisodeTally, Trajectory


class Mean(NamedTuple):
    """The plain mean over groups (the default): right for means over
    equally many items per group, and for values every group shares.
    """

    companion = None

    def apply(self, values: list[float], companions: list[float]) -> float:
        """Combine the groups' values of this stat (``[G]``, with their ``counts``) into one."""
        return math.fsum(values) / len(values)


class Sum(NamedTuple):
    """The sum over groups: counts."""

    companion = None

    def apply(self, values: list[float], companions: list[float]) -> float:
        """Combine the groups' values of this stat (``[G]``, with their ``counts``) into one."""
        return math.fsum(values)


class Min(NamedTuple):
    """The smallest group's value."""

    companion = None

    def apply(self, values: list[float], companions: list[float]) -> float:
        """Combine the groups' values of this stat (``[G]``, with their ``counts``) into one."""
        return min(values)


class Max(NamedTuple):
    """The largest group's value."""

    companion = None

    def apply(self, values: list[float], companions: list[float]) -> float:
        """Combine the groups' values of this stat (``[G]``, with their ``counts``) into one."""
        return max(values)


class Weighted(NamedTuple):
    """The mean weighted by the stat ``by`` (a count) of each group: a mean
    over episodes weighs each group by how many episodes ended in it. Groups
    with no weight do not count; no weight anywhere gives 0.
    """

    by: str

    @property
    def companion(self) -> str:
        """The name of the stat this one is weighted or pooled with."""
        return self.by

    def apply(self, values: list[float], companions: list[float]) -> float:
        """Combine the groups' values of this stat (``[G]``, with their ``counts``) into one."""
        total = math.fsum(companions)
        return (
            math.fsum(w * v for w, v in zip(companions, values, strict=True)) / total
            if total > 0
            else 0.0
        )


class Pooled(NamedTuple):
    """The standard deviation of the union of equal-sized groups, from each
    group's population std and its mean (the stat ``mean``):
    ``sqrt(mean(std**2) + mean(mean**2) - mean(mean)**2)``.
    """

    mean: str

    @property
    def companion(self) -> str:
        """The name of the stat this one is weighted or pooled with."""
        return self.mean

    def apply(self, values: list[float], companions: list[float]) -> float:
        """Combine the groups' values of this stat (``[G]``, with their ``counts``) into one."""
        mean_of_means = math.fsum(companions) / len(companions)
        second_moment = math.fsum(
            s * s + m * m for s, m in zip(values, companions, strict=True)
        ) / len(values)
        return math.sqrt(max(second_moment - mean_of_means**2, 0.0))


Reduction = Mean | Sum | Min | Max | Weighted | Pooled

#: Every stat whose combination is not the plain mean, by name. A name with
#: the ``eval/`` prefix follows its unprefixed rule, its companion stat
#: prefixed too.
REDUCTIONS: dict[str, Reduction] = {
    "returns/min": Min(),
    "returns/max": Max(),
    "returns/std": Pooled("returns/mean"),
    "rewards/min": Min(),
    "rewards/max": Max(),
    "rewards/std": Pooled("rewards/mean"),
    "episodes/count": Sum(),
    "episodes/return/mean": Weighted("episodes/count"),
    "episodes/length/mean": Weighted("episodes/count"),
    "episodes/terminated": Weighted("episodes/count"),
    "memory/max_rss_mb": Max(),
    "memory/cuda_max_allocated_mb": Max(),
    "profiling/collect_ms": Max(),
    "profiling/step_ms": Max(),
}

_PREFIXES = ("eval/",)


def reduction(name: str) -> tuple[Reduction, str]:
    """How the stat ``name`` combines, and the prefix its companion stat
    (``Weighted.by``, ``Pooled.mean``) takes: ``(rule, prefix)``.
    """
    if name in REDUCTIONS:
        return REDUCTIONS[name], ""
    for prefix in _PREFIXES:
        if name.startswith(prefix) and name[len(prefix) :] in REDUCTIONS:
            return REDUCTIONS[name[len(prefix) :]], prefix
    return Mean(), ""


def combine(groups: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The stats of several groups combined by each stat's :func:`reduction`.

    Args:
        groups: one stats dict per group (rank or member), floats. A stat a
            group lacks is combined over the groups that have it (an
            episode mean is dropped where no episode ended).

    Returns:
        One dict with every name any group has, in the first-seen order;
        one group's own values when there is one.

    Raises:
        ValueError: for no groups.
    """
    if not groups:
        raise ValueError("`groups` must hold at least one stats dict, got none.")
    if len(groups) == 1:  # exactly its own values (a single run, one rank)
        return dict(groups[0])
    names = list(dict.fromkeys(name for group in groups for name in group))
    return {name: _combine_one(name, groups) for name in names}


def _combine_one(name: str, groups: Sequence[Mapping[str, float]]) -> float:
    """One stat over the groups that have it; a companion a group lacks counts as 0."""
    rule, prefix = reduction(name)
    having = [group for group in groups if name in group]
    values = [float(group[name]) for group in having]
    companions = (
        []
        if rule.companion is None
        else [float(group.get(prefix + rule.companion, 0.0)) for group in having]
    )
    return rule.apply(values, companions)


def drop_empty_episode_means(stats: dict[str, float]) -> None:
    """Remove, in place, the episode means of a rollout in which no episode
    ended (``episodes/count`` 0): there is nothing to average.
    """
    if stats.get("episodes/count") == 0:
        for key in ("episodes/return/mean", "episodes/length/mean", "episodes/terminated"):
            stats.pop(key)


def env_rewards(traj: Trajectory) -> torch.Tensor:
    """``[T, N]`` the env's own rewards (``raw_rewards``; ``rewards`` are
    the ones learned from, scaled when rewards are normalised).
    """
    return traj.raw_rewards


def trajectory_stats(traj: Trajectory) -> dict[str, torch.Tensor]:
    """Summary of a rollout's env rewards as 0-d tensors (no sync).

    ``returns/*`` are over envs of the undiscounted reward summed over the
    horizon (``[N]``); ``rewards/*`` are over all ``T * N`` rewards; ``std``
    is the population std (no Bessel correction), so that the stats of
    equal groups combine exactly (:mod:`rlstack.learn.stats`). The env's own
    rewards are used even when rewards are normalised. :func:`episode_stats`
    adds the episodes that ended (none where episodes never end).
    """
    return {**reward_stats(env_rewards(traj)), **episode_stats(traj)}


def reward_stats(rewards: torch.Tensor) -> dict[str, torch.Tensor]:
    """``returns/{min,max,mean,std}`` over envs of ``[T, N]`` rewards summed
    over time, and ``rewards/*`` over all of them, as 0-d float32 tensors
    (population stds; no sync).
    """
    rewards = rewards.float()
    stats = {}
    for name, x in (("returns", rewards.sum(0)), ("rewards", rewards)):
        stats[f"{name}/min"] = x.min()
        stats[f"{name}/max"] = x.max()
        stats[f"{name}/mean"] = x.mean()
        stats[f"{name}/std"] = x.std(correction=0)
    return stats


def episode_stats(traj: Trajectory) -> dict[str, torch.Tensor]:
    """Statistics of the episodes that ended during a rollout, as
    0-d tensors (no sync): ``episodes/count``, ``episodes/return/mean``
    (undiscounted env rewards), ``episodes/length/mean`` (steps) and
    ``episodes/terminated`` (the share that ended in a terminal state). The
    means are 0 when no episode ended; the shell drops them then.
    """
    done = traj.terminated | traj.truncated
    count = done.sum().float()
    denominator = count.clamp(min=1.0)
    return {
        "episodes/count": count,
        "episodes/return/mean": traj.episode_returns.float().sum() / denominator,
        "episodes/length/mean": traj.episode_lengths.float().sum() / denominator,
        "episodes/terminated": traj.terminated.sum().float() / denominator,
    }


def tally_episodes(
    tally: EpisodeTally, reward: torch.Tensor, done: torch.Tensor
) -> tuple[EpisodeTally, torch.Tensor, torch.Tensor]:
    """Add one step's ``[N]`` env reward to each env's running episode.

    Returns:
        ``(tally, ended_return [N], ended_length [N])``: the running tally
        restarted where ``done``, and the undiscounted return and length
        (steps) of the episodes that ended (0 elsewhere).
    """
    returns, lengths = tally.returns + reward, tally.lengths + 1
    zero_return, zero_length = torch.zeros_like(returns), torch.zeros_like(lengths)
    ended_return, ended_length = (
        torch.where(done, returns, zero_return),
        torch.where(done, lengths, zero_length),
    )
    running = EpisodeTally(
        torch.where(done, zero_return, returns), torch.where(done, zero_length, lengths)
    )
    return running, ended_return, ended_length
