import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from rlstack.cli import Progress, build_parser, load_env, main, train_config
from rlstack.envs import DiscreteDummyEnv


def test_cli_trains_logs_to_mlflow_and_says_how_to_open_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlstack",
            "train",
            "--env",
            "DiscreteDummyEnv",
            "--max-steps",
            "3",
            "--no-compile",
            "--num-envs",
            "64",
            "--hiddens",
            "16",
            "--sgd-minibatch-size",
            "512",
            "--experiment-name",
            "cli",
            "--gamma",
            "0.9",
            "--log-every-s",
            "0",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "steps/s" in result.stdout and "returns/mean" in result.stdout
    assert f"mlflow ui --backend-store-uri {uri}" in result.stdout
    client = MlflowClient(tracking_uri=uri)
    run = client.search_runs([client.get_experiment_by_name("cli").experiment_id])[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["gamma"] == "0.9" and run.data.params["num_envs"] == "64"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "returns/mean")] == [
        2048,
        4096,
        6144,
    ]


def test_cli_rejects_a_bad_env_and_bad_hyperparameter_with_exit_code_2(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    for extra, message in (
        (["--env", "NoSuchEnv"], "--env must be one of"),
        (["--env", "DiscreteDummyEnv", "--gamma", "2"], "`gamma` must be in [0, 1], got 2.0"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "rlstack", "train", *extra],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=300,
        )
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_cli_builds_kwargs_from_preset_and_overrides():
    args = build_parser().parse_args(
        [
            "train",
            "--env",
            "DiscreteDummyEnv",
            "--horizon",
            "16",
            "--lr",
            "0.01",
            "--shuffle-minibatches",
            "false",
            "--hiddens",
            "8,8",
        ]
    )
    kwargs = train_config(args).trainer
    assert kwargs["horizon"] == 16 and kwargs["num_envs"] == 512  # override + preset
    assert kwargs["optimizer_config"]["lr"] == 0.01 and kwargs["shuffle_minibatches"] is False
    assert kwargs["model_config"]["hiddens"] == (8, 8)
    assert load_env("rlstack.envs:DiscreteDummyEnv") is DiscreteDummyEnv


def test_switch_points_reach_the_trainer_from_the_flag_and_the_toml_table(tmp_path):
    # What a background-compiled run's MLflow params compile/<piece> record, to replay it.
    args = build_parser().parse_args(
        ["train", "--env", "CartPole", "--compile-switches", "rollout/step=3,update/sgd_step=4"]
    )
    assert train_config(args).trainer["compile_switches"] == {
        "rollout/step": 3,
        "update/sgd_step": 4,
    }
    (tmp_path / "run.toml").write_text('env = "CartPole"\n[compile_switches]\n"rollout/step" = 2\n')
    args = build_parser().parse_args(["train", "-f", str(tmp_path / "run.toml")])
    assert train_config(args).trainer["compile_switches"] == {"rollout/step": 2}


def test_malformed_switch_points_name_the_flag(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--compile-switches", "rollout/step"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --compile-switches: expected PIECE=UPDATES pairs such as" in err


def _cli(args, cwd, uri, **kw):
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    return subprocess.run(
        [sys.executable, "-m", "rlstack", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        **kw,
    )


@pytest.mark.slow  # about a minute on 2 cores: the whole CLI journey
def test_cli_full_loop_toml_checkpoint_resume_export_eval(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "run.toml").write_text(
        'env = "DiscreteDummyEnv"\nmax_steps = 4\ncheckpoint_every = 2\ncheckpoint_dir = "ckpts"\n'
        "num_envs = 64\nhorizon = 16\nsgd_minibatch_size = 512\ncompile = false\nlog_every_s = 0\n"
        "[model_config]\nhiddens = [16, 16]\n[optimizer_config]\nlr = 0.003\n"
    )
    first = _cli(["train", "-f", "run.toml", "--gamma", "0.9"], tmp_path, uri)
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in (tmp_path / "ckpts").glob("*.pt")) == [
        "step-00000002.pt",
        "step-00000004.pt",
    ]
    resumed = _cli(
        [
            "train",
            "--resume",
            "ckpts/step-00000004.pt",
            "--max-steps",
            "6",
            "--checkpoint-dir",
            "ckpts",
            "--save",
            "model",
            "--log-every-s",
            "0",
        ],
        tmp_path,
        uri,
    )
    assert resumed.returncode == 0, resumed.stderr
    client = MlflowClient(tracking_uri=uri)
    run = client.search_runs(["0"])[0]
    assert run.data.params["gamma"] == "0.9" and run.data.params["num_envs"] == "64"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "losses/total")] == [
        1024 * i for i in range(1, 7)
    ]
    exported = _cli(["export", "ckpts/step-00000006.pt", "model2"], tmp_path, uri)
    assert exported.returncode == 0, exported.stderr
    for source in ("ckpts/step-00000006.pt", "model", "model2"):
        result = _cli(["eval", source, "--num-envs", "256"], tmp_path, uri)
        assert result.returncode == 0, result.stderr
        assert "success/at_origin" in result.stdout and "success/reward_per_step" in result.stdout


