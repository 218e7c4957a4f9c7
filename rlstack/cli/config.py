"""How ``train``'s configuration is assembled, in increasing priority: the
env's preset (:mod:`rlstack.shell.presets`), a TOML file (``-f``), command-line
flags; then checked, before anything is built.
"""

from __future__ import annotations

import argparse
import math
import tomllib
from pathlib import Path
from typing import Any

import torch

from ..core.schedules import linear_anneal
from ..core.torch_optimizers import TORCH_OPTIMIZERS_BY_NAME, torch_optimizer_options
from ..envs import env_defaults
from ..policy.distributions import Normal, SquashedNormal
from ..shell.presets import PRESETS, preset_for
from .arguments import (
    DISABLED,
    DISTRIBUTIONS,
    HPARAMS,
    MODELS,
    PER_MEMBER_FLAGS,
    RECURRENT_HPARAMS,
    RESUME_OPTIONS,
    RUN_OPTION_TYPES,
    RUN_OPTIONS,
    TRAINER_OPTIONS,
)


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
    unknown = sorted(set(data) - HPARAMS - RUN_OPTIONS - TRAINER_OPTIONS)
    if unknown:
        raise ValueError(
            f"-f {path!r} has unknown keys {unknown}; expected hyperparameters or "
            f"{sorted(RUN_OPTIONS | TRAINER_OPTIONS)}."
        )
    for key, kind in RUN_OPTION_TYPES.items():
        if key in data and (
            not isinstance(data[key], kind) or isinstance(data[key], bool) != (kind is bool)
        ):
            example = {int: "an integer such as 10", str: "a string", bool: "true or false"}.get(
                kind, "a number of seconds such as 300"
            )
            raise ValueError(f"-f {path!r}: `{key}` must be {example}, got {data[key]!r}.")
    for key in ("model_config", "optimizer_config", "env_config"):
        if key in data and not isinstance(data[key], dict):
            raise ValueError(f"-f {path!r}: `{key}` must be a table ([{key}]), got {data[key]!r}.")
    return data


