"""Gymnasium's MuJoCo locomotion tasks with the ``continuous`` preset, beside CleanRL.

Run ``python -m benchmarks.mujoco`` from the repository root (needs
``pip install -e ".[mujoco]"``). For each task and seed it trains
``PRESETS["continuous"]`` (CleanRL's ppo_continuous_action settings) for
``--env-steps`` env steps and reports the mean return of the last 100
training episodes, the mean return of 10 deterministic evaluation episodes
(10 fresh envs, normalisation frozen), wall-clock seconds (compile
included) and env steps/s. Prints a table beside CleanRL's published
scores at 1M steps and writes ``benchmarks/results/mujoco-<device>.json``
with each run's learning curve (env steps, mean return of the episodes
that ended in each rollout), and a plot of the curves where matplotlib is
installed.

CleanRL's ppo_continuous_action at 1M env steps (v4 tasks, mean +- std
over seeds, from its documentation; about 25 minutes each on CPU):
HalfCheetah 1442.6 +- 46.0, Hopper 2382.9 +- 271.7, Walker2d 2288.0 +- 571.8.
"""

from __future__ import annotations

import argparse
import collections
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from rlstack import Algorithm  # noqa: E402
from rlstack.integrations.gymnasium_adapter import gymnasium_env  # noqa: E402
from rlstack.shell.presets import PRESETS  # noqa: E402

CLEANRL = {
    "HalfCheetah-v5": (1442.6, 46.0),
    "Hopper-v5": (2382.9, 271.7),
    "Walker2d-v5": (2288.0, 571.8),
}


def ended_returns(traj) -> list[float]:
    """The returns of the episodes that ended in a rollout's trajectory (raw rewards)."""
    done = traj.terminated | traj.truncated
    return traj.episode_returns[done].tolist()


def train(task: str, seed: int, *, env_steps: int, compile: bool) -> dict:
    start = time.perf_counter()
    preset = {**PRESETS["continuous"], "compile": compile}
    algo = Algorithm(gymnasium_env(task), seed=seed, **preset)
    per_update = algo.config.num_envs * algo.config.horizon
    last = collections.deque(maxlen=100)
    curve = []
    while algo.env_steps + per_update <= env_steps:
        algo.collect()
        returns = ended_returns(algo.trajectory)
        algo.step()
        last.extend(returns)
        if returns:
            curve.append((algo.env_steps, sum(returns) / len(returns)))
    seconds = time.perf_counter() - start
    evaluation = gymnasium_env(task).build_env(num_envs=10).success(algo.predict, num_envs=10)
    return {
        "task": task,
        "seed": seed,
        "env_steps": algo.env_steps,
        "seconds": seconds,
        "env_steps_per_s": algo.env_steps / seconds,
        "compile": compile,
        "last100_training_return": sum(last) / max(len(last), 1),
        "deterministic_return": evaluation["success/episode_return"],
        "curve": curve,
    }


def processor() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else the architecture."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.machine()


def plot(rows: list[dict], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.5), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for r in (r for r in rows if r["task"] == task):
            steps, returns = zip(*r["curve"], strict=True) if r["curve"] else ((), ())
            ax.plot(steps, returns, label=f"seed {r['seed']}")
        if task in CLEANRL:
            ax.axhline(CLEANRL[task][0], color="gray", linestyle="--", label="CleanRL at 1M")
        ax.set_title(task)
        ax.set_xlabel("env steps")
        ax.set_ylabel("training episode return")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="*", default=list(CLEANRL))
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--env-steps", type=int, default=1_000_000)
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="default: on, as the preset",
    )
    parser.add_argument(
        "--out", default=None, help="JSON path (default benchmarks/results/mujoco-cpu.json)"
    )
    args = parser.parse_args(argv)
    rows = []
    print(
        f"{'task':<16}{'seed':>5}{'env steps':>11}{'seconds':>9}{'steps/s':>9}{'last 100':>10}"
        f"{'deterministic':>15}",
        flush=True,
    )
    for task in args.tasks:
        for seed in args.seeds:
            row = train(task, seed, env_steps=args.env_steps, compile=args.compile)
            rows.append(row)
            print(
                f"{task:<16}{seed:>5}{row['env_steps']:>11,}{row['seconds']:>9.1f}{row['env_steps_per_s']:>9,.0f}"
                f"{row['last100_training_return']:>10.1f}{row['deterministic_return']:>15.1f}",
                flush=True,
            )
    summary = []
    for task in args.tasks:
        runs = [r for r in rows if r["task"] == task]
        cleanrl = CLEANRL.get(task)
        summary.append(
            {
                "task": task,
                "runs": len(runs),
                "median_last100_training_return": statistics.median(
                    r["last100_training_return"] for r in runs
                ),
                "median_deterministic_return": statistics.median(
                    r["deterministic_return"] for r in runs
                ),
                "median_seconds": statistics.median(r["seconds"] for r in runs),
                "cleanrl_1m": {"mean": cleanrl[0], "std": cleanrl[1]} if cleanrl else None,
            }
        )
    print()
    print(
        f"{'task':<16}{'median last 100':>16}{'median determ.':>16}{'median s':>10}"
        f"{'CleanRL at 1M':>16}"
    )
    for s in summary:
        ref = (
            f"{s['cleanrl_1m']['mean']:.1f} +- {s['cleanrl_1m']['std']:.1f}"
            if s["cleanrl_1m"]
            else "-"
        )
        print(
            f"{s['task']:<16}{s['median_last100_training_return']:>16.1f}{s['median_deterministic_return']:>16.1f}"
            f"{s['median_seconds']:>10.1f}{ref:>16}"
        )
    out = Path(args.out or Path(__file__).parent / "results" / "mujoco-cpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "env_steps": args.env_steps,
        "compile": args.compile,
        "preset": "continuous",
        "gymnasium": importlib.metadata.version("gymnasium"),
        "mujoco": importlib.metadata.version("mujoco"),
        "cpus": os.cpu_count(),
        "processor": processor(),
        "date": time.strftime("%Y-%m-%d"),
    }
    out.write_text(json.dumps({"meta": meta, "runs": rows, "summary": summary}, indent=2))
    print(f"wrote {out}")
    figure = plot(rows, out.with_suffix(".png"))
    if figure:
        print(f"wrote {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
