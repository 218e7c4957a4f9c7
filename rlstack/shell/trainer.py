"""``Trainer``: an :class:`Algorithm` plus evaluation, stop conditions,
checkpoints (:class:`~rlstack.shell.checkpointer.Checkpointer`), export and
MLflow tracking (:class:`~rlstack.shell.run_log.RunLog`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..core.checks import check_log_every_s, check_run_arguments
from ..core.device import memory_stats
from ..integrations import atomic_files, distributed, tracking
from ..integrations import checkpoint as ckpt
from . import evaluation, loading, run_loop
from .algorithm import Algorithm
from .checkpointer import Checkpointer
from .conditions import Condition
from .run_log import RunLog, continuation
from .run_loop import CHECKPOINT_EVERY_S, RunSchedule
from .spec import RunSpec

Stats = dict[str, float]
#: A callback is called with the stats after every step, and again with the
#: ``eval/*`` stats after every evaluation; returning True stops ``run``.
Callback = Callable[[Stats], Any]


class Trainer:
    """Train with an :class:`Algorithm` and log every step to MLflow.

    Every Trainer owns one MLflow run, addressed by its id (``run_id``),
    never through MLflow's process-wide active run, nested under the run
    active around it if any; a population's has one nested run per member.
    How params and metrics are recorded, and how the runs end (:meth:`close`,
    leaving a ``with Trainer(...)`` block, garbage collection or process
    exit): :class:`~rlstack.shell.run_log.RunLog`. :meth:`step` and :meth:`eval`
    return the stats logged to the Trainer's run (a population's combined
    over its members); each member's are in :attr:`member_stats`.

    Args:
        env: see :class:`Algorithm`.
        experiment_name: MLflow experiment of the run (created if missing;
            default: the enclosing run's, else MLflow's current experiment).
        run_name: name of the run.
        log_every_s: shortest time between two recorded metric points of a
            run, in seconds (default 1; 0 records every step).
        num_members: a population's size (``None``: one run); see
            :func:`rlstack.shell.build.check_arguments` and :func:`rlstack.shell.population.grid`.
        **kwargs: everything :class:`Algorithm` takes.

    Examples:
        >>> from rlstack.env import DiscreteDummyEnv
        >>> from rlstack.shell.conditions import HitsUpperBound
        >>> trainer = Trainer(DiscreteDummyEnv)  # doctest: +SKIP
        >>> trainer.run(stop_conditions=[HitsUpperBound("returns/mean", -50.0)])  # doctest: +SKIP
    """

    def __init__(
        self,
        env: Any,
        /,
        *,
        experiment_name: str | None = None,
        run_name: str | None = None,
        num_members: int | None = None,
        log_every_s: float = 1.0,
        **kwargs: Any,
    ) -> None:
        tracking.require_mlflow()  # before anything is built
        check_log_every_s(log_every_s)
        algorithm = Algorithm(env, num_members=num_members, **kwargs)
        self._attach(
            algorithm, experiment_name=experiment_name, run_name=run_name, log_every_s=log_every_s
        )

    def _attach(
        self,
        algorithm: Algorithm,
        *,
        experiment_name: str | None,
        run_name: str | None,
        log_every_s: float = 1.0,
        continued: Mapping[str, Any] | None = None,
    ) -> None:
        self.algorithm = algorithm
        # A checkpoint's run, as rlstack.shell.run_log.continuation decided; else a new one.
        continued = dict(continued or {})
        checkpoint_files = continued.pop("checkpoint_files", ())
        folders: dict = {}  # the checkpoint folders the run releases when it ends
        #: The MLflow runs (:class:`~rlstack.shell.run_log.RunLog`).
        self.run_log = RunLog(
            algorithm,
            experiment_name=experiment_name,
            run_name=run_name,
            log_every_s=log_every_s,
            checkpoint_dirs=folders,
            **continued,
        )
        #: The checkpoint folders and files (:class:`~rlstack.shell.checkpointer.Checkpointer`).
        self.checkpoints = Checkpointer(
            checkpoint_files,
            folders=folders,
            client=self.run_log.client,
            run_id=self.run_log.run_id,
            uploads=self.run_log.artifacts,
        )
        self.run_id = self.run_log.run_id
        self.tracking_uri = self.run_log.tracking_uri
        #: The stats of the last step (and eval), one dict per member (one for a single run).
        self.member_stats: list[Stats] = []

    @property
    def member_run_ids(self) -> list[str]:
        """A population's nested MLflow runs, by member (``[]`` for one run)."""
        return list(self.run_log.members.run_ids)

    @property
    def state(self) -> dict[str, int]:
        """Counters ``algorithm/collects``, ``algorithm/steps`` and ``env/steps``
        (the Algorithm's; under torch.distributed, every rank's transitions).
        """
        algo = self.algorithm
        return {
            "algorithm/collects": algo.collects,
            "algorithm/steps": algo.steps,
            "env/steps": algo.env_steps * distributed.world_size(),
        }

    def step(self, *, env_config: Mapping[str, Any] | None = None) -> Stats:
        """Collect one rollout, update once, log and return the merged stats
        (memory, collect and step stats, :attr:`state` and, in the background
        compile mode, ``compile/switched``: the pieces switched so far); a
        population's members' stats go to their runs, their combination to
        its run and back.
        """
        algorithm = self.algorithm
        training = algorithm.members.training()
        memory = memory_stats(algorithm.device)
        collected: list[Stats] = [{} for _ in training]
        if algorithm.trajectory is None:  # else resume a collected, not yet used rollout
            collected = algorithm.collect_each(env_config=env_config)
        try:
            stepped = algorithm.step_each()
        finally:
            self.run_log.record_failed(algorithm.members)
        self.run_log.log_switches(algorithm.compile_switches)
        shared = {**memory, **self.state}
        if algorithm.compile == "background":
            shared["compile/switched"] = len(algorithm.compile_switches)
        self.member_stats = [{**c, **s, **shared} for c, s in zip(collected, stepped, strict=True)]
        return self.run_log.log_members(
            self.member_stats, training, algorithm.members, self.state["env/steps"]
        )

    def eval(
        self,
        *,
        env_config: Mapping[str, Any] | None = None,
        deterministic: bool = True,
        video: str | os.PathLike | None = None,
    ) -> Stats:
        """Evaluate the current policy on fresh envs (the training envs are
        left as they are) for ``max(1, horizons_per_env_reset)`` horizons;
        with ``video`` (a ``.mp4`` or ``.gif`` path), also record one episode
        on one env there and log it to the run under ``videos/`` (see
        :func:`rlstack.shell.evaluation.record_video`).

        Returns:
            ``eval/returns/*`` and ``eval/rewards/*``, also logged to MLflow.
        """
        if video is not None:
            recorded = evaluation.record_video(self.algorithm, video, deterministic, env_config)
            self.run_log.client.log_artifact(self.run_id, recorded["path"], artifact_path="videos")
        horizons = max(1, self.algorithm.config.horizons_per_env_reset)
        stats = self.algorithm.evaluate_each(
            env_config=env_config, deterministic=deterministic, horizons=horizons
        )
        member_stats = [{f"eval/{k}": v for k, v in member.items()} for member in stats]
        training = self.algorithm.members.training()
        previous = self.member_stats or [{}] * len(stats)
        self.member_stats = [
            {**old, **new} for old, new in zip(previous, member_stats, strict=True)
        ]
        return self.run_log.log_members(
            member_stats,
            training,
            self.algorithm.members,
            self.state["env/steps"],
            force=True,  # every evaluation is recorded
        )

    def run(
        self,
        *,
        stop_conditions: Sequence[Condition] | None = None,
        steps_per_eval: int | None = None,
        env_config: Mapping[str, Any] | None = None,
        eval_env_config: Mapping[str, Any] | None = None,
        callbacks: Sequence[Callback] = (),
        checkpoint_every: int | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        keep_checkpoints: int = 3,
        member_stop: str = "each",
        checkpoint_every_s: float | None = CHECKPOINT_EVERY_S,
    ) -> Stats:
        """Step until any stop condition (or callback) returns True.

        Without stop conditions or callbacks this runs until interrupted.
        With a ``checkpoint_dir``, the folder is checked and locked before
        the first step (see :class:`rlstack.integrations.checkpoint.CheckpointDir`), and
        a final checkpoint of the last completed step is written on Ctrl-C
        (``KeyboardInterrupt``, re-raised) and when a step turns non-finite
        (``FloatingPointError``, re-raised; the failed rollout is dropped, so
        the checkpoint is the last good step's).

        The arguments but ``callbacks`` (see :data:`Callback`) say when the
        run evaluates and checkpoints and how it stops; each is documented
        once, on :class:`~rlstack.shell.run_loop.RunSchedule`.

        Returns:
            The stats of the last step.
        """
        check_run_arguments(
            steps_per_eval=steps_per_eval,
            checkpoint_every=checkpoint_every,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every_s=checkpoint_every_s,
            keep_checkpoints=keep_checkpoints,
            member_stop=member_stop,
        )
        if checkpoint_dir is not None and distributed.rank() == 0:  # fail now, not after training
            self.checkpoints.open(checkpoint_dir, keep=keep_checkpoints, steps=self.algorithm.steps)
        schedule = RunSchedule(
            conditions=list(stop_conditions or []),
            member_stop=member_stop,
            steps_per_eval=steps_per_eval,
            checkpoint_every=checkpoint_every,
            checkpoint_every_s=checkpoint_every_s if checkpoint_dir is not None else None,
            checkpoint_dir=checkpoint_dir,
            keep_checkpoints=keep_checkpoints,
            env_config=env_config,
            eval_env_config=eval_env_config or env_config,
        )
        return run_loop.run(self, schedule, callbacks)

    def state_dict(self) -> dict[str, Any]:
        """The Algorithm's state dict, with the MLflow run ids, the
        checkpoint files of this run and the metric points the tracking
        store has not taken yet (what a resumed Trainer continues).
        """
        data = self.algorithm.state_dict()
        data["trainer"] = {
            "run_id": self.run_id,
            "checkpoint_files": self.checkpoints.written(),
            # What the tracking store has not taken yet (a server away): a killed run loses none.
            "unsent_metrics": self.run_log.metrics.unsent(),
        }
        if self.member_run_ids:
            data["trainer"]["member_run_ids"] = self.member_run_ids
        return data

    def save_checkpoint(self, path: str | os.PathLike) -> str:
        """Write :meth:`state_dict` to ``path`` atomically; see
        :mod:`rlstack.integrations.checkpoint`. Under torch.distributed every
        rank calls it and rank 0 writes.
        """
        data = self.state_dict()
        return str(atomic_files.atomic_save(data, path)) if distributed.rank() == 0 else str(path)

    def checkpoint_to(self, directory: str | os.PathLike, keep: int = 3) -> str:
        """Save ``directory/step-<N>.pt``, log it to the MLflow run under
        ``checkpoints/`` and delete all but the ``keep`` newest checkpoints
        this run wrote there; returns its path (which exists).

        Under torch.distributed every rank calls it (each rank's envs and
        key are gathered into the file) and rank 0 writes; the other ranks
        return ``""``.

        Raises:
            ValueError: see :class:`rlstack.integrations.checkpoint.CheckpointDir`.
        """
        if distributed.rank() != 0:
            self.state_dict()  # this rank's part goes to rank 0
            return ""
        self.checkpoints.open(directory, keep=keep, steps=self.algorithm.steps)
        self.run_log.flush(quiet=sys.exc_info()[0] is not None)  # MLflow holds what it holds
        path = self.checkpoints.save(
            directory, self.state_dict, keep=keep, steps=self.algorithm.steps
        )
        return str(path)

    def adopt_checkpoint_dir(self, folder: ckpt.CheckpointDir) -> None:
        """See :meth:`rlstack.shell.checkpointer.Checkpointer.adopt`."""
        self.checkpoints.adopt(folder)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        env: Any = None,
        *,
        experiment_name: str | None = None,
        run_name: str | None = None,
        log_every_s: float = 1.0,
        **options: Any,
    ) -> Trainer:
        """Rebuild a Trainer from :meth:`save_checkpoint` and continue.

        Continuing on the same device and mode reproduces the uninterrupted
        run's metrics exactly. Logging continues in the checkpoint's MLflow
        run as :func:`rlstack.shell.run_log.continuation` decides (else a
        new run, tagged with the one it branched from); loading alone
        changes nothing in MLflow. ``options`` as for
        :meth:`Algorithm.from_checkpoint`; ``log_every_s`` as in the constructor.
        """
        tracking.require_mlflow()  # before anything is built
        check_log_every_s(log_every_s)
        data = ckpt.safe_load(path)
        algorithm = loading.restore(Algorithm, data, env, **options)
        trainer = cls.__new__(cls)
        trainer._attach(
            algorithm,
            experiment_name=experiment_name,
            run_name=run_name,
            log_every_s=log_every_s,
            continued=continuation(data, experiment_name, run_name, path),
        )
        return trainer

    @classmethod
    def resume(cls, path: str | os.PathLike, env: Any = None, **settings: Any) -> Trainer:
        """Continue the run a checkpoint holds, as ``rlstack train --resume`` does:
        with the checkpoint's hyperparameters and config; ``settings`` (the
        vocabulary of :mod:`rlstack.shell.spec`) may change only what a resumed
        run can (:data:`~rlstack.shell.spec.RESUMABLE`: the device, the compile
        mode, the MLflow names, the run's length and cadences).

        Raises:
            ValueError: for a setting a resumed run cannot change.
        """
        spec = RunSpec.build({"resume": os.fspath(path), **settings})
        trainer = spec.trainer
        return cls.from_checkpoint(
            path,
            env,
            device=trainer.get("device"),
            compile=trainer.get("compile"),
            experiment_name=spec.experiment_name,
            run_name=spec.run_name,
            log_every_s=trainer.get("log_every_s", 1.0),
        )

    def export_policy(self, path: str | os.PathLike, member: int | None = None) -> str:
        """Write the current policy as an MLflow pyfunc model; see
        :func:`rlstack.integrations.export.export_policy`. A population exports one
        ``member`` (its index).
        """
        from ..integrations.export import export_policy

        count = self.algorithm.num_members
        if count is not None and member is None:
            raise ValueError(f"`member` must name the member to export, an int in [0, {count}).")
        if count is None and member is not None:
            raise ValueError(
                "`member` is for a population; this Trainer trains one policy, got "
                f"member={member!r}."
            )
        algorithm = self.algorithm if member is None else self.algorithm.member(member)
        return export_policy(algorithm, path)

    def flush_metrics(self) -> None:
        """Write the metrics still pending (see the class docstring)."""
        self.run_log.flush()

    def close(self, status: str | None = None) -> None:
        """End this Trainer's MLflow run and release its checkpoint folders
        (idempotent).

        Args:
            status: ``FINISHED``, ``FAILED`` or ``KILLED``; default: what the
                last :meth:`run` ended with (``FINISHED`` if it returned).
        """
        if status is not None:
            if status not in ("FINISHED", "FAILED", "KILLED"):
                raise ValueError(
                    f"`status` must be 'FINISHED', 'FAILED' or 'KILLED', got {status!r}."
                )
            self.run_log.status["status"] = status
        self.run_log.close()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close("KILLED" if exc_type is KeyboardInterrupt else "FAILED" if exc_type else None)
