"""A :class:`~rlstack.shell.trainer.Trainer`'s MLflow side, one object for every
kind of algorithm: its run, the nested runs of a population's members (none
for a single run), their params, their metrics and their end status.

Each member's stats go to its own run, and their combination by each
stat's rule (:func:`rlstack.learn.stats.combine`; a single run's own stats) to
the Trainer's run: one logging pipeline, member runs included.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..integrations import checkpoint as ckpt
from ..integrations import distributed, metric_writer, store_errors, tracking
from ..integrations.artifact_writer import ArtifactWriter
from ..learn.stats import combine
from ..learn.train_state import MemberStatus

Stats = dict[str, float]
#: Stats that are the same for every member of a population (the machine's, the
#: counters, shared coefficients): logged once, to the parent run.
SHARED_STATS = ("memory/", "profiling/", "algorithm/", "env/", "coefficients/vf")


def continuation(
    data: Mapping[str, Any],
    experiment_name: str | None,
    run_name: str | None,
    path: Any = None,
) -> dict[str, Any]:
    """How a Trainer rebuilt from the checkpoint ``data`` (read from ``path``)
    logs: the MLflow run it continues (``resume_run_id``; see
    :func:`rlstack.integrations.tracking.resumable_run_id`) with its member
    runs, its checkpoint files, the last step that run holds
    (``logged_until``: a killed run's steps replayed after its newest
    checkpoint are not logged again) and the points the checkpoint kept
    unsent; or, where it continues none, the run it branched from
    (``branched_from``) and nothing of that run's.
    """
    saved = data.get("trainer", {})
    run_id = saved_run = None
    if distributed.rank() == 0:
        saved_run = saved.get("run_id")
        steps = data["counters"]["steps"]
        newest = path is not None and ckpt.newest_in_folder(path, steps)
        run_id = tracking.resumable_run_id(
            saved_run,
            experiment_name,
            run_name,
            steps=steps,
            newest=newest,
        )
    continued = run_id is not None
    return {
        "resume_run_id": run_id,
        "branched_from": None if continued else saved_run,
        "checkpoint_files": saved.get("checkpoint_files", ()) if continued else (),
        "member_run_ids": saved.get("member_run_ids") if continued else None,
        "logged_until": tracking.logged_until(run_id),
        "unsent_metrics": saved.get("unsent_metrics", []) if continued else [],
    }


class RunLog:
    """The MLflow runs of one Trainer.

    Every Trainer owns one MLflow run, addressed by its id (``run_id``),
    never through MLflow's process-wide active run: two Trainers in one
    process log to two runs. When a run is active around it (``with
    mlflow.start_run():``), the Trainer's run is nested under that one.
    Hyperparameters are logged once, at construction; metrics as points with
    ``step = env/steps``, at most one every ``log_every_s`` seconds per run
    (parent and member runs alike; 0: every step), always the first step,
    every evaluation and the last step, each point the values of the step it
    is stamped with (see :class:`rlstack.integrations.metric_writer.MetricLog`). Points are
    written in batches at most 30 s apart, and all pending ones when
    :meth:`Trainer.run <rlstack.Trainer.run>` returns or raises, before each checkpoint, on
    ``close``, and at garbage collection or process exit, so a small step does not wait
    on the tracking store. The tracking store is MLflow's current one
    (``MLFLOW_TRACKING_URI`` when set).

    The run ends with :meth:`Trainer.close <rlstack.Trainer.close>` (or leaving a ``with
    Trainer(...)`` block); a Trainer that is garbage collected or alive at process exit
    ends it too, ``FAILED`` or ``KILLED`` if its last :meth:`Trainer.run <rlstack.Trainer.run>`
    raised, else ``FINISHED``.

    With ``num_members=K`` the Trainer trains a
    :class:`~rlstack.shell.population.Population` of ``K`` members in one
    process: its run is the parent of one nested run per member (named
    ``<run_name>/member-<k>``, with the member's hyperparameters and seed
    as params and its own metrics: all but :data:`SHARED_STATS`, which are
    the same for every member), and logs every metric of the members still
    training combined by its rule in :mod:`rlstack.learn.stats` (the mean for
    most; episode counts summed, episode means weighted by them, minima
    and maxima taken), plus ``population/active``. The Trainer's
    ``step`` and ``eval`` return those.

    Under torch.distributed only rank 0 writes (the other ranks' client
    drops every write).

    Args:
        algorithm: what the Trainer trains (its config, build config and
            members are logged as params).
        experiment_name: the experiment of a new run (see
            :func:`rlstack.integrations.tracking.create_run`).
        run_name: the name of a new run.
        resume_run_id: an existing run to continue instead.
        branched_from: the run whose checkpoint a new run continues (a tag).
        member_run_ids: the member runs to continue (a resumed checkpoint's).
        log_every_s: see :class:`rlstack.integrations.metric_writer.MetricLog`.
        checkpoint_dirs: the Trainer's open checkpoint folders, released when the run ends.
        logged_until: the last step the continued run holds (see
            :func:`continuation`): no step up to it is logged again.
        unsent_metrics: the points a resumed checkpoint kept unsent
            (:meth:`rlstack.integrations.metric_writer.MetricLog.unsent`), written first.

    Attributes:
        client: the tracking client (rank 0's; the others drop every write).
        run_id: the Trainer's run.
        tracking_uri: the tracking store.
        status: ``{"status": ...}``, what the runs end with.
        metrics: the Trainer's run's :class:`~rlstack.integrations.metric_writer.MetricLog`.
        members: the members' :class:`~rlstack.integrations.tracking.MemberRuns`.
    """

    def __init__(
        self,
        algorithm: Any,
        *,
        experiment_name: str | None,
        run_name: str | None,
        resume_run_id: str | None = None,
        branched_from: str | None = None,
        member_run_ids: Sequence[str | None] | None = None,
        log_every_s: float,
        checkpoint_dirs: dict,
        logged_until: int = 0,
        unsent_metrics: Sequence[Sequence[Any]] = (),
    ) -> None:
        self.tracking_uri = tracking.require_mlflow().get_tracking_uri()
        rank_zero = distributed.rank() == 0
        self.client = client = (
            tracking.make_client(self.tracking_uri) if rank_zero else tracking.NullClient()
        )
        # A store whose disk is full: one line naming its folder.
        with store_errors.full_store_named(self.tracking_uri):
            if not rank_zero:
                self.run_id = None
            elif resume_run_id is not None:  # marked RUNNING at the first write (_reopen)
                self.run_id = resume_run_id
            else:
                self.run_id = tracking.create_run(client, experiment_name, run_name)
                if branched_from is not None:
                    client.set_tag(self.run_id, tracking.BRANCHED_FROM_TAG, branched_from)
            continued = rank_zero and resume_run_id is not None
            self.status = {"status": "FINISHED", "reopened": not continued}
            self.metrics = tracking.MetricLog(
                client,
                self.run_id,
                log_every_s=log_every_s,
                logged_until=logged_until,
            )
            self.metrics.resend(list(unsent_metrics))
            #: Checkpoint files uploaded to the run off the training loop.
            self.artifacts = ArtifactWriter(client, self.run_id)
            self.members = tracking.MemberRuns(
                client,
                self.run_id,
                algorithm.num_members or 0,
                list(member_run_ids or []),
                run_name,
                log_every_s=log_every_s,
                logged_until=logged_until,
            )
            self._checkpoint_dirs = checkpoint_dirs
            self._switches_logged: set[str] = set()
            self._finalizer = weakref.finalize(
                self,
                tracking.end_run,
                client,
                self.run_id,
                self.status,
                checkpoint_dirs,
                self.metrics,
                True,
                self.members,
            )
            self._log_params(algorithm)

    def _log_params(self, algorithm: Any) -> None:
        """Config and build config to every run; a member's own values to its
        run. The learning rate also as a param of its own (``optimizer/lr``),
        which the MLflow UI sorts and plots.
        """
        lrs, build = algorithm.member_lrs, algorithm.build_config
        tracking.log_params(
            self.client,
            self.run_id,
            {
                **algorithm.hparams_by_member(),
                **build,
                "optimizer/lr": lrs if len(set(lrs)) > 1 else lrs[0],
            },
        )
        for k, run_id in enumerate(self.members.run_ids):
            tracking.log_params(
                self.client,
                run_id,
                {
                    **algorithm.member_config[k].to_dict(),
                    **build,
                    "member": k,
                    "seed": algorithm.seeds[k],
                    "optimizer_config": {**build["optimizer_config"], "lr": lrs[k]},
                    "optimizer/lr": lrs[k],
                },
            )

    def _reopen(self) -> None:
        """A continued run (and its members' runs) RUNNING again, at the first
        write: loading a checkpoint alone changes nothing in MLflow.
        """
        if not self.status["reopened"]:
            self.client.update_run(self.run_id, status="RUNNING")
            self.members.reopen(self.client)
            self.status["reopened"] = True

    def log(self, stats: Mapping[str, float], step: int, force: bool = False) -> None:
        """Record ``stats`` in the Trainer's run at ``step`` (see
        :class:`~rlstack.integrations.metric_writer.MetricLog`).
        """
        self._reopen()
        self.metrics.log(stats, step=step, force=force)

    def log_members(
        self,
        member_stats: Sequence[Stats],
        logged: Sequence[bool],
        members: MemberStatus,
        step: int,
        force: bool = False,
    ) -> Stats:
        """Each member's stats to its run (those in ``logged``), and their
        combination over the members still training (else those logged) to
        the Trainer's run, with ``population/active`` for a population.

        Returns:
            The combination (a single run's own stats).
        """
        self._reopen()
        # A single run has no member runs: the zip is empty.
        for log, stats, on in zip(self.members.metrics, member_stats, logged, strict=False):
            if on:
                log.log(
                    {name: v for name, v in stats.items() if not name.startswith(SHARED_STATS)},
                    step=step,
                    force=force,
                )
        training = [k for k, on in enumerate(members.training()) if on] or [
            k for k, on in enumerate(logged) if on
        ]
        combined = combine([member_stats[k] for k in training])
        if self.members.run_ids:
            combined["population/active"] = sum(members.training())
        self.log(combined, step, force=force)
        return combined

    def log_switches(self, switches: Mapping[str, int]) -> None:
        """The update at which each compiled piece switched, once, as params
        ``compile/<piece>`` (what ``compile_switches=`` replays).
        """
        new = {f"compile/{name}": steps for name, steps in switches.items()}
        new = {k: v for k, v in new.items() if k not in self._switches_logged}
        if new:
            with store_errors.full_store_named(self.tracking_uri):
                self._reopen()
                tracking.log_params(self.client, self.run_id, new)
            self._switches_logged.update(new)

    def record_failed(self, members: MemberStatus) -> None:
        """A member stopped for a non-finite update ends its run FAILED."""
        for k in range(len(self.members.run_ids)):
            if members.failed(k):
                self.members.status[k] = "FAILED"

    def flush(self, quiet: bool = False) -> None:
        """Write every metric still pending; with ``quiet`` a failure of the
        store is swallowed (so it never hides the error that ended a run).
        """
        try:
            deadline = time.monotonic() + metric_writer.FLUSH_WAIT_S  # one wait for every log
            for log in [*self.members.metrics, self.metrics]:
                log.flush(max(0.0, deadline - time.monotonic()))
            self.artifacts.flush(max(0.0, deadline - time.monotonic()))
            for folder in self._checkpoint_dirs.values():  # those kept for their uploads
                folder.prune(self.artifacts.holds)
        except Exception:
            if not quiet:
                raise

    def close(self) -> None:
        """End the runs with ``status`` and release the checkpoint folders (idempotent)."""
        if self._finalizer.detach() is None:  # closed before
            return
        local_only = {Path(path) for path in self.artifacts.close(metric_writer.END_WAIT_S)}
        for folder in self._checkpoint_dirs.values():  # those kept for their uploads
            folder.prune(lambda path: Path(path) in local_only)
        with store_errors.full_store_named(self.tracking_uri):
            tracking.end_run(
                self.client,
                self.run_id,
                self.status,
                self._checkpoint_dirs,
                self.metrics,
                quiet=False,
                members=self.members,
            )
