"""Time and env steps for the presets to reach each classic-control target.

Run ``python -m benchmarks.classic_control`` from the repository root. For
each env and seed it trains ``Trainer``-style with ``PRESETS[env]`` and
checks the env's success measure (deterministic policy, 1024 fresh envs)
every few steps; the clock includes compilation and excludes the checks.
Prints a table (median over seeds) and writes
``benchmarks/results/classic_control-<device>.json``.

Every check measures what papers report: gymnasium's mean episode return
of the deterministic policy on the episodic task (``CartPole-v1``,
``Pendulum-v1``, ``MountainCar-v0``: :mod:`rlstack.envs.episodic`, the
first episode of each of 1024 fresh envs), whichever mode the preset
trains in (the presets train the shaped infinite-horizon envs), beside the
env's own success measure. Targets (issue 10), wall clock including
compilation: CartPole-v1 >= 475 in < 30 s, Pendulum-v1 >= -200 in < 60 s,
MountainCar-v0 >= -120 in < 60 s. Public reference (rl-baselines3-zoo's
PPO): CartPole-v1 500 after 100k env steps, Pendulum-v1 -172 after 100k,
MountainCar-v0 -110 after 1M.
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
from rlstack.envs import BUILTIN_ENVS, CartPoleV1, MountainCarV0, PendulumV1  # noqa: E402
from rlstack.shell.presets import PRESETS  # noqa: E402

# env -> (gymnasium task, target episode return, time limit in s, the env's own success measure)
TARGETS = {
    "CartPole": (CartPoleV1, 475.0, 30.0, "success/balanced"),
    "Pendulum": (PendulumV1, -200.0, 60.0, "success/reward_per_step"),
    "MountainCar": (MountainCarV0, -120.0, 60.0, "success/reached_goal"),
    # Trained on gymnasium's episodic tasks themselves (built in), with their presets.
    "CartPole-v1": (CartPoleV1, 475.0, 30.0, "success/episode_return"),
    "Pendulum-v1": (PendulumV1, -200.0, 60.0, "success/episode_return"),
    "MountainCar-v0": (
        MountainCarV0,
        -120.0,
        60.0,
        "success/episode_return",
    ),  # trained on its speed reward
}
RL_ZOO = {
    "CartPole": (500.0, 100_000),
    "Pendulum": (-172.0, 100_000),
    "MountainCar": (-110.0, 1_000_000),
    "CartPole-v1": (500.0, 100_000),
    "Pendulum-v1": (-172.0, 100_000),
    "MountainCar-v0": (-110.0, 1_000_000),
}


def scaled_preset(env_name: str, num_envs: int | None) -> dict:
    """``PRESETS[env_name]`` with ``num_envs`` envs (None: the preset's), its
    minibatch size scaled with it so that an update has as many minibatches.
    """
    preset = dict(PRESETS.get(env_name, {}))
    if num_envs is not None:
        preset["sgd_minibatch_size"] = preset["sgd_minibatch_size"] * num_envs // preset["num_envs"]
        preset["num_envs"] = num_envs
    return preset


def time_to_target(
    env_name: str,
    seed: int,
    *,
    compile: bool,
    device: str,
    check_every: int,
    num_envs: int | None = None,
    limit: float | None = None,
    updates: int | None = None,
) -> dict:
    """Train ``env_name``'s preset until its target is met at a check (or ``limit`` seconds
    pass); with ``updates``, train exactly that many updates and report the return at the end
    (the budget a preset is stated at), the checks' returns as a curve.
    """
    task, threshold, default_limit, key = TARGETS[env_name]
    limit = default_limit if limit is None else limit
    torch._dynamo.reset()
    start = time.perf_counter()
    excluded = 0.0
    preset = scaled_preset(env_name, num_envs)
    algo = Algorithm(BUILTIN_ENVS[env_name], seed=seed, compile=compile, device=device, **preset)
    value, own, steps, curve = float("nan"), float("nan"), 0, []
    while (
        steps < updates if updates is not None else time.perf_counter() - start - excluded < limit
    ):
        algo.collect()
        algo.step()
        steps += 1
        if steps % check_every == 0 or steps == updates:
            check = time.perf_counter()
            value = task().success(algo.predict, num_envs=1024, key=random.key(0, device))[
                "success/episode_return"
            ]
            own = algo.env.success(algo.predict, num_envs=1024, key=random.key(0, device))[key]
            excluded += time.perf_counter() - check
            curve.append([algo.env_steps, value])
            if value >= threshold and updates is None:
                break
    seconds = time.perf_counter() - start - excluded
    reached = value >= threshold
    return {
        "env": env_name,
        "task": task.__name__,
        "seed": seed,
        "num_envs": preset["num_envs"],
        "compile": compile,
        "device": device,
        "reached": reached,
        "seconds": seconds,
        "env_steps": algo.env_steps,
        "updates": steps,
        "episode_return": value,
        "threshold": threshold,
        "limit_s": limit,
        "own_metric": key,
        "own_value": own,
        "curve": curve,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--envs", nargs="*", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument(
        "--compile", action="store_true", help="compile (default: eager, faster for these budgets)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--check-every", type=int, default=5)
    parser.add_argument(
        "--num-envs",
        type=int,
        nargs="*",
        default=[None],
        metavar="N",
        help="env counts to try, each a row (default: the preset's; the minibatch size scales "
        "along)",
    )
    parser.add_argument(
        "--limit", type=float, default=None, help="seconds per run (default: each target's limit)"
    )
    parser.add_argument(
        "--updates",
        type=int,
        default=None,
        help="train exactly this many updates and score the end (default: until the target)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="JSON path (default benchmarks/results/classic_control-<device>.json)",
    )
    args = parser.parse_args(argv)
    rows, summary = [], []
    print(
        f"{'env':<15}{'envs':>7}{'seed':>5}{'reached':>9}{'seconds':>9}{'env steps':>12}"
        f"{'gym return':>12}{'own':>10}",
        flush=True,
    )
    for env_name in args.envs:
        for num_envs in args.num_envs:
            runs = []
            for seed in args.seeds:
                row = time_to_target(
                    env_name,
                    seed,
                    compile=args.compile,
                    device=args.device,
                    check_every=args.check_every,
                    num_envs=num_envs,
                    limit=args.limit,
                    updates=args.updates,
                )
                runs.append(row)
                print(
                    f"{env_name:<15}{row['num_envs']:>7}{seed:>5}{str(row['reached']):>9}{row['seconds']:>9.1f}"
                    f"{row['env_steps']:>12,}{row['episode_return']:>12.1f}{row['own_value']:>10.3f}",
                    flush=True,
                )
            rows += runs
            summary.append(
                {
                    "env": env_name,
                    "num_envs": runs[0]["num_envs"],
                    "reached": sum(r["reached"] for r in runs),
                    "runs": len(runs),
                    "median_seconds": statistics.median(r["seconds"] for r in runs),
                    "median_env_steps": statistics.median(r["env_steps"] for r in runs),
                    "median_episode_return": statistics.median(r["episode_return"] for r in runs),
                    "target": {
                        "episode_return": TARGETS[env_name][1],
                        "seconds": TARGETS[env_name][2],
                    },
                    "rl_zoo_ppo": {
                        "episode_return": RL_ZOO[env_name][0],
                        "env_steps": RL_ZOO[env_name][1],
                    },
                }
            )
    print()
    for s in summary:
        zoo = s["rl_zoo_ppo"]
        print(
            f"{s['env']:<15}{s['num_envs']:>7} envs: reached {s['reached']}/{s['runs']}  median "
            f"{s['median_seconds']:.1f} s, "
            f"{s['median_env_steps']:,.0f} env steps, gym return {s['median_episode_return']:.1f} "
            f"(rl-zoo PPO: {zoo['episode_return']:g} at {zoo['env_steps']:,} steps)"
        )
    out = Path(
        args.out
        or Path(__file__).parent / "results" / f"classic_control-{args.device.split(':')[0]}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"torch": torch.__version__, "runs": rows, "summary": summary}, indent=2)
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
