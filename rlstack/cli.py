"""``rlstack train``: argument parsing and progress printing around a Trainer."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import time
from typing import Any, Sequence

import mlflow

from .config import AlgorithmConfig
from .conditions import HitsUpperBound
from .envs import BUILTIN_ENVS
from .presets import PRESETS
from .trainer import Trainer

# AlgorithmConfig fields that take one scalar on the command line.
_SCALAR_TYPES = {"int": int, "float": float, "bool": bool, "float | None": float, "int | None": int}


def load_env(spec: str) -> Any:
    """A built-in env name, or ``module:Class`` for a user env.

    Raises:
        ValueError: for an unknown name or an import that fails.
    """
    if spec in BUILTIN_ENVS:
        return BUILTIN_ENVS[spec]
    if ":" not in spec:
        raise ValueError(f"--env must be one of {sorted(BUILTIN_ENVS)} or 'module:Class', got {spec!r}.")
    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"--env {spec!r} could not be loaded: {e}") from e


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlstack", description="Fast PPO for massively parallel envs.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a policy and log the run to MLflow")
    train.add_argument("--env", required=True, help=f"one of {sorted(BUILTIN_ENVS)} or module:Class")
    train.add_argument("--max-steps", type=int, default=None, help="stop after this many collect+update steps")
    train.add_argument("--experiment-name", default=None, help="MLflow experiment (created if missing)")
    train.add_argument("--run-name", default=None, help="MLflow run name")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="cpu")
    train.add_argument("--no-compile", action="store_true", help="run eagerly instead of torch.compile")
    train.add_argument("--lr", type=float, default=None, help="learning rate (optimizer_config['lr'])")
    train.add_argument("--hiddens", default=None, help="hidden widths of the default model, e.g. 64,64")
    train.add_argument("--steps-per-eval", type=int, default=None)
    hparams = train.add_argument_group("hyperparameters (see rlstack.AlgorithmConfig; default: the env's preset)")
    for field in dataclasses.fields(AlgorithmConfig):
        kind = _SCALAR_TYPES.get(str(field.type))
        if kind is None:
            continue
        hparams.add_argument(
            "--" + field.name.replace("_", "-"), dest=field.name, default=None,
            type=_parse_bool if kind is bool else kind, metavar=kind.__name__.upper(),
        )
    return parser


def train_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The env's preset, overridden by whatever the command line set."""
    kwargs: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in PRESETS.get(args.env, {}).items()}
    for field in dataclasses.fields(AlgorithmConfig):
        value = getattr(args, field.name, None)
        if value is not None:
            kwargs[field.name] = value
    if args.lr is not None:
        kwargs["optimizer_config"] = {**kwargs.get("optimizer_config", {}), "lr": args.lr}
    if args.hiddens is not None:
        try:
            hiddens = tuple(int(h) for h in args.hiddens.split(","))
        except ValueError as e:
            raise ValueError(f"--hiddens must be comma-separated ints such as 64,64, got {args.hiddens!r}.") from e
        kwargs["model_config"] = {**kwargs.get("model_config", {}), "hiddens": hiddens}
    kwargs.update(seed=args.seed, device=args.device, compile=not args.no_compile)
    return kwargs


class Progress:
    """One status line per step: rewritten in place on a terminal, printed
    every ``every`` steps (and the last) otherwise. The rate is env steps per
    second of wall clock over the last step (compile time shows in step 1)."""

    def __init__(self, stream: Any = sys.stdout, every: int = 10) -> None:
        self.stream, self.every = stream, every
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.last_time, self.last_env_steps, self.rate = time.perf_counter(), 0, 0.0

    def __call__(self, stats: dict[str, float]) -> bool:
        now = time.perf_counter()
        if stats["env/steps"] > self.last_env_steps:
            self.rate = (stats["env/steps"] - self.last_env_steps) / max(now - self.last_time, 1e-9)
        self.last_time, self.last_env_steps = now, stats["env/steps"]
        steps = int(stats["algorithm/steps"])
        line = (
            f"step {steps:>5} | env steps {int(stats['env/steps']):>11,} | "
            f"{self.rate:>10,.0f} steps/s | returns/mean {stats['returns/mean']:>10.3f}"
        )
        if self.tty:
            self.stream.write("\r" + line)
        elif steps == 1 or steps % self.every == 0:
            self.stream.write(line + "\n")
        self.stream.flush()
        return False

    def close(self, stats: dict[str, float]) -> None:
        if self.tty:
            self.stream.write("\n")
        elif int(stats["algorithm/steps"]) % self.every != 0:
            self.every = 1
            self.__call__(stats)


def train(args: argparse.Namespace) -> int:
    env = load_env(args.env)
    kwargs = train_kwargs(args)
    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError(f"--max-steps must be a positive int, got {args.max_steps}.")
    trainer = Trainer(env, experiment_name=args.experiment_name, run_name=args.run_name, **kwargs)
    print(f"rlstack: training {args.env} on {kwargs['device']} ({'compiled' if kwargs['compile'] else 'eager'}), "
          f"MLflow run {trainer.run_id}", flush=True)
    stop = [HitsUpperBound("algorithm/steps", args.max_steps)] if args.max_steps else []
    progress = Progress()
    status = "FINISHED"
    try:
        stats = trainer.run(stop_conditions=stop, steps_per_eval=args.steps_per_eval, callbacks=[progress])
        progress.close(stats)
    except KeyboardInterrupt:
        status = "KILLED"
        print("\nrlstack: interrupted", flush=True)
    finally:
        mlflow.end_run(status=status)
    uri = mlflow.get_tracking_uri()
    print(f"rlstack: run {trainer.run_id} logged to {uri}")
    print(f"rlstack: browse it with: mlflow ui --backend-store-uri {uri}")
    return 0 if status == "FINISHED" else 130


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return train(args)
    except (ValueError, TypeError) as e:
        print(f"rlstack: error: {e}", file=sys.stderr)
        return 2
    return 1
