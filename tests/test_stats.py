"""How stats combine over ranks and members (rlstack.learn.stats): the combined
stats of equal groups of transitions are the stats of their union.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlstack.core.types import Trajectory
from rlstack.learn import stats
from rlstack.learn.stats import trajectory_stats


def episodic_trajectory(seed: int, horizon: int, num_envs: int, end_rate: float) -> Trajectory:
    """A ``[T, N]`` episodic trajectory with random rewards and episode ends."""
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(horizon, num_envs, generator=g)
    done = torch.rand(horizon, num_envs, generator=g) < end_rate
    terminated = done & (torch.rand(horizon, num_envs, generator=g) < 0.5)
    truncated = done & ~terminated
    lengths = torch.randint(1, 50, (horizon, num_envs), generator=g) * done
    returns = torch.randn(horizon, num_envs, generator=g) * 10 * done
    zeros = torch.zeros(horizon, num_envs)
    return Trajectory(
        obs=zeros,
        actions=zeros,
        log_probs=zeros,
        values=torch.zeros(horizon + 1, num_envs),
        rewards=rewards,
        raw_rewards=rewards,
        terminated=terminated,
        truncated=truncated,
        final_values=zeros,
        episode_returns=returns,
        episode_lengths=lengths,
    )


def union(trajs: list[Trajectory]) -> Trajectory:
    """The groups' transitions side by side: envs concatenated along N."""
    return Trajectory(
        *(
            torch.cat(leaves, 1) if isinstance(leaves[0], torch.Tensor) else leaves[0]
            for leaves in zip(*trajs, strict=True)
        )
    )


def floats(tensors: dict) -> dict:
    return {name: float(value) for name, value in tensors.items()}


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    groups=st.integers(1, 4),
    horizon=st.integers(1, 6),
    num_envs=st.integers(1, 5),
    end_rates=st.lists(st.sampled_from([0.0, 0.1, 0.5, 1.0]), min_size=4, max_size=4),
)
def test_combined_stats_of_equal_groups_are_the_stats_of_their_union(
    seed, groups, horizon, num_envs, end_rates
):
    # Groups with different numbers of episodes (none at all in some) still combine exactly.
    trajs = [episodic_trajectory(seed + g, horizon, num_envs, end_rates[g]) for g in range(groups)]
    per_group = [floats(trajectory_stats(traj)) for traj in trajs]
    for group in per_group:  # as the shell drops them where no episode ended
        if group["episodes/count"] == 0:
            del (
                group["episodes/return/mean"],
                group["episodes/length/mean"],
                group["episodes/terminated"],
            )
    combined = stats.combine(per_group)
    whole = floats(trajectory_stats(union(trajs)))
    if whole["episodes/count"] == 0:
        whole = {k: v for k, v in whole.items() if k in combined}
    assert combined.keys() == whole.keys()
    for name in whole:
        assert math.isclose(combined[name], whole[name], rel_tol=1e-5, abs_tol=1e-5), name


def test_counts_add_and_episode_means_weigh_by_them_where_a_plain_mean_would_not():
    ranks = [
        {"episodes/count": 1.0, "episodes/return/mean": 100.0, "returns/min": 3.0, "loss": 1.0},
        {"episodes/count": 3.0, "episodes/return/mean": 20.0, "returns/min": -2.0, "loss": 3.0},
    ]
    assert stats.combine(ranks) == {
        "episodes/count": 4.0,
        "episodes/return/mean": 40.0,
        "returns/min": -2.0,
        "loss": 2.0,
    }


def test_eval_stats_follow_the_rule_of_their_unprefixed_name():
    rule, prefix = stats.reduction("eval/episodes/return/mean")
    assert rule == stats.Weighted("episodes/count") and prefix == "eval/"
    combined = stats.combine(
        [
            {"eval/episodes/count": 0.0, "eval/episodes/return/mean": 5.0},
            {"eval/episodes/count": 2.0, "eval/episodes/return/mean": 7.0},
        ]
    )
    assert combined["eval/episodes/return/mean"] == 7.0 and combined["eval/episodes/count"] == 2.0


def test_no_groups_is_refused_naming_the_argument():
    with pytest.raises(ValueError, match="`groups` must hold at least one"):
        stats.combine([])
