"""Learning curves from an MLflow run, as a PNG (matplotlib, headless)."""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence

from .tracking import make_client

#: The return of the episodes that ended in a rollout (where an env's episodes end).
EPISODE_RETURN = "episodes/return/mean"
#: The reward summed over each env's rollout horizon (every env, episodic or not).
ROLLOUT_RETURN = "returns/mean"


def default_metrics(logged: Collection[str]) -> list[str]:
    """The returns a learning curve draws for a run that ``logged`` these
    metrics: the episode return where the run's episodes end (what
    gymnasium's scores and the progress line report), else the per-rollout
    return; each for training and, where the run evaluated, for evaluation.
    """
    chosen = []
    for prefix in ("", "eval/"):
        episodic = prefix + EPISODE_RETURN
        chosen.append(episodic if episodic in logged else prefix + ROLLOUT_RETURN)
    return chosen


def axis_label(metric: str, horizon: str) -> str:
    """What a metric's values are, for an axis: the metric's name and its unit."""
    name = metric.removeprefix("eval/")
    if name == EPISODE_RETURN:
        return f"{metric} (return per episode that ended)"
    if name == ROLLOUT_RETURN and metric != name:
        return f"{metric} (reward per env over the evaluation)"
    if name == ROLLOUT_RETURN:
        return f"{metric} (reward per env over {horizon}-step horizons)"
    return metric


def plot_learning_curve(
    run_id: str,
    path: str | os.PathLike,
    metrics: Sequence[str] | None = None,
    tracking_uri: str | None = None,
) -> str:
    """Plot metric histories of a run against env steps and save a PNG.

    Training metrics and ``eval/*`` metrics (measured on fresh envs, over
    another number of horizons) are drawn in separate panels, each y-axis
    naming what it shows. Metrics the run does not have are skipped (e.g.
    ``eval/*`` without evaluations).

    Args:
        run_id: the MLflow run.
        path: the PNG file to write.
        metrics: metric names (default :func:`default_metrics`: the run's
            episode return where its episodes end).
        tracking_uri: the MLflow tracking URI (default: MLflow's).

    Raises:
        ValueError: if the run has none of ``metrics``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    client = make_client(tracking_uri)
    run = client.get_run(run_id)
    metrics = default_metrics(run.data.metrics) if metrics is None else list(metrics)
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
        ax.set_ylabel("\n".join(axis_label(name, horizon) for name in group), fontsize="small")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[-1, 0].set_xlabel("env steps (transitions collected)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)
