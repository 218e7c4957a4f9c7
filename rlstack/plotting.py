"""Learning curves from an MLflow run, as a PNG (matplotlib, headless)."""

from __future__ import annotations

import os
from typing import Sequence

import mlflow
from mlflow.tracking import MlflowClient


def plot_learning_curve(
    run_id: str,
    path: str | os.PathLike,
    metrics: Sequence[str] = ("returns/mean", "eval/returns/mean"),
    tracking_uri: str | None = None,
) -> str:
    """Plot metric histories of a run against env steps and save a PNG.

    Metrics the run does not have are skipped (e.g. ``eval/*`` without
    evaluations).

    Raises:
        ValueError: if the run has none of ``metrics``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    client = MlflowClient(tracking_uri=tracking_uri or mlflow.get_tracking_uri())
    run = client.get_run(run_id)
    histories = {m: client.get_metric_history(run_id, m) for m in metrics}
    histories = {m: sorted(h, key=lambda p: p.step) for m, h in histories.items() if h}
    if not histories:
        raise ValueError(f"Run {run_id} has none of the metrics {list(metrics)}; it has {sorted(run.data.metrics)}.")
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for name, history in histories.items():
        ax.plot([p.step for p in history], [p.value for p in history], label=name, marker="." if len(history) < 50 else None)
    env = run.data.params.get("env", "")
    ax.set_title(f"{env} — run {run.info.run_name or run_id[:8]}")
    ax.set_xlabel("env steps")
    ax.set_ylabel("value")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)
