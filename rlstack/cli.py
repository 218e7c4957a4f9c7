"""The command line: ``rlstack train | eval | export | plot`` (argument
parsing and printing only; the work is done by Trainer, Algorithm,
rlstack.export and rlstack.plotting).

Settings for ``train`` come, in increasing priority, from the env's preset
(:mod:`rlstack.presets`), a TOML file (``-f``), and command-line flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import signal
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, Sequence

import mlflow

from . import random
from .algorithm import Algorithm
from .conditions import HitsUpperBound
from .config import AlgorithmConfig
from .env import make_env
from .envs import BUILTIN_ENVS
from .optim import TORCH_OPTIMIZERS_BY_NAME
from .presets import PRESETS
from .trainer import Trainer

# AlgorithmConfig fields that take one scalar on the command line.
_SCALAR_TYPES = {"int": int, "float": float, "bool": bool, "float | None": float, "int | None": int}
_HPARAMS = {f.name for f in dataclasses.fields(AlgorithmConfig)}
# Options of `train` that are not Trainer keyword arguments.
_RUN_OPTIONS = {"env", "max_steps", "experiment_name", "run_name", "steps_per_eval", "checkpoint_every",
                "checkpoint_dir", "keep_checkpoints", "save", "resume"}
_TRAINER_OPTIONS = {"seed", "device", "compile", "cuda_graphs", "allow_tf32", "env_config", "model_config", "optimizer_cls",
                    "optimizer_config"}
# The types of `train`'s own options (hyperparameters are checked by AlgorithmConfig).
_RUN_OPTION_TYPES = {"max_steps": int, "steps_per_eval": int, "checkpoint_every": int, "keep_checkpoints": int,
                     "env": str, "experiment_name": str, "run_name": str, "checkpoint_dir": str, "save": str, "resume": str}
# What may be given with --resume: everything else is the checkpoint's.
_RESUME_OPTIONS = {"resume", "env", "max_steps", "steps_per_eval", "checkpoint_every", "checkpoint_dir",
                   "keep_checkpoints", "save", "experiment_name", "run_name", "device", "compile"}


def _field_help() -> dict[str, str]:
    """Each hyperparameter's one-line help, from AlgorithmConfig's docstring
    (where each is documented once)."""
    text = (AlgorithmConfig.__doc__ or "").split("Attributes:", 1)[-1]
    entries: dict[str, str] = {}
    names: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        head, sep, rest = stripped.partition(": ")
        if sep and line.startswith(" " * 8) and not line.startswith(" " * 12):
            names = [n.strip() for n in head.split("/")]
            for name in names:
                entries[name] = rest
        elif stripped and names:
            for name in names:
                entries[name] += " " + stripped
    return {k: v.replace("``", "").replace(":mod:", "").replace("%", "%%") for k, v in entries.items()}


_FIELD_HELP = _field_help()


def load_env(spec: str) -> Any:
    """A built-in env name, ``gymnasium:ID`` for a gymnasium env id, or
    ``module:Class`` for a user env.

    Raises:
        ValueError: for an unknown name or an import that fails.
    """
    if spec in BUILTIN_ENVS:
        return BUILTIN_ENVS[spec]
    if spec.startswith("gymnasium:"):
        from .gymnasium_adapter import gymnasium_env

        return gymnasium_env(spec.partition(":")[2])
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
    train.add_argument("-f", "--config", dest="config_file", default=None, help="TOML file of settings")
    train.add_argument("--env", default=None,
                       help=f"one of {sorted(BUILTIN_ENVS)}, gymnasium:ID (e.g. gymnasium:CartPole-v1) or module:Class")
    train.add_argument("--max-steps", type=int, default=None, help="stop after this many collect+update steps")
    train.add_argument("--experiment-name", default=None, help="MLflow experiment (created if missing)")
    train.add_argument("--run-name", default=None, help="MLflow run name")
    train.add_argument("--seed", type=int, default=None, help="the run's random seed (default 0)")
    train.add_argument("--device", default=None, help="cpu (default), cuda, cuda:1, ...")
    train.add_argument("--compile", type=_parse_bool, default=None, metavar="BOOL", help="torch.compile (default true)")
    train.add_argument("--no-compile", dest="compile", action="store_false", help="same as --compile false")
    train.add_argument("--cuda-graphs", type=_parse_bool, default=None, metavar="BOOL",
                       help="replay rollout and update as CUDA graphs (CUDA only; default false)")
    train.add_argument("--allow-tf32", type=_parse_bool, default=None, metavar="BOOL",
                       help="TF32 float32 matmuls on CUDA (default false)")
    train.add_argument("--lr", type=float, default=None, help="learning rate (optimizer_config.lr)")
    train.add_argument("--hiddens", default=None, help="hidden widths of the default model, e.g. 64,64")
    train.add_argument("--steps-per-eval", type=int, default=None, metavar="STEPS",
                       help="evaluate the deterministic policy on fresh envs every STEPS steps (logged as eval/*)")
    train.add_argument("--resume", default=None, metavar="CHECKPOINT",
                       help="continue from a checkpoint with its own hyperparameters (they cannot be changed; "
                            "--max-steps, checkpoint and export options, --device and --compile can)")
    train.add_argument("--checkpoint-every", type=int, default=None, metavar="STEPS",
                       help="also write a checkpoint every STEPS steps")
    train.add_argument("--checkpoint-dir", default=None,
                       help="default: checkpoints/<run id> (always written at the end, on Ctrl-C/SIGTERM and on failure)")
    train.add_argument("--keep-checkpoints", type=int, default=None, metavar="N",
                       help="keep this run's N newest checkpoints (default 3)")
    train.add_argument("--save", default=None, metavar="DIR",
                       help="export the policy (MLflow model) at the end; DIR must not exist or be empty")
    hparams = train.add_argument_group("hyperparameters (see rlstack.AlgorithmConfig; default: the env's preset)")
    for field in dataclasses.fields(AlgorithmConfig):
        kind = _SCALAR_TYPES.get(str(field.type))
        if kind is None:
            continue
        hparams.add_argument(
            "--" + field.name.replace("_", "-"), dest=field.name, default=None,
            type=_parse_bool if kind is bool else kind, metavar=kind.__name__.upper(),
            help=_FIELD_HELP.get(field.name),
        )

    evaluate = commands.add_parser("eval", help="print a policy's success measure on an env")
    evaluate.add_argument("source", help="a checkpoint file or an exported model directory")
    evaluate.add_argument("--env", default=None, help="env (default: the one it was trained on, if built in)")
    evaluate.add_argument("--num-envs", type=int, default=1024, help="envs to run the policy on (default 1024)")
    evaluate.add_argument("--stochastic", action="store_true", help="sample actions instead of the mode")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the env resets' random key (default 0)")

    export = commands.add_parser("export", help="export a checkpoint's policy as an MLflow model")
    export.add_argument("checkpoint", help="a checkpoint file written by train")
    export.add_argument("directory", help="where to write the MLflow model (must not exist or be empty)")
    export.add_argument("--env", default=None, help="env (needed for a user env)")
    plot = commands.add_parser("plot", help="plot a run's learning curve to a PNG")
    plot.add_argument("run_id", help="the MLflow run id that train printed")
    plot.add_argument("-o", "--output", default="learning_curve.png", help="PNG path (default learning_curve.png)")
    plot.add_argument("--metrics", nargs="*", default=["returns/mean", "eval/returns/mean"],
                      help="metric names; eval/* ones go to a panel of their own (default: returns/mean "
                           "eval/returns/mean)")
    return parser


def read_toml(path: str) -> dict[str, Any]:
    """Settings from a TOML file: ``train``'s options and Trainer keyword
    arguments (``[model_config]``, ``[optimizer_config]``, ``[env_config]``
    tables; ``optimizer_cls = "SGD"``).

    Raises:
        ValueError: for a missing or malformed file, an unknown key or a
            value of the wrong type.
    """
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise ValueError(f"-f {path!r}: no such file.") from e
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"-f {path!r} is not valid TOML: {e}") from e
    unknown = sorted(set(data) - _HPARAMS - _RUN_OPTIONS - _TRAINER_OPTIONS)
    if unknown:
        raise ValueError(f"-f {path!r} has unknown keys {unknown}; expected hyperparameters or {sorted(_RUN_OPTIONS | _TRAINER_OPTIONS)}.")
    for key, kind in _RUN_OPTION_TYPES.items():
        if key in data and (not isinstance(data[key], kind) or isinstance(data[key], bool)):
            example = "an integer such as 10" if kind is int else "a string"
            raise ValueError(f"-f {path!r}: `{key}` must be {example}, got {data[key]!r}.")
    for key in ("model_config", "optimizer_config", "env_config"):
        if key in data and not isinstance(data[key], dict):
            raise ValueError(f"-f {path!r}: `{key}` must be a table ([{key}]), got {data[key]!r}.")
    return data


def largest_divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of ``n`` that is at most ``limit`` (>= 1)."""
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def _adapt_preset(settings: dict[str, Any], explicit: set[str]) -> list[str]:
    """Adapt a preset's ``sgd_minibatch_size`` that the user did not set to
    a buffer (``num_envs * horizon``) the user changed: the largest divisor
    of the buffer not above the preset's value. Returns notes to print."""
    size = settings.get("sgd_minibatch_size")
    if size is None or "sgd_minibatch_size" in explicit:
        return []
    num_envs, horizon = settings.get("num_envs", 8192), settings.get("horizon", 32)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (num_envs, horizon)):
        return []  # AlgorithmConfig reports these
    buffer = num_envs * horizon
    if buffer % size == 0 and size <= buffer:
        return []
    settings["sgd_minibatch_size"] = largest_divisor_at_most(buffer, size)
    return [f"sgd_minibatch_size {size} (the preset's) does not divide num_envs * horizon = {buffer}; "
            f"using {settings['sgd_minibatch_size']}"]


