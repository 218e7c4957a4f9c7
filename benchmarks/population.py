"""Populations: K members in one vmapped process against K sequential runs.

Run ``python -m benchmarks.population`` from the repository root.
CartPole, 64 envs x 16 steps per member, a 64x64 MLP, 4 epochs of 4
minibatches: the small scale where seeds and sweeps live. For each K it
builds a :class:`rlstack.Population` of K members and one single
:class:`rlstack.Algorithm` of the same per-member work, warms each up (the
first iteration's wall time, compile included, is reported), then times
``--iters`` collect+step iterations of every configuration in alternation,
``--rounds`` times (a shared machine's drift hits them alike), and then as
many ``collect()`` calls alone (the rollout). The time of K sequential runs
is K times the single run's; the speedup is that over the population's
(median of the per-round ratios). Also reported: the process's peak RSS
after all configurations were built and run. Prints the medians and writes
``benchmarks/results/population-<device>.json``. ``--profile K`` prints
where one iteration's time goes (torch.profiler, top operators) for the
population of K and for the single run.
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

import torch  # noqa: E402

from rlstack import Algorithm, Population  # noqa: E402
from rlstack.envs import CartPole  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CONFIG = dict(
    num_envs=64,
    horizon=16,
    sgd_minibatch_size=256,
    num_sgd_iters=4,
    model_config={"hiddens": (64, 64)},
)


def _iteration(algo) -> None:
    algo.collect()
    algo.step()


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _profile(algo, label: str) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _iteration(algo)
    print(f"\n--- {label}: one collect+step ---")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--members", default="1,2,4,8,16", help="population sizes K, comma-separated"
    )
    parser.add_argument("--iters", type=int, default=5, help="iterations per timing")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--profile", type=int, default=None, metavar="K", help="profile the population of K"
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    sizes = [int(k) for k in args.members.split(",")]
    common = dict(CONFIG, compile=args.compile, device=device)

    single = Algorithm(CartPole, seed=0, **common)
    configs = {"single": single} | {
        f"K={k}": Population(CartPole, num_members=k, seed=0, **common) for k in sizes
    }
    first = {}
    for name, algo in configs.items():
        first[name] = _timed(lambda algo=algo: _iteration(algo))  # compile included
        _iteration(algo)
        print(f"built {name}: first iteration {first[name]:.1f} s", flush=True)

    times: dict[str, list[float]] = {name: [] for name in configs}
    rollout_times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.rounds):
        for name, algo in configs.items():
            times[name].append(
                _timed(lambda algo=algo: [_iteration(algo) for _ in range(args.iters)]) / args.iters
            )
            rollout_times[name].append(
                _timed(lambda algo=algo: [algo.collect() for _ in range(args.iters)]) / args.iters
            )
            algo.trajectory = None  # the next iteration collects afresh
    import resource

    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    transitions = CONFIG["num_envs"] * CONFIG["horizon"]
    rows = []
    for k in sizes:
        name = f"K={k}"
        ratios = [
            k * s / p for s, p in zip(times["single"], times[name], strict=True)
        ]  # per round: same moment
        pop_s = statistics.median(times[name])
        rows.append(
            {
                "members": k,
                "population_ms": 1000 * pop_s,
                "sequential_ms": 1000 * k * statistics.median(times["single"]),
                "transitions_per_s": k * transitions / pop_s,
                "rollout_transitions_per_s": k
                * transitions
                / statistics.median(rollout_times[name]),
                "speedup": statistics.median(ratios),
                "speedup_rounds": ratios,
                "first_iteration_s": first[name],
            }
        )
    print(
        f"\nCartPole, {CONFIG['num_envs']} envs x {CONFIG['horizon']} steps per member, 64x64, "
        f"{'compiled' if args.compile else 'eager'} on {device}; single run "
        f"{1000 * statistics.median(times['single']):.1f} "
        f"ms/iter, first iteration {first['single']:.1f} s, rollout alone "
        f"{transitions / statistics.median(rollout_times['single']):,.0f} transitions/s; peak RSS "
        f"{peak_rss_mb:.0f} MB"
    )
    print(
        f"{'K':>4} | {'pop ms/iter':>11} | {'K seq ms':>9} | {'transitions/s':>13} | "
        f"{'rollout/s':>11} | "
        f"{'speedup':>7} | {'1st iter s':>10}"
    )
    for row in rows:
        print(
            f"{row['members']:>4} | {row['population_ms']:>11.1f} | {row['sequential_ms']:>9.1f} | "
            f"{row['transitions_per_s']:>13,.0f} | {row['rollout_transitions_per_s']:>11,.0f} | "
            f"{row['speedup']:>6.2f}x | {row['first_iteration_s']:>10.1f}"
        )
    if args.profile is not None:
        _profile(configs[f"K={args.profile}"], f"population K={args.profile}")
        _profile(single, "single run")
    out = (
        Path(args.out)
        if args.out
        else RESULTS / f"population-{device.type}{'' if args.compile else '-eager'}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "config": {k: v for k, v in CONFIG.items()},
                "compile": args.compile,
                "device": str(device),
                "torch": torch.__version__,
                "rounds": args.rounds,
                "iters": args.iters,
                "single_ms": 1000 * statistics.median(times["single"]),
                "single_first_iteration_s": first["single"],
                "single_rollout_transitions_per_s": transitions
                / statistics.median(rollout_times["single"]),
                "peak_rss_mb": peak_rss_mb,
                "rows": rows,
            },
            indent=2,
            default=str,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
