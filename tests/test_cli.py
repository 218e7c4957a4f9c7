import os
import subprocess
import sys

from mlflow.tracking import MlflowClient

from rlstack.cli import build_parser, load_env, train_kwargs
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
    kwargs = train_kwargs(args)
    assert kwargs["horizon"] == 16 and kwargs["num_envs"] == 512  # override + preset
    assert kwargs["optimizer_config"]["lr"] == 0.01 and kwargs["shuffle_minibatches"] is False
    assert kwargs["model_config"]["hiddens"] == (8, 8)
    assert load_env("rlstack.envs:DiscreteDummyEnv") is DiscreteDummyEnv
