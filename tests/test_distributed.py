"""Data-parallel training over 2 gloo processes on one CPU (spawned by the tests)."""

import distributed_workers as workers
import pytest
import torch
import torch.multiprocessing as mp
from trees import assert_trees_close, assert_trees_equal

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not built in"
)


def spawn(fn, tmp_path, *args):
    init = (
        tmp_path / f"init-{fn.__name__}-{'-'.join(map(str, args))}"
    )  # a fresh rendezvous file per group
    mp.spawn(fn, args=(2, str(init), str(tmp_path), *args), nprocs=2, join=True)


def test_two_ranks_update_as_one_process_on_the_concatenated_envs(tmp_path):
    spawn(workers.update_worker, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert_trees_equal(ranks[0]["params"], ranks[1]["params"])
    policy, params, traj = workers.fixed_trajectory(32)
    single, metrics = workers.run_update(policy, params, traj, 32)
    # The mean of the two halves' mean gradients is the full batch's, to float rounding.
    assert_trees_close(ranks[0]["params"], single, atol=1e-6, rtol=1e-5)
    assert ranks[0]["sgd_steps"] == metrics["monitors/sgd_steps"]


@pytest.mark.parametrize("kind", ["mlp", pytest.param("gru", marks=pytest.mark.slow)])
def test_two_rank_training_stays_identical_logs_once_and_resumes_exactly(tmp_path, kind):
    spawn(workers.trainer_worker, tmp_path, "fresh", kind)
    spawn(workers.trainer_worker, tmp_path, "resume", kind)
    fresh = [torch.load(tmp_path / f"{kind}-fresh{r}.pt") for r in range(2)]
    resumed = [torch.load(tmp_path / f"{kind}-resume{r}.pt") for r in range(2)]
    assert_trees_equal(fresh[0]["params"], fresh[1]["params"])
    assert not torch.equal(fresh[0]["key"], fresh[1]["key"])  # each rank simulates its own envs
    for r in range(2):
        assert resumed[r]["steps"] == 5
        assert_trees_equal(resumed[r]["params"], fresh[r]["params"])
        assert torch.equal(resumed[r]["key"], fresh[r]["key"])
        assert_trees_equal(
            resumed[r]["memory"], fresh[r]["memory"]
        )  # a recurrent rank's own hidden states
    assert fresh[0]["run_id"] is not None and fresh[1]["run_id"] is None  # only rank 0 logs
    # The fresh run logged steps 4 and 5 after its checkpoint at 3: the resumed one branches.
    assert resumed[0]["run_id"] not in (None, fresh[0]["run_id"])
    assert sorted(p.name for p in (tmp_path / f"ck-{kind}").glob("*.pt")) == ["step-00000003.pt"]
    # env/steps counts both ranks' transitions: 5 steps of num_envs x horizon on each of 2 ranks.
    from mlflow.tracking import MlflowClient

    history = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_metric_history(
        fresh[0]["run_id"], "env/steps"
    )
    per_step = workers.SMALL["num_envs"] * workers.SMALL["horizon"]
    assert history[-1].value == history[-1].step == 5 * per_step * 2
    branch = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(resumed[0]["run_id"])
    assert branch.data.tags["rlstack.branched_from"] == fresh[0]["run_id"]


def test_ranks_that_disagree_on_hyperparameters_fail_at_start_naming_the_rank(tmp_path):
    spawn(workers.disagree_worker, tmp_path)
    for r in range(2):
        message = (tmp_path / f"rank{r}.txt").read_text()
        assert (
            "Ranks disagree" in message and "on rank 1" in message and "optimizer_config" in message
        )


def test_stats_over_two_ranks_with_different_episode_counts_are_the_stats_of_all_their_envs(
    tmp_path,
):
    from rlstack.learn.stats import trajectory_stats

    spawn(workers.stats_worker, tmp_path)
    ranks = [torch.load(tmp_path / f"stats{r}.pt") for r in range(2)]
    assert (
        ranks[0]["own"]["episodes/count"] != ranks[1]["own"]["episodes/count"]
    )  # the case a plain mean gets wrong
    assert ranks[0]["reduced"] == ranks[1]["reduced"]  # every rank logs the same numbers
    trajs = [workers.rank_trajectory(r) for r in range(2)]
    together = type(trajs[0])(
        *(
            torch.cat(leaves, 1)
            if isinstance(leaves[0], torch.Tensor) and leaves[0].dim() > 1
            else leaves[0]
            for leaves in zip(*trajs, strict=True)
        )
    )
    whole = trajectory_stats(together)
    assert (
        ranks[0]["reduced"]["episodes/count"]
        == ranks[0]["own"]["episodes/count"] + ranks[1]["own"]["episodes/count"]
    )
    for name, value in whole.items():
        assert ranks[0]["reduced"][name] == pytest.approx(float(value), rel=1e-5, abs=1e-6), name