def train_settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(run_options, trainer_kwargs)`` from preset < TOML < flags.

    ``run_options["notes"]`` lists the adaptations made to preset values.

    Raises:
        ValueError: for a missing env, a bad value, or hyperparameters given
            with ``--resume`` (a resumed run keeps the checkpoint's).
    """
    from_file = read_toml(args.config_file) if args.config_file else {}
    flags = {k: v for k, v in vars(args).items() if v is not None and k not in ("command", "config_file", "lr", "hiddens")}
    explicit = set(from_file) | set(flags) | {name for name in ("lr", "hiddens") if getattr(args, name) is not None}
    env = flags.get("env", from_file.get("env"))
    resume = flags.get("resume", from_file.get("resume"))
    if resume:
        fixed = sorted(explicit - _RESUME_OPTIONS)
        if fixed:
            names = ", ".join("--" + k.replace("_", "-") for k in fixed)
            raise ValueError(
                f"--resume continues with the checkpoint's hyperparameters and settings; {names} cannot change on "
                "resume (start a new run to change them)."
            )
    elif env is None:
        raise ValueError("--env is required (or `env = ...` in the -f file).")
    settings: dict[str, Any] = {} if resume else {k: (dict(v) if isinstance(v, dict) else v) for k, v in PRESETS.get(env, {}).items()}
    for source in (from_file, flags):
        for key, value in source.items():
            if key in ("model_config", "optimizer_config", "env_config"):
                settings[key] = {**settings.get(key, {}), **value}
            else:
                settings[key] = value
    if args.lr is not None:
        settings["optimizer_config"] = {**settings.get("optimizer_config", {}), "lr": args.lr}
    if args.hiddens is not None:
        try:
            settings["model_config"] = {**settings.get("model_config", {}), "hiddens": tuple(int(h) for h in args.hiddens.split(","))}
        except ValueError as e:
            raise ValueError(f"--hiddens must be comma-separated ints such as 64,64, got {args.hiddens!r}.") from e
    if "hiddens" in settings.get("model_config", {}) and isinstance(settings["model_config"]["hiddens"], list):
        settings["model_config"]["hiddens"] = tuple(settings["model_config"]["hiddens"])
    if isinstance(settings.get("optimizer_cls"), str):
        name = settings["optimizer_cls"]
        if name not in TORCH_OPTIMIZERS_BY_NAME:
            raise ValueError(f"optimizer_cls must be one of {sorted(TORCH_OPTIMIZERS_BY_NAME)}, got {name!r}.")
        settings["optimizer_cls"] = TORCH_OPTIMIZERS_BY_NAME[name]
    notes = _adapt_preset(settings, explicit)
    if not resume:
        settings.setdefault("seed", 0)
    run = {k: settings.pop(k) for k in list(settings) if k in _RUN_OPTIONS}
    for name in ("max_steps", "checkpoint_every", "steps_per_eval", "keep_checkpoints"):
        if run.get(name) is not None and run[name] < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive int, got {run[name]}.")
    run["notes"] = notes
    return run, settings


class Progress:
    """A live status line: rewritten in place on a terminal; on a pipe or
    file, one line every ``every`` steps and the last. Shows env steps/s over
    the last step, ``returns/mean`` and, with a step limit, the ETA. The
    first step's time includes compilation, so the ETA is estimated from
    the later steps (none is shown until there is one)."""

    def __init__(
        self, stream: Any = sys.stdout, every: int = 10, max_steps: int | None = None, start_env_steps: int = 0
    ) -> None:
        self.stream, self.every, self.max_steps = stream, every, max_steps
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        # The first rate includes compilation: it is wall clock since the start.
        self.last_time, self.last_env_steps, self.rate = time.perf_counter(), start_env_steps, 0.0
        self.step_times: list[float] = []
        self.last_stats: dict[str, float] | None = None
        self.printed = 0  # the last step written as a line

    def __call__(self, stats: dict[str, float]) -> bool:
        if "algorithm/steps" not in stats:  # eval stats
            return False
        now = time.perf_counter()
        if stats["env/steps"] > self.last_env_steps:
            self.rate = (stats["env/steps"] - self.last_env_steps) / max(now - self.last_time, 1e-9)
            if self.last_stats is not None:  # not the first step, which compiles
                self.step_times.append(now - self.last_time)
        self.last_time, self.last_env_steps, self.last_stats = now, stats["env/steps"], stats
        steps = int(stats["algorithm/steps"])
        if self.tty:
            self.stream.write("\r" + self.line(stats))
        elif steps == 1 or steps % self.every == 0:
            self.stream.write(self.line(stats) + "\n")
            self.printed = steps
        self.stream.flush()
        return False

    def line(self, stats: dict[str, float]) -> str:
        steps = int(stats["algorithm/steps"])
        text = (
            f"step {steps:>5} | env steps {int(stats['env/steps']):>11,} | "
            f"{self.rate:>10,.0f} steps/s | returns/mean {stats['returns/mean']:>10.3f}"
        )
        if self.max_steps and self.step_times:
            recent = self.step_times[-10:]
            eta = max(self.max_steps - steps, 0) * sum(recent) / len(recent)
            text += f" | ETA {int(eta) // 60:d}:{int(eta) % 60:02d}"
        return text

    def close(self) -> None:
        if self.last_stats is None:
            return
        if self.tty:
            self.stream.write("\n")
        elif int(self.last_stats["algorithm/steps"]) != self.printed:
            self.stream.write(self.line(self.last_stats) + "\n")
        self.stream.flush()


class StopRequest:
    """Ctrl-C (SIGINT) and SIGTERM handler for ``train``: the first signal
    asks training to stop after the step in progress (so no checkpoint or
    MLflow write is cut in half); a second one stops at once
    (``KeyboardInterrupt``)."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        print(f"\nrlstack: {signal.Signals(signum).name}: stopping after this step (again to stop now)",
              file=sys.stderr, flush=True)

    def requested(self, stats: dict[str, float]) -> bool:
        """A :data:`~rlstack.trainer.Callback`: True once a stop was asked for."""
        return self.signal is not None

    def exit_code(self) -> int:
        return 128 + int(self.signal or signal.SIGINT)


