"""``Trainer``: an :class:`Algorithm` plus evaluation, stop conditions,
checkpoints, export and MLflow tracking."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import mlflow

from . import checkpoint as ckpt
from .algorithm import Algorithm
from .conditions import Condition

Stats = dict[str, float]
#: A callback is called with the stats after every step, and again with the
#: ``eval/*`` stats after every evaluation; returning True stops ``run``.
Callback = Callable[[Stats], Any]


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]  # MLflow's limit on a param value


class Trainer:
    """Train with an :class:`Algorithm` and log every step to MLflow.

    Hyperparameters are logged once, at construction, to the active MLflow
    run; if none is active a run is started (and ended by :meth:`close` or
    when the process exits). The tracking store is MLflow's default
    (``MLFLOW_TRACKING_URI`` when set). Metrics are logged every step with
    ``step = env/steps``.

    Args:
        env: see :class:`Algorithm`.
        experiment_name: MLflow experiment for a run this Trainer starts
            (default: MLflow's active or default experiment).
        run_name: name of a run this Trainer starts.
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
        resume_run_id: str | None = None,
    ) -> None:
        self.algorithm = algorithm
        self._owns_run = mlflow.active_run() is None
        if self._owns_run:
            if experiment_name is not None:
                mlflow.set_experiment(experiment_name)
            mlflow.start_run(run_name=run_name, run_id=resume_run_id)
        self.run_id = mlflow.active_run().info.run_id
        params = {**self.algorithm.hparams.to_dict(), **self.algorithm.settings}
        mlflow.log_params({k: _param_value(v) for k, v in params.items()})

    @property
    def state(self) -> dict[str, int]:
        """Counters ``algorithm/collects``, ``algorithm/steps`` and
        ``env/steps``, read from the Algorithm (so they are checkpointed with it)."""
        algo = self.algorithm
        return {"algorithm/collects": algo.horizons, "algorithm/steps": algo.steps, "env/steps": algo.env_steps}

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
        horizons = max(1, self.algorithm.hparams.horizons_per_env_reset)
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

        Without stop conditions or callbacks this runs until interrupted. On
        Ctrl-C (``KeyboardInterrupt``) with a ``checkpoint_dir``, a final
        checkpoint of the last completed step is written before re-raising.

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
            keep_checkpoints: how many of the newest checkpoint files to keep.

        Returns:
            The stats of the last step.
        """
        for name, value in (("steps_per_eval", steps_per_eval), ("checkpoint_every", checkpoint_every)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"`{name}` must be a positive int or None, got {value!r}.")
        if checkpoint_every is not None and checkpoint_dir is None:
            raise ValueError("`checkpoint_every` needs a `checkpoint_dir` to write to.")
        if not isinstance(keep_checkpoints, int) or keep_checkpoints < 1:
            raise ValueError(f"`keep_checkpoints` must be a positive int, got {keep_checkpoints!r}.")
        stop_conditions = list(stop_conditions or [])
        eval_env_config = eval_env_config or env_config
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
                    return stats
        except KeyboardInterrupt:
            if checkpoint_dir is not None:
                path = self.checkpoint_to(checkpoint_dir, keep_checkpoints)
                print(f"\nrlstack: interrupted; last completed step saved to {path}", flush=True)
            raise

    # ------------------------------------------------------------- checkpoints
    def save_checkpoint(self, path: str | os.PathLike) -> str:
        """Write the whole train state (Algorithm state, counters, the MLflow
        run id) to ``path`` atomically; see :mod:`rlstack.checkpoint`."""
        data = self.algorithm.state_dict()
        data["trainer"] = {"run_id": self.run_id}
        return str(ckpt.atomic_save(data, path))

    def checkpoint_to(self, directory: str | os.PathLike, keep: int = 3) -> str:
        """Save ``directory/step-<N>.pt``, log it to the MLflow run under
        ``checkpoints/`` and delete all but the ``keep`` newest; returns its path."""
        directory = Path(directory)
        path = self.save_checkpoint(directory / f"step-{self.state['algorithm/steps']:08d}.pt")
        mlflow.log_artifact(path, artifact_path="checkpoints", run_id=self.run_id)
        for old in sorted(directory.glob("step-*.pt"))[:-keep]:
            old.unlink()
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
        run when it exists in the current tracking store (and no run is
        active), else in a new run. Arguments as in
        :meth:`Algorithm.from_checkpoint`.
        """
        data = ckpt.safe_load(path)
        algorithm = Algorithm._from_state_dict(
            data, env, model_cls=model_cls, distribution_cls=distribution_cls, device=device, compile=compile
        )
        trainer_data = data.get("trainer", {})
        run_id = trainer_data.get("run_id")
        if run_id is not None:
            try:
                mlflow.tracking.MlflowClient().get_run(run_id)
            except mlflow.exceptions.MlflowException:
                run_id = None
        trainer = cls.__new__(cls)
        trainer._attach(
            algorithm, experiment_name=experiment_name, run_name=run_name,
            resume_run_id=run_id if mlflow.active_run() is None else None,
        )
        return trainer

    # ------------------------------------------------------------------ export
    def export_policy(self, path: str | os.PathLike) -> str:
        """Write the current policy as an MLflow pyfunc model; see
        :func:`rlstack.export.export_policy`."""
        from .export import export_policy

        return export_policy(self.algorithm, path)

    # ---------------------------------------------------------------- tracking
    def _log(self, stats: Stats) -> None:
        mlflow.log_metrics(stats, step=int(self.state["env/steps"]), run_id=self.run_id)

    def close(self, status: str = "FINISHED") -> None:
        """End the MLflow run (with ``status``) if this Trainer started it."""
        if self._owns_run and mlflow.active_run() is not None and mlflow.active_run().info.run_id == self.run_id:
            mlflow.end_run(status=status)
        self._owns_run = False

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close("KILLED" if exc_type is KeyboardInterrupt else "FAILED" if exc_type else "FINISHED")
