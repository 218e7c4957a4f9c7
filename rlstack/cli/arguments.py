"""Arguments of the command line: the parser, the names of its options and
env names; :mod:`rlstack.cli.config` assembles ``train``'s configuration
from them.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ..core.config import AlgorithmConfig
from ..envs import BUILTIN_ENVS
from ..policy.nn import ACTIVATIONS
from ..shell.settings import DISTRIBUTIONS, MODELS
from .help_text import field_help
from .values import float_or_list, none_or, parse_bool, parse_switches

# AlgorithmConfig fields that take one scalar on the command line.
_SCALAR_TYPES = {
    "int": int,
    "float": float,
    "bool": bool,
    "str": str,
    "float | None": float,
    "int | None": int,
}
# Hyperparameters a population's members may differ in: flags take comma-separated values.
PER_MEMBER_FLAGS = {"gamma", "gae_lambda", "clip_param", "entropy_coeff"}


_FIELD_HELP = field_help()


def build_parser() -> argparse.ArgumentParser:
    """``rlstack``'s argument parser: the ``train``, ``eval``, ``export`` and ``plot`` commands."""
    parser = argparse.ArgumentParser(
        prog="rlstack", description="Fast PPO for massively parallel envs."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a policy and log the run to MLflow")
    _add_run_options(train)
    _add_length_options(train)
    _add_policy_options(train)
    _add_population_options(train)
    _add_checkpoint_options(train)
    _add_hyperparameter_options(train)
    _add_other_commands(commands)
    return parser


def _add_run_options(train: argparse.ArgumentParser) -> None:
    """``train``'s options of the run: the env, its length and names, how it computes."""
    train.add_argument(
        "-f", "--config", dest="config_file", default=None, help="TOML file of configuration"
    )
    train.add_argument(
        "--env",
        default=None,
        help=f"one of {sorted(BUILTIN_ENVS)}, gymnasium:ID (e.g. gymnasium:CartPole-v1), "
        "envpool:ID, "
        "module:Class or module:factory (a function making an rsl_rl VecEnv)",
    )
    train.add_argument(
        "--preset",
        default=None,
        metavar="NAME",
        help="start from this preset (rlstack.presets.PRESETS; default: the env's own, "
        "'continuous' "
        "for a gymnasium env with Box actions, else none)",
    )
    train.add_argument(
        "--experiment-name", default=None, help="MLflow experiment (created if missing)"
    )
    train.add_argument("--run-name", default=None, help="MLflow run name")
    train.add_argument("--seed", type=int, default=None, help="the run's random seed (default 0)")
    train.add_argument("--device", default=None, help="cpu (default), cuda, cuda:1, ...")
    train.add_argument(
        "--compile",
        type=parse_bool,
        default=None,
        metavar="BOOL",
        help="compile before the first step (true), never (false); default: in the background, "
        "each piece switching in when compiled or loaded from the compile cache",
    )
    train.add_argument(
        "--no-compile", dest="compile", action="store_false", help="same as --compile false"
    )
    train.add_argument(
        "--compile-switches",
        type=parse_switches,
        default=None,
        metavar="PIECE=N,...",
        help="with the background compile: switch exactly these pieces at these updates, waiting "
        "for them (a run's MLflow params compile/<piece>), to replay that run bit for bit",
    )
    train.add_argument(
        "--cuda-graphs",
        type=parse_bool,
        default=None,
        metavar="BOOL",
        help="replay rollout and update as CUDA graphs (CUDA only; default false)",
    )
    train.add_argument(
        "--allow-tf32",
        type=parse_bool,
        default=None,
        metavar="BOOL",
        help="TF32 float32 matmuls on CUDA (default false)",
    )


def _add_length_options(train: argparse.ArgumentParser) -> None:
    """``train``'s options of the run's length."""
    train.add_argument(
        "--max-steps", type=int, default=None, help="stop after this many collect+update steps"
    )
    train.add_argument(
        "--target",
        type=float,
        default=None,
        help="stop once the episode return (per rollout where episodes never end) reaches this",
    )
    train.add_argument(
        "--anneal-lr",
        action="store_true",
        default=None,
        help="anneal the learning rate linearly to 0 over --max-steps (CleanRL's anneal_lr)",
    )


def _add_policy_options(train: argparse.ArgumentParser) -> None:
    """``train``'s options of the policy and the env's vectorisation."""
    train.add_argument(
        "--lr",
        type=float_or_list,
        default=None,
        help="learning rate (optimizer_config.lr); with --num-members, one value or one per "
        "member: 1e-3,3e-4",
    )
    train.add_argument(
        "--model",
        choices=MODELS,
        default=None,
        help="mlp (default), or a recurrent policy: lstm or gru (RecurrentTrainer; --seq-len, "
        "--seqs-per-state-reset)",
    )
    train.add_argument(
        "--hiddens", default=None, help="hidden widths of the default model, e.g. 64,64"
    )
    train.add_argument(
        "--activation",
        default=None,
        choices=sorted(ACTIVATIONS),
        help="the default model's activation (model_config.activation_fn; default relu)",
    )
    train.add_argument(
        "--distribution",
        default=None,
        choices=DISTRIBUTIONS,
        help="Box actions: normal (default; actions clipped to the bounds) or squashed (tanh onto "
        "them)",
    )
    train.add_argument(
        "--vectorization-mode",
        default=None,
        choices=("sync", "async"),
        help="gymnasium:ID: step the sub-envs in this process (sync, default) or in worker "
        "processes "
        "(async: every core steps envs; env_config.vectorization_mode)",
    )
    train.add_argument(
        "--random-episode-starts",
        action="store_true",
        default=None,
        help="module:factory (an rsl_rl env): spread the envs' first episodes over their length, "
        "as rsl_rl's init_at_random_ep_len (env_config.random_episode_starts)",
    )
    train.add_argument(
        "--obs-window",
        type=int,
        default=None,
        metavar="K",
        help="the default MLP sees the last K observations (model_config.obs_window; padded at "
        "episode starts)",
    )


def _add_checkpoint_options(train: argparse.ArgumentParser) -> None:
    """``train``'s options of evaluation, checkpoints, resuming and export."""
    train.add_argument(
        "--steps-per-eval",
        type=int,
        default=None,
        metavar="STEPS",
        help="evaluate the deterministic policy on fresh envs every STEPS steps (logged as eval/*)",
    )
    train.add_argument(
        "--resume",
        default=None,
        metavar="CHECKPOINT",
        help="continue from a checkpoint with its own hyperparameters (they cannot be changed; "
        "--max-steps, checkpoint and export options, --device and --compile can)",
    )
    train.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="STEPS",
        help="also write a checkpoint every STEPS steps",
    )
    train.add_argument(
        "--log-every-s",
        type=float,
        default=None,
        metavar="SECONDS",
        help="record a point of the run's metrics at most every SECONDS (default 1; 0: every "
        "step); "
        "the first and last steps and every evaluation are always recorded",
    )
    train.add_argument(
        "--checkpoint-every-s",
        type=float,
        default=None,
        metavar="SECONDS",
        help="also write a checkpoint once SECONDS of training have passed since the last one, so "
        "a "
        "hard kill loses at most that (default 300; 0 turns it off)",
    )
    train.add_argument(
        "--checkpoint-dir",
        default=None,
        help="default: checkpoints/<run id> (always written at the end, on Ctrl-C/SIGTERM and on "
        "failure)",
    )
    train.add_argument(
        "--keep-checkpoints",
        type=int,
        default=None,
        metavar="N",
        help="keep this run's N newest checkpoints (default 3)",
    )
    train.add_argument(
        "--save",
        default=None,
        metavar="DIR",
        help="export the policy (MLflow model) at the end; DIR must not exist or be empty",
    )