def largest_divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of ``n`` that is at most ``limit`` (>= 1)."""
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def _adapt_preset(config: dict[str, Any], explicit: set[str]) -> list[str]:
    """Adapt a preset's ``sgd_minibatch_size`` that the user did not set to
    a buffer (``num_envs * horizon``) the user changed: the largest divisor
    of the buffer not above the preset's value. Returns notes to print.
    """
    size = config.get("sgd_minibatch_size")
    if size is None or "sgd_minibatch_size" in explicit:
        return []
    num_envs, horizon = config.get("num_envs", 8192), config.get("horizon", 32)
    if not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (num_envs, horizon)
    ):
        return []  # AlgorithmConfig reports these
    buffer = num_envs * horizon
    if buffer % size == 0 and size <= buffer:
        return []
    config["sgd_minibatch_size"] = largest_divisor_at_most(buffer, size)
    return [
        f"sgd_minibatch_size {size} (the preset's) does not divide num_envs * horizon = {buffer}; "
        f"using {config['sgd_minibatch_size']}"
    ]


def _check_model(config: dict[str, Any]) -> None:
    """``--model`` is one of :data:`MODELS`; recurrent hyperparameters need a recurrent one."""
    model = config.get("model")
    if model is not None and model not in MODELS:
        raise ValueError(f"--model must be one of {list(MODELS)}, got {model!r}.")
    recurrent_flags = sorted(k for k in RECURRENT_HPARAMS if k in config)
    if recurrent_flags and model not in ("lstm", "gru"):
        raise ValueError(
            f"--{recurrent_flags[0].replace('_', '-')} is for a recurrent policy: add --model lstm "
            "or gru."
        )
    if model in ("lstm", "gru") and "obs_window" in config.get("model_config", {}):
        raise ValueError(
            "--obs-window is for the MLP: a recurrent policy (--model lstm or gru) remembers "
            "through "
            "its hidden state."
        )


def _check_member_lists(config: dict[str, Any]) -> None:
    """Per-member lists need a population: name the option and the fix."""
    if config.get("num_members") is not None:
        return
    lists = [k for k in sorted(PER_MEMBER_FLAGS) if isinstance(config.get(k), list)]
    if isinstance(config.get("optimizer_config", {}).get("lr"), list):
        lists.insert(0, "lr")
    if lists:
        name = lists[0]
        raise ValueError(
            f"--{name.replace('_', '-')} has "
            f"{len(config.get(name) or config['optimizer_config']['lr'])} values: "
            "one value per member needs --num-members (or `num_members` in the -f file)."
        )


def _apply_model_flags(config: dict[str, Any], args: argparse.Namespace) -> None:
    """``--lr``, ``--hiddens``, ``--obs-window``, ``--activation`` and
    ``--vectorization-mode`` into the optimizer, model and env configs, and
    ``distribution`` (a flag or a TOML value) into ``distribution_cls``.
    """
    if args.lr is not None:
        config["optimizer_config"] = {**config.get("optimizer_config", {}), "lr": args.lr}
    if args.hiddens is not None:
        try:
            config["model_config"] = {
                **config.get("model_config", {}),
                "hiddens": tuple(int(h) for h in args.hiddens.split(",")),
            }
        except ValueError as e:
            raise ValueError(
                f"--hiddens must be comma-separated ints such as 64,64, got {args.hiddens!r}."
            ) from e
    if args.obs_window is not None:
        config["model_config"] = {**config.get("model_config", {}), "obs_window": args.obs_window}
    if args.activation is not None:
        config["model_config"] = {
            **config.get("model_config", {}),
            "activation_fn": args.activation,
        }
    if args.vectorization_mode is not None:
        config["env_config"] = {
            **config.get("env_config", {}),
            "vectorization_mode": args.vectorization_mode,
        }
    if "distribution" in config:
        name = config.pop("distribution")
        if name not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {list(DISTRIBUTIONS)}, got {name!r}.")
        config["distribution_cls"] = {"normal": Normal, "squashed": SquashedNormal}[name]
    if "hiddens" in config.get("model_config", {}) and isinstance(
        config["model_config"]["hiddens"], list
    ):
        config["model_config"]["hiddens"] = tuple(config["model_config"]["hiddens"])


def train_config(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(run_options, trainer_kwargs)`` from preset < TOML < flags.

    ``run_options["notes"]`` lists the adaptations made to preset values.

    Raises:
        ValueError: for a missing env, a bad value, or hyperparameters given
            with ``--resume`` (a resumed run keeps the checkpoint's).
    """
    from_file = read_toml(args.config_file) if args.config_file else {}
    model_flags = ("lr", "hiddens", "obs_window", "activation", "vectorization_mode")
    flags = {
        k: v
        for k, v in vars(args).items()
        if v is not None and k not in ("command", "config_file", *model_flags)
    }
    explicit = (
        set(from_file)
        | set(flags)
        | {name for name in model_flags if getattr(args, name) is not None}
    )
    env = flags.get("env", from_file.get("env"))
    resume = flags.get("resume", from_file.get("resume"))
    if resume:
        fixed = sorted(explicit - RESUME_OPTIONS)
        if fixed:
            names = ", ".join("--" + k.replace("_", "-") for k in fixed)
            raise ValueError(
                f"--resume continues with the checkpoint's hyperparameters and config; {names} "
                "cannot change on "
                "resume (start a new run to change them)."
            )
    elif env is None:
        raise ValueError("--env is required (or `env = ...` in the -f file).")
    preset = None if resume else _preset_name(flags.get("preset", from_file.get("preset")), env)
    config: dict[str, Any] = (
        {}
        if preset is None
        else {k: (dict(v) if isinstance(v, dict) else v) for k, v in PRESETS[preset].items()}
    )
    for source in (from_file, flags):
        for key, value in source.items():
            if key in ("model_config", "optimizer_config", "env_config"):
                config[key] = {**config.get(key, {}), **value}
            else:
                config[key] = None if value is DISABLED else value
    _apply_model_flags(config, args)
    if isinstance(config.get("optimizer_cls"), str):
        name = config["optimizer_cls"]
        if name not in TORCH_OPTIMIZERS_BY_NAME:
            raise ValueError(
                f"optimizer_cls must be one of {sorted(TORCH_OPTIMIZERS_BY_NAME)}, got {name!r}."
            )
        config["optimizer_cls"] = TORCH_OPTIMIZERS_BY_NAME[name]
    _check_member_lists(config)
    _check_model(config)
    notes = _adapt_preset(config, explicit)
    if not resume:
        config.setdefault("seed", 0)
    run = {k: config.pop(k) for k in list(config) if k in RUN_OPTIONS}
    for name in ("max_steps", "checkpoint_every", "steps_per_eval", "keep_checkpoints"):
        if run.get(name) is not None and run[name] < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive int, got {run[name]}.")
    if run.get("checkpoint_every_s") is not None and not run["checkpoint_every_s"] >= 0:
        raise ValueError(
            f"--checkpoint-every-s must be >= 0 seconds (0: off), got {run['checkpoint_every_s']}."
        )
    if run.get("anneal_lr") and run.get("max_steps") is None:
        raise ValueError(
            "--anneal-lr anneals the learning rate over the run: give --max-steps (updates)."
        )
    if run.get("anneal_lr") and "lr_schedule" in explicit:
        raise ValueError("--anneal-lr replaces lr_schedule: give one of them, not both.")
    run["notes"], run["preset"] = notes, preset
    return run, config


