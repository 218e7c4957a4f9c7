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
from .values import DISABLED

#: Flags that are not settings of their own: each sets a key of a table.
_FOLDED = (
    "lr",
    "hiddens",
    "obs_window",
    "activation",
    "vectorization_mode",
    "random_episode_starts",
)


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
    env_config = {}
    if args.vectorization_mode is not None:
        env_config["vectorization_mode"] = args.vectorization_mode
    if args.random_episode_starts is not None:
        env_config["random_episode_starts"] = args.random_episode_starts
    if env_config:
        tables["env_config"] = env_config
    return {**settings, **tables}


def train_config(args: argparse.Namespace) -> RunSpec:
    """The run ``train``'s flags (over ``-f FILE``'s settings) specify.

    Raises:
        ValueError: for a flag meant for another kind of env, and see
            :meth:`rlstack.shell.spec.RunSpec.build`.
    """
    flags = train_settings(args)
    given = {
        k for k, v in vars(args).items() if v is not None and k not in ("command", "config_file")
    }
    from_file = read_toml(args.config_file) if args.config_file else {}
    settings = merge_settings(from_file, flags)
    _check_env_flags(args, str(settings.get("env") or ""))
    return RunSpec.build(settings, explicit=set(from_file) | given)


def _check_env_flags(args: argparse.Namespace, env: str) -> None:
    """Refuse a flag for one kind of env given with another kind, naming both.

    Raises:
        ValueError: for ``--vectorization-mode`` with an env that is not
            ``gymnasium:ID``, or ``--random-episode-starts`` with one that is
            not ``module:factory``.
    """
    if not env:
        return  # a resumed run: its checkpoint names the env
    if args.vectorization_mode is not None and not env.startswith("gymnasium:"):
        raise ValueError(
            "--vectorization-mode is for gymnasium vector envs (--env gymnasium:ID), "
            f"got --env {env}."
        )
    named_kind = env.startswith(("gymnasium:", "envpool:")) or ":" not in env
    if args.random_episode_starts is not None and named_kind:
        raise ValueError(
            f"--random-episode-starts is for rsl_rl envs (--env module:factory), got --env {env}."
        )
