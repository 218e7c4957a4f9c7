import os
import subprocess
import sys

from mlflow.tracking import MlflowClient

from rlstack.cli import build_parser, load_env, train_settings
from rlstack.envs import DiscreteDummyEnv


def test_cli_trains_logs_to_mlflow_and_says_how_to_open_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    result = subprocess.run(
        [sys.executable, "-m", "rlstack", "train", "--env", "DiscreteDummyEnv", "--max-steps", "3", "--no-compile",
         "--num-envs", "64", "--hiddens", "16", "--sgd-minibatch-size", "512", "--experiment-name", "cli", "--gamma", "0.9"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "steps/s" in result.stdout and "returns/mean" in result.stdout
    assert f"mlflow ui --backend-store-uri {uri}" in result.stdout
    client = MlflowClient(tracking_uri=uri)
    run = client.search_runs([client.get_experiment_by_name("cli").experiment_id])[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["gamma"] == "0.9" and run.data.params["num_envs"] == "64"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "returns/mean")] == [2048, 4096, 6144]


def test_cli_rejects_a_bad_env_and_bad_hyperparameter_with_exit_code_2(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    for extra, message in (
        (["--env", "NoSuchEnv"], "--env must be one of"),
        (["--env", "DiscreteDummyEnv", "--gamma", "2"], "`gamma` must be in [0, 1], got 2.0"),
    ):
        result = subprocess.run([sys.executable, "-m", "rlstack", "train", *extra], capture_output=True, text=True,
                                env=env, cwd=tmp_path, timeout=300)
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_cli_builds_kwargs_from_preset_and_overrides():
    args = build_parser().parse_args(["train", "--env", "DiscreteDummyEnv", "--horizon", "16", "--lr", "0.01",
                                      "--shuffle-minibatches", "false", "--hiddens", "8,8"])
    _, kwargs = train_settings(args)
    assert kwargs["horizon"] == 16 and kwargs["num_envs"] == 512  # override + preset
    assert kwargs["optimizer_config"]["lr"] == 0.01 and kwargs["shuffle_minibatches"] is False
    assert kwargs["model_config"]["hiddens"] == (8, 8)
    assert load_env("rlstack.envs:DiscreteDummyEnv") is DiscreteDummyEnv


def _cli(args, cwd, uri, **kw):
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    return subprocess.run([sys.executable, "-m", "rlstack", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300, **kw)


def test_cli_full_loop_toml_checkpoint_resume_export_eval(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "run.toml").write_text(
        'env = "DiscreteDummyEnv"\nmax_steps = 4\ncheckpoint_every = 2\ncheckpoint_dir = "ckpts"\n'
        "num_envs = 64\nhorizon = 16\nsgd_minibatch_size = 512\ncompile = false\n"
        '[model_config]\nhiddens = [16, 16]\n[optimizer_config]\nlr = 0.003\n'
    )
    first = _cli(["train", "-f", "run.toml", "--gamma", "0.9"], tmp_path, uri)
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in (tmp_path / "ckpts").glob("*.pt")) == ["step-00000002.pt", "step-00000004.pt"]
    resumed = _cli(["train", "--resume", "ckpts/step-00000004.pt", "--max-steps", "6", "--checkpoint-dir", "ckpts",
                    "--save", "model"], tmp_path, uri)
    assert resumed.returncode == 0, resumed.stderr
    client = MlflowClient(tracking_uri=uri)
    run = client.search_runs(["0"])[0]
    assert run.data.params["gamma"] == "0.9" and run.data.params["num_envs"] == "64"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "losses/total")] == [1024 * i for i in range(1, 7)]
    exported = _cli(["export", "ckpts/step-00000006.pt", "model2"], tmp_path, uri)
    assert exported.returncode == 0, exported.stderr
    for source in ("ckpts/step-00000006.pt", "model", "model2"):
        result = _cli(["eval", source, "--num-envs", "256"], tmp_path, uri)
        assert result.returncode == 0, result.stderr
        assert "success/at_origin" in result.stdout and "success/reward_per_step" in result.stdout


def test_cli_ctrl_c_checkpoints_and_marks_the_run_killed(tmp_path):
    import signal
    import time

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlstack", "train", "--env", "DiscreteDummyEnv", "--no-compile", "--num-envs", "64",
         "--horizon", "16", "--hiddens", "16", "--sgd-minibatch-size", "512", "--checkpoint-dir", "ckpts"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # Watch the child's own progress output; the MLflow store is not touched until it exits
    # (two processes creating the same SQLite store race in its migrations).
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("step     1 "):
            break
    time.sleep(3)  # a few more steps
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    out = "".join(lines) + out
    assert proc.returncode == 130, err
    assert "interrupted; last completed step saved" in out
    client = MlflowClient(tracking_uri=uri)
    run = client.search_runs(["0"])[0]
    assert run.info.status == "KILLED"
    saved = sorted((tmp_path / "ckpts").glob("*.pt"))
    steps = len(client.get_metric_history(run.info.run_id, "losses/total"))
    # No completed step is lost: the checkpoint is at least as new as the last logged step.
    assert int(saved[-1].stem.split("-")[1]) >= steps >= 2
