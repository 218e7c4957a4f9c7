"""The commands of the command line: ``rlstack train | eval | export |
plot`` (printing and exit codes only; the work is done by Trainer,
Algorithm, rlstack.integrations.export and rlstack.integrations.plotting).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import torch

from ..core import random
from ..envs import make_env
from ..integrations import distributed
from ..integrations.env_names import load_env
from ..shell import launch
from ..shell.algorithm import Algorithm
from ..shell.spec import RunSpec
from .arguments import build_parser
from .config import train_config
from .progress import Progress, StopRequest


def train(args: argparse.Namespace) -> int:
    """``rlstack train``: the run the flags and ``-f FILE`` specify
    (:func:`~rlstack.cli.config.train_config`), trained by
    :func:`rlstack.shell.launch.train` with its progress line; the exit code.
    """
    spec = train_config(args)
    if distributed.init_from_env(spec.trainer.get("device")):  # torchrun: one process per rank
        try:
            if distributed.rank() == 0:
                code = _train(spec)
            else:
                with contextlib.redirect_stdout(io.StringIO()):  # rank 0 speaks for all
                    code = _train(dataclasses.replace(spec, save=None))
            torch.distributed.barrier()  # every rank done before the group is torn down
            return code
        finally:
            torch.distributed.destroy_process_group()
    return _train(spec)


def _train(spec: RunSpec) -> int:
    """Train ``spec`` with the progress line, Ctrl-C and SIGTERM stopping it
    after the step in progress; the exit code.
    """
    stop_request = StopRequest()
    progress = Progress()
    handlers = {sig: signal.signal(sig, stop_request) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        status = launch.train(
            spec,
            callbacks=[progress],
            stopped=lambda: stop_request.signal is not None,
            say=say,
            on_start=progress.start,
            on_end=progress.close,
        )
    except KeyboardInterrupt:  # a second signal: the last completed step was saved
        status = "KILLED"
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return stop_request.exit_code() if status == "KILLED" else 0


def say(text: str) -> None:
    """Print a line of ``train``'s; a closed stdout loses the line, not the run."""
    with contextlib.suppress(OSError, ValueError):
        print(text, flush=True)


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
    if args.num_envs is not None and args.num_envs < 1:
        raise ValueError(f"--num-envs must be a positive int, got {args.num_envs}.")
    source = Path(args.source)
    deterministic = not args.stochastic
    if source.is_dir():
        from ..integrations.exported import ExportedPolicy

        exported = ExportedPolicy(source)
        name = args.env or exported.config["env"]
        spec = load_env(name)
        num_envs = args.num_envs or eval_num_envs(spec)
        env = make_env(spec, num_envs=num_envs)
        _check_same_spaces(name, env, exported.observation_space, exported.action_space)
        act = lambda obs: exported.predict(obs, deterministic)  # noqa: E731  (memory, if any, kept by `exported`)
        trained_config = exported.config.get("env_config")
    else:
        algo = _load_policy_state(source, args.env, args.member)
        env, name = algo.env, algo.build_config["env"]
        num_envs = args.num_envs or eval_num_envs(algo.env_spec)
        if (
            not env.compilable
        ):  # gymnasium or 1.x envs are built for a number of envs: build --num-envs of them
            env = make_env(
                algo.env_spec,
                num_envs=num_envs,
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
    stats = env.success(act, num_envs=num_envs, config=config, key=random.key(args.seed))
    print(
        f"rlstack: {name}, {num_envs} envs, "
        f"{'deterministic' if deterministic else 'stochastic'} policy"
    )
    for key, value in stats.items():
        print(f"{key:<28}{value:>12.4f}")
    if args.video:
        _record_video(args, spec if source.is_dir() else algo.env_spec, config, deterministic)
    return 0


def _record_video(args: argparse.Namespace, spec: Any, config: Any, deterministic: bool) -> None:
    """``rlstack eval --video``: one episode on one env, logged to the checkpoint's run."""
    from ..integrations import tracking
    from ..integrations.checkpoint import safe_load
    from ..integrations.video import record_video

    source = Path(args.source)
    if source.is_dir():
        from ..integrations.exported import ExportedPolicy

        exported = ExportedPolicy(source)  # its own memory, for one env
        act = lambda obs: exported.predict(obs, deterministic)  # noqa: E731
    else:
        act = _load_policy_state(source, args.env, args.member).actor(deterministic)
    recorded = record_video(args.video, spec, act, config=config, seed=args.seed)
    print(f"rlstack: video of {recorded['frames']} frames written to {recorded['path']}")
    run_id = None if source.is_dir() else safe_load(source).get("trainer", {}).get("run_id")
    if tracking.resumable_run_id(run_id, None, None) is not None:
        tracking.make_client().log_artifact(run_id, recorded["path"], artifact_path="videos")
        print(f"rlstack: logged to MLflow run {run_id} under videos/")


#: ``rlstack eval``'s envs for a built-in env (simulated together, as a batch).
EVAL_NUM_ENVS = 1024


def eval_num_envs(env_spec: Any) -> int:
    """The envs ``rlstack eval`` runs by default: an env's own default where
    it has one (envs stepped one by one on the CPU, such as gymnasium's),
    else :data:`EVAL_NUM_ENVS`.
    """
    return int(getattr(env_spec, "default_num_envs", None) or EVAL_NUM_ENVS)


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

    # MLflow's SQL store logs each database error it raises, with a traceback; the error is
    # reported here in one line.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

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