def test_cli_ctrl_c_checkpoints_and_marks_the_run_killed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rlstack",
            "train",
            "--env",
            "DiscreteDummyEnv",
            "--no-compile",
            "--num-envs",
            "64",
            "--horizon",
            "16",
            "--hiddens",
            "16",
            "--sgd-minibatch-size",
            "512",
            "--checkpoint-dir",
            "ckpts",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
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


# --------------------------------------------------------------------------------------------------
# What a new user hit (one regression test per fault; most run the CLI in-process, which is faster).
TINY = [
    "--env",
    "DiscreteDummyEnv",
    "--no-compile",
    "--num-envs",
    "64",
    "--horizon",
    "8",
    "--hiddens",
    "8",
]


def _errors(capsys):
    """Standard error's lines, less MLflow's own INFO log lines (store creation)."""
    return [
        line for line in capsys.readouterr().err.strip().splitlines() if " INFO mlflow." not in line
    ]


def _runs():
    client = MlflowClient()
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_non_finite_training_ends_failed_with_one_line_and_the_last_good_checkpoint(
    tmp_path, capsys
):
    code = main(["train", *TINY, "--lr", "1e30", "--max-steps", "5", "--checkpoint-dir", "ckpts"])
    err = _errors(capsys)
    assert code == 1
    assert len(err) == 1 and err[0].startswith("rlstack: error: Non-finite losses/policy=nan")
    assert "at step 1" in err[0] and "Last good step saved to ckpts/step-00000000.pt" in err[0]
    assert (tmp_path / "ckpts" / "step-00000000.pt").is_file()
    assert [r.info.status for r in _runs()] == ["FAILED"]


def test_sigterm_checkpoints_and_marks_the_run_killed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlstack", "train", *TINY, "--checkpoint-dir", "ckpts"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("step     1 "):
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "interrupted; last completed step saved" in "".join(lines) + out
    run = MlflowClient(tracking_uri=uri).search_runs(["0"])[0]
    assert run.info.status == "KILLED"
    saved = sorted((tmp_path / "ckpts").glob("step-*.pt"))
    # Nothing buffered is lost to the signal: the last recorded point is the checkpoint's step.
    from rlstack.integrations.checkpoint import safe_load

    history = MlflowClient(tracking_uri=uri).get_metric_history(run.info.run_id, "losses/total")
    assert max(m.step for m in history) == safe_load(saved[-1])["counters"]["env_steps"]


