"""``Trainer``: an :class:`Algorithm` plus evaluation, stop conditions,
checkpoints, export and MLflow tracking."""

from __future__ import annotations

import copy
import os
import sys
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from . import checkpoint as ckpt
from . import distributed, tracking
from .algorithm import Algorithm
from .conditions import Condition
from .population import Population
from .recurrent import RecurrentAlgorithm
from .stats import combine

Stats = dict[str, float]
def check_log_every_s(log_every_s: Any) -> None:
    """``log_every_s`` is seconds >= 0, or a one-line error naming it."""
    if isinstance(log_every_s, bool) or not isinstance(log_every_s, (int, float)) or not log_every_s >= 0:
        raise ValueError(f"`log_every_s` must be seconds >= 0 (0: every step), got {log_every_s!r}.")


#: ``Trainer.run``'s default ``checkpoint_every_s``: at most this much training (in seconds) is lost to a hard kill.
CHECKPOINT_EVERY_S = 300.0
_clock = time.monotonic  # the clock of timed checkpoints (a test replaces it)
#: Stats that are the same for every member of a population (the machine's, the
#: counters, shared coefficients): logged once, to the parent run.
SHARED_STATS = ("memory/", "profiling/", "algorithm/", "env/", "coefficients/vf")
#: A callback is called with the stats after every step, and again with the
#: ``eval/*`` stats after every evaluation; returning True stops ``run``.
Callback = Callable[[Stats], Any]


