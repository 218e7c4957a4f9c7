"""The one way back from a checkpoint to an Algorithm's arguments, for every
kind of run: a single run, a population, a recurrent policy (the kind is in
the checkpoint's settings and its model class, never in which loader is
called). :meth:`Algorithm.from_checkpoint <rlstack.Algorithm.from_checkpoint>`
and :meth:`Trainer.from_checkpoint <rlstack.Trainer.from_checkpoint>` build
from :func:`constructor_arguments`, then restore the state
(:func:`rlstack.shell.serialization.load_state_dict`).

Checkpoints of format version 6 are read too: :func:`upgrade` turns them into
the current version's dict first, so nothing below reads an old layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..core.device import resolve_device
from ..core.torch_optimizers import TORCH_OPTIMIZERS_BY_NAME
from ..envs import make_env
from ..integrations import checkpoint as ckpt
from .serialization import RSL_RL_PREFIX, load_state_dict, spaces_of

#: What a stored compile mode means as the ``compile`` argument.
COMPILE_ARGUMENT = {"eager": False, "compiled": True, "background": None}


def upgrade(data: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint dict in the current format (version 7): a version 6 one
    gains its settings' ``num_members`` (from its ``population`` record) and
    its compile mode as a name (``compile`` was a bool; no switch points).
    """
    data = dict(data)
    if data["version"] == 6:
        settings = dict(data["settings"])
        population = data.get("population")
        settings["num_members"] = population["num_members"] if population is not None else None
        settings["compile"] = "compiled" if settings["compile"] else "eager"
        settings["compile_switches"] = {}
        settings["compile_record"] = {}
        data["settings"] = settings
        data["version"] = ckpt.VERSION
    return data


def constructor_arguments(
    data: Mapping[str, Any],
    env: Any = None,
    *,
    model_cls: type | None = None,
    distribution_cls: type | None = None,
    device: Any = None,
    compile: bool | None = None,
) -> tuple[Any, dict[str, Any]]:
    """``(env, kwargs)`` for ``Algorithm(env, **kwargs)`` as the checkpoint
    ``data`` (current format) was built: its env, model and distribution
    classes found by name unless given, its settings and hyperparameters;
    ``device`` and ``compile`` default to the checkpoint's.

    Raises:
        CheckpointError: for an env whose spaces differ from the checkpoint's.
    """
    classes, settings = data["classes"], data["settings"]
    device = resolve_device(device if device is not None else settings["device"])
    if env is None and classes["env"].startswith("gymnasium:"):
        from ..integrations.gymnasium_adapter import gymnasium_env

        env = gymnasium_env(classes["env"].partition(":")[2])
    if env is None and classes["env"].startswith(RSL_RL_PREFIX):
        env = rsl_rl_factory(classes["env"].removeprefix(RSL_RL_PREFIX))
    env = env if env is not None else ckpt.resolve(classes["env"], "env")
    _check_spaces(data, env, device)
    mode = COMPILE_ARGUMENT[settings["compile"]] if compile is None else compile
    kwargs = {
        "env_config": settings["env_config"],
        "model_cls": model_cls or ckpt.resolve(classes["model_cls"], "model_cls"),
        "model_config": settings["model_config"],
        "distribution_cls": distribution_cls
        or ckpt.resolve(classes["distribution_cls"], "distribution_cls"),
        "optimizer_cls": TORCH_OPTIMIZERS_BY_NAME[settings["optimizer_cls"]],
        "optimizer_config": settings["optimizer_config"],
        "device": device,
        "seed": settings["seed"],
        "compile": mode,
        "compile_switches": settings["compile_switches"] or None,
        # CUDA graphs only where the checkpoint is resumed on a GPU.
        "cuda_graphs": settings.get("cuda_graphs", False) and device.type == "cuda",
        "allow_tf32": settings.get("allow_tf32", False),
        "num_members": settings["num_members"],
        **data["hparams"],
    }
    return env, kwargs


def rsl_rl_factory(spec: str) -> Any:
    """The rsl_rl env factory a checkpoint names (``module:function``),
    imported as ``rlstack train --env module:function`` imports it (the
    working directory first).

    Raises:
        CheckpointError: where it cannot be imported, naming ``--env``.
    """
    from ..integrations.env_names import load_env

    try:
        if ":" not in spec:
            raise ValueError("it was defined where it cannot be imported by name")
        return load_env(spec)
    except ValueError as e:
        reason = str(e.__cause__ or e)
        raise ckpt.CheckpointError(
            f"The checkpoint's env is the rsl_rl factory {spec!r}, which cannot be imported here "
            f"({reason}): pass env= (the CLI's --env module:factory)."
        ) from e


def restore(algorithm_cls: type, data: Mapping[str, Any], env: Any = None, **options: Any) -> Any:
    """``algorithm_cls(env, ...)`` (the :class:`~rlstack.Algorithm`, passed in:
    this module is below it) built as the checkpoint ``data`` says
    (:func:`constructor_arguments`, ``options`` as there) and its state
    restored; the one place a checkpoint becomes an Algorithm. A resumed run
    in the background compile mode switches the pieces its record names at
    the recorded updates.
    """
    data = upgrade(data)
    env, kwargs = constructor_arguments(data, env, **options)
    algo = algorithm_cls(env, **kwargs)
    load_state_dict(algo, data)
    strategy = algo.functions.strategy
    if strategy is not None and not kwargs["compile_switches"]:
        strategy.follow(data["settings"]["compile_record"])
    return algo


def _check_spaces(data: Mapping[str, Any], env: Any, device: torch.device) -> None:
    """Refuse, before building a model, an env whose spaces differ from the
    checkpoint's (e.g. a CartPole checkpoint resumed with ``env=Pendulum``).
    """
    config = data["hparams"]
    built = make_env(
        env,
        num_envs=config["num_envs"],
        horizon=config["horizon"],
        config=data["settings"]["env_config"],
        device=device,
    )
    name = getattr(env, "__name__", type(env).__name__)
    for key, here in spaces_of(built).items():
        if data["spaces"][key] != here:
            raise ckpt.CheckpointError(
                f"The checkpoint's {key} space is {data['spaces'][key]}, env {name}'s is {here}: "
                "pass the env it was trained on."
            )