def test_a_failed_export_after_training_marks_the_run_failed(tmp_path, monkeypatch, capsys):
    from rlstack.shell.trainer import Trainer

    def fail(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Trainer, "export_policy", fail)
    assert main(["train", *TINY, "--max-steps", "1", "--save", "model"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert [r.info.status for r in _runs()] == ["FAILED"]


def test_outputs_are_checked_before_any_training(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "MLmodel").write_text("an earlier export")
    assert main(["train", *TINY, "--max-steps", "1", "--save", "model"]) == 2
    assert "Export path 'model' exists and is not empty" in capsys.readouterr().err
    assert _runs() == []  # nothing started
    (tmp_path / "file").write_text("")
    assert main(["train", *TINY, "--max-steps", "1", "--checkpoint-dir", "file/ckpts"]) == 2
    out = capsys.readouterr()
    assert (
        "`checkpoint_dir` 'file/ckpts' is not writable" in out.err and "step     1" not in out.out
    )
    assert _runs() == []  # a refused start creates no run (issue 22)


def test_resume_refuses_changed_hyperparameters_and_applies_what_can_change(tmp_path, capsys):
    assert (
        main(["train", *TINY, "--max-steps", "2", "--checkpoint-dir", "a", "--gamma", "0.9"]) == 0
    )
    capsys.readouterr()
    resume = ["train", "--resume", "a/step-00000002.pt", "--max-steps", "3"]
    assert main([*resume, "--gamma", "0.5", "--lr", "0.5", "--num-envs", "64"]) == 2
    err = capsys.readouterr().err
    assert "--gamma, --lr, --num-envs cannot change on resume" in err
    (tmp_path / "r.toml").write_text("horizon = 4\n")
    assert main([*resume, "-f", "r.toml"]) == 2
    assert "--horizon cannot change on resume" in capsys.readouterr().err
    # --no-compile (a setting that may change) continues the same run.
    assert main([*resume, "--no-compile", "--checkpoint-dir", "b"]) == 0
    (run,) = _runs()
    assert run.data.params["gamma"] == "0.9" and run.info.status == "FINISHED"
    assert len(MlflowClient().get_metric_history(run.info.run_id, "losses/total")) == 3
    # --experiment-name on resume logs the continuation to a new run in that experiment.
    assert main([*resume, "--experiment-name", "elsewhere", "--checkpoint-dir", "c"]) == 0
    other = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("elsewhere").experiment_id]
    )[0]
    assert other.info.run_id != run.info.run_id and other.info.status == "FINISHED"
    assert [
        m.step for m in MlflowClient().get_metric_history(other.info.run_id, "losses/total")
    ] == [1536]


@pytest.mark.parametrize(
    "toml,message",
    [
        ('max_steps = "three"', "`max_steps` must be an integer such as 10, got 'three'"),
        (
            '[optimizer_config]\nbetas = "x"',
            "`optimizer_config['betas']` must be a pair of numbers in [0, 1)",
        ),
        ("model_config = 3", "`model_config` must be a table ([model_config]), got 3"),
        ('gamma = "high"', "`gamma` must be a number, got 'high'"),
        ("compile_switches = 3", "`compile_switches` must be a table ([compile_switches]), got 3"),
        (
            '[compile_switches]\n"rollout/step" = "soon"',
            "`compile_switches` must be a dict of piece name -> update count",
        ),
    ],
)
def test_bad_toml_values_get_one_line_naming_the_field(tmp_path, capsys, toml, message):
    (tmp_path / "run.toml").write_text('env = "DiscreteDummyEnv"\n' + toml + "\n")
    assert main(["train", "-f", "run.toml", "--no-compile"]) == 2
    err = _errors(capsys)
    assert len(err) == 1 and message in err[0], err


def test_mismatched_envs_and_bad_eval_arguments_get_one_line(tmp_path, capsys):
    from rlstack import Algorithm
    from rlstack.envs import CartPole
    from rlstack.integrations.export import export_policy

    algo = Algorithm(CartPole, num_envs=8, horizon=4, compile=False)
    algo.save_checkpoint(tmp_path / "cartpole.pt")
    export_policy(algo, tmp_path / "model")
    for argv, message in (
        (
            ["eval", "cartpole.pt", "--env", "Pendulum"],
            "checkpoint's observation space is Box(shape=(4,)",
        ),
        (
            ["train", "--resume", "cartpole.pt", "--env", "Pendulum"],
            "env Pendulum's is Box(shape=(3,)",
        ),
        (["export", "cartpole.pt", "m2", "--env", "Pendulum"], "pass the env it was trained on"),
        (
            ["eval", "model", "--env", "Pendulum"],
            "--env Pendulum has observation space Box(shape=(3,)",
        ),
        (["eval", "model", "--num-envs", "0"], "--num-envs must be a positive int, got 0"),
    ):
        assert main(argv) == 2, argv
        err = _errors(capsys)
        assert len(err) == 1 and message in err[0], (argv, err)


