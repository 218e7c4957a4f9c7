"""A run from its specification, start to end: what ``rlstack train`` does,
as a library function (:func:`train`); the command line only parses flags
into a :class:`~rlstack.shell.spec.RunSpec` and prints.

Everything that can refuse the start (an export folder that is not empty
or is another live run's, a checkpoint folder another live run holds, a
``max_steps`` a resumed run has reached) is checked before the Trainer
exists, so a refused start creates no MLflow run and changes no existing
one. The run is always checkpointed when it ends, stopped or not, and its
MLflow run ends with its true status.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..envs import env_defaults
from ..integrations import checkpoint as ckpt
from ..integrations import distributed, tracking
from ..integrations.env_names import load_env
from . import compile_worker
from .conditions import ReturnReaches
from .run_log import continuation
from .spec import RunSpec
from .trainer import Trainer

#: Prints one line of the run's report.
Say = Callable[[str], None]


def train(
    spec: RunSpec,
    *,
    callbacks: Sequence[Callable] = (),
    stopped: Callable[[], bool] = lambda: False,
    say: Say = print,
    on_start: Callable[[Trainer, int | None], Any] = lambda trainer, max_steps: None,
    on_end: Callable[[], Any] = lambda: None,
) -> str:
    """Run ``spec`` to its end: build (or resume) the Trainer, train,
    checkpoint, export where asked, and end the MLflow run; its status.

    Args:
        spec: the :class:`~rlstack.shell.spec.RunSpec`.
        callbacks: see :data:`rlstack.shell.trainer.Callback`.
        stopped: whether a stop was requested (a signal, between steps):
            the run then ends ``KILLED``, its last completed step saved.
        say: prints one line of the report.
        on_start: called with the Trainer and the run's length in updates
            (``None``: until stopped) before the first step.
        on_end: called once the steps are over, before the closing report.

    Returns:
        ``"FINISHED"``, or ``"KILLED"`` when stopped.

    Raises:
        ValueError, FileExistsError: a refused start (nothing created).
    """
    with contextlib.ExitStack() as held:
        if spec.save:
            from ..integrations.export import lock_export_path

            held.callback(lock_export_path(spec.save).close)  # empty, and no live run exports there
        resumed = _resumed(spec)
        folder = _open_folder(spec, resumed)
        if folder is not None:
            held.callback(folder.close)
        for note in spec.notes:
            say(f"rlstack: {note}")
        trainer, max_steps = _build(spec, say)
        if folder is not None:
            trainer.adopt_checkpoint_dir(folder)
        on_start(trainer, max_steps)
        return _run(trainer, spec, max_steps, callbacks, stopped, say, on_end)


def _build(spec: RunSpec, say: Say) -> tuple[Trainer, int | None]:
    """The Trainer (built, or resumed from ``spec.resume``) and the run's length."""
    env = load_env(spec.env) if isinstance(spec.env, str) else spec.env
    if spec.resume:
        given = {k: v for k, v in spec.trainer.items() if k in ("device", "compile", "log_every_s")}
        trainer = Trainer.resume(
            spec.resume,
            env,
            experiment_name=spec.experiment_name,
            run_name=spec.run_name,
            **given,
        )
        return trainer, spec.max_steps
    name = spec.env if isinstance(spec.env, str) else getattr(env, "__name__", type(env).__name__)
    notice = _preset_notice(spec) if spec.preset else defaults_notice(name, env, spec.trainer)
    kwargs, notes = spec.trainer_arguments(env)
    max_steps, length_notes = spec.length(env)
    for note in ([notice] if notice else []) + notes + length_notes:
        say(f"rlstack: {note}")
    trainer = Trainer(env, experiment_name=spec.experiment_name, run_name=spec.run_name, **kwargs)
    return trainer, max_steps


def _run(
    trainer: Trainer,
    spec: RunSpec,
    max_steps: int | None,
    callbacks: Sequence[Callable],
    stopped: Callable[[], bool],
    say: Say,
    on_end: Callable[[], Any],
) -> str:
    """Train; always end the MLflow run with its true status (re-raising what stopped it)."""
    algo = trainer.algorithm
    say(
        f"rlstack: training {algo.build_config['env']} on {algo.device} (compile: {algo.compile}), "
        f"MLflow run {trainer.run_id}"
    )
    # Always checkpointed: the end of the run, Ctrl-C, SIGTERM and a failure write the last step.
    directory = spec.checkpoint_dir or f"checkpoints/{trainer.run_id}"
    arguments = spec.run_arguments(max_steps, directory)
    target = ReturnReaches(spec.target) if spec.target is not None else None
    if target is not None:
        arguments["stop_conditions"].append(target)
    status = "FAILED"
    try:
        start = time.perf_counter()
        try:
            trainer.run(callbacks=[*callbacks, lambda _: stopped()], **arguments)
        finally:
            on_end()
        if target is not None:
            say(f"rlstack: {_target_report(trainer, target, time.perf_counter() - start)}")
        path = trainer.checkpoint_to(directory, spec.keep_checkpoints)
        if stopped():
            say(f"rlstack: interrupted; last completed step saved to {path}")
            status = "KILLED"
        else:
            say(f"rlstack: last checkpoint {path}")
            if spec.save:
                _save(trainer, spec.save, say)
            status = "FINISHED"
    except KeyboardInterrupt:  # a second signal: Trainer.run saved the last completed step
        status = "KILLED"
        raise
    finally:
        trainer.close(status)
        uri = tracking.require_mlflow().get_tracking_uri()
        say(f"rlstack: run {trainer.run_id} ({status}) logged to {uri}")
        say(f"rlstack: {browse_hint(uri, trainer.run_id)}")
        for pid in compile_worker.children():
            say(
                f"rlstack: process {pid} goes on compiling this run's pieces into the compile "
                "cache for the next run of the configuration, then ends"
            )
    return status


