"""``Trainer``: an :class:`Algorithm` plus evaluation, stop conditions,
checkpoints, export and MLflow tracking.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..core.config import check_log_every_s, check_run_arguments
from ..integrations import checkpoint as ckpt
from ..integrations import distributed, tracking
from .algorithm import Algorithm
from .conditions import Condition
from .population import Population
from .recurrent import RecurrentAlgorithm
from .run_log import RunLog
from .trainer_checkpoints import TrainerCheckpoints

Stats = dict[str, float]
#: ``Trainer.run``'s default ``checkpoint_every_s``: at most this much training (in seconds) is lost
# to a hard kill.
CHECKPOINT_EVERY_S = 300.0
_clock = time.monotonic  # the clock of timed checkpoints (a test replaces it)
#: A callback is called with the stats after every step, and again with the
#: ``eval/*`` stats after every evaluation; returning True stops ``run``.
Callback = Callable[[Stats], Any]


class Trainer(TrainerCheckpoints):
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
        num_members: train a population of this many members (``None``:
            one run). The hyperparameters in
            :data:`rlstack.shell.population.PER_MEMBER` may then be lists of
            ``num_members`` values (``optimizer_config={"lr": [...]}`` for
            the learning rate), and ``seed`` a list; see
            :func:`rlstack.shell.population.grid`.
        **kwargs: everything :class:`Algorithm` takes.

    Examples:
        >>> from rlstack.env import DiscreteDummyEnv
        >>> from rlstack.shell.conditions import HitsUpperBound
        >>> trainer = Trainer(DiscreteDummyEnv)  # doctest: +SKIP
        >>> trainer.run(stop_conditions=[HitsUpperBound("returns/mean", -50.0)])  # doctest: +SKIP
    """

    #: What the Trainer trains (:class:`RecurrentTrainer`:
    # :class:`~rlstack.shell.recurrent.RecurrentAlgorithm`).
    _algorithm_cls: type = Algorithm

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
        # Population is Algorithm with num_members (the class that loads population checkpoints).
        algorithm_cls = (
            Population
            if num_members is not None and self._algorithm_cls is Algorithm
            else self._algorithm_cls
        )
        algorithm = algorithm_cls(env, num_members=num_members, **kwargs)
        self._attach(
            algorithm, experiment_name=experiment_name, run_name=run_name, log_every_s=log_every_s
        )

    def _attach(
        self,
        algorithm: Algorithm,
        *,
        experiment_name: str | None,
        run_name: str | None,
        resume_run_id: str | None = None,
        checkpoint_files: Sequence[str] = (),
        member_run_ids: Sequence[str | None] | None = None,
        log_every_s: float = 1.0,
    ) -> None:
        self.algorithm = algorithm
        checkpoint_dirs = self._open_checkpoints(checkpoint_files)
        #: The MLflow runs (:class:`~rlstack.shell.run_log.RunLog`).
        self.run_log = RunLog(
            algorithm,
            experiment_name=experiment_name,
            run_name=run_name,
            resume_run_id=resume_run_id,
            member_run_ids=member_run_ids,
            log_every_s=log_every_s,
            checkpoint_dirs=checkpoint_dirs,
        )
        self.run_id, self.tracking_uri = self.run_log.run_id, self.run_log.tracking_uri
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

    # ------------------------------------------------------------------ steps
    def step(self, *, env_config: Mapping[str, Any] | None = None) -> Stats:
        """Collect one rollout, update once, log and return the merged stats
        (memory, collect and step stats and :attr:`state`); a population's
        members' stats go to their runs, their combination to its run and back.
        """
        algorithm = self.algorithm
        training = algorithm.members.training()
        memory = algorithm.memory_stats()
        collected: list[Stats] = [{} for _ in training]
        if algorithm.trajectory is None:  # else resume a collected, not yet used rollout
            collected = algorithm.collect_each(env_config=env_config)
        try:
            stepped = algorithm.step_each()
        finally:
            self.run_log.record_failed(algorithm.members)
        self.member_stats = [
            {**memory, **c, **s, **self.state} for c, s in zip(collected, stepped, strict=True)
        ]
        return self.run_log.log_members(
            self.member_stats, training, algorithm.members, self.state["env/steps"]
        )

    def eval(
        self, *, env_config: Mapping[str, Any] | None = None, deterministic: bool = True
    ) -> Stats:
        """Evaluate the current policy on fresh envs (the training envs are
        left as they are) for ``max(1, horizons_per_env_reset)`` horizons.

        Returns:
            ``eval/returns/*`` and ``eval/rewards/*``, also logged to MLflow.
        """
        horizons = max(1, self.algorithm.config.horizons_per_env_reset)
        stats = self.algorithm.evaluate_each(
            env_config=env_config, deterministic=deterministic, horizons=horizons
        )
        member_stats = [{f"eval/{k}": v for k, v in member.items()} for member in stats]
        training = self.algorithm.members.training()
        self.member_stats = [
            {**old, **new}
            for old, new in zip(self.member_stats or [{}] * len(stats), member_stats, strict=True)
        ]
        return self.run_log.log_members(
            member_stats, training, self.algorithm.members, self.state["env/steps"], force=True
        )  # every evaluation is recorded

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

        Args:
            stop_conditions: see :mod:`rlstack.shell.conditions`; checked after
                every step on its stats (merged with eval stats on eval steps).
            steps_per_eval: run :meth:`eval` every this many steps.
            env_config: reset config for training envs.
            eval_env_config: reset config for evaluation envs (default
                ``env_config``).
            callbacks: see :data:`Callback`.
            checkpoint_every: write a checkpoint every this many steps.
            checkpoint_every_s: with a ``checkpoint_dir``, also write one
                once this many seconds have passed since the last (default
                :data:`CHECKPOINT_EVERY_S`), so a hard kill loses at most
                that much training; ``None`` or 0 turns it off.
            checkpoint_dir: where checkpoints go (``step-<N>.pt``); each is
                also logged to the MLflow run under ``checkpoints/``.
            keep_checkpoints: how many of this run's newest checkpoint files
                to keep in ``checkpoint_dir``.
            member_stop: for a population: ``"each"`` member is checked on
                its own stats with its own copy of the conditions and frozen
                once one holds, until every member has; ``"any"`` member
                meeting one ends the run; or the conditions see the
                ``"mean"`` over members. Callbacks always see the mean.

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
        timed_checkpoints = bool(checkpoint_every_s) and checkpoint_dir is not None
        if checkpoint_dir is not None and distributed.rank() == 0:
            self._checkpoint_dir(checkpoint_dir, keep_checkpoints)  # fail now, not after training
        stop_conditions = list(stop_conditions or [])
        eval_env_config = eval_env_config or env_config
        members = self.algorithm.members
        members.unfreeze_all()  # conditions stop members for one run only
        member_conditions = None  # "mean": the conditions see the combined stats
        if (
            member_stop != "mean"
        ):  # each member its own copy of the conditions (a single run: the ones given)
            member_conditions = (
                [stop_conditions]
                if len(members.stopped) == 1
                else [copy.deepcopy(stop_conditions) for _ in members.stopped]
            )
        last_checkpoint = _clock()
        try:
            while True:
                stats = self.step(env_config=env_config)
                stop = [bool(callback(stats)) for callback in callbacks]
                if steps_per_eval and self.state["algorithm/steps"] % steps_per_eval == 0:
                    eval_stats = self.eval(env_config=eval_env_config)
                    stop += [bool(callback(eval_stats)) for callback in callbacks]
                    stats.update(eval_stats)
                stop.append(
                    self._conditions_met(stats, stop_conditions, member_conditions, member_stop)
                )
                due = timed_checkpoints and _clock() - last_checkpoint >= checkpoint_every_s
                if timed_checkpoints and distributed.world_size() > 1:  # every rank saves together
                    due = distributed.any_rank(due)
                if due or (
                    checkpoint_every and self.state["algorithm/steps"] % checkpoint_every == 0
                ):
                    self.checkpoint_to(checkpoint_dir, keep_checkpoints)
                    last_checkpoint = _clock()
                if distributed.world_size() > 1:  # every rank stops at the same step
                    stop = [distributed.any_rank(any(stop))]
                if any(stop):
                    self.run_log.status["status"] = "FINISHED"
                    return stats
        except KeyboardInterrupt:
            self.run_log.status["status"] = "KILLED"
            if checkpoint_dir is not None:
                path = self.checkpoint_to(checkpoint_dir, keep_checkpoints)
                print(f"\nrlstack: interrupted; last completed step saved to {path}", flush=True)
            raise
        except FloatingPointError as e:
            self.run_log.status["status"] = "FAILED"
            if checkpoint_dir is not None:
                raise self._save_last_good_step(e, checkpoint_dir, keep_checkpoints) from e
            raise
        except BaseException:
            self.run_log.status["status"] = "FAILED"
            raise
        finally:
            members.unfreeze_all()  # the next run starts with every member that can train
            self.run_log.flush(
                quiet=sys.exc_info()[0] is not None
            )  # never hide the error that ended the run

    def _save_last_good_step(
        self, error: FloatingPointError, directory: Any, keep: int
    ) -> FloatingPointError:
        """Checkpoint the last good step after ``error`` (the rollout that
        failed is dropped); the error to raise, saying where it went.
        """
        self.algorithm.trajectory = None
        if not self.algorithm.state_is_finite():
            return FloatingPointError(
                f"{error} The state before it is not finite either: no checkpoint written."
            )
        return FloatingPointError(
            f"{error} Last good step saved to {self.checkpoint_to(directory, keep)}."
        )

    def _conditions_met(
        self,
        stats: Stats,
        conditions: list[Condition],
        member_conditions: list[list[Condition]] | None,
        mode: str,
    ) -> bool:
        """Whether the run stops: the conditions on ``stats`` (``"mean"``),
        else each member's on its own stats (:meth:`_stop_members`).
        """
        if member_conditions is None:
            return any([condition(stats) for condition in conditions])  # every one sees every step
        return self._stop_members(member_conditions, mode)

    def _stop_members(self, member_conditions: list[list[Condition]], mode: str) -> bool:
        """Check each training member's conditions on its stats; freeze it
        (``"each"``) or report the population done (``"any"``).
        """
        members = self.algorithm.members
        for k, conditions in enumerate(member_conditions):
            if members.stopped[k] is not None or not conditions:
                continue
            met = [
                condition(self.member_stats[k]) for condition in conditions
            ]  # every one sees every step
            if any(met):
                if mode == "any":
                    return True
                members.freeze(k, "stop condition")
        return not any(members.training())

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
        log_every_s: float = 1.0,
    ) -> Trainer:
        """Rebuild a Trainer from :meth:`save_checkpoint` and continue.

        Continuing on the same device and mode reproduces the uninterrupted
        run's metrics exactly. Logging continues in the checkpoint's MLflow
        run when it exists in the current tracking store and
        ``experiment_name`` / ``run_name``, if given, are that run's; else a
        new run is started with them. Arguments as in
        :meth:`Algorithm.from_checkpoint`; ``log_every_s`` as in the constructor.
        """
        tracking.require_mlflow()  # before anything is built
        check_log_every_s(log_every_s)
        data = ckpt.safe_load(path)
        algorithm_cls = (
            Population
            if "population" in data
            else RecurrentAlgorithm
            if "seq_len" in data["hparams"]
            else Algorithm
        )
        if cls._algorithm_cls is not Algorithm and algorithm_cls is not cls._algorithm_cls:
            raise ckpt.CheckpointError(
                f"{cls.__name__}.from_checkpoint: {str(path)!r} is not a "
                f"{cls._algorithm_cls.__name__} checkpoint (it holds {algorithm_cls.__name__}'s "
                "state); load it with Trainer.from_checkpoint."
            )
        algorithm = algorithm_cls._from_state_dict(
            data,
            env,
            model_cls=model_cls,
            distribution_cls=distribution_cls,
            device=device,
            compile=compile,
        )
        trainer_data = data.get("trainer", {})
        run_id = (
            tracking.resumable_run_id(trainer_data.get("run_id"), experiment_name, run_name)
            if (distributed.rank() == 0)
            else None
        )
        trainer = cls.__new__(cls)
        trainer._attach(
            algorithm,
            experiment_name=experiment_name,
            run_name=run_name,
            resume_run_id=run_id,
            checkpoint_files=trainer_data.get("checkpoint_files", ()),
            member_run_ids=trainer_data.get("member_run_ids") if run_id is not None else None,
            log_every_s=log_every_s,
        )
        return trainer

    # ------------------------------------------------------------------ export
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
        return export_policy(
            self.algorithm if member is None else self.algorithm.member(member), path
        )

    # ---------------------------------------------------------------- tracking
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


class RecurrentTrainer(Trainer):
    """:class:`Trainer` for a recurrent policy: it trains a
    :class:`~rlstack.shell.recurrent.RecurrentAlgorithm` (rlstack 1.x's
    ``RecurrentTrainer(env).run()``); arguments as :class:`Trainer`'s plus
    ``seq_len`` and ``seqs_per_state_reset``.
    """

    _algorithm_cls = RecurrentAlgorithm