def test_a_preset_minibatch_adapts_to_a_changed_buffer_and_is_logged(tmp_path, capsys):
    # Regression: --num-envs 64 --horizon 8 failed because the preset's 4096 did not divide 512.
    assert (
        main(
            [
                "train",
                "--env",
                "DiscreteDummyEnv",
                "--no-compile",
                "--num-envs",
                "64",
                "--horizon",
                "8",
                "--max-steps",
                "1",
            ]
        )
        == 0
    )
    assert (
        "sgd_minibatch_size 4096 (the preset's) does not divide num_envs * horizon = 512; using 512"
        in capsys.readouterr().out
    )
    assert _runs()[0].data.params["sgd_minibatch_size"] == "512"
    # A value the user set is never changed: it is an error.
    assert main(["train", *TINY, "--sgd-minibatch-size", "100"]) == 2
    assert "`sgd_minibatch_size` must divide" in capsys.readouterr().err


def test_the_declared_python_range_has_tomllib():
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert (
        pyproject["project"]["requires-python"] == ">=3.11"
    )  # tomllib, which the CLI imports, is 3.11+


def test_eta_leaves_out_the_first_step_which_compiles():
    import io

    stream = io.StringIO()
    progress = Progress(stream=stream, every=1, max_steps=12)
    progress.last_time -= 60.0  # the first step took a minute (compilation)
    progress({"algorithm/steps": 1, "env/steps": 100, "returns/mean": 0.0})
    assert "ETA" not in stream.getvalue()
    progress.last_time -= 1.0  # later steps take a second
    progress({"algorithm/steps": 2, "env/steps": 200, "returns/mean": 0.0})
    assert stream.getvalue().splitlines()[-1].endswith("ETA 0:10")


def test_every_train_and_plot_option_has_help():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("train", "plot", "eval", "export"):
        missing = [a.dest for a in commands[name]._actions if a.dest != "help" and not a.help]
        assert not missing, (name, missing)


def test_tests_run_outside_the_checkout():
    # MLflow's SQLite store writes artifacts under ./mlruns: tests must not run in the checkout.
    assert Path(__file__).parents[1].resolve() not in [
        Path.cwd().resolve(),
        *Path.cwd().resolve().parents,
    ]


def test_plot_draws_eval_returns_on_their_own_panel(tmp_path, monkeypatch):
    import matplotlib.figure

    from rlstack.integrations.plotting import plot_learning_curve

    assert main(["train", *TINY, "--max-steps", "2", "--steps-per-eval", "1"]) == 0
    figures = []
    monkeypatch.setattr(
        matplotlib.figure.Figure, "savefig", lambda self, path: figures.append(self)
    )
    plot_learning_curve(_runs()[0].info.run_id, tmp_path / "curve.png")
    (figure,) = figures
    train_ax, eval_ax = figure.axes
    assert [t.get_text() for t in train_ax.get_legend().get_texts()] == ["returns/mean"]
    assert [t.get_text() for t in eval_ax.get_legend().get_texts()] == ["eval/returns/mean"]
    assert "evaluation" in eval_ax.get_title() and "env steps" in eval_ax.get_xlabel()
    assert train_ax.get_ylabel() == "returns/mean (reward per env over 8-step horizons)"


