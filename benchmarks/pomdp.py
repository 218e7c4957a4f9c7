"""Partially observed CartPole: which policies solve it when velocities are hidden.

Run ``python -m benchmarks.pomdp`` from the repository root. CartPole with
``hide_velocities=True`` observes the cart's position and the pole's angle
only (0 in place of both velocities). For each preset and seed it trains
with ``POMDP_PRESETS[name]`` on ``POMDP_ENVS[name]`` (gymnasium's episodic
CartPole-v1 or the infinite-horizon CartPole) and checks the success measure of
:class:`rlstack.envs.CartPole` (the share of 1024 fresh envs kept within
gymnasium's bounds for 500 steps, deterministic policy, velocities hidden:
the env config the policy was trained with) every few updates, until the
target (>= 95% balanced) or the time limit; the clock includes compilation
and excludes the checks. A policy with memory (a window of observations,
or a recurrent one) carries it through the check (``Algorithm.actor``).

Expected: the plain MLP preset fails (it cannot tell a pole falling left from
one rising to the right); the history-window and the recurrent (GRU)
presets solve it. Prints a table (median over seeds) and writes
``benchmarks/results/pomdp-<device>.json``.
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

from rlstack import Algorithm, RecurrentAlgorithm, random  # noqa: E402
from rlstack.envs import BUILTIN_ENVS, CartPole  # noqa: E402
from rlstack.shell.presets import POMDP_ENVS, POMDP_PRESETS  # noqa: E402

TARGET = 0.95
#: Seconds of training per run, by preset (a recurrent update costs ~2x a feedforward one here).
LIMITS = {"mlp": 60.0, "window": 60.0, "recurrent": 300.0}


def time_to_target(
    name: str, seed: int, *, compile: bool, device: str, check_every: int, limit: float
) -> dict:
    preset = POMDP_PRESETS[name]
    cls = RecurrentAlgorithm if "seq_len" in preset else Algorithm
    torch._dynamo.reset()
    start, excluded = time.perf_counter(), 0.0
    algo = cls(BUILTIN_ENVS[POMDP_ENVS[name]], seed=seed, compile=compile, device=device, **preset)
    check_env = CartPole()
    success, updates = (
        {"success/balanced": float("nan"), "success/reward_per_step": float("nan")},
        0,
    )
    while time.perf_counter() - start - excluded < limit:
        algo.collect()
        algo.step()
        updates += 1
        if updates % check_every == 0:
            check = time.perf_counter()
            success = check_env.success(
                algo.actor(), num_envs=1024, config=algo.env_config, key=random.key(0, device)
            )
            excluded += time.perf_counter() - check
            print(
                f"  {name} seed {seed}: {updates} updates, "
                f"{time.perf_counter() - start - excluded:.0f} s, "
                f"balanced {success['success/balanced']:.1%}, reward/step "
                f"{success['success/reward_per_step']:.3f}",
                file=sys.stderr,
                flush=True,
            )
            if success["success/balanced"] >= TARGET:
                break
    seconds = time.perf_counter() - start - excluded
    return {
        "preset": name,
        "env": POMDP_ENVS[name],
        "seed": seed,
        "compile": compile,
        "reached": success["success/balanced"] >= TARGET,
        "limit_s": limit,
        "seconds": seconds,
        "env_steps": algo.env_steps,
        "updates": updates,
        **success,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--presets", nargs="*", default=list(POMDP_PRESETS), choices=list(POMDP_PRESETS)
    )
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--compile", action="store_true", help="compile (default: eager)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--check-every", type=int, default=5)
    parser.add_argument(
        "--limit",
        type=float,
        default=None,
        help=f"seconds of training per run (default per preset: {LIMITS})",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    runs = []
    for name in args.presets:
        for seed in args.seeds:
            run = time_to_target(
                name,
                seed,
                compile=args.compile,
                device=args.device,
                check_every=args.check_every,
                limit=args.limit or LIMITS[name],
            )
            print(json.dumps(run), flush=True)
            runs.append(run)
    print(
        f"\nCartPole, velocities hidden: target >= {TARGET:.0%} balanced for 500 steps "
        f"({args.device}, {'compiled' if args.compile else 'eager'}, median over seeds "
        f"{args.seeds})"
    )
    print(
        "| preset | trained on | limit s | solved | seconds | env steps | updates | balanced | "
        "reward/step |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.presets:
        mine = [r for r in runs if r["preset"] == name]
        med = lambda k, mine=mine: statistics.median(r[k] for r in mine)  # noqa: E731
        print(
            f"| {name} | {POMDP_ENVS[name]} | {mine[0]['limit_s']:.0f} | "
            f"{sum(r['reached'] for r in mine)}/{len(mine)} | {med('seconds'):.1f} | "
            f"{med('env_steps'):,.0f} | {med('updates'):.0f} | {med('success/balanced'):.1%} | "
            f"{med('success/reward_per_step'):.3f} |"
        )
    out = Path(args.out or Path(__file__).parent / "results" / f"pomdp-{args.device}.json")
    out.write_text(
        json.dumps(
            {
                "target_balanced": TARGET,
                "runs": runs,
                "presets": {k: POMDP_PRESETS[k] for k in args.presets},
                "envs": {k: POMDP_ENVS[k] for k in args.presets},
            },
            indent=2,
            default=list,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
