"""MLflow tracking for the :class:`~rlstack.shell.trainer.Trainer`: one run per
Trainer, addressed by its id (never through MLflow's process-wide active
run), params logged once, metrics written in batches
(:class:`~rlstack.integrations.metric_writer.MetricLog`), and the run ended
with the status the Trainer recorded, even at garbage collection or process
exit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .metric_writer import END_WAIT_S, MetricLog

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

#: What ``require_mlflow`` says where MLflow is missing.
MISSING_MLFLOW = (
    "rlstack's Trainer, export and plots log to MLflow, which is not installed here: "
    "pip install 'mlflow>=2.16' (rlstack.Algorithm and the pure functions run without it)."
)


def require_mlflow() -> ModuleType:
    """The ``mlflow`` module, imported on first use, so that ``import rlstack``
    and :class:`~rlstack.Algorithm` work where MLflow is not installed.

    Raises:
        ImportError: MLflow is not installed (the message names the package).
    """
    try:
        import mlflow
    except ImportError as e:
        raise ImportError(MISSING_MLFLOW) from e
    return mlflow


def make_client(tracking_uri: str | None = None) -> MlflowClient:
    """An ``MlflowClient`` for ``tracking_uri`` (default: MLflow's current one)."""
    mlflow = require_mlflow()
    return mlflow.tracking.MlflowClient(tracking_uri or mlflow.get_tracking_uri())


def param_value(value: Any) -> str:
    """A value as an MLflow param: its ``repr`` cut to MLflow's length limit."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]  # MLflow's limit on a param value


def experiment_id(client: MlflowClient, experiment_name: str | None, parent: Any) -> str:
    """The experiment a new run goes to: ``experiment_name`` (created if
    missing), else the enclosing run's, else MLflow's current one (as set by
    ``mlflow.set_experiment`` or ``MLFLOW_EXPERIMENT_NAME``).
    """
    if experiment_name is not None:
        if not isinstance(experiment_name, str) or not experiment_name:
            raise ValueError(f"`experiment_name` must be a non-empty str, got {experiment_name!r}.")
        experiment = client.get_experiment_by_name(experiment_name)
        return (
            experiment.experiment_id
            if experiment is not None
            else client.create_experiment(experiment_name)
        )
    if parent is not None:
        return parent.info.experiment_id
    from mlflow.tracking.fluent import _get_experiment_id

    return _get_experiment_id()


class NullClient:
    """The tracking client of a data-parallel rank other than 0: it creates
    no run and drops every write (rank 0 logs the stats, which are the
    same on every rank).
    """

    def get_run(self, run_id: Any) -> Any:
        """Nothing to read: there is no MLflow run (another rank's Trainer)."""
        from types import SimpleNamespace

        return SimpleNamespace(data=SimpleNamespace(params={}))

    def update_run(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to update: there is no MLflow run."""
        pass

    log_batch = log_artifact = set_terminated = update_run


class MemberRuns:
    """The nested child runs of a population's Trainer, one per member, so
    the MLflow UI lists and compares members under the parent run (none for
    a single run, whose only member is the run itself).

    Args:
        client: the tracking client.
        parent_run_id: the Trainer's run.
        run_ids: the members' runs to continue (a resumed checkpoint's;
            ``None`` or a missing run: a new one is created).
        run_name: the parent's name; member ``k``'s run is ``<name>/member-<k>``.
        log_every_s: see :class:`~rlstack.integrations.metric_writer.MetricLog`.
        logged_until: see :class:`~rlstack.integrations.metric_writer.MetricLog`
            (the parent's: a continued member's run is written with it).
    """

    def __init__(
        self,
        client: MlflowClient,
        parent_run_id: str,
        num_members: int,
        run_ids: list[str | None] | None = None,
        run_name: str | None = None,
        log_every_s: float = 1.0,
        logged_until: int = 0,
    ) -> None:
        self.run_ids: list[str] = []
        parent = (
            client.get_run(parent_run_id) if num_members else None
        )  # a single run has no member runs
        name = run_name or (parent.info.run_name if parent is not None else None) or "population"
        #: The existing runs continued here, marked RUNNING by :meth:`reopen` (at the first write).
        self.continued: list[str] = []
        for k in range(num_members):
            run_id = (run_ids or [None] * num_members)[k]
            if run_id is not None and _exists(client, run_id):
                self.continued.append(run_id)
            else:
                run_id = client.create_run(
                    parent.info.experiment_id,
                    run_name=f"{name}/member-{k}",
                    tags={"mlflow.parentRunId": parent_run_id},
                ).info.run_id
            self.run_ids.append(run_id)
        self.metrics = [
            MetricLog(
                client,
                run_id,
                log_every_s=log_every_s,
                logged_until=logged_until if run_id in self.continued else 0,
            )
            for run_id in self.run_ids
        ]
        #: Each member's own end status, or None: the parent's.
        self.status: list[str | None] = [None] * num_members

    def reopen(self, client: MlflowClient) -> None:
        """Mark the continued member runs RUNNING again (training goes on in them)."""
        for run_id in self.continued:
            client.update_run(run_id, status="RUNNING")


def _exists(client: MlflowClient, run_id: str) -> bool:
    try:
        client.get_run(run_id)
        return True
    except require_mlflow().exceptions.MlflowException:
        return False


def end_run(
    client: MlflowClient,
    run_id: str,
    status: dict[str, str],
    checkpoint_dirs: dict,
    metrics: MetricLog | None = None,
    quiet: bool = True,
    members: MemberRuns | None = None,
) -> None:
    """End a Trainer's run (and its members' runs) with the status it
    recorded (a continued run not reopened, ``status["reopened"]`` false,
    is left as it was); release its checkpoint folders. Called by
    :meth:`Trainer.close` (``quiet=False``: a failure to write the status is
    raised), or at garbage collection or process exit for a Trainer that was
    never closed (where the store may already be gone).
    """
    for directory in checkpoint_dirs.values():
        directory.close()
    checkpoint_dirs.clear()
    if not status.get("reopened", True):  # a continued run nothing was written to: left as it was
        return
    try:
        deadline = time.monotonic() + END_WAIT_S  # one wait for every log of the run
        for log in [*(members.metrics if members else []), *([metrics] if metrics else [])]:
            log.close(max(0.0, deadline - time.monotonic()))
        if members is not None:
            for member_run, member_status in zip(members.run_ids, members.status, strict=True):
                client.set_terminated(member_run, status=member_status or status["status"])
        client.set_terminated(run_id, status=status["status"])
    except Exception:
        if not quiet:
            raise


def mark_dead_run_killed(
    client: MlflowClient, owner: str | None, current_run_id: str | None
) -> str | None:
    """End as KILLED the MLflow run a dead process left RUNNING: ``owner`` is
    what its folder lock names (``"MLflow run <id>"``, see
    :func:`rlstack.integrations.folder_lock.dead_owner`). Returns the id it ended, if any.
    """
    run_id = (owner or "").removeprefix("MLflow run ").strip()
    if (
        not owner
        or not owner.startswith("MLflow run ")
        or run_id == current_run_id
        or not _exists(client, run_id)
    ):
        return None
    if client.get_run(run_id).info.status != "RUNNING":
        return None
    client.set_terminated(run_id, status="KILLED")
    return run_id


def create_run(client: MlflowClient, experiment_name: str | None, run_name: str | None) -> str:
    """Create a run (nested under the active run, if any) and return its id."""
    parent = require_mlflow().active_run()
    tags = {"mlflow.parentRunId": parent.info.run_id} if parent is not None else {}
    try:
        from mlflow.tracking.context.registry import resolve_tags

        tags = resolve_tags(tags)  # source, user and git tags, as mlflow.start_run sets them
    except Exception:
        pass
    run = client.create_run(
        experiment_id(client, experiment_name, parent), run_name=run_name, tags=tags
    )
    return run.info.run_id


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """Log params; on a resumed run, values that differ from the logged
    ones (MLflow params are immutable) are recorded as ``resumed/<name>`` tags.
    """
    logged = client.get_run(run_id).data.params
    text = {k: param_value(v) for k, v in params.items()}
    from mlflow.entities import Param, RunTag

    new = [Param(k, v) for k, v in text.items() if k not in logged]
    changed = [RunTag(f"resumed/{k}", v) for k, v in text.items() if k in logged and logged[k] != v]
    for i in range(0, len(new), 100):  # MLflow's batch limit on params
        client.log_batch(run_id, params=new[i : i + 100])
    if changed:
        client.log_batch(run_id, tags=changed)


#: The tag of a run that continues a checkpoint of another run (which it did not write into).
BRANCHED_FROM_TAG = "rlstack.branched_from"


def resumable_run_id(
    run_id: str | None,
    experiment_name: str | None,
    run_name: str | None,
    steps: int | None = None,
    newest: bool = False,
) -> str | None:
    """``run_id`` if that run exists in the current tracking store,
    ``experiment_name`` / ``run_name``, when given, are its, and it logged no
    update after ``steps``, or did but never finished and the checkpoint is
    its ``newest`` (a killed run's recovery: the steps it logged after the
    checkpoint replay identically and are not logged again, see
    :func:`logged_until`); else None: a checkpoint from behind the last logged
    step of a finished run, or an older one, starts a new run, so MLflow
    history is only appended to.
    """
    if run_id is None:
        return None
    client = make_client()
    try:
        run = client.get_run(run_id)
        experiment = client.get_experiment(run.info.experiment_id)
    except require_mlflow().exceptions.MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":  # a store away: not a reason for a new run
            raise
        return None
    if (experiment_name not in (None, experiment.name)) or (
        run_name not in (None, run.info.run_name)
    ):
        return None
    recovering = newest and run.info.status != "FINISHED"
    if steps is not None and run.data.metrics.get("algorithm/steps", 0) > steps and not recovering:
        return None
    return run_id


def logged_until(run_id: str | None) -> int:
    """The last step (``env/steps``) whose metrics run ``run_id`` holds; 0 for none."""
    if run_id is None:
        return 0
    return int(make_client().get_run(run_id).data.metrics.get("env/steps", 0))