def test_plot_draws_the_episode_return_where_episodes_end_and_names_it(tmp_path, monkeypatch):
    import matplotlib.figure

    from rlstack.integrations.plotting import plot_learning_curve

    assert main(["train", "--env", "CartPole-v1", "--no-compile", "--max-steps", "2"]) == 0
    figures = []
    monkeypatch.setattr(
        matplotlib.figure.Figure, "savefig", lambda self, path: figures.append(self)
    )
    run_id = _runs()[0].info.run_id
    plot_learning_curve(run_id, tmp_path / "curve.png")
    assert main(["plot", run_id, "--metrics", "returns/mean", "-o", str(tmp_path / "b.png")]) == 0
    episodes, rollouts = (figure.axes[0] for figure in figures)
    assert [t.get_text() for t in episodes.get_legend().get_texts()] == ["episodes/return/mean"]
    assert episodes.get_ylabel() == "episodes/return/mean (return per episode that ended)"
    assert [t.get_text() for t in rollouts.get_legend().get_texts()] == ["returns/mean"]
    assert rollouts.get_ylabel() == "returns/mean (reward per env over 64-step horizons)"


def test_end_to_end_a_normalized_preset_scores_the_same_from_its_export(tmp_path, capsys):
    # Regression: an exported Pendulum policy forgot its observation statistics (-0.77 -> -7.06 per
    # step).
    assert (
        main(
            [
                "train",
                "--env",
                "Pendulum",
                "--no-compile",
                "--max-steps",
                "3",
                "--num-envs",
                "256",
                "--checkpoint-dir",
                "ckpts",
                "--save",
                "model",
            ]
        )
        == 0
    )
    capsys.readouterr()
    scores = []
    for source in ("ckpts/step-00000003.pt", "model"):
        assert main(["eval", source, "--num-envs", "64"]) == 0
        scores.append(
            [line for line in capsys.readouterr().out.splitlines() if line.startswith("success/")]
        )
    assert scores[0] == scores[1] and scores[0]
    assert (
        json.loads((tmp_path / "model" / "artifacts" / "policy.json").read_text())["normalize_obs"]
        is True
    )


def test_eval_measures_success_on_the_env_config_the_policy_was_trained_with(tmp_path, monkeypatch):
    from rlstack import Algorithm
    from rlstack.envs import CartPole

    seen = []
    original = CartPole.success
    monkeypatch.setattr(
        CartPole,
        "success",
        lambda self, act, **kw: seen.append(kw["config"]) or original(self, act, **kw),
    )
    algo = Algorithm(
        CartPole,
        env_config={"hide_velocities": True},
        num_envs=8,
        horizon=4,
        compile=False,
        model_config={"hiddens": (8,)},
    )
    checkpoint = algo.save_checkpoint(tmp_path / "pomdp.pt")
    assert main(["eval", str(checkpoint), "--num-envs", "4"]) == 0
    assert main(["export", str(checkpoint), str(tmp_path / "model")]) == 0
    assert main(["eval", str(tmp_path / "model"), "--num-envs", "4"]) == 0
    assert seen == [{"hide_velocities": True}, {"hide_velocities": True}]


def test_eval_of_an_export_finds_every_built_in_env_by_the_name_it_recorded(tmp_path, capsys):
    """An export records the env's class name (CartPoleV1 for CartPole-v1): eval
    finds it, keeping the trained env config, for episodic and windowed runs.
    """
    from rlstack import Algorithm
    from rlstack.cli import main
    from rlstack.envs import BUILTIN_ENVS
    from rlstack.integrations.export import export_policy

    for name, model_config in (
        ("CartPole-v1", {"hiddens": (8,)}),
        ("CartPole-v1", {"hiddens": (8,), "obs_window": 2}),
        ("Pendulum-v1", {"hiddens": (8,)}),
        ("MountainCar-v0", {"hiddens": (8,)}),
    ):
        algo = Algorithm(
            BUILTIN_ENVS[name], num_envs=8, horizon=4, compile=False, model_config=model_config
        )
        model = export_policy(algo, tmp_path / f"{name}-{len(model_config)}")
        assert main(["eval", str(model), "--num-envs", "4"]) == 0, capsys.readouterr().err
        assert "success/" in capsys.readouterr().out


