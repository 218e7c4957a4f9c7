"""The commands of the command line: ``rlstack train | eval | export |
plot`` (printing and exit codes only; the work is done by Trainer,
Algorithm, rlstack.integrations.export and rlstack.integrations.plotting).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import torch

from ..core import random
from ..envs import env_defaults, make_env
from ..integrations import distributed
from ..shell.algorithm import Algorithm
from ..shell.conditions import HitsUpperBound
from ..shell.trainer import CHECKPOINT_EVERY_S, RecurrentTrainer, Trainer
from .arguments import build_parser, load_env
from .config import fit_lr_schedule, train_config
from .progress import Progress, StopRequest


def train(args: argparse.Namespace) -> int:
    """``rlstack train``: build the run from the flags and ``-f FILE``, train it; the exit code."""
    run, kwargs = train_config(args)
    if distributed.init_from_env(
        kwargs.get("device")
    ):  # launched by torchrun: one process per rank
        try:
            if distributed.rank() == 0:
                code = _train_command(run, kwargs)
            else:
                with contextlib.redirect_stdout(io.StringIO()):  # rank 0 speaks for all
                    code = _train_command({**run, "save": None}, kwargs)
            torch.distributed.barrier()  # every rank done before the group is torn down
            return code
        finally:
            torch.distributed.destroy_process_group()
    return _train_command(run, kwargs)


def _train_command(run: dict[str, Any], kwargs: dict[str, Any]) -> int:
    with contextlib.ExitStack() as held:
        # Everything that can refuse the start is checked before the Trainer exists, so that a
        # refused start creates no MLflow run and changes no existing one.
        if run.get("save"):
            from ..integrations.export import lock_export_path

            held.callback(
                lock_export_path(run["save"]).close
            )  # empty, and no other live run exports there
        resumed = _resumed_run(run)
        folder = _open_checkpoint_dir(run, resumed)
        if folder is not None:
            held.callback(folder.close)
        for note in run["notes"]:
            say(f"rlstack: {note}")
        env = load_env(run["env"]) if run.get("env") else None
        if env is not None and not run.get("resume"):
            notice = (
                preset_notice(run["env"], run["preset"])
                if run["preset"]
                else defaults_notice(run["env"], env, kwargs)
            )
            if notice:
                say(f"rlstack: {notice}")
        for note in fit_lr_schedule(run, kwargs, env) if not run.get("resume") else ():
            say(f"rlstack: {note}")
        stop_request = StopRequest()
        handlers = {
            sig: signal.signal(sig, stop_request) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            trainer = _build_trainer(run, kwargs, env)
            if folder is not None:
                trainer.adopt_checkpoint_dir(folder)
            return _train(trainer, run, stop_request)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)


def defaults_notice(name: str, env: Any, kwargs: dict[str, Any]) -> str:
    """The one line ``train`` prints for an env without a preset: which defaults it runs with."""
    fitted = {k: v for k, v in env_defaults(env).items() if k not in kwargs}
    fit = ", ".join(f"{k}={v}" for k, v in fitted.items())
    return (
        f"no preset for {name}: rlstack 1.x's defaults (rlstack.AlgorithmConfig)"
        + (f" with {fit} to fit the env" if fit else "")
        + "; set hyperparameters with flags or -f FILE."
    )


def preset_notice(name: str, preset: str) -> str | None:
    """The one line ``train`` prints when an env runs a preset not named after it."""
    if preset == name:
        return None
    return (
        f"preset {preset} for {name} (rlstack.presets.PRESETS[{preset!r}]"
        + (
            ": CleanRL's ppo_continuous_action settings, for Box actions"
            if preset == "continuous"
            else ""
        )
        + "); --preset NAME, flags or -f FILE change it."
    )


def _resumed_run(run: dict[str, Any]) -> dict[str, Any] | None:
    """For ``--resume``: the checkpoint's step and the MLflow run it will continue
    (None where a new run starts); refuses a ``--max-steps`` it has reached.
    """
    if not run.get("resume"):
        return None
    from ..integrations import tracking
    from ..integrations.checkpoint import safe_load

    data = safe_load(run["resume"])
    steps = data["counters"]["steps"]
    if run.get("max_steps") is not None and run["max_steps"] <= steps:
        raise ValueError(
            f"--max-steps {run['max_steps']}: {run['resume']} is at step {steps} already; give a "
            "larger "
            "--max-steps to train on (steps count from the run's start)."
        )
    run_id = None
    if distributed.rank() == 0:
        run_id = tracking.resumable_run_id(
            data.get("trainer", {}).get("run_id"), run.get("experiment_name"), run.get("run_name")
        )
    return {
        "steps": steps,
        "run_id": run_id,
        "files": data.get("trainer", {}).get("checkpoint_files", ()),
    }


def _open_checkpoint_dir(run: dict[str, Any], resumed: dict[str, Any] | None) -> Any:
    """The checkpoint folder, opened (checked and locked) before any MLflow run
    is touched, where its name is known before the run exists: ``--checkpoint-dir``,
    or a resumed run's ``checkpoints/<run id>``. None for a new run's own
    ``checkpoints/<new id>`` (nothing can hold it), and on ranks but 0.
    """
    from ..integrations.checkpoint import CheckpointDir

    directory = run.get("checkpoint_dir") or (
        f"checkpoints/{resumed['run_id']}" if resumed and resumed["run_id"] else None
    )
    if directory is None or distributed.rank() != 0:
        return None
    return CheckpointDir(
        directory,
        step=resumed["steps"] if resumed else 0,
        owner="rlstack train",
        keep=run.get("keep_checkpoints") or 3,
        adopt=resumed["files"] if resumed else (),
    )


def _build_trainer(run: dict[str, Any], kwargs: dict[str, Any], env: Any) -> Trainer:
    if run.get("resume"):
        return Trainer.from_checkpoint(
            run["resume"],
            env,
            device=kwargs.get("device"),
            compile=kwargs.get("compile"),
            experiment_name=run.get("experiment_name"),
            run_name=run.get("run_name"),
            log_every_s=kwargs.get("log_every_s", 1.0),
        )
    trainer_cls, kwargs = Trainer, dict(kwargs)
    model = kwargs.pop("model", None)
    if model in ("lstm", "gru"):
        trainer_cls = RecurrentTrainer
        kwargs["model_config"] = {**kwargs.get("model_config", {}), "cell": model}
        kwargs["model_config"].pop(
            "hiddens", None
        )  # a preset's MLP widths: not the recurrent model's
    return trainer_cls(
        env, experiment_name=run.get("experiment_name"), run_name=run.get("run_name"), **kwargs
    )


def _train(trainer: Trainer, run: dict[str, Any], stop_request: StopRequest) -> int:
    """Run ``trainer`` as ``train`` asks; always end its MLflow run with its true status."""
    algo = trainer.algorithm
    say(
        f"rlstack: training {algo.build_config['env']} on {algo.device} "
        f"(compile: {algo.compile}), "
        f"MLflow run {trainer.run_id}"
    )
    # Always checkpointed: the end of the run, Ctrl-C, SIGTERM and a failure write the last
    # completed step.
    checkpoint_dir = run.get("checkpoint_dir") or f"checkpoints/{trainer.run_id}"
    keep = run.get("keep_checkpoints") or 3
    stop = [HitsUpperBound("algorithm/steps", run["max_steps"])] if run.get("max_steps") else []
    progress = Progress(max_steps=run.get("max_steps"), start_env_steps=trainer.state["env/steps"])
    status, code = "FAILED", 1
    try:
        trainer.run(
            stop_conditions=stop,
            steps_per_eval=run.get("steps_per_eval"),
            callbacks=[progress, stop_request.requested],
            checkpoint_every=run.get("checkpoint_every"),
            checkpoint_dir=checkpoint_dir,
            keep_checkpoints=keep,
            member_stop=run.get("member_stop") or "each",
            checkpoint_every_s=run.get("checkpoint_every_s", CHECKPOINT_EVERY_S),
        )
        progress.close()
        if stop_request.signal is None:
            say(f"rlstack: last checkpoint {trainer.checkpoint_to(checkpoint_dir, keep)}")
            if run.get("save"):
                _save(trainer, run["save"])
            status, code = "FINISHED", 0
        else:  # stopped between steps by a signal
            say(
                "rlstack: interrupted; last completed step saved to "
                f"{trainer.checkpoint_to(checkpoint_dir, keep)}"
            )
            status, code = "KILLED", stop_request.exit_code()
    except KeyboardInterrupt:  # a second signal: Trainer.run saved the last completed step
        status, code = "KILLED", stop_request.exit_code()
        progress.close()
    finally:
        trainer.close(status)
        uri = mlflow.get_tracking_uri()
        say(f"rlstack: run {trainer.run_id} ({status}) logged to {uri}")
        say(f"rlstack: {browse_hint(uri, trainer.run_id)}")
    return code


def say(text: str) -> None:
    """Print a line of ``train``'s; a closed stdout loses the line, not the run."""
    with contextlib.suppress(OSError, ValueError):
        print(text, flush=True)