def _add_population_options(train: argparse.ArgumentParser) -> None:
    """``train``'s options of a population."""
    train.add_argument(
        "--num-members",
        type=int,
        default=None,
        metavar="K",
        help="train a population of K members in one process (vmapped); member k's seed is seed + "
        "k",
    )
    train.add_argument(
        "--member-stop",
        choices=("each", "any", "mean"),
        default=None,
        help="population: stop each member on its own (default), all when any member stops, or on "
        "the mean",
    )


def _add_hyperparameter_options(train: argparse.ArgumentParser) -> None:
    """One ``train`` flag per scalar field of
    :class:`~rlstack.core.config.AlgorithmConfig` (per-member ones take a list).
    """
    ppo_options = train.add_argument_group(
        "hyperparameters (see rlstack.AlgorithmConfig; default: the env's preset)"
    )
    for field in dataclasses.fields(AlgorithmConfig):
        kind = _SCALAR_TYPES.get(str(field.type))
        if kind is None:
            continue
        per_member = field.name in PER_MEMBER_FLAGS
        optional = str(field.type).endswith("| None")
        ppo_options.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            default=None,
            type=float_or_list
            if per_member
            else parse_bool
            if kind is bool
            else none_or(kind)
            if optional
            else kind,
            metavar=kind.__name__.upper()
            + ("[,...]" if per_member else "|none" if optional else ""),
            help=(_FIELD_HELP.get(field.name) or "")
            + (" One value, or one per member (comma-separated)." if per_member else ""),
        )


