"""Time and env steps for the presets to reach each classic-control target.

Run ``python -m benchmarks.classic_control`` from the repository root. For
each env and seed it trains ``Trainer``-style with ``PRESETS[env]`` and
checks the env's success measure (deterministic policy, 1024 fresh envs)
every few steps; the clock includes compilation and excludes the checks.
Prints a table (median over seeds) and writes
``benchmarks/results/classic_control-<device>.json``.

Targets (issue 4): CartPole >= 95% balanced for 500 steps in < 60 s;
Pendulum >= -1.0 mean reward per step in < 180 s; MountainCar >= 90%
reaching the goal within 200 steps in < 180 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlstack import Algorithm, random  # noqa: E402
from rlstack.envs import BUILTIN_ENVS  # noqa: E402
from rlstack.presets import PRESETS  # noqa: E402

TARGETS = {
    "CartPole": ("success/balanced", 0.95, 60.0),
    "Pendulum": ("success/reward_per_step", -1.0, 180.0),
    "MountainCar": ("success/reached_goal", 0.90, 180.0),
}


def time_to_target(env_name: str, seed: int, *, compile: bool, device: str, check_every: int) -> dict:
    key, threshold, limit = TARGETS[env_name]
    torch._dynamo.reset()
    start = time.perf_counter()
    excluded = 0.0
    algo = Algorithm(BUILTIN_ENVS[env_name], seed=seed, compile=compile, device=device, **PRESETS.get(env_name, {}))
    value, steps = float("nan"), 0
    while time.perf_counter() - start - excluded < limit:
        algo.collect()
        algo.step()
        steps += 1
        if steps % check_every == 0:
            check = time.perf_counter()
            value = algo.env.success(algo.predict, num_envs=1024, key=random.key(0, device))[key]
            excluded += time.perf_counter() - check
            if value >= threshold:
                break
    seconds = time.perf_counter() - start - excluded
    reached = value >= threshold
    return {"env": env_name, "seed": seed, "compile": compile, "reached": reached, "seconds": seconds,
            "env_steps": algo.env_steps, "updates": steps, "metric": key, "value": value, "threshold": threshold,
            "limit_s": limit}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="*", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--compile", action="store_true", help="compile (default: eager, faster for these budgets)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--check-every", type=int, default=5)
    args = parser.parse_args(argv)
    rows, summary = [], []
    print(f"{'env':<12}{'seed':>5}{'reached':>9}{'seconds':>9}{'env steps':>12}{'value':>10}", flush=True)
    for env_name in args.envs:
        runs = []
        for seed in args.seeds:
            row = time_to_target(env_name, seed, compile=args.compile, device=args.device, check_every=args.check_every)
            runs.append(row)
            print(f"{env_name:<12}{seed:>5}{str(row['reached']):>9}{row['seconds']:>9.1f}{row['env_steps']:>12,}{row['value']:>10.3f}", flush=True)
        rows += runs
        summary.append({
            "env": env_name,
            "reached": sum(r["reached"] for r in runs),
            "runs": len(runs),
            "median_seconds": statistics.median(r["seconds"] for r in runs),
            "median_env_steps": statistics.median(r["env_steps"] for r in runs),
        })
    print()
    for s in summary:
        print(f"{s['env']:<12} reached {s['reached']}/{s['runs']}  median {s['median_seconds']:.1f} s, "
              f"{s['median_env_steps']:,.0f} env steps")
    out = Path(__file__).parent / "results" / f"classic_control-{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"torch": torch.__version__, "runs": rows, "summary": summary}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