def browse_hint(uri: str, run_id: str | None) -> str:
    """How to see a run: a tracking server's own page, or ``mlflow ui`` over a local store."""
    if uri.startswith(("http://", "https://")):
        return f"browse it at {uri.rstrip('/')}/#/runs/{run_id}"
    return f"browse it with: mlflow ui --backend-store-uri {uri}"


def _save(trainer: Trainer, directory: str) -> None:
    """Export the policy to ``directory``; a population's members to ``directory/member-<k>``."""
    members = getattr(trainer.algorithm, "num_members", None)
    if members is None:
        say(f"rlstack: policy exported to {trainer.export_policy(directory)}")
        return
    for k in range(members):
        say(
            f"rlstack: member {k} exported to "
            f"{trainer.export_policy(Path(directory) / f'member-{k}', member=k)}"
        )


def _check_same_spaces(name: str, env: Any, observation_space: Any, action_space: Any) -> None:
    for what, theirs, ours in (
        ("observation", env.observation_space, observation_space),
        ("action", env.action_space, action_space),
    ):
        if theirs != ours:
            raise ValueError(
                f"--env {name} has {what} space {theirs!r}, but the policy was trained on {ours!r}."
            )


def evaluate(args: argparse.Namespace) -> int:
    """``rlstack eval``: a checkpoint's or an export's policy on fresh envs; the exit code."""
    if args.num_envs < 1:
        raise ValueError(f"--num-envs must be a positive int, got {args.num_envs}.")
    source = Path(args.source)
    deterministic = not args.stochastic
    if source.is_dir():
        from ..integrations.exported import ExportedPolicy

        exported = ExportedPolicy(source)
        name = args.env or exported.config["env"]
        env = make_env(load_env(name), num_envs=args.num_envs)
        _check_same_spaces(name, env, exported.observation_space, exported.action_space)
        act = lambda obs: exported.predict(obs, deterministic)  # noqa: E731  (memory, if any, kept by `exported`)
        trained_config = exported.config.get("env_config")
    else:
        algo = _load_policy_state(source, args.env, args.member)
        env, name = algo.env, algo.build_config["env"]
        if (
            not env.compilable
        ):  # gymnasium or 1.x envs are built for a number of envs: build --num-envs of them
            env = make_env(
                algo.env_spec,
                num_envs=args.num_envs,
                horizon=algo.config.horizon,
                config=algo.env_config,
            )
        act = algo.actor(
            deterministic
        )  # a recurrent or windowed policy's memory travels between calls
        trained_config = algo.env_config
    if not hasattr(env, "success"):
        raise ValueError(
            f"env {name} has no success measure (a 1.x stateful env); evaluate it with "
            "Trainer.eval()."
        )
    # The env as it was trained (e.g. CartPole's hide_velocities), unless another env was named.
    config = (trained_config or None) if args.env is None else None
    stats = env.success(act, num_envs=args.num_envs, config=config, key=random.key(args.seed))
    print(
        f"rlstack: {name}, {args.num_envs} envs, "
        f"{'deterministic' if deterministic else 'stochastic'} policy"
    )
    for key, value in stats.items():
        print(f"{key:<28}{value:>12.4f}")
    return 0