def _target_report(trainer: Trainer, target: ReturnReaches, seconds: float) -> str:
    """Whether the run reached its target return, where and when."""
    reached = target.value is not None and target.value >= target.target
    value = "no episode ended" if target.value is None else f"return {target.value:.1f}"
    return (
        f"target {target.target:g} {'reached' if reached else 'not reached'}: {value} after "
        f"{trainer.state['env/steps']:,} env steps, {seconds:.1f} s of training"
    )


def _resumed(spec: RunSpec) -> dict[str, Any] | None:
    """For a resumed run: the checkpoint's step, the MLflow run it continues
    (``None`` where a new run starts) and its files; refuses a ``max_steps``
    it has reached.
    """
    if not spec.resume:
        return None
    data = ckpt.safe_load(spec.resume)
    steps = data["counters"]["steps"]
    if spec.max_steps is not None and spec.max_steps <= steps:
        raise ValueError(
            f"--max-steps {spec.max_steps}: {spec.resume} is at step {steps} already; give a "
            "larger --max-steps to train on (steps count from the run's start)."
        )
    # As the Trainer will decide it: a new run adopts (and so rotates away) none of another's files.
    logging = continuation(data, spec.experiment_name, spec.run_name, spec.resume)
    return {
        "steps": steps,
        "run_id": logging["resume_run_id"],
        "files": logging["checkpoint_files"],
    }


def _open_folder(spec: RunSpec, resumed: dict[str, Any] | None) -> Any:
    """The checkpoint folder, opened (checked and locked) before any MLflow run
    is touched, where its name is known before the run exists: ``checkpoint_dir``,
    or a resumed run's ``checkpoints/<run id>``. ``None`` for a new run's own
    ``checkpoints/<new id>`` (nothing can hold it), and on ranks but 0.
    """
    directory = spec.checkpoint_dir or (
        f"checkpoints/{resumed['run_id']}" if resumed and resumed["run_id"] else None
    )
    if directory is None or distributed.rank() != 0:
        return None
    return ckpt.CheckpointDir(
        directory,
        step=resumed["steps"] if resumed else 0,
        owner="rlstack train",
        keep=spec.keep_checkpoints,
        adopt=resumed["files"] if resumed else (),
    )


def defaults_notice(name: str, env: Any, given: Mapping[str, Any]) -> str:
    """The one line for an env without a preset: which defaults it runs with
    besides the settings ``given`` (none, where they set the sizes of the run).
    """
    if set(given) >= {"num_envs", "horizon", "sgd_minibatch_size", "num_sgd_iters"}:
        return f"no preset for {name}: running the hyperparameters given."
    fitted = {k: v for k, v in env_defaults(env).items() if k not in given}
    fit = ", ".join(f"{k}={v}" for k, v in fitted.items())
    return (
        f"no preset for {name}: rlstack 1.x's defaults (rlstack.AlgorithmConfig)"
        + (f" with {fit} to fit the env" if fit else "")
        + "; set hyperparameters with flags or -f FILE."
    )


def _preset_notice(spec: RunSpec) -> str | None:
    """The one line for an env that runs a preset not named after it."""
    if spec.preset == spec.env:
        return None
    note = (
        ": CleanRL's ppo_continuous_action settings, for Box actions"
        if spec.preset == "continuous"
        else ""
    )
    return (
        f"preset {spec.preset} for {spec.env} (rlstack.presets.PRESETS[{spec.preset!r}]{note}); "
        "--preset NAME, flags or -f FILE change it."
    )


def browse_hint(uri: str, run_id: str | None) -> str:
    """How to see a run: a tracking server's own page, or ``mlflow ui`` over a local store."""
    if uri.startswith(("http://", "https://")):
        return f"browse it at {uri.rstrip('/')}/#/runs/{run_id}"
    return f"browse it with: mlflow ui --backend-store-uri {uri}"


def _save(trainer: Trainer, directory: str, say: Say) -> None:
    """Export the policy to ``directory``; a population's members to ``directory/member-<k>``."""
    members = trainer.algorithm.num_members
    if members is None:
        say(f"rlstack: policy exported to {trainer.export_policy(directory)}")
        return
    for k in range(members):
        path = trainer.export_policy(Path(directory) / f"member-{k}", member=k)
        say(f"rlstack: member {k} exported to {path}")