def train(args: argparse.Namespace) -> int:
    run, kwargs = train_settings(args)
    if run.get("save"):
        from .export import check_export_path

        check_export_path(run["save"])  # before any work
    for note in run["notes"]:
        print(f"rlstack: {note}", flush=True)
    env = load_env(run["env"]) if run.get("env") else None
    stop_request = StopRequest()
    handlers = {sig: signal.signal(sig, stop_request) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if run.get("resume"):
            trainer = Trainer.from_checkpoint(
                run["resume"], env, device=kwargs.get("device"), compile=kwargs.get("compile"),
                experiment_name=run.get("experiment_name"), run_name=run.get("run_name"),
            )
        else:
            trainer = Trainer(env, experiment_name=run.get("experiment_name"), run_name=run.get("run_name"), **kwargs)
        return _train(trainer, run, stop_request)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _train(trainer: Trainer, run: dict[str, Any], stop_request: StopRequest) -> int:
    """Run ``trainer`` as ``train`` asks; always end its MLflow run with its true status."""
    algo = trainer.algorithm
    print(f"rlstack: training {algo.settings['env']} on {algo.device} ({'compiled' if algo.compile else 'eager'}), "
          f"MLflow run {trainer.run_id}", flush=True)
    # Always checkpointed: the end of the run, Ctrl-C, SIGTERM and a failure write the last completed step.
    checkpoint_dir = run.get("checkpoint_dir") or f"checkpoints/{trainer.run_id}"
    keep = run.get("keep_checkpoints") or 3
    stop = [HitsUpperBound("algorithm/steps", run["max_steps"])] if run.get("max_steps") else []
    progress = Progress(max_steps=run.get("max_steps"), start_env_steps=trainer.state["env/steps"])
    status, code = "FAILED", 1
    try:
        trainer.run(
            stop_conditions=stop, steps_per_eval=run.get("steps_per_eval"), callbacks=[progress, stop_request.requested],
            checkpoint_every=run.get("checkpoint_every"), checkpoint_dir=checkpoint_dir, keep_checkpoints=keep,
        )
        progress.close()
        if stop_request.signal is None:
            print(f"rlstack: last checkpoint {trainer.checkpoint_to(checkpoint_dir, keep)}")
            if run.get("save"):
                print(f"rlstack: policy exported to {trainer.export_policy(run['save'])}")
            status, code = "FINISHED", 0
        else:  # stopped between steps by a signal
            print(f"rlstack: interrupted; last completed step saved to {trainer.checkpoint_to(checkpoint_dir, keep)}")
            status, code = "KILLED", stop_request.exit_code()
    except KeyboardInterrupt:  # a second signal: Trainer.run saved the last completed step
        status, code = "KILLED", stop_request.exit_code()
        progress.close()
    finally:
        trainer.close(status)
        uri = mlflow.get_tracking_uri()
        print(f"rlstack: run {trainer.run_id} ({status}) logged to {uri}")
        print(f"rlstack: browse it with: mlflow ui --backend-store-uri {uri}", flush=True)
    return code


def _check_same_spaces(name: str, env: Any, observation_space: Any, action_space: Any) -> None:
    for what, theirs, ours in (("observation", env.observation_space, observation_space),
                               ("action", env.action_space, action_space)):
        if theirs != ours:
            raise ValueError(f"--env {name} has {what} space {theirs!r}, but the policy was trained on {ours!r}.")


def evaluate(args: argparse.Namespace) -> int:
    if args.num_envs < 1:
        raise ValueError(f"--num-envs must be a positive int, got {args.num_envs}.")
    source = Path(args.source)
    deterministic = not args.stochastic
    if source.is_dir():
        from .export import ExportedPolicy

        exported = ExportedPolicy(source)
        name = args.env or exported.config["env"]
        env = make_env(load_env(name), num_envs=args.num_envs)
        _check_same_spaces(name, env, exported.observation_space, exported.action_space)
        act = lambda obs: exported.predict(obs, deterministic)  # noqa: E731
    else:
        algo = Algorithm.from_checkpoint(source, load_env(args.env) if args.env else None, compile=False)
        env, name = algo.env, algo.settings["env"]
        if not env.compilable:  # gymnasium or 1.x envs are built for a number of envs: build --num-envs of them
            env = make_env(algo._env_spec, num_envs=args.num_envs, horizon=algo.hparams.horizon, config=algo.env_config)
        act = lambda obs: algo.predict(obs, deterministic)  # noqa: E731
    if not hasattr(env, "success"):
        raise ValueError(f"env {name} has no success measure (a 1.x stateful env); evaluate it with Trainer.eval().")
    stats = env.success(act, num_envs=args.num_envs, key=random.key(args.seed))
    print(f"rlstack: {name}, {args.num_envs} envs, {'deterministic' if deterministic else 'stochastic'} policy")
    for key, value in stats.items():
        print(f"{key:<28}{value:>12.4f}")
    return 0


def export(args: argparse.Namespace) -> int:
    from .export import export_policy

    algo = Algorithm.from_checkpoint(args.checkpoint, load_env(args.env) if args.env else None, compile=False)
    print(f"rlstack: policy exported to {export_policy(algo, args.directory)}")
    return 0


def plot(args: argparse.Namespace) -> int:
    from .plotting import plot_learning_curve

    print(f"rlstack: wrote {plot_learning_curve(args.run_id, args.output, args.metrics)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError

    try:
        return {"train": train, "eval": evaluate, "export": export, "plot": plot}[args.command](args)
    except FloatingPointError as e:  # training diverged; its last good step was checkpointed
        print(f"rlstack: error: {e}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, OSError, CheckpointError, mlflow.exceptions.MlflowException) as e:
        print(f"rlstack: error: {e}", file=sys.stderr)
        return 2