def test_every_built_in_env_trains_from_its_preset_from_the_command_line():
    """No built-in env falls back to 1.x's defaults: ``--env NAME`` applies
    ``PRESETS[NAME]``, MountainCar-v0's training reward included.
    """
    from rlstack.envs import BUILTIN_ENVS
    from rlstack.shell.presets import PRESETS

    assert set(BUILTIN_ENVS) <= set(PRESETS)
    for name in BUILTIN_ENVS:
        kwargs = train_config(build_parser().parse_args(["train", "--env", name])).trainer
        assert {k: kwargs[k] for k in PRESETS[name]} == PRESETS[name], name
    spec = train_config(build_parser().parse_args(["train", "--env", "MountainCar-v0"]))
    assert spec.trainer["env_config"] == {"reward": "speed"}


def test_none_disables_an_optional_hyperparameter_from_the_command_line():
    args = build_parser().parse_args(
        [
            "train",
            "--env",
            "gymnasium:CartPole-v1",
            "--vf-clip-param",
            "None",
            "--dual-clip-param",
            "3",
        ]
    )
    kwargs = train_config(args).trainer
    assert kwargs["vf_clip_param"] is None and kwargs["dual_clip_param"] == 3.0
    args = build_parser().parse_args(
        ["train", "--env", "DiscreteDummyEnv", "--vf-clip-param", "none"]
    )
    assert train_config(args).trainer["vf_clip_param"] is None  # the 1.x default (10.0) overridden


def test_help_shows_plain_text_not_sphinx_roles(capsys):
    from rlstack.cli.help_text import plain_text

    assert plain_text(
        "see :class:`~rlstack.core.config.AlgorithmConfig` and :func:`rlstack.functional.gae`, "
        "``x``"
    ) == ("see AlgorithmConfig and rlstack.functional.gae, x")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    out = capsys.readouterr().out
    assert "--clip-param" in out and not any(
        role in out for role in (":class:", ":func:", ":mod:", "``")
    )


def test_rough_edges_get_one_line_errors_naming_what_to_change(tmp_path, capsys):
    from rlstack import Algorithm, RecurrentTrainer
    from rlstack.cli import main

    (tmp_path / "bad.toml").write_text('env = "CartPole"\n[model_config]\nhidden = [8, 8]\n')
    assert main(["train", "-f", str(tmp_path / "bad.toml"), "--max-steps", "1"]) == 2
    err = capsys.readouterr().err
    assert (
        "`model_config` has ['hidden'], which MLPModel does not take; its keys are ['hiddens',"
        in err
    )

    algo = Algorithm(
        DiscreteDummyEnv, num_envs=8, horizon=4, compile=False, model_config={"hiddens": (8,)}
    )
    for _ in range(3):
        algo.collect()
        algo.step()
    checkpoint = str(algo.save_checkpoint(tmp_path / "at-3.pt"))
    assert main(["train", "--resume", checkpoint, "--max-steps", "3"]) == 2
    err = capsys.readouterr().err
    assert "--max-steps 3: " in err and "is at step 3 already" in err
    # One loader: a feedforward checkpoint stays feedforward, whichever class loads it.
    loaded = RecurrentTrainer.from_checkpoint(checkpoint)
    assert not loaded.algorithm.policy.recurrent
    loaded.close()


def test_the_progress_line_shows_the_episode_return_on_episodic_envs():
    import io

    stream = io.StringIO()
    progress = Progress(stream=stream, every=1)
    base = {"env/steps": 256.0, "returns/mean": 32.0}
    progress({**base, "algorithm/steps": 1})  # no episode has ended yet
    progress({**base, "env/steps": 512.0, "algorithm/steps": 2, "episodes/return/mean": 171.0})
    progress(
        {**base, "env/steps": 768.0, "algorithm/steps": 3}
    )  # none ended in this rollout: keep the last
    progress({**base, "env/steps": 1024.0, "algorithm/steps": 4, "episodes/return/mean": 180.0})
    lines = stream.getvalue().splitlines()
    assert "returns/mean     32.000" in lines[0]
    assert lines[1].endswith("episode return    171.000")
    # Envs whose episodes end in lockstep: the line says the return is an earlier step's.
    assert lines[2].endswith("episode return    171.000 (ended at step 2)")
    assert lines[3].endswith("episode return    180.000")


