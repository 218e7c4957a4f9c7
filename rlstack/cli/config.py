"""``train``'s flags as the settings of a run specification
(:class:`~rlstack.shell.spec.RunSpec`): the flags given, folded into the
settings' vocabulary (``--lr`` into ``optimizer_config``, ``--hiddens`` into
``model_config``, ...), over a TOML file's (``-f``). The specification
merges them over the env's preset and checks them.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..shell.settings import merge_settings, read_toml
from ..shell.spec import RunSpec
from .arguments import DISABLED

#: Flags that are not settings of their own: each sets a key of a table.
_FOLDED = ("lr", "hiddens", "obs_window", "activation", "vectorization_mode")


def train_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the flags give (argparse's ``None``: not given; ``none``
    for an optional hyperparameter: ``None``).

    Raises:
        ValueError: for a ``--hiddens`` that is not comma-separated ints.
    """
    settings = {
        k: (None if v is DISABLED else v)
        for k, v in vars(args).items()
        if v is not None and k not in ("command", "config_file", *_FOLDED)
    }
    tables: dict[str, dict[str, Any]] = {}
    if args.lr is not None:
        tables["optimizer_config"] = {"lr": args.lr}
    model_config = {}
    if args.hiddens is not None:
        try:
            model_config["hiddens"] = tuple(int(h) for h in args.hiddens.split(","))
        except ValueError as e:
            raise ValueError(
                f"--hiddens must be comma-separated ints such as 64,64, got {args.hiddens!r}."
            ) from e
    if args.obs_window is not None:
        model_config["obs_window"] = args.obs_window
    if args.activation is not None:
        model_config["activation_fn"] = args.activation
    if model_config:
        tables["model_config"] = model_config
    if args.vectorization_mode is not None:
        tables["env_config"] = {"vectorization_mode": args.vectorization_mode}
    return {**settings, **tables}


def train_config(args: argparse.Namespace) -> RunSpec:
    """The run ``train``'s flags (over ``-f FILE``'s settings) specify.

    Raises:
        ValueError: see :meth:`rlstack.shell.spec.RunSpec.build`.
    """
    flags = train_settings(args)
    given = {
        k for k, v in vars(args).items() if v is not None and k not in ("command", "config_file")
    }
    from_file = read_toml(args.config_file) if args.config_file else {}
    return RunSpec.build(merge_settings(from_file, flags), explicit=set(from_file) | given)
