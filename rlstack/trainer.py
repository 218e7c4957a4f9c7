"""``Trainer``: an :class:`Algorithm` plus evaluation, stop conditions and MLflow."""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Sequence

import mlflow

from .algorithm import Algorithm
from .conditions import Condition

Stats = dict[str, float]
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
        self.algorithm = Algorithm(env, **kwargs)
        self.state = {"algorithm/collects": 0, "algorithm/steps": 0, "env/steps": 0}
        self._owns_run = mlflow.active_run() is None
        if self._owns_run:
            if experiment_name is not None:
                mlflow.set_experiment(experiment_name)
            mlflow.start_run(run_name=run_name)
        self.run_id = mlflow.active_run().info.run_id
        params = {**self.algorithm.hparams.to_dict(), **self.algorithm.settings}
        mlflow.log_params({k: _param_value(v) for k, v in params.items()})

    # ------------------------------------------------------------------ steps
    def step(self, *, env_config: Mapping[str, Any] | None = None) -> Stats:
        """Collect one rollout, update once, log and return the merged stats
        (memory, collect and step stats and the counters
        ``algorithm/collects``, ``algorithm/steps``, ``env/steps``)."""
        stats = self.algorithm.memory_stats()
        collect_stats = self.algorithm.collect(env_config=env_config)
        stats.update(collect_stats)
        stats.update(self.algorithm.step())
        self.state["algorithm/collects"] += 1
        self.state["algorithm/steps"] += 1
        self.state["env/steps"] += collect_stats["env/steps"]
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
    ) -> Stats:
        """Step until any stop condition (or callback) returns True.

        Without stop conditions or callbacks this runs until interrupted.

        Args:
            stop_conditions: see :mod:`rlstack.conditions`; checked after
                every step on its stats.
            steps_per_eval: run :meth:`eval` every this many steps.
            env_config: reset config for training envs.
            eval_env_config: reset config for evaluation envs (default
                ``env_config``).
            callbacks: called after every step with its stats (and eval
                stats, when an eval ran); returning True stops the run.

        Returns:
            The stats of the last step.
        """
        if steps_per_eval is not None and (not isinstance(steps_per_eval, int) or steps_per_eval < 1):
            raise ValueError(f"`steps_per_eval` must be a positive int or None, got {steps_per_eval!r}.")
        stop_conditions = list(stop_conditions or [])
        eval_env_config = eval_env_config or env_config
        while True:
            stats = self.step(env_config=env_config)
            if steps_per_eval and self.state["algorithm/steps"] % steps_per_eval == 0:
                stats.update(self.eval(env_config=eval_env_config))
            stop = [condition(stats) for condition in stop_conditions]
            stop += [bool(callback(stats)) for callback in callbacks]
            if any(stop):
                return stats

    # ---------------------------------------------------------------- tracking
    def _log(self, stats: Stats) -> None:
        mlflow.log_metrics(stats, step=int(self.state["env/steps"]), run_id=self.run_id)

    def close(self) -> None:
        """End the MLflow run if this Trainer started it."""
        if self._owns_run and mlflow.active_run() is not None and mlflow.active_run().info.run_id == self.run_id:
            mlflow.end_run()
        self._owns_run = False

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