def test_the_closing_hint_fits_the_tracking_store():
    from rlstack.shell.launch import browse_hint

    assert (
        browse_hint("sqlite:///mlflow.db", "abc")
        == "browse it with: mlflow ui --backend-store-uri sqlite:///mlflow.db"
    )
    assert (
        browse_hint("http://127.0.0.1:5000/", "abc")
        == "browse it at http://127.0.0.1:5000/#/runs/abc"
    )


def test_a_refused_start_creates_no_run_and_changes_no_run(tmp_path, capsys):
    from rlstack.integrations.checkpoint import CheckpointDir
    from rlstack.integrations.export import lock_export_path

    assert (
        main(
            ["train", *TINY, "--max-steps", "2", "--checkpoint-dir", "a", "--checkpoint-every", "1"]
        )
        == 0
    )
    (finished,) = _runs()
    assert finished.info.status == "FINISHED"
    # Resuming step 1 into a folder that holds step 2: refused, and the finished run stays FINISHED.
    assert (
        main(
            ["train", "--resume", "a/step-00000001.pt", "--max-steps", "3", "--checkpoint-dir", "a"]
        )
        == 2
    )
    assert "holds checkpoints newer than this run's step 1" in capsys.readouterr().err
    assert [(r.info.run_id, r.info.status) for r in _runs()] == [(finished.info.run_id, "FINISHED")]
    # A folder (or an export path) that a live run holds: refused, no run created.
    busy = CheckpointDir(tmp_path / "busy", step=0, owner="MLflow run live")
    assert main(["train", *TINY, "--max-steps", "1", "--checkpoint-dir", "busy"]) == 2
    assert "`checkpoint_dir` 'busy' is in use by MLflow run live" in capsys.readouterr().err
    busy.close()
    export = lock_export_path(tmp_path / "model")
    assert main(["train", *TINY, "--max-steps", "1", "--save", "model"]) == 2
    assert "`--save` 'model' is in use by an export" in capsys.readouterr().err
    export.close()
    assert len(_runs()) == 1


def test_a_run_whose_process_died_is_marked_killed_when_its_folder_is_used_again(tmp_path, capsys):
    client = MlflowClient()
    dead = client.create_run(
        client.get_experiment_by_name("Default").experiment_id
    ).info.run_id  # left RUNNING
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / ".rlstack.lock").write_text(
        f"MLflow run {dead} (pid 999999999)\n"
    )  # no such process
    assert main(["train", *TINY, "--max-steps", "1", "--checkpoint-dir", "d"]) == 0
    assert client.get_run(dead).info.status == "KILLED"
    new = next(r for r in _runs() if r.info.run_id != dead)
    assert new.info.status == "FINISHED"
    assert not (tmp_path / "d" / ".rlstack.lock").exists()  # a run that ended leaves no lock


