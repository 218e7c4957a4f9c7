"""``Trainer``: an :class:`Algorithm` plus evaluation, stop conditions,
checkpoints, export and MLflow tracking."""

from __future__ import annotations

import os
import sys
import weakref
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import mlflow
from mlflow.tracking import MlflowClient

from . import checkpoint as ckpt
from . import tracking
from .algorithm import Algorithm
from .conditions import Condition

Stats = dict[str, float]
#: A callback is called with the stats after every step, and again with the
#: ``eval/*`` stats after every evaluation; returning True stops ``run``.
Callback = Callable[[Stats], Any]


class Trainer:
    """Train with an :class:`Algorithm` and log every step to MLflow.

    Every Trainer owns one MLflow run, addressed by its id (``run_id``),
    never through MLflow's process-wide active run: two Trainers in one
    process log to two runs. When a run is active around it (``with
    mlflow.start_run():``), the Trainer's run is nested under that one.
    Hyperparameters are logged once, at construction; metrics every step
    with ``step = env/steps``. A :meth:`step` called on its own writes its
    metrics at once; inside :meth:`run` they are written in batches, at most
    5 s apart (see :class:`rlstack.tracking.MetricLog`), and all pending ones
    when ``run`` returns or raises, before each checkpoint and on
    :meth:`close`, so a small step does not wait on the tracking store. The
    tracking store is MLflow's current one (``MLFLOW_TRACKING_URI`` when
    set).

    The run ends with :meth:`close` (or leaving a ``with Trainer(...)``
    block); a Trainer that is garbage collected or alive at process exit
    ends it too, ``FAILED`` or ``KILLED`` if its last :meth:`run` raised,
    else ``FINISHED``.

    Args:
        env: see :class:`Algorithm`.
        experiment_name: MLflow experiment of the run (created if missing;
            default: the enclosing run's, else MLflow's current experiment).
        run_name: name of the run.
        **kwargs: everything :class:`Algorithm` takes.

    Examples:
        >>> from rlstack.env import DiscreteDummyEnv
        >>> from rlstack.conditions import HitsUpperBound
        >>> trainer = Trainer(DiscreteDummyEnv)  # doctest: +SKIP
        >>> trainer.run(stop_conditions=[HitsUpperBound("returns/mean", -50.0)])  # doctest: +SKIP
    """

    def __init__(self, env: Any, /, *, experiment_name: str | None = None, run_name: str | None = None, **kwargs: Any) -> None:
        self._attach(Algorithm(env, **kwargs), experiment_name=experiment_name, run_name=run_name)

    def _attach(
        self, algorithm: Algorithm, *, experiment_name: str | None, run_name: str | None,
        resume_run_id: str | None = None, checkpoint_files: Sequence[str] = (),
    ) -> None:
        self.algorithm = algorithm
        self.tracking_uri = mlflow.get_tracking_uri()
        self._client = client = MlflowClient(self.tracking_uri)
        if resume_run_id is not None:
            client.update_run(resume_run_id, status="RUNNING")
            self.run_id = resume_run_id
        else:
            self.run_id = tracking.create_run(client, experiment_name, run_name)
        self._checkpoint_files = list(checkpoint_files)
        self._checkpoint_dirs: dict[Path, ckpt.CheckpointDir] = {}
        self._status = {"status": "FINISHED"}
        self._metrics = tracking.MetricLog(client, self.run_id)
        self._finalizer = weakref.finalize(
            self, tracking.end_run, client, self.run_id, self._status, self._checkpoint_dirs, self._metrics
        )
        tracking.log_params(client, self.run_id, {**algorithm.config.to_dict(), **algorithm.build_config})

    @property
    def state(self) -> dict[str, int]:
        """Counters ``algorithm/collects``, ``algorithm/steps`` and
        ``env/steps``, read from the Algorithm (so they are checkpointed with it)."""
        algo = self.algorithm
        return {"algorithm/collects": algo.collects, "algorithm/steps": algo.steps, "env/steps": algo.env_steps}

    # ------------------------------------------------------------------ steps
    def step(self, *, env_config: Mapping[str, Any] | None = None) -> Stats:
        """Collect one rollout, update once, log and return the merged stats
        (memory, collect and step stats and the counters
        ``algorithm/collects``, ``algorithm/steps``, ``env/steps``)."""
        stats = self.algorithm.memory_stats()
        if self.algorithm.trajectory is None:  # else resume a collected, not yet used rollout
            stats.update(self.algorithm.collect(env_config=env_config))
        stats.update(self.algorithm.step())
        stats.update(self.state)
        self._log(stats)
        return stats

    def eval(self, *, env_config: Mapping[str, Any] | None = None, deterministic: bool = True) -> Stats:
        """Evaluate the current policy on fresh envs (the training envs are
        left as they are) for ``max(1, horizons_per_env_reset)`` horizons.

        Returns:
            ``eval/returns/*`` and ``eval/rewards/*``, also logged to MLflow.
        """
        horizons = max(1, self.algorithm.config.horizons_per_env_reset)
        stats = self.algorithm.evaluate(env_config=env_config, deterministic=deterministic, horizons=horizons)
        stats = {f"eval/{k}": v for k, v in stats.items()}
        self._log(stats)
        return stats

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
    ) -> Stats:
        """Step until any stop condition (or callback) returns True.

        Without stop conditions or callbacks this runs until interrupted.
        With a ``checkpoint_dir``, the folder is checked and locked before
        the first step (see :class:`rlstack.checkpoint.CheckpointDir`), and
        a final checkpoint of the last completed step is written on Ctrl-C
        (``KeyboardInterrupt``, re-raised) and when a step turns non-finite
        (``FloatingPointError``, re-raised; the failed rollout is dropped, so
        the checkpoint is the last good step's).

        Args:
            stop_conditions: see :mod:`rlstack.conditions`; checked after
                every step on its stats (merged with eval stats on eval steps).
            steps_per_eval: run :meth:`eval` every this many steps.
            env_config: reset config for training envs.
            eval_env_config: reset config for evaluation envs (default
                ``env_config``).
            callbacks: see :data:`Callback`.
            checkpoint_every: write a checkpoint every this many steps.
            checkpoint_dir: where checkpoints go (``step-<N>.pt``); each is
                also logged to the MLflow run under ``checkpoints/``.
            keep_checkpoints: how many of this run's newest checkpoint files
                to keep in ``checkpoint_dir``.

        Returns:
            The stats of the last step.
        """
        for name, value in (("steps_per_eval", steps_per_eval), ("checkpoint_every", checkpoint_every)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"`{name}` must be a positive int or None, got {value!r}.")
        if checkpoint_every is not None and checkpoint_dir is None:
            raise ValueError("`checkpoint_every` needs a `checkpoint_dir` to write to.")
        if not isinstance(keep_checkpoints, int) or isinstance(keep_checkpoints, bool) or keep_checkpoints < 1:
            raise ValueError(f"`keep_checkpoints` must be a positive int, got {keep_checkpoints!r}.")
        if checkpoint_dir is not None:
            self._checkpoint_dir(checkpoint_dir, keep_checkpoints)  # fail now, not after training
        stop_conditions = list(stop_conditions or [])
        eval_env_config = eval_env_config or env_config
        self._metrics.buffering = True
        try:
            while True:
                stats = self.step(env_config=env_config)
                stop = [bool(callback(stats)) for callback in callbacks]
                if steps_per_eval and self.state["algorithm/steps"] % steps_per_eval == 0:
                    eval_stats = self.eval(env_config=eval_env_config)
                    stop += [bool(callback(eval_stats)) for callback in callbacks]
                    stats.update(eval_stats)
                stop += [condition(stats) for condition in stop_conditions]
                if checkpoint_every and self.state["algorithm/steps"] % checkpoint_every == 0:
                    self.checkpoint_to(checkpoint_dir, keep_checkpoints)
                if any(stop):
                    self._status["status"] = "FINISHED"
                    return stats
        except KeyboardInterrupt:
            self._status["status"] = "KILLED"
            if checkpoint_dir is not None:
                path = self.checkpoint_to(checkpoint_dir, keep_checkpoints)
                print(f"\nrlstack: interrupted; last completed step saved to {path}", flush=True)
            raise
        except FloatingPointError as e:
            self._status["status"] = "FAILED"
            if checkpoint_dir is not None:
                self.algorithm.trajectory = None  # drop the rollout that failed
                path = self.checkpoint_to(checkpoint_dir, keep_checkpoints)
                raise FloatingPointError(f"{e} Last good step saved to {path}.") from e
            raise
        except BaseException:
            self._status["status"] = "FAILED"
            raise
        finally:
            self._metrics.buffering = False
            self._flush_metrics(quiet=sys.exc_info()[0] is not None)  # never hide the error that ended the run

    # ------------------------------------------------------------- checkpoints
    def save_checkpoint(self, path: str | os.PathLike) -> str:
        """Write the whole train state (Algorithm state, counters, the MLflow
        run id) to ``path`` atomically; see :mod:`rlstack.checkpoint`."""
        return str(ckpt.atomic_save(self._state_dict(), path))

    def _state_dict(self) -> dict[str, Any]:
        data = self.algorithm.state_dict()
        written = [str(p.resolve()) for d in self._checkpoint_dirs.values() for p in d.written]
        data["trainer"] = {"run_id": self.run_id, "checkpoint_files": written or list(self._checkpoint_files)}
        return data

    def _checkpoint_dir(self, directory: str | os.PathLike, keep: int) -> ckpt.CheckpointDir:
        """The open (locked) :class:`~rlstack.checkpoint.CheckpointDir` for ``directory``."""
        key = Path(directory).resolve()
        if key not in self._checkpoint_dirs:
            self._checkpoint_dirs[key] = ckpt.CheckpointDir(
                directory, step=self.algorithm.steps, owner=f"MLflow run {self.run_id}", keep=keep,
                adopt=self._checkpoint_files,
            )
        self._checkpoint_dirs[key].keep = keep
        return self._checkpoint_dirs[key]

    def checkpoint_to(self, directory: str | os.PathLike, keep: int = 3) -> str:
        """Save ``directory/step-<N>.pt``, log it to the MLflow run under
        ``checkpoints/`` and delete all but the ``keep`` newest checkpoints
        this run wrote there; returns its path (which exists).

        Raises:
            ValueError: see :class:`rlstack.checkpoint.CheckpointDir`.
        """
        folder = self._checkpoint_dir(directory, keep)
        self._flush_metrics(quiet=sys.exc_info()[0] is not None)  # MLflow holds what the checkpoint holds
        folder.claim(self.algorithm.steps)  # so the state it saves names the file: a resumed run prunes it too
        path = str(folder.save(self._state_dict(), self.algorithm.steps))
        self._client.log_artifact(self.run_id, path, artifact_path="checkpoints")
        return path

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        env: Any = None,
        *,
        model_cls: type | None = None,
        distribution_cls: type | None = None,
        device: Any = None,
        compile: bool | None = None,
        experiment_name: str | None = None,
        run_name: str | None = None,
    ) -> "Trainer":
        """Rebuild a Trainer from :meth:`save_checkpoint` and continue.

        Continuing on the same device and mode reproduces the uninterrupted
        run's metrics exactly. Logging continues in the checkpoint's MLflow
        run when it exists in the current tracking store and
        ``experiment_name`` / ``run_name``, if given, are that run's; else a
        new run is started with them. Arguments as in
        :meth:`Algorithm.from_checkpoint`.
        """
        data = ckpt.safe_load(path)
        algorithm = Algorithm._from_state_dict(
            data, env, model_cls=model_cls, distribution_cls=distribution_cls, device=device, compile=compile
        )
        trainer_data = data.get("trainer", {})
        run_id = tracking.resumable_run_id(trainer_data.get("run_id"), experiment_name, run_name)
        trainer = cls.__new__(cls)
        trainer._attach(
            algorithm, experiment_name=experiment_name, run_name=run_name, resume_run_id=run_id,
            checkpoint_files=trainer_data.get("checkpoint_files", ()),
        )
        return trainer

    # ------------------------------------------------------------------ export
    def export_policy(self, path: str | os.PathLike) -> str:
        """Write the current policy as an MLflow pyfunc model; see
        :func:`rlstack.export.export_policy`."""
        from .export import export_policy

        return export_policy(self.algorithm, path)

    # ---------------------------------------------------------------- tracking
    def flush_metrics(self) -> None:
        """Write the metrics still pending (see the class docstring)."""
        self._metrics.flush()

    def _flush_metrics(self, quiet: bool) -> None:
        try:
            self._metrics.flush()
        except Exception:
            if not quiet:
                raise

    def _log(self, stats: Stats) -> None:
        self._metrics.log(stats, step=int(self.state["env/steps"]))

    def close(self, status: str | None = None) -> None:
        """End this Trainer's MLflow run and release its checkpoint folders
        (idempotent).

        Args:
            status: ``FINISHED``, ``FAILED`` or ``KILLED``; default: what the
                last :meth:`run` ended with (``FINISHED`` if it returned).
        """
        if status is not None:
            if status not in ("FINISHED", "FAILED", "KILLED"):
                raise ValueError(f"`status` must be 'FINISHED', 'FAILED' or 'KILLED', got {status!r}.")
            self._status["status"] = status
        if self._finalizer.detach() is not None:  # not closed before
            tracking.end_run(self._client, self.run_id, self._status, self._checkpoint_dirs, self._metrics, quiet=False)

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close("KILLED" if exc_type is KeyboardInterrupt else "FAILED" if exc_type else None)
