from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from rlstack import Trainer
from rlstack.env import DiscreteDummyEnv
from rlstack.shell.conditions import HitsUpperBound, Plateaus

SMALL = dict(num_envs=32, horizon=8, model_config={"hiddens": (16,)}, compile=False)


def test_trainer_logs_params_once_and_metric_series_every_step():
    trainer = Trainer(DiscreteDummyEnv, experiment_name="unit", gamma=0.9, **SMALL)
    stats = trainer.run(stop_conditions=[HitsUpperBound("algorithm/steps", 3)], steps_per_eval=2)
    trainer.close()
    assert stats["algorithm/steps"] == 3 and stats["env/steps"] == 3 * 256
    run = MlflowClient().get_run(trainer.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["gamma"] == "0.9" and run.data.params["num_envs"] == "32"
    assert (
        run.data.params["env"] == "DiscreteDummyEnv" and run.data.params["optimizer_cls"] == "Adam"
    )
    assert (
        float(run.data.params["optimizer/lr"]) == trainer.algorithm.lr
    )  # a number the MLflow UI sorts and plots
    history = MlflowClient().get_metric_history(trainer.run_id, "returns/mean")
    assert [m.step for m in history] == [256, 512, 768]
    for key in (
        "losses/policy",
        "losses/vf",
        "losses/entropy",
        "losses/total",
        "monitors/kl_div",
        "env/steps",
        "profiling/collect_ms",
        "profiling/step_ms",
        "memory/percent",
        "eval/returns/mean",
    ):
        assert key in run.data.metrics, key
    assert len(MlflowClient().get_metric_history(trainer.run_id, "eval/returns/mean")) == 1
    assert MlflowClient().get_experiment(run.info.experiment_id).name == "unit"


def test_trainer_nests_its_own_run_under_an_active_run_without_ending_it():
    with mlflow.start_run() as run:
        trainer = Trainer(DiscreteDummyEnv, **SMALL)
        trainer.step()
        trainer.close()
        assert mlflow.active_run().info.run_id == run.info.run_id != trainer.run_id
    child = MlflowClient().get_run(trainer.run_id)
    assert child.data.tags["mlflow.parentRunId"] == run.info.run_id
    assert child.info.experiment_id == run.info.experiment_id and child.info.status == "FINISHED"
    assert (
        "losses/total" in child.data.metrics
        and "losses/total" not in MlflowClient().get_run(run.info.run_id).data.metrics
    )


def test_two_trainers_in_one_process_own_separate_runs():
    # Regression: the second Trainer attached to the first one's active run and crashed with
    # MLflow's "Changing param values is not allowed".
    first = Trainer(DiscreteDummyEnv, gamma=0.9, log_every_s=0, **SMALL)
    second = Trainer(DiscreteDummyEnv, gamma=0.5, log_every_s=0, **SMALL)
    first.step()
    second.step()
    second.step()
    first.flush_metrics()
    second.flush_metrics()
    assert first.run_id != second.run_id and mlflow.active_run() is None
    client = MlflowClient()
    assert client.get_run(first.run_id).data.params["gamma"] == "0.9"
    assert client.get_run(second.run_id).data.params["gamma"] == "0.5"
    assert len(client.get_metric_history(first.run_id, "losses/total")) == 1
    assert len(client.get_metric_history(second.run_id, "losses/total")) == 2
    second.close("KILLED")
    first.close()
    assert client.get_run(first.run_id).info.status == "FINISHED"
    assert client.get_run(second.run_id).info.status == "KILLED"


def test_garbage_collection_ends_the_run_with_the_status_of_its_last_run():
    import gc

    client = MlflowClient()
    finished = Trainer(DiscreteDummyEnv, **SMALL)
    finished.run(stop_conditions=[HitsUpperBound("algorithm/steps", 1)])
    failed = Trainer(DiscreteDummyEnv, **SMALL)

    def boom(stats):
        raise RuntimeError("user callback failed")

    with pytest.raises(RuntimeError, match="user callback failed"):
        failed.run(callbacks=[boom])
    ids = finished.run_id, failed.run_id
    assert client.get_run(ids[0]).info.status == "RUNNING"
    del finished, failed
    gc.collect()
    assert [client.get_run(i).info.status for i in ids] == ["FINISHED", "FAILED"]


def test_process_exit_ends_an_unclosed_run(tmp_path):
    import subprocess
    import sys

    code = (
        "from rlstack import Trainer; from rlstack.env import DiscreteDummyEnv\n"
        "t = Trainer(DiscreteDummyEnv, num_envs=32, horizon=8, model_config={'hiddens': (16,)}, "
        "compile=False)\n"
        "t.step(); print(t.run_id)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert MlflowClient().get_run(out.stdout.split()[-1]).info.status == "FINISHED"


def test_run_stops_on_plateau_and_callbacks_and_eval_uses_env_config():
    trainer = Trainer(DiscreteDummyEnv, **SMALL)
    seen = []
    stats = trainer.run(
        stop_conditions=[Plateaus("env/resets", patience=2, rtol=0.0)],
        callbacks=[lambda s: seen.append(s["algorithm/steps"])],
    )
    assert stats["algorithm/steps"] == 3 and seen == [1, 2, 3]
    stats = trainer.run(callbacks=[lambda s: True])
    assert stats["algorithm/steps"] == 4
    eval_stats = trainer.eval(env_config={"bounds": 0.5})
    assert eval_stats["eval/rewards/min"] >= -0.5 - 8
    trainer.close()


def test_learning_curve_plot_is_a_png_of_the_run(tmp_path):
    from rlstack.integrations.plotting import plot_learning_curve

    trainer = Trainer(DiscreteDummyEnv, **SMALL)
    trainer.run(stop_conditions=[HitsUpperBound("algorithm/steps", 3)], steps_per_eval=1)
    trainer.close()
    path = plot_learning_curve(trainer.run_id, tmp_path / "curve.png")
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import pytest

    with pytest.raises(ValueError, match="has none of the metrics"):
        plot_learning_curve(trainer.run_id, tmp_path / "x.png", metrics=["no/such"])


def test_a_resumed_run_records_changed_settings_as_tags_instead_of_failing(tmp_path):
    # Regression: resuming with another compile setting failed with MLflow's "Changing param values
    # is not allowed".
    trainer = Trainer(DiscreteDummyEnv, **SMALL)
    trainer.step()
    path = trainer.save_checkpoint(tmp_path / "c.pt")
    trainer.close()
    resumed = Trainer.from_checkpoint(path, compile=True)  # compiles lazily: no step needed here
    resumed.close()
    run = MlflowClient().get_run(trainer.run_id)
    assert resumed.run_id == trainer.run_id
    assert run.data.params["compile"] == "eager" and run.data.tags["resumed/compile"] == "compiled"


def _count_metric_writes(trainer, monkeypatch):
    writes = []
    original = trainer.run_log.client.log_batch

    def counting(run_id, metrics=(), **kwargs):
        if metrics:
            writes.append(len(metrics))
        return original(run_id, metrics=metrics, **kwargs)

    monkeypatch.setattr(trainer.run_log.client, "log_batch", counting)
    return writes


def test_run_writes_metrics_in_batches_and_loses_none(monkeypatch):
    trainer = Trainer(DiscreteDummyEnv, log_every_s=0, **SMALL)  # every step a point
    writes = _count_metric_writes(trainer, monkeypatch)
    trainer.run(stop_conditions=[HitsUpperBound("algorithm/steps", 5)])
    assert len(writes) == 1  # one request for 5 steps (well within 5 s), written when run returned
    history = MlflowClient().get_metric_history(trainer.run_id, "losses/total")
    assert [m.step for m in history] == [256 * i for i in range(1, 6)]
    trainer.step()  # a step of its own is buffered too (issue 22), and written by close
    assert len(writes) == 1
    trainer.close()
    assert (
        len(writes) == 2
        and len(MlflowClient().get_metric_history(trainer.run_id, "losses/total")) == 6
    )


def test_metrics_pending_when_a_run_is_interrupted_are_written(monkeypatch):
    trainer = Trainer(DiscreteDummyEnv, log_every_s=0, **SMALL)
    writes = _count_metric_writes(trainer, monkeypatch)

    def interrupt(stats):
        if stats["algorithm/steps"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer.run(callbacks=[interrupt])
    assert len(writes) == 1
    assert len(MlflowClient().get_metric_history(trainer.run_id, "losses/total")) == 3
    trainer.close()
    assert MlflowClient().get_run(trainer.run_id).info.status == "KILLED"


def test_buffered_metrics_are_written_once_the_flush_interval_passes(monkeypatch):
    trainer = Trainer(DiscreteDummyEnv, log_every_s=0, **SMALL)
    writes = _count_metric_writes(trainer, monkeypatch)
    trainer.run_log.metrics.flush_every_s = 0.0  # every buffered step is already due
    trainer.run(stop_conditions=[HitsUpperBound("algorithm/steps", 3)])
    assert len(writes) == 3
    trainer.close()


class _Store:
    """A tracking client that keeps what log_batch wrote, and how many writes."""

    def __init__(self):
        self.metrics, self.writes = [], 0

    def log_batch(self, run_id, metrics):
        self.metrics += metrics
        self.writes += 1


def test_points_are_thinned_in_time_keeping_first_forced_and_last_each_with_its_own_step(
    monkeypatch,
):
    from rlstack.integrations import metric_writer, tracking

    now = [0.0]
    monkeypatch.setattr(metric_writer, "_clock", lambda: now[0])
    store = _Store()
    log = tracking.MetricLog(store, "run", log_every_s=1.0, flush_every_s=5.0)
    for step in range(1, 11):  # a step every 0.3 s
        log.log({"x": float(step)}, step=step)
        if step in (3, 5):
            log.log(
                {"eval/x": -float(step)}, step=step, force=True
            )  # evaluations after steps 3 and 5
        now[0] += 0.3
    assert store.writes == 0  # nothing written before flush_every_s
    log.flush()
    points = [(m.key, m.step, m.value) for m in store.metrics]
    # step 1 (the first, t=0); step 3 (held) with its evaluation (forced); step 5 (t=1.2, a second
    # after step 1) and its evaluation; step 9 (t=2.4); step 10 (the last: held, recorded by the
    # flush)
    assert points == [
        ("x", 1, 1.0),
        ("x", 3, 3.0),
        ("eval/x", 3, -3.0),
        ("x", 5, 5.0),
        ("eval/x", 5, -5.0),
        ("x", 9, 9.0),
        ("x", 10, 10.0),
    ]
    every = tracking.MetricLog(_Store(), "run", log_every_s=0)
    for step in range(1, 4):
        every.log({"x": float(step)}, step=step)
    every.flush()
    assert [m.step for m in every.client.metrics] == [1, 2, 3]


def test_a_held_point_keeps_the_values_it_was_given(monkeypatch):
    from rlstack.integrations import metric_writer, tracking

    monkeypatch.setattr(
        metric_writer, "_clock", lambda: 0.0
    )  # no time passes: every step after the first is held
    store = _Store()
    log = tracking.MetricLog(store, "run", log_every_s=1.0)
    log.log({"x": 1.0}, step=1)
    stats = {"x": 2.0}
    log.log(stats, step=2)
    stats.update(
        {"x": 99.0, "callback/extra": 1.0}
    )  # what run() and callbacks do with a step's stats
    log.flush()
    assert [(m.key, m.step, m.value) for m in store.metrics] == [("x", 1, 1.0), ("x", 2, 2.0)]


def test_trainer_step_buffers_and_close_or_garbage_collection_loses_nothing():
    import gc

    client = MlflowClient()
    trainer = Trainer(
        DiscreteDummyEnv, log_every_s=3600, **SMALL
    )  # only the first and last steps are points
    for _ in range(3):
        trainer.step()
    run_id = trainer.run_id
    assert client.get_metric_history(run_id, "losses/total") == []  # buffered, not written per step
    trainer.close()
    assert [m.step for m in client.get_metric_history(run_id, "losses/total")] == [256, 768]
    other = Trainer(DiscreteDummyEnv, log_every_s=0, **SMALL)
    other.step()
    other.step()
    other_id = other.run_id
    del other
    gc.collect()
    assert [m.step for m in client.get_metric_history(other_id, "losses/total")] == [256, 512]
    assert client.get_run(other_id).info.status == "FINISHED"
    with pytest.raises(
        ValueError, match=r"`log_every_s` must be seconds >= 0 \(0: every step\), got -1"
    ):
        Trainer(DiscreteDummyEnv, log_every_s=-1, **SMALL)


def test_loading_a_checkpoint_changes_nothing_in_mlflow_until_training_goes_on(tmp_path):
    client = MlflowClient()
    with Trainer(DiscreteDummyEnv, **SMALL) as trainer:
        trainer.step()
        path = trainer.save_checkpoint(tmp_path / "step-1.pt")
    ended = client.get_run(trainer.run_id).info
    assert ended.status == "FINISHED"
    Trainer.from_checkpoint(path).close()  # only to load (e.g. to evaluate or export)
    unchanged = client.get_run(trainer.run_id).info
    assert (unchanged.status, unchanged.end_time) == ("FINISHED", ended.end_time)
    continued = Trainer.from_checkpoint(path)
    continued.step()
    assert client.get_run(trainer.run_id).info.status == "RUNNING"
    continued.close()
    later = client.get_run(trainer.run_id).info
    assert later.status == "FINISHED" and later.end_time >= ended.end_time


def test_a_checkpoint_from_behind_a_runs_last_step_starts_a_branch_not_a_rewrite(tmp_path):
    client = MlflowClient()
    with Trainer(DiscreteDummyEnv, **SMALL) as trainer:
        trainer.step()
        early = trainer.save_checkpoint(tmp_path / "step-1.pt")
        trainer.step()
        trainer.step()
    history = [m.value for m in client.get_metric_history(trainer.run_id, "algorithm/steps")]
    with Trainer.from_checkpoint(early) as branch:
        branch.step()
    assert branch.run_id != trainer.run_id
    assert client.get_run(branch.run_id).data.tags["rlstack.branched_from"] == trainer.run_id
    assert [m.value for m in client.get_metric_history(trainer.run_id, "algorithm/steps")] == (
        history
    )  # the original run's history is only ever appended to
    assert [m.value for m in client.get_metric_history(branch.run_id, "algorithm/steps")] == [2.0]


class _AwayStore(_Store):
    """A tracking store that is away (its writes fail) until ``back`` is set."""

    def __init__(self):
        super().__init__()
        import threading

        self.back, self.failures = threading.Event(), 0

    def log_batch(self, run_id, metrics):
        if not self.back.is_set():
            self.failures += 1
            raise ConnectionError("tracking server unreachable")
        super().log_batch(run_id, metrics)


def test_metrics_wait_out_a_store_that_is_away_in_order_and_exactly_once(monkeypatch):
    from rlstack.integrations import metric_writer, tracking

    monkeypatch.setattr(metric_writer, "_sleep", lambda s: None)  # retry at once
    store = _AwayStore()
    log = tracking.MetricLog(store, "run", log_every_s=0, flush_every_s=0)
    for step in range(1, 6):  # training goes on: every log returns while the store is away
        log.log({"x": float(step)}, step=step)
    assert not log.flush(wait_s=0.2) and store.metrics == []
    assert store.failures > 0 and "unreachable" in log.writer.failure
    store.back.set()
    assert log.flush(wait_s=30)
    assert [(m.step, m.value) for m in store.metrics] == [(s, float(s)) for s in range(1, 6)]


def test_a_store_that_never_returns_leaves_the_metrics_in_a_named_local_file(
    tmp_path, monkeypatch, capsys
):
    import json

    from rlstack.integrations import metric_writer, tracking

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(metric_writer, "_sleep", lambda s: None)
    log = tracking.MetricLog(_AwayStore(), "abc", log_every_s=0)
    for step in range(1, 4):
        log.log({"x": float(step), "y": -float(step)}, step=step)
    log.close(wait_s=0.2)
    (line,) = capsys.readouterr().err.strip().splitlines()
    kept = tmp_path / "rlstack-unsent-metrics-abc.jsonl"
    assert line.startswith("rlstack: the tracking store did not take run abc's metrics")
    assert f"6 metric values are kept in {kept}" in line and "unreachable" in line
    points = [json.loads(text) for text in kept.read_text().splitlines()]
    assert [(p["key"], p["step"], p["value"]) for p in points] == [
        (key, step, sign * step) for step in range(1, 4) for key, sign in (("x", 1.0), ("y", -1.0))
    ]


def test_a_full_tracking_store_is_one_line_naming_its_folder(monkeypatch, tmp_path):
    import errno
    import sqlite3

    from mlflow.exceptions import MlflowException

    from rlstack.integrations import store_errors

    def full(*args, **kwargs):  # as MLflow's SQLite store raises it
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as e:
            raise MlflowException("(sqlite3.OperationalError) database or disk is full") from e

    monkeypatch.setattr(MlflowClient, "create_run", full)
    uri = mlflow.get_tracking_uri()
    with pytest.raises(OSError) as raised:
        Trainer(DiscreteDummyEnv, **SMALL)
    assert str(raised.value) == (
        f"[Errno 28] the tracking store {uri} could not be written: no space left in "
        f"{store_errors.store_folder(uri)}; free space there, or log to another store "
        "(MLFLOW_TRACKING_URI)"
    )
    assert "\n" not in str(raised.value)
    disk_full = OSError(errno.ENOSPC, "No space left on device")
    assert store_errors.store_folder("sqlite:////data/runs/mlflow.db") == "/data/runs"
    assert store_errors.store_folder("file:///data/mlruns") == "/data/mlruns"
    assert store_errors.store_folder("/data/mlruns") == "/data/mlruns"
    assert "no space left in /data/mlruns" in str(
        store_errors.store_full_error(disk_full, "/data/mlruns")
    )
    assert store_errors.store_full_error(ConnectionError("refused"), "/data/mlruns") is None


class _FullStore(_AwayStore):
    """A store whose disk is full: every write fails with ENOSPC."""

    tracking_uri = "sqlite:////data/runs/mlflow.db"

    def log_batch(self, run_id, metrics):
        import errno

        raise OSError(errno.ENOSPC, "No space left on device")


def test_metrics_a_full_store_did_not_take_are_kept_with_a_line_naming_its_folder(
    tmp_path, monkeypatch, capsys
):
    from rlstack.integrations import metric_writer, tracking

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(metric_writer, "_sleep", lambda s: None)
    log = tracking.MetricLog(_FullStore(), "abc", log_every_s=0)
    log.log({"x": 1.0}, step=1)
    log.close(wait_s=0.2)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(
        "rlstack: the tracking store sqlite:////data/runs/mlflow.db did not take run abc's "
        "metrics within 0 s ([Errno 28] the tracking store sqlite:////data/runs/mlflow.db could "
        "not be written: no space left in /data/runs;"
    )
    assert f"1 metric values are kept in {tmp_path / 'rlstack-unsent-metrics-abc.jsonl'}" in line


def test_a_full_buffer_spills_the_oldest_batches_but_never_the_one_being_written(
    tmp_path, monkeypatch
):
    import json
    import threading

    from mlflow.entities import Metric

    from rlstack.integrations import metric_writer

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(metric_writer, "MAX_WAITING", 2)
    writing, release = threading.Event(), threading.Event()

    class SlowStore(_Store):
        def log_batch(self, run_id, metrics):
            writing.set()
            release.wait(30)
            super().log_batch(run_id, metrics)

    store = SlowStore()
    writer = metric_writer.MetricWriter(store, "abc", "kept.jsonl")
    writer.put([Metric("x", 1.0, 0, 1)])
    assert writing.wait(30)  # the thread is writing step 1
    for step in range(2, 6):
        writer.put([Metric("x", float(step), 0, step)])
    release.set()
    assert writer.flush(30)
    written = [m.step for m in store.metrics]
    kept = [json.loads(line)["step"] for line in (tmp_path / "kept.jsonl").read_text().splitlines()]
    assert sorted(written + kept) == [1, 2, 3, 4, 5]  # each value once: written or kept
    assert written[0] == 1 and len(set(written)) == len(written)


def test_a_closed_runs_metric_thread_ends():
    import threading

    trainer = Trainer(DiscreteDummyEnv, log_every_s=0, **SMALL)
    trainer.step()
    trainer.flush_metrics()
    assert trainer.run_log.metrics.writer._thread in threading.enumerate()
    trainer.close()
    for _ in range(100):
        if trainer.run_log.metrics.writer._thread is None:
            break
        threading.Event().wait(0.05)
    assert trainer.run_log.metrics.writer._thread is None
    assert len(MlflowClient().get_metric_history(trainer.run_id, "losses/total")) == 1


def test_a_killed_runs_newest_checkpoint_continues_its_run_logging_no_step_twice(tmp_path):
    client = MlflowClient()
    trainer = Trainer(DiscreteDummyEnv, log_every_s=0, **SMALL)
    trainer.step()
    newest = trainer.checkpoint_to(tmp_path)  # step 1
    trainer.step()
    trainer.step()
    trainer.flush_metrics()  # steps 1-3 are in MLflow when the process dies
    trainer.run_log._finalizer.detach()  # killed: the run stays RUNNING, nothing more written

    def history(run_id):
        points = client.get_metric_history(run_id, "algorithm/steps")
        return [m.value for m in sorted(points, key=lambda m: m.step)]

    assert history(trainer.run_id) == [1.0, 2.0, 3.0]
    with Trainer.from_checkpoint(newest) as resumed:
        for _ in range(3):  # steps 2 and 3 replayed, 4 new
            resumed.step()
    assert resumed.run_id == trainer.run_id
    assert history(trainer.run_id) == [1.0, 2.0, 3.0, 4.0]
    assert client.get_run(trainer.run_id).info.status == "FINISHED"


def test_checkpoints_upload_off_the_loop_and_are_pruned_only_once_uploaded(tmp_path, monkeypatch):
    import threading

    from rlstack.integrations import metric_writer

    monkeypatch.setattr(metric_writer, "_sleep", lambda s: None)
    back, uploaded = threading.Event(), []
    trainer = Trainer(DiscreteDummyEnv, **SMALL)

    def log_artifact(run_id, path, artifact_path=None):
        if not back.is_set():  # the tracking server is away
            raise ConnectionError("tracking server unreachable")
        uploaded.append(Path(path).name)

    monkeypatch.setattr(trainer.run_log.client, "log_artifact", log_artifact)
    for _ in range(3):  # returns at once although no upload succeeds
        trainer.step()
        trainer.checkpoint_to(tmp_path, keep=1)
    # Nothing is in MLflow yet, so nothing was pruned.
    assert len(list(tmp_path.glob("step-*.pt"))) == 3
    back.set()
    trainer.close()
    assert uploaded == ["step-00000001.pt", "step-00000002.pt", "step-00000003.pt"]
    assert [p.name for p in tmp_path.glob("step-*.pt")] == ["step-00000003.pt"]
