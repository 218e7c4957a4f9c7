"""One run specification (:class:`RunSpec`): what a run is, built the same
way from Python, a TOML file and the command line's flags, validated once.

Its settings are one flat vocabulary: the run's own (``env``, ``preset``,
``max_steps``, ``anneal_lr``, the evaluation and checkpoint cadence, where it
is exported and where it resumes from, its MLflow names) and everything a
:class:`~rlstack.Trainer` takes (hyperparameters by their
:class:`~rlstack.core.config.AlgorithmConfig` names, ``seed``, ``device``,
``compile``, ``model``, ``distribution``, ``optimizer_cls``, the
``env_config``, ``model_config`` and ``optimizer_config`` tables, ...).
:meth:`RunSpec.build` merges an env's preset under them (``preset < file <
flags``); ``rlstack train`` only turns its flags into these settings.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..core.schedules import linear_anneal
from ..core.torch_optimizers import torch_optimizer_options
from ..envs import env_defaults
from ..integrations.env_names import load_env
from .conditions import HitsUpperBound
from .presets import PRESETS, preset_for
from .run_loop import CHECKPOINT_EVERY_S
from .settings import (
    RESUMABLE,
    RUN_SETTINGS,
    flag,
    merge_settings,
    read_toml,
    resolve_trainer_settings,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunSpec:
    """What a run is (frozen; validated in ``__post_init__``).

    Attributes:
        env: an env (class, instance or factory) or its name (see
            :func:`rlstack.integrations.env_names.load_env`).
        trainer: the :class:`~rlstack.Trainer` keyword arguments:
            hyperparameters and build arguments (documented on
            :func:`rlstack.shell.build.check_arguments`).
        preset: the preset the settings were merged over (``None``: none).
        max_steps: stop after this many updates (``None``: when interrupted).
        target: stop once the return reaches this (see
            :class:`~rlstack.shell.conditions.ReturnReaches`).
        anneal_lr: anneal the learning rate linearly to 0 over ``max_steps``.
        steps_per_eval: evaluate every this many updates.
        checkpoint_dir: where checkpoints go (default, for ``rlstack train``:
            ``checkpoints/<run id>``).
        checkpoint_every: also checkpoint every this many updates.
        checkpoint_every_s: checkpoint once this many seconds have passed
            since the last (0 or ``None``: off).
        keep_checkpoints: the newest checkpoints of the run kept.
        member_stop: how a population stops (see
            :class:`~rlstack.shell.run_loop.RunSchedule`).
        save: export the policy to this folder when the run ends.
        resume: a checkpoint this run continues (its settings are the run's).
        experiment_name: the MLflow experiment.
        run_name: the MLflow run's name.
        notes: what building the specification adapted, to report.
    """

    env: Any = None
    trainer: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    preset: str | None = None
    max_steps: int | None = None
    target: float | None = None
    anneal_lr: bool = False
    steps_per_eval: int | None = None
    checkpoint_dir: str | None = None
    checkpoint_every: int | None = None
    checkpoint_every_s: float | None = CHECKPOINT_EVERY_S
    keep_checkpoints: int = 3
    member_stop: str = "each"
    save: str | None = None
    resume: str | None = None
    experiment_name: str | None = None
    run_name: str | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.env is None and self.resume is None:
            raise ValueError("--env is required (or `env = ...` in the -f file), or --resume.")
        for name in ("max_steps", "checkpoint_every", "steps_per_eval", "keep_checkpoints"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 1):
                raise ValueError(f"{flag(name)} must be a positive int, got {value}.")
        if self.checkpoint_every_s is not None and not self.checkpoint_every_s >= 0:
            raise ValueError(
                "--checkpoint-every-s must be >= 0 seconds (0: off), got "
                f"{self.checkpoint_every_s}."
            )
        if self.member_stop not in ("each", "any", "mean"):
            raise ValueError(
                f"--member-stop must be 'each', 'any' or 'mean', got {self.member_stop!r}."
            )
        if self.anneal_lr and self.max_steps is None:
            raise ValueError(
                "--anneal-lr anneals the learning rate over the run: give --max-steps (updates)."
            )
        if self.anneal_lr and self.trainer.get("lr_schedule") is not None:
            raise ValueError("--anneal-lr sets lr_schedule: give one of them, not both.")

    @classmethod
    def build(cls, settings: Mapping[str, Any], explicit: set[str] | None = None) -> RunSpec:
        """The specification of ``settings`` (the flat vocabulary of the module
        docstring) merged over the env's preset; ``explicit`` names the
        settings the user gave (default: all of ``settings``), which a preset
        never overrides.

        Raises:
            ValueError: for a missing env, a bad value, or settings given with
                ``resume`` that a resumed run cannot change.
        """
        explicit = set(settings) if explicit is None else set(explicit)
        resume = settings.get("resume")
        if resume:
            fixed = sorted(explicit - RESUMABLE)
            if fixed:
                raise ValueError(
                    f"--resume continues with the checkpoint's hyperparameters and config; "
                    f"{', '.join(map(flag, fixed))} cannot change on resume (start a new run to "
                    "change them)."
                )
        preset = None if resume else _preset_name(settings.get("preset"), settings.get("env"))
        merged = merge_settings(PRESETS.get(preset, {}), settings)
        merged.pop("preset", None)
        _check_member_lists(merged)
        if merged.get("anneal_lr"):  # the annealing replaces a preset's schedule
            if "lr_schedule" in explicit:
                raise ValueError("--anneal-lr replaces lr_schedule: give one of them, not both.")
            merged.pop("lr_schedule", None)
            merged.pop("lr_schedule_kind", None)
        trainer = resolve_trainer_settings(merged)
        notes = _adapt_preset(trainer, explicit)
        if not resume:
            trainer.setdefault("seed", 0)
        run = {k: merged[k] for k in RUN_SETTINGS if k in merged and k != "preset"}
        return cls(**run, trainer=trainer, preset=preset, notes=tuple(notes))

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> RunSpec:
        """The specification of a TOML file's settings, ``overrides`` over them."""
        data = read_toml(path)
        return cls.build(merge_settings(data, overrides), explicit=set(data) | set(overrides))

    def trainer_arguments(self, env: Any) -> tuple[dict[str, Any], list[str]]:
        """The Trainer's keyword arguments for the loaded ``env``, with what the
        run's length does to the learning rate: with ``anneal_lr``, an
        ``lr_schedule`` to 0 over ``max_steps``
        (:func:`~rlstack.core.schedules.linear_anneal`); and notes to report.
        """
        kwargs = dict(self.trainer)
        if not self.anneal_lr:
            return kwargs, []
        per_update = _transitions_per_update(kwargs, env)
        lr, _ = torch_optimizer_options(
            kwargs.get("optimizer_cls", torch.optim.Adam), kwargs.get("optimizer_config")
        )
        kwargs["lr_schedule"] = linear_anneal(
            lr, updates=self.max_steps, transitions_per_update=per_update
        )
        kwargs["lr_schedule_kind"] = "interp"
        return kwargs, [
            f"learning rate {lr:g} annealed linearly to 0 over {self.max_steps} updates"
        ]

    def length(self, env: Any) -> tuple[int | None, list[str]]:
        """The run's length in updates: ``max_steps``, else where a schedule
        takes the learning rate to 0 (the run would learn nothing after it);
        and a note saying so.
        """
        schedule = self.trainer.get("lr_schedule")
        if (
            self.max_steps is not None
            or not schedule
            or self.trainer.get("lr_schedule_kind") != "interp"
            or schedule[-1][1] != 0
        ):
            return self.max_steps, []
        per_update = _transitions_per_update(self.trainer, env)
        steps = max(1, math.ceil(schedule[-1][0] / per_update) - 1)
        return steps, [
            f"the learning rate reaches 0 after {steps} updates ({steps * per_update:,} env "
            "steps): stopping there (give --max-steps, with --anneal-lr to anneal over it)"
        ]

    def run_arguments(self, max_steps: int | None, checkpoint_dir: str) -> dict[str, Any]:
        """:meth:`Trainer.run <rlstack.Trainer.run>`'s keyword arguments for a
        run of ``max_steps`` updates checkpointed into ``checkpoint_dir``.
        """
        return {
            "stop_conditions": [HitsUpperBound("algorithm/steps", max_steps)] if max_steps else [],
            "steps_per_eval": self.steps_per_eval,
            "checkpoint_every": self.checkpoint_every,
            "checkpoint_dir": checkpoint_dir,
            "keep_checkpoints": self.keep_checkpoints,
            "member_stop": self.member_stop,
            "checkpoint_every_s": self.checkpoint_every_s,
        }


def _preset_name(asked: str | None, env: Any) -> str | None:
    """The preset a run starts from: ``preset`` if given, else
    :func:`~rlstack.shell.presets.preset_for` the env (by its name).
    """
    if asked is not None:
        if asked not in PRESETS:
            raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {asked!r}.")
        return asked
    if not isinstance(env, str):
        return None
    if env.startswith(("gymnasium:", "envpool:")) and env not in PRESETS:
        return preset_for(env, load_env(env))
    return preset_for(env, None)


def _check_member_lists(settings: Mapping[str, Any]) -> None:
    """Per-member lists need a population: name the setting and the fix."""
    if settings.get("num_members") is not None:
        return
    lists = [
        k
        for k in ("gamma", "gae_lambda", "clip_param", "entropy_coeff")
        if isinstance(settings.get(k), list)
    ]
    if isinstance(settings.get("optimizer_config", {}).get("lr"), list):
        lists.insert(0, "lr")
    if lists:
        name = lists[0]
        values = settings.get(name) or settings["optimizer_config"]["lr"]
        raise ValueError(
            f"{flag(name)} has {len(values)} values: one value per member needs --num-members "
            "(or `num_members` in the -f file)."
        )


def _adapt_preset(kwargs: dict[str, Any], explicit: set[str]) -> list[str]:
    """Adapt a preset's ``sgd_minibatch_size`` that the user did not set to a
    buffer (``num_envs * horizon``) the user changed: the largest divisor of
    the buffer not above the preset's value. Returns notes to report.
    """
    size = kwargs.get("sgd_minibatch_size")
    if size is None or "sgd_minibatch_size" in explicit:
        return []
    num_envs, horizon = kwargs.get("num_envs", 8192), kwargs.get("horizon", 32)
    if not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (num_envs, horizon)
    ):
        return []  # AlgorithmConfig reports these
    buffer = num_envs * horizon
    if buffer % size == 0 and size <= buffer:
        return []
    kwargs["sgd_minibatch_size"] = max(
        d for d in range(1, min(buffer, size) + 1) if buffer % d == 0
    )
    return [
        f"sgd_minibatch_size {size} (the preset's) does not divide num_envs * horizon = {buffer}; "
        f"using {kwargs['sgd_minibatch_size']}"
    ]


def _transitions_per_update(kwargs: Mapping[str, Any], env: Any) -> int:
    """Env transitions one update trains on (``num_envs`` may come from the env)."""
    fitted = env_defaults(env) if env is not None else {}
    return kwargs.get("num_envs", fitted.get("num_envs", 8192)) * kwargs.get("horizon", 32)