def _preset_name(asked: str | None, env: str) -> str | None:
    """The preset ``train`` starts from: ``--preset`` (or ``preset`` in the
    -f file), else :func:`~rlstack.shell.presets.preset_for` the env.
    """
    if asked is not None:
        if asked not in PRESETS:
            raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {asked!r}.")
        return asked
    if env.startswith(("gymnasium:", "envpool:")) and env not in PRESETS:
        from .arguments import load_env

        return preset_for(env, load_env(env))
    return preset_for(env, None)


def fit_lr_schedule(run: dict[str, Any], kwargs: dict[str, Any], env: Any) -> list[str]:
    """What the run's length does to the learning rate, once the env is known
    (``num_envs`` may come from it): with ``--anneal-lr``, ``lr_schedule``
    anneals linearly to 0 over ``--max-steps``
    (:func:`~rlstack.core.schedules.linear_anneal`); without ``--max-steps``,
    a schedule whose rate reaches 0 ends the run at that update. Updates
    ``run`` and ``kwargs``; returns notes to print.
    """
    fitted = env_defaults(env) if env is not None else {}
    per_update = kwargs.get("num_envs", fitted.get("num_envs", 8192)) * kwargs.get("horizon", 32)
    if run.get("anneal_lr"):
        lr, _ = torch_optimizer_options(
            kwargs.get("optimizer_cls", torch.optim.Adam), kwargs.get("optimizer_config")
        )
        kwargs["lr_schedule"] = linear_anneal(
            lr, updates=run["max_steps"], transitions_per_update=per_update
        )
        kwargs["lr_schedule_kind"] = "interp"
        return [f"learning rate {lr:g} annealed linearly to 0 over {run['max_steps']} updates"]
    schedule = kwargs.get("lr_schedule")
    if (
        run.get("max_steps") is None
        and schedule
        and kwargs.get("lr_schedule_kind") == "interp"
        and schedule[-1][1] == 0
    ):
        run["max_steps"] = max(1, math.ceil(schedule[-1][0] / per_update) - 1)
        return [
            f"the learning rate reaches 0 after {run['max_steps']} updates "
            f"({run['max_steps'] * per_update:,} env "
            "steps): stopping there (give --max-steps, with --anneal-lr to anneal over it)"
        ]
    return []