def _load_policy_state(path: Any, env_name: str | None, member: int | None) -> Algorithm:
    """A checkpoint's Algorithm; for a population's checkpoint, member ``member``'s."""
    env = load_env(env_name) if env_name else None
    algorithm = Algorithm.from_checkpoint(path, env, compile=False)
    size = algorithm.num_members
    if size is None:
        if member is not None:
            raise ValueError(f"--member is for a population's checkpoint; {path} holds one run.")
        return algorithm
    if member is None or not 0 <= member < size:
        raise ValueError(
            f"{path} holds a population of {size} members: pick one with --member K, K in [0, "
            f"{size})."
        )
    return algorithm.member(member)


def export(args: argparse.Namespace) -> int:
    """``rlstack export``: a checkpoint's policy as MLflow model, ONNX or program; the exit code."""
    from ..integrations import deploy
    from ..integrations.export import export_policy

    writer = {"mlflow": export_policy, "onnx": deploy.export_onnx, "torch": deploy.export_program}[
        args.format
    ]
    algo = _load_policy_state(args.checkpoint, args.env, args.member)
    print(f"rlstack: policy exported to {writer(algo, args.directory)}")
    return 0


def plot(args: argparse.Namespace) -> int:
    """``rlstack plot``: draw a run's learning curve from MLflow to a PNG file; the exit code."""
    from ..integrations.plotting import plot_learning_curve

    print(f"rlstack: wrote {plot_learning_curve(args.run_id, args.output, args.metrics)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``rlstack`` command: run ``argv``'s subcommand; a bad input is one line, exit code 2."""
    args = build_parser().parse_args(argv)
    from ..integrations.checkpoint import CheckpointError

    try:
        return {"train": train, "eval": evaluate, "export": export, "plot": plot}[args.command](
            args
        )
    except FloatingPointError as e:  # training diverged; its last good step was checkpointed
        print(f"rlstack: error: {e}", file=sys.stderr)
        return 1
    except (
        ValueError,
        TypeError,
        OSError,
        CheckpointError,
        mlflow.exceptions.MlflowException,
    ) as e:
        print(f"rlstack: error: {e}", file=sys.stderr)
        return 2
