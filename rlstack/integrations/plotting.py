"""Learning curves from an MLflow run, as a PNG (matplotlib, headless)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from .tracking import make_client


def plot_learning_curve(
    run_id: str,
    path: str | os.PathLike,
    metrics: Sequence[str] = ("returns/mean", "eval/returns/mean"),
    tracking_uri: str | None = None,
) -> str:
    """Plot metric histories of a run against env steps and save a PNG.

    Training metrics and ``eval/*`` metrics (measured on fresh envs, over
    another number of horizons) are drawn in separate panels. Metrics the
    run does not have are skipped (e.g. ``eval/*`` without evaluations).

    Raises:
        ValueError: if the run has none of ``metrics``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    client = make_client(tracking_uri)
    run = client.get_run(run_id)
    histories = {m: client.get_metric_history(run_id, m) for m in metrics}
    histories = {m: sorted(h, key=lambda p: p.step) for m, h in histories.items() if h}
    if not histories:
        raise ValueError(
            f"Run {run_id} has none of the metrics {list(metrics)}; it has "
            f"{sorted(run.data.metrics)}."
        )
    # Evaluation runs on fresh envs for its own number of horizons: its returns are
    # not on the training returns' scale, so they get a panel of their own.
    panels = [
        (title, {m: h for m, h in histories.items() if m.startswith("eval/") == is_eval})
        for title, is_eval in (("training rollouts", False), ("evaluation (fresh envs)", True))
    ]
    panels = [(title, group) for title, group in panels if group]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(7, 3 + 2 * len(panels)), dpi=120, sharex=True, squeeze=False
    )
    env = run.data.params.get("env", "")
    horizon = run.data.params.get("horizon", "?")
    for ax, (title, group) in zip(axes[:, 0], panels, strict=True):
        for name, history in group.items():
            ax.plot(
                [p.step for p in history],
                [p.value for p in history],
                label=name,
                marker="." if len(history) < 50 else None,
            )
        ax.set_title(f"{env} {title} — run {run.info.run_name or run_id[:8]}")
        ax.set_ylabel(
            f"per env, over {horizon}-step horizons" if title.startswith("training") else "per env"
        )
        ax.grid(alpha=0.3)
        ax.legend()
    axes[-1, 0].set_xlabel("env steps (transitions collected)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)
