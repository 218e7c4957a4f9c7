"""The vocabulary of a run's settings, one for Python, TOML files and the command
line: which settings there are (the run's own, the Trainer's, the hyperparameters),
reading them from a TOML file, layering them, and turning names into what the
Trainer takes (an optimizer class, a distribution, a recurrent model).
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.config import AlgorithmConfig
from ..core.torch_optimizers import TORCH_OPTIMIZERS_BY_NAME
from ..policy.distributions import Normal, SquashedNormal
from ..policy.models import RecurrentModel

#: The hyperparameters (AlgorithmConfig's fields).
HPARAMS = frozenset(f.name for f in dataclasses.fields(AlgorithmConfig))


#: The hyperparameters of a recurrent model's sequences.
RECURRENT_HPARAMS = frozenset({"seq_len", "seqs_per_state_reset"})


#: ``model``: the default MLP, or the default recurrent model with this cell.
MODELS = ("mlp", "lstm", "gru")


#: ``distribution``: the action distribution of a Box action space, by name.
DISTRIBUTIONS = {"normal": Normal, "squashed": SquashedNormal}


#: The run's own settings and their types (hyperparameters are AlgorithmConfig's to check).
RUN_SETTINGS = {
    "env": (str, object),
    "preset": str,
    "max_steps": int,
    "target": (int, float),
    "anneal_lr": bool,
    "steps_per_eval": int,
    "checkpoint_dir": str,
    "checkpoint_every": int,
    "checkpoint_every_s": (int, float),
    "keep_checkpoints": int,
    "member_stop": str,
    "save": str,
    "resume": str,
    "experiment_name": str,
    "run_name": str,
}


#: Trainer settings that are not hyperparameters.
TRAINER_SETTINGS = frozenset(
    {
        "seed",
        "device",
        "compile",
        "compile_switches",
        "cuda_graphs",
        "allow_tf32",
        "env_config",
        "model_config",
        "optimizer_cls",
        "log_every_s",
        "optimizer_config",
        "num_members",
        "model",
        "distribution",
    }
)


#: What may be given with ``resume``: everything else is the checkpoint's.
RESUMABLE = frozenset(
    {
        "resume",
        "env",
        "max_steps",
        "target",
        "steps_per_eval",
        "checkpoint_every",
        "checkpoint_every_s",
        "checkpoint_dir",
        "log_every_s",
        "keep_checkpoints",
        "save",
        "experiment_name",
        "run_name",
        "device",
        "compile",
    }
)


def flag(name: str) -> str:
    """A setting as the command line names it: ``max_steps`` -> ``--max-steps``."""
    return "--" + name.replace("_", "-")


def merge_settings(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Settings layered, later over earlier: a table (``model_config``,
    ``optimizer_config``, ``env_config``) key by key, any other setting whole.
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key in ("model_config", "optimizer_config", "env_config"):
                merged[key] = {**merged.get(key, {}), **value}
            else:
                merged[key] = value
    return merged


def read_toml(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML file (the flat vocabulary of the module docstring;
    ``[model_config]``, ``[optimizer_config]``, ``[env_config]`` and
    ``[compile_switches]`` tables).

    Raises:
        ValueError: for a missing or malformed file, an unknown key or a
            value of the wrong type.
    """
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise ValueError(f"-f {str(path)!r}: no such file.") from e
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"-f {str(path)!r} is not valid TOML: {e}") from e
    unknown = sorted(set(data) - HPARAMS - set(RUN_SETTINGS) - TRAINER_SETTINGS)
    if unknown:
        raise ValueError(
            f"-f {str(path)!r} has unknown keys {unknown}; expected hyperparameters or "
            f"{sorted(set(RUN_SETTINGS) | TRAINER_SETTINGS)}."
        )
    for key, kind in RUN_SETTINGS.items():
        if key in data and (
            not isinstance(data[key], kind) or isinstance(data[key], bool) != (kind is bool)
        ):
            example = {int: "an integer such as 10", str: "a string", bool: "true or false"}.get(
                kind, "a number of seconds such as 300"
            )
            raise ValueError(f"-f {str(path)!r}: `{key}` must be {example}, got {data[key]!r}.")
    for key in ("model_config", "optimizer_config", "env_config", "compile_switches"):
        if key in data and not isinstance(data[key], dict):
            raise ValueError(
                f"-f {str(path)!r}: `{key}` must be a table ([{key}]), got {data[key]!r}."
            )
    return data


def resolve_trainer_settings(merged: Mapping[str, Any]) -> dict[str, Any]:
    """The Trainer's keyword arguments among the merged settings: names
    resolved (``optimizer_cls``, ``distribution``, ``model``), the model's
    settings checked against the model.
    """
    kwargs = {k: v for k, v in merged.items() if k not in RUN_SETTINGS}
    if isinstance(kwargs.get("optimizer_cls"), str):
        name = kwargs["optimizer_cls"]
        if name not in TORCH_OPTIMIZERS_BY_NAME:
            raise ValueError(
                f"optimizer_cls must be one of {sorted(TORCH_OPTIMIZERS_BY_NAME)}, got {name!r}."
            )
        kwargs["optimizer_cls"] = TORCH_OPTIMIZERS_BY_NAME[name]
    if "distribution" in kwargs:
        name = kwargs.pop("distribution")
        if name not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {list(DISTRIBUTIONS)}, got {name!r}.")
        kwargs["distribution_cls"] = DISTRIBUTIONS[name]
    model = kwargs.pop("model", None)
    if model is not None and model not in MODELS:
        raise ValueError(f"--model must be one of {list(MODELS)}, got {model!r}.")
    recurrent = sorted(k for k in RECURRENT_HPARAMS if k in kwargs)
    if recurrent and model not in ("lstm", "gru"):
        raise ValueError(
            f"{flag(recurrent[0])} is for a recurrent policy: add --model lstm or gru."
        )
    model_config = dict(kwargs.get("model_config", {}))
    if "hiddens" in model_config and isinstance(model_config["hiddens"], list):
        model_config["hiddens"] = tuple(model_config["hiddens"])
    if model in ("lstm", "gru"):
        if "obs_window" in model_config:
            raise ValueError(
                "--obs-window is for the MLP: a recurrent policy (--model lstm or gru) remembers "
                "through its hidden state."
            )
        model_config.pop("hiddens", None)  # a preset's MLP widths: not the recurrent model's
        model_config["cell"] = model
        kwargs["model_cls"] = RecurrentModel
    if "model_config" in kwargs or model_config:
        kwargs["model_config"] = model_config
    return kwargs