class Trainer:
    """Train with an :class:`Algorithm` and log every step to MLflow.

    Every Trainer owns one MLflow run, addressed by its id (``run_id``),
    never through MLflow's process-wide active run: two Trainers in one
    process log to two runs. When a run is active around it (``with
    mlflow.start_run():``), the Trainer's run is nested under that one.
    Hyperparameters are logged once, at construction; metrics as points with
    ``step = env/steps``, at most one every ``log_every_s`` seconds per run
    (parent and member runs alike; 0: every step), always the first step,
    every evaluation and the last step, each point the values of the step it
    is stamped with (see :class:`rlstack.tracking.MetricLog`). Points are
    written in batches at most 5 s apart, and all pending ones when
    :meth:`run` returns or raises, before each checkpoint, on :meth:`close`,
    and at garbage collection or process exit, so a small step does not wait
    on the tracking store. The tracking store is MLflow's current one
    (``MLFLOW_TRACKING_URI`` when set).

    The run ends with :meth:`close` (or leaving a ``with Trainer(...)``
    block); a Trainer that is garbage collected or alive at process exit
    ends it too, ``FAILED`` or ``KILLED`` if its last :meth:`run` raised,
    else ``FINISHED``.

    With ``num_members=K`` the Trainer trains a
    :class:`~rlstack.population.Population` of ``K`` members in one
    process: its run is the parent of one nested run per member (named
    ``<run_name>/member-<k>``, with the member's hyperparameters and seed
    as params and its own metrics: all but :data:`SHARED_STATS`, which are
    the same for every member), and logs every metric of the members still
    training combined by its rule in :mod:`rlstack.stats` (the mean for
    most; episode counts summed, episode means weighted by them, minima
    and maxima taken), plus ``population/active``. :meth:`step` and
    :meth:`eval` return those; each member's stats are in
    :attr:`member_stats`.

    Args:
        env: see :class:`Algorithm`.
        experiment_name: MLflow experiment of the run (created if missing;
            default: the enclosing run's, else MLflow's current experiment).
        run_name: name of the run.
        log_every_s: shortest time between two recorded metric points of a
            run, in seconds (default 1; 0 records every step).
        num_members: train a population of this many members (``None``:
            one run). The hyperparameters in
            :data:`rlstack.population.PER_MEMBER` may then be lists of
            ``num_members`` values (``optimizer_config={"lr": [...]}`` for
            the learning rate), and ``seed`` a list; see
            :func:`rlstack.population.grid`.
        **kwargs: everything :class:`Algorithm` takes.

    Examples:
        >>> from rlstack.env import DiscreteDummyEnv
        >>> from rlstack.conditions import HitsUpperBound
        >>> trainer = Trainer(DiscreteDummyEnv)  # doctest: +SKIP
        >>> trainer.run(stop_conditions=[HitsUpperBound("returns/mean", -50.0)])  # doctest: +SKIP
    """

    #: What the Trainer trains (:class:`RecurrentTrainer`: :class:`~rlstack.recurrent.RecurrentAlgorithm`).
    _algorithm_cls: type = Algorithm

    def __init__(
        self, env: Any, /, *, experiment_name: str | None = None, run_name: str | None = None,
        num_members: int | None = None, log_every_s: float = 1.0, **kwargs: Any,
    ) -> None:
        tracking.require_mlflow()  # before anything is built
        check_log_every_s(log_every_s)
        # Population is Algorithm with num_members (the class that loads population checkpoints).
        algorithm_cls = Population if num_members is not None and self._algorithm_cls is Algorithm else self._algorithm_cls
        algorithm = algorithm_cls(env, num_members=num_members, **kwargs)
        self._attach(algorithm, experiment_name=experiment_name, run_name=run_name, log_every_s=log_every_s)

    def _attach(
        self, algorithm: Algorithm, *, experiment_name: str | None, run_name: str | None,
        resume_run_id: str | None = None, checkpoint_files: Sequence[str] = (),
        member_run_ids: Sequence[str | None] | None = None, log_every_s: float = 1.0,
    ) -> None:
        check_log_every_s(log_every_s)
        self.algorithm = algorithm
        self.tracking_uri = tracking.require_mlflow().get_tracking_uri()
        # Under torch.distributed only rank 0 writes to MLflow; the other ranks' writes are dropped.
        self._client = client = tracking.make_client(self.tracking_uri) if distributed.rank() == 0 else tracking.NullClient()
        if distributed.rank() != 0:
            self.run_id = None
        elif resume_run_id is not None:
            client.update_run(resume_run_id, status="RUNNING")
            self.run_id = resume_run_id
        else:
            self.run_id = tracking.create_run(client, experiment_name, run_name)
        self._checkpoint_files = list(checkpoint_files)
        self._checkpoint_dirs: dict[Path, ckpt.CheckpointDir] = {}
        self._status = {"status": "FINISHED"}
        self._metrics = tracking.MetricLog(client, self.run_id, log_every_s=log_every_s)
        #: The stats of the last step (and eval), one dict per member (one for a single run).
        self.member_stats: list[Stats] = []
        self._members = tracking.MemberRuns(client, self.run_id, algorithm.num_members or 0, list(member_run_ids or []),
                                            run_name, log_every_s=log_every_s)
        self._finalizer = weakref.finalize(
            self, tracking.end_run, client, self.run_id, self._status, self._checkpoint_dirs, self._metrics, True,
            self._members,
        )
        # The learning rate also as a param of its own (`optimizer/lr`), which the MLflow UI sorts and plots.
        lrs = algorithm.member_lrs
        tracking.log_params(client, self.run_id, {**algorithm.hparams_by_member(), **algorithm.build_config,
                                                  "optimizer/lr": lrs if len(set(lrs)) > 1 else lrs[0]})
        for k, run_id in enumerate(self._members.run_ids):
            tracking.log_params(client, run_id, {
                **algorithm.member_config[k].to_dict(), **algorithm.build_config, "member": k,
                "seed": algorithm.seeds[k], "optimizer_config": {
                    **algorithm.build_config["optimizer_config"], "lr": lrs[k]}, "optimizer/lr": lrs[k],
            })

    @property
    def member_run_ids(self) -> list[str]:
        """A population's nested MLflow runs, by member (``[]`` for one run)."""
        return list(self._members.run_ids)

    @property
    def state(self) -> dict[str, int]:
        """Counters ``algorithm/collects``, ``algorithm/steps`` and
        ``env/steps``, read from the Algorithm (so they are checkpointed with
        it). Under torch.distributed ``env/steps`` counts every rank's
        transitions (each rank collects as many)."""
        algo = self.algorithm
        return {"algorithm/collects": algo.collects, "algorithm/steps": algo.steps,
                "env/steps": algo.env_steps * distributed.world_size()}

    # ------------------------------------------------------------------ steps
    def step(self, *, env_config: Mapping[str, Any] | None = None) -> Stats:
        """Collect one rollout, update once, log and return the merged stats
        (memory, collect and step stats and the counters
        ``algorithm/collects``, ``algorithm/steps``, ``env/steps``); a
        population's members' stats go to their runs, their combination to
        the parent run and back."""
        algorithm = self.algorithm
        training = algorithm.members.training()
        memory = algorithm.memory_stats()
        collected: list[Stats] = [{} for _ in training]
        if algorithm.trajectory is None:  # else resume a collected, not yet used rollout
            collected = algorithm.collect_each(env_config=env_config)
        try:
            stepped = algorithm.step_each()
        finally:
            self._record_failed_members()
        self.member_stats = [{**memory, **c, **s, **self.state} for c, s in zip(collected, stepped)]
        return self._log_members(self.member_stats, training)

    def _log_members(self, member_stats: list[Stats], logged: list[bool], force: bool = False) -> Stats:
        """Log each member's stats to its run (those in ``logged``) and the
        combination (:func:`rlstack.stats.combine`) over the members still
        training to the parent; return it.
        ``force``: record the point whatever the time since the last (an evaluation)."""
        step = int(self.state["env/steps"])
        for log, stats, on in zip(self._members.metrics, member_stats, logged):  # none for a single run
            if on:
                own = {name: value for name, value in stats.items() if not name.startswith(SHARED_STATS)}
                log.log(own, step=step, force=force)
        members = self.algorithm.members
        training = [k for k, on in enumerate(members.training()) if on] or [k for k, on in enumerate(logged) if on]
        mean = combine([member_stats[k] for k in training])
        if self._members.run_ids:
            mean["population/active"] = sum(members.training())
        self._log(mean, force=force)
        return mean

    def _record_failed_members(self) -> None:
        """A member frozen for a non-finite update ends its run FAILED."""
        for k in range(len(self._members.run_ids)):
            if self.algorithm.members.failed(k):
                self._members.status[k] = "FAILED"

    def eval(self, *, env_config: Mapping[str, Any] | None = None, deterministic: bool = True) -> Stats:
        """Evaluate the current policy on fresh envs (the training envs are
        left as they are) for ``max(1, horizons_per_env_reset)`` horizons.

        Returns:
            ``eval/returns/*`` and ``eval/rewards/*``, also logged to MLflow.
        """
        horizons = max(1, self.algorithm.config.horizons_per_env_reset)
        stats = self.algorithm.evaluate_each(env_config=env_config, deterministic=deterministic, horizons=horizons)
        member_stats = [{f"eval/{k}": v for k, v in member.items()} for member in stats]
        training = self.algorithm.members.training()
        self.member_stats = [{**old, **new} for old, new in zip(self.member_stats or [{}] * len(stats), member_stats)]
        return self._log_members(member_stats, training, force=True)  # every evaluation is recorded

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
            checkpoint_every_s: with a ``checkpoint_dir``, also write one
                once this many seconds have passed since the last (default
                :data:`CHECKPOINT_EVERY_S`), so a hard kill loses at most
                that much training; ``None`` or 0 turns it off.
            checkpoint_dir: where checkpoints go (``step-<N>.pt``); each is
                also logged to the MLflow run under ``checkpoints/``.
            keep_checkpoints: how many of this run's newest checkpoint files
                to keep in ``checkpoint_dir``.
            member_stop: for a population, how stop conditions apply:
                ``"each"`` (each member is checked on its own stats with its
                own copy of the conditions and frozen once one holds; the
                run ends when every member has stopped), ``"any"`` (the run
                ends when one member meets a condition) or ``"mean"`` (the
                conditions see the mean over members). Callbacks always see
                the mean.

        Returns:
            The stats of the last step.
        """
        for name, value in (("steps_per_eval", steps_per_eval), ("checkpoint_every", checkpoint_every)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"`{name}` must be a positive int or None, got {value!r}.")
        if checkpoint_every is not None and checkpoint_dir is None:
            raise ValueError("`checkpoint_every` needs a `checkpoint_dir` to write to.")
        if checkpoint_every_s is not None and (isinstance(checkpoint_every_s, bool) or
                                               not isinstance(checkpoint_every_s, (int, float)) or
                                               not checkpoint_every_s >= 0):
            raise ValueError(f"`checkpoint_every_s` must be seconds >= 0 or None (off), got {checkpoint_every_s!r}.")
        timed_checkpoints = bool(checkpoint_every_s) and checkpoint_dir is not None
        if not isinstance(keep_checkpoints, int) or isinstance(keep_checkpoints, bool) or keep_checkpoints < 1:
            raise ValueError(f"`keep_checkpoints` must be a positive int, got {keep_checkpoints!r}.")
        if member_stop not in ("each", "any", "mean"):
            raise ValueError(f"`member_stop` must be 'each', 'any' or 'mean', got {member_stop!r}.")
        if checkpoint_dir is not None and distributed.rank() == 0:
            self._checkpoint_dir(checkpoint_dir, keep_checkpoints)  # fail now, not after training
        stop_conditions = list(stop_conditions or [])
        eval_env_config = eval_env_config or env_config
        members = self.algorithm.members
        members.unfreeze_all()  # conditions stop members for one run only
        member_conditions = None
        if member_stop != "mean":  # each member its own copy of the conditions (a single run: the ones given)
            count = len(members.stopped)
            member_conditions = [stop_conditions] if count == 1 else [copy.deepcopy(stop_conditions) for _ in range(count)]
        last_checkpoint = _clock()
        try:
            while True:
                stats = self.step(env_config=env_config)
                stop = [bool(callback(stats)) for callback in callbacks]
                if steps_per_eval and self.state["algorithm/steps"] % steps_per_eval == 0:
                    eval_stats = self.eval(env_config=eval_env_config)
                    stop += [bool(callback(eval_stats)) for callback in callbacks]
                    stats.update(eval_stats)
                if member_conditions is None:
                    stop += [condition(stats) for condition in stop_conditions]
                else:
                    stop.append(self._stop_members(member_conditions, member_stop))
                due = timed_checkpoints and _clock() - last_checkpoint >= checkpoint_every_s
                if timed_checkpoints and distributed.world_size() > 1:  # every rank saves together
                    due = distributed.any_rank(due)
                if due or (checkpoint_every and self.state["algorithm/steps"] % checkpoint_every == 0):
                    self.checkpoint_to(checkpoint_dir, keep_checkpoints)
                    last_checkpoint = _clock()
                if distributed.world_size() > 1:  # every rank stops at the same step
                    stop = [distributed.any_rank(any(stop))]
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
                if not self.algorithm.state_is_finite():
                    raise FloatingPointError(f"{e} The state before it is not finite either: no checkpoint written.") from e
                path = self.checkpoint_to(checkpoint_dir, keep_checkpoints)
                raise FloatingPointError(f"{e} Last good step saved to {path}.") from e
            raise
        except BaseException:
            self._status["status"] = "FAILED"
            raise
        finally:
            members.unfreeze_all()  # the next run starts with every member that can train
            self._flush_metrics(quiet=sys.exc_info()[0] is not None)  # never hide the error that ended the run

    def _stop_members(self, member_conditions: list[list[Condition]], mode: str) -> bool:
        """Check each training member's conditions on its stats; freeze it
        (``"each"``) or report the population done (``"any"``)."""
        members = self.algorithm.members
        for k, conditions in enumerate(member_conditions):
            if members.stopped[k] is not None or not conditions:
                continue
            met = [condition(self.member_stats[k]) for condition in conditions]  # every one sees every step
            if any(met):
                if mode == "any":
                    return True
                members.freeze(k, "stop condition")
        return not any(members.training())

    # ------------------------------------------------------------- checkpoints
    def save_checkpoint(self, path: str | os.PathLike) -> str:
        """Write the whole train state (Algorithm state, counters, the MLflow
        run id) to ``path`` atomically; see :mod:`rlstack.checkpoint`. Under
        torch.distributed every rank calls it and rank 0 writes."""
        data = self._state_dict()
        return str(ckpt.atomic_save(data, path)) if distributed.rank() == 0 else str(path)

    def _state_dict(self) -> dict[str, Any]:
        data = self.algorithm.state_dict()
        written = [str(p.resolve()) for d in self._checkpoint_dirs.values() for p in d.written]
        data["trainer"] = {"run_id": self.run_id, "checkpoint_files": written or list(self._checkpoint_files)}
        if self._members.run_ids:
            data["trainer"]["member_run_ids"] = list(self._members.run_ids)
        return data

    def _checkpoint_dir(self, directory: str | os.PathLike, keep: int) -> ckpt.CheckpointDir:
        """The open (locked) :class:`~rlstack.checkpoint.CheckpointDir` for ``directory``."""
        key = Path(directory).resolve()
        if key not in self._checkpoint_dirs:
            self.adopt_checkpoint_dir(ckpt.CheckpointDir(
                directory, step=self.algorithm.steps, owner=f"MLflow run {self.run_id}", keep=keep,
                adopt=self._checkpoint_files,
            ))
        self._checkpoint_dirs[key].keep = keep
        return self._checkpoint_dirs[key]

    def adopt_checkpoint_dir(self, folder: ckpt.CheckpointDir) -> None:
        """Write checkpoints into ``folder``, opened (checked and locked) before
        this Trainer existed (as ``rlstack train`` does, so that a refused folder
        creates or changes no MLflow run). A run that died holding the folder
        (its lock's process gone) and is still RUNNING is ended as KILLED."""
        tracking.mark_dead_run_killed(self._client, ckpt.dead_owner(folder.previous_owner), self.run_id)
        folder.relabel(f"MLflow run {self.run_id}")
        self._checkpoint_dirs[folder.directory.resolve()] = folder

    def checkpoint_to(self, directory: str | os.PathLike, keep: int = 3) -> str:
        """Save ``directory/step-<N>.pt``, log it to the MLflow run under
        ``checkpoints/`` and delete all but the ``keep`` newest checkpoints
        this run wrote there; returns its path (which exists).

        Under torch.distributed every rank calls it (each rank's envs and
        key are gathered into the file) and rank 0 writes; the other ranks
        return ``""``.

        Raises:
            ValueError: see :class:`rlstack.checkpoint.CheckpointDir`.
        """
        if distributed.rank() != 0:
            self._state_dict()  # this rank's part goes to rank 0
            return ""
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
        log_every_s: float = 1.0,
    ) -> "Trainer":
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
        algorithm_cls = (Population if "population" in data else RecurrentAlgorithm if "seq_len" in data["hparams"]
                         else Algorithm)
        if cls._algorithm_cls is not Algorithm and algorithm_cls is not cls._algorithm_cls:
            raise ckpt.CheckpointError(f"{cls.__name__}.from_checkpoint: {str(path)!r} is not a "
                                       f"{cls._algorithm_cls.__name__} checkpoint (it holds {algorithm_cls.__name__}'s "
                                       "state); load it with Trainer.from_checkpoint.")
        algorithm = algorithm_cls._from_state_dict(
            data, env, model_cls=model_cls, distribution_cls=distribution_cls, device=device, compile=compile
        )
        trainer_data = data.get("trainer", {})
        run_id = None
        if distributed.rank() == 0:
            run_id = tracking.resumable_run_id(trainer_data.get("run_id"), experiment_name, run_name)
        trainer = cls.__new__(cls)
        trainer._attach(
            algorithm, experiment_name=experiment_name, run_name=run_name, resume_run_id=run_id,
            checkpoint_files=trainer_data.get("checkpoint_files", ()),
            member_run_ids=trainer_data.get("member_run_ids") if run_id is not None else None,
            log_every_s=log_every_s,
        )
        return trainer

    # ------------------------------------------------------------------ export
    def export_policy(self, path: str | os.PathLike, member: int | None = None) -> str:
        """Write the current policy as an MLflow pyfunc model; see
        :func:`rlstack.export.export_policy`. A population exports one
        ``member`` (its index)."""
        from .export import export_policy

        count = self.algorithm.num_members
        if count is not None and member is None:
            raise ValueError(f"`member` must name the member to export, an int in [0, {count}).")
        if count is None and member is not None:
            raise ValueError(f"`member` is for a population; this Trainer trains one policy, got member={member!r}.")
        return export_policy(self.algorithm if member is None else self.algorithm.member(member), path)

    # ---------------------------------------------------------------- tracking
    def flush_metrics(self) -> None:
        """Write the metrics still pending (see the class docstring)."""
        self._members.flush()
        self._metrics.flush()

    def _flush_metrics(self, quiet: bool) -> None:
        try:
            self.flush_metrics()
        except Exception:
            if not quiet:
                raise

    def _log(self, stats: Stats, force: bool = False) -> None:
        self._metrics.log(stats, step=int(self.state["env/steps"]), force=force)

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
            tracking.end_run(self._client, self.run_id, self._status, self._checkpoint_dirs, self._metrics, quiet=False,
                             members=self._members)

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close("KILLED" if exc_type is KeyboardInterrupt else "FAILED" if exc_type else None)


class RecurrentTrainer(Trainer):
    """:class:`Trainer` for a recurrent policy: it trains a
    :class:`~rlstack.recurrent.RecurrentAlgorithm` (rlstack 1.x's
    ``RecurrentTrainer(env).run()``); arguments as :class:`Trainer`'s plus
    ``seq_len`` and ``seqs_per_state_reset``."""

    _algorithm_cls = RecurrentAlgorithm
