"""Gymnasium's own CartPole-v1 (``rlstack.integrations.gymnasium_adapter``) with its preset, per
seed.

Run ``python -m benchmarks.gymnasium_cartpole`` from the repository root.
For each seed it trains ``PRESETS["gymnasium:CartPole-v1"]`` (8 sync
sub-envs, eager) until the mean training episode return over the last 5
rollouts that ended episodes passes 400, or ``--max-env-steps``; then scores
the deterministic policy on 8 fresh envs. Prints a table and writes
``benchmarks/results/gymnasium-cartpole-seeds-cpu.json``; the README's claim
quotes it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlstack import Algorithm  # noqa: E402
from rlstack.integrations.gymnasium_adapter import gymnasium_env  # noqa: E402
from rlstack.shell.presets import PRESETS  # noqa: E402

TARGET = 400.0


def train_seed(seed: int, max_env_steps: int) -> dict:
    start = time.perf_counter()
    algo = Algorithm(gymnasium_env("CartPole-v1"), seed=seed, **PRESETS["gymnasium:CartPole-v1"])
    returns: list[float] = []
    while algo.env_steps < max_env_steps and not (
        len(returns) >= 5 and sum(returns[-5:]) / 5 > TARGET
    ):
        stats = algo.collect()
        algo.step()
        if "episodes/return/mean" in stats:
            returns.append(stats["episodes/return/mean"])
    seconds = time.perf_counter() - start
    last5 = sum(returns[-5:]) / max(len(returns[-5:]), 1)
    deterministic = algo.env.success(algo.predict, num_envs=8)["success/episode_return"]
    return {
        "seed": seed,
        "reached": last5 > TARGET,
        "env_steps": algo.env_steps,
        "seconds": seconds,
        "last5_training_return": last5,
        "deterministic_return": deterministic,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--max-env-steps", type=int, default=100_000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rows = []
    print(
        f"{'seed':>5}{'reached':>9}{'env steps':>11}{'seconds':>9}{'last 5':>9}"
        f"{'deterministic':>15}",
        flush=True,
    )
    for seed in args.seeds:
        row = train_seed(seed, args.max_env_steps)
        rows.append(row)
        print(
            f"{seed:>5}{str(row['reached']):>9}{row['env_steps']:>11,}{row['seconds']:>9.1f}"
            f"{row['last5_training_return']:>9.1f}{row['deterministic_return']:>15.1f}",
            flush=True,
        )
    summary = {
        "reached": sum(r["reached"] for r in rows),
        "runs": len(rows),
        "median_env_steps": statistics.median(r["env_steps"] for r in rows),
        "median_seconds": statistics.median(r["seconds"] for r in rows),
    }
    print(summary)
    out = Path(args.out or Path(__file__).parent / "results" / "gymnasium-cartpole-seeds-cpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"target": TARGET, "runs": rows, "summary": summary}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