def test_a_closed_stdout_never_stops_training_and_the_checkpoint_is_written(tmp_path):
    # `rlstack train ... | head -1`: the reader leaves after the first line.
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    command = " ".join(
        [
            sys.executable,
            "-m",
            "rlstack",
            "train",
            *TINY,
            "--max-steps",
            "30",
            "--checkpoint-dir",
            "c",
        ]
    )
    result = subprocess.run(
        f"set -o pipefail; {command} | head -c 1",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert (tmp_path / "c" / "step-00000030.pt").is_file()
    (run,) = _runs()
    assert run.info.status == "FINISHED"


def test_training_checkpoints_every_few_minutes_by_default_and_on_request(tmp_path, monkeypatch):
    from rlstack import Trainer
    from rlstack.shell import run_loop
    from rlstack.shell import trainer as trainer_module
    from rlstack.shell.conditions import HitsUpperBound

    clock = iter(range(0, 10**6, 100))  # each look at the clock: 100 s later
    monkeypatch.setattr(run_loop, "clock", lambda: next(clock))
    trainer = Trainer(
        DiscreteDummyEnv, num_envs=8, horizon=4, compile=False, model_config={"hiddens": (8,)}
    )
    assert trainer_module.CHECKPOINT_EVERY_S == 300.0
    trainer.run(
        stop_conditions=[HitsUpperBound("algorithm/steps", 6)],
        checkpoint_dir=tmp_path / "timed",
        keep_checkpoints=10,
    )
    assert sorted(p.name for p in (tmp_path / "timed").glob("step-*.pt")) == [
        "step-00000003.pt",
        "step-00000006.pt",
    ]
    trainer.run(
        stop_conditions=[HitsUpperBound("algorithm/steps", 9)],
        checkpoint_dir=tmp_path / "off",
        checkpoint_every_s=None,
    )
    assert not list((tmp_path / "off").glob("step-*.pt"))
    with pytest.raises(
        ValueError, match=r"`checkpoint_every_s` must be seconds >= 0 or None \(off\), got -1"
    ):
        trainer.run(checkpoint_dir=tmp_path, checkpoint_every_s=-1)
    trainer.close()
    args = build_parser().parse_args(["train", *TINY, "--checkpoint-every-s", "60"])
    assert train_config(args).checkpoint_every_s == 60.0


def test_vectorization_mode_on_a_built_in_env_names_the_flag(capsys):
    code = main(["train", "--env", "CartPole", "--vectorization-mode", "async", "--max-steps", "1"])
    assert code == 2
    assert _errors(capsys) == [
        "rlstack: error: --vectorization-mode is for gymnasium vector envs (--env gymnasium:ID), "
        "got --env CartPole."
    ]
    assert _runs() == []


def test_a_box_distribution_on_discrete_actions_says_it_is_for_box_actions(capsys):
    code = main(["train", "--env", "CartPole", "--distribution", "squashed", "--max-steps", "1"])
    assert code == 2
    (err,) = _errors(capsys)
    assert err.startswith("rlstack: error: distribution SquashedNormal is for Box action spaces")
    assert "Discrete(2" in err
    assert _runs() == []


def test_the_progress_line_says_when_its_return_is_a_training_reward_or_a_members_mean():
    from types import SimpleNamespace

    from rlstack.cli.progress import Progress, return_qualifier

    shaped = SimpleNamespace(env_config={"reward": "speed"}, num_members=None)
    population = SimpleNamespace(env_config={}, num_members=8)
    plain = SimpleNamespace(env_config={"reward": "gymnasium"}, num_members=None)
    assert return_qualifier(shaped) == " (speed reward)"
    assert return_qualifier(population) == " (mean of 8 members)"
    assert return_qualifier(plain) == ""
    progress = Progress(stream=io.StringIO())
    progress.qualifier = return_qualifier(shaped)
    stats = {"algorithm/steps": 1, "env/steps": 64, "returns/mean": 1.0}
    progress(stats | {"episodes/return/mean": 121.8})
    assert "episode return (speed reward)    121.800" in progress.stream.getvalue()


def test_resuming_an_older_checkpoint_of_a_finished_run_branches_and_keeps_its_files():
    assert main(["train", *TINY, "--max-steps", "3", "--checkpoint-every", "1"]) == 0
    (first,) = _runs()
    folder = Path("checkpoints") / first.info.run_id
    files = sorted(p.name for p in folder.glob("step-*.pt"))
    assert main(["train", "--resume", str(folder / "step-00000001.pt"), "--max-steps", "2"]) == 0
    runs = {run.info.run_id: run for run in _runs()}
    (branch,) = (run for run in runs.values() if run.info.run_id != first.info.run_id)
    assert branch.data.tags["rlstack.branched_from"] == first.info.run_id
    assert runs[first.info.run_id].info.end_time == first.info.end_time  # left as it was
    assert sorted(p.name for p in folder.glob("step-*.pt")) == files