def _add_other_commands(commands: Any) -> None:
    """The ``eval``, ``export`` and ``plot`` commands."""
    evaluate = commands.add_parser("eval", help="print a policy's success measure on an env")
    evaluate.add_argument("source", help="a checkpoint file or an exported model directory")
    evaluate.add_argument(
        "--env", default=None, help="env (default: the one it was trained on, if built in)"
    )
    evaluate.add_argument(
        "--num-envs",
        type=int,
        default=None,
        help="envs to run the policy on (default: 1024 for a built-in env, the env's own "
        "default for one stepped on the CPU one by one, e.g. 8 for gymnasium:ID)",
    )
    evaluate.add_argument(
        "--stochastic", action="store_true", help="sample actions instead of the mode"
    )
    evaluate.add_argument(
        "--seed", type=int, default=0, help="seed of the env resets' random key (default 0)"
    )
    evaluate.add_argument(
        "--member", type=int, default=None, metavar="K", help="a population checkpoint's member K"
    )
    evaluate.add_argument(
        "--video",
        default=None,
        metavar="PATH",
        help="also record one episode on one env to PATH (.mp4 or .gif; needs rlstack[video]), "
        "logged to the checkpoint's MLflow run under videos/ where that run is in the store",
    )

    export = commands.add_parser(
        "export", help="export a checkpoint's policy (an MLflow model, ONNX or torch.export)"
    )
    export.add_argument("checkpoint", help="a checkpoint file written by train")
    export.add_argument(
        "directory", help="where to write it (for mlflow: must not exist or be empty)"
    )
    export.add_argument(
        "--format",
        choices=("mlflow", "onnx", "torch"),
        default="mlflow",
        help="mlflow (default): the whole policy as an MLflow model; onnx or torch: the "
        "deterministic "
        "actor alone, observation statistics folded in (actor.onnx or actor.pt2, and actor.json)",
    )
    export.add_argument("--env", default=None, help="env (needed for a user env)")
    export.add_argument(
        "--member", type=int, default=None, metavar="K", help="a population checkpoint's member K"
    )
    plot = commands.add_parser("plot", help="plot a run's learning curve to a PNG")
    plot.add_argument("run_id", help="the MLflow run id that train printed")
    plot.add_argument(
        "-o", "--output", default="learning_curve.png", help="PNG path (default learning_curve.png)"
    )
    plot.add_argument(
        "--metrics",
        nargs="*",
        default=None,
        help="metric names; eval/* ones go to a panel of their own (default: the episode return, "
        "episodes/return/mean, where the run's episodes end, else returns/mean; and eval's)",
    )
