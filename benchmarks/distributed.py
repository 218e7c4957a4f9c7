"""Data-parallel training: 1 and 2 gloo processes on one machine.

Run ``python -m benchmarks.distributed`` from the repository root. Each
process (rank) trains CartPole with ``--num-envs`` envs x 16 steps, a
64x64 MLP, 4 epochs of 4 minibatches (compiled unless ``--no-compile``),
its gradients averaged across ranks by :mod:`rlstack.integrations.distributed` (one
flat all-reduce per optimizer step). Rounds alternate the world sizes, each
a fresh set of processes (spawned here, as torchrun would: ``--threads``
torch threads per process), which warm up (compile) and then time
``--iters`` collect+step iterations. Reported per world size (median over
rounds): total env transitions/s over all ranks, ms per iteration, and per
optimizer step the time spent in the all-reduce itself and, before it,
waiting at a barrier for the slower rank (rank 0, wall clock; the barrier
is the benchmark's, added to tell the two apart). Writes
``benchmarks/results/distributed-cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CONFIG = dict(horizon=16, num_sgd_iters=4, model_config={"hiddens": (64, 64)})


def _worker(rank: int, world: int, init_file: str, out: str, args: dict) -> None:
    torch.set_num_threads(args["threads"])
    if world > 1:
        os.environ["WORLD_SIZE"] = str(world)
        dist.init_process_group(
            "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
        )
    from rlstack import Algorithm
    from rlstack.envs import CartPole
    from rlstack.integrations import distributed

    reduce_seconds: list[float] = []
    wait_seconds: list[float] = []
    original = distributed.all_reduce_mean

    def timed_all_reduce(grads, metrics):
        start = time.perf_counter()
        dist.barrier()  # waiting for the slower rank, timed apart from the all-reduce itself
        arrived = time.perf_counter()
        result = original(grads, metrics)
        wait_seconds.append(arrived - start)
        reduce_seconds.append(time.perf_counter() - arrived)
        return result

    distributed.all_reduce_mean = timed_all_reduce  # read by Algorithm at construction
    num_envs = args["num_envs"]
    algo = Algorithm(
        CartPole,
        seed=0,
        num_envs=num_envs,
        sgd_minibatch_size=num_envs * 16 // 4,
        compile=args["compile"],
        **CONFIG,
    )
    for _ in range(2):  # compile and warm up
        algo.collect()
        algo.step()
    reduce_seconds.clear()
    wait_seconds.clear()
    if world > 1:
        dist.barrier()
    start = time.perf_counter()
    for _ in range(args["iters"]):
        algo.collect()
        algo.step()
    elapsed = (time.perf_counter() - start) / args["iters"]
    if rank == 0:
        steps = algo.config.num_sgd_iters * 4 * args["iters"]
        Path(out).write_text(
            json.dumps(
                {
                    "ms_per_iteration": 1000 * elapsed,
                    "transitions_per_s": world * num_envs * 16 / elapsed,
                    "all_reduce_ms_per_step": 1000 * sum(reduce_seconds) / steps
                    if reduce_seconds
                    else 0.0,
                    "wait_ms_per_step": 1000 * sum(wait_seconds) / steps if wait_seconds else 0.0,
                }
            )
        )
    if world > 1:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", default="1,2", help="process counts, comma-separated")
    parser.add_argument("--num-envs", type=int, default=1024, help="envs per rank")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per process (torchrun's default: 1)"
    )
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    worlds = [int(w) for w in args.worlds.split(",")]
    settings = {
        "num_envs": args.num_envs,
        "iters": args.iters,
        "threads": args.threads,
        "compile": args.compile,
    }
    results: dict[int, list[dict]] = {w: [] for w in worlds}
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(args.rounds):
            for world in worlds:
                init, out = (
                    f"{tmp}/init-{round_index}-{world}",
                    f"{tmp}/out-{round_index}-{world}.json",
                )
                mp.spawn(_worker, args=(world, init, out, settings), nprocs=world, join=True)
                results[world].append(json.loads(Path(out).read_text()))
                print(
                    f"round {round_index + 1}, {world} process(es): {results[world][-1]}",
                    flush=True,
                )
    rows = []
    for world in worlds:
        rows.append(
            {"processes": world}
            | {
                key: statistics.median(r[key] for r in results[world])
                for key in (
                    "transitions_per_s",
                    "ms_per_iteration",
                    "all_reduce_ms_per_step",
                    "wait_ms_per_step",
                )
            }
            | {"rounds": results[world]}
        )
    print(
        f"\nCartPole, {args.num_envs} envs x 16 steps per rank, 64x64, "
        f"{'compiled' if args.compile else 'eager'}, "
        f"gloo, {args.threads} thread(s) per process, median of {args.rounds} rounds"
    )
    print(
        f"{'processes':>9} | {'transitions/s':>13} | {'ms/iter':>8} | {'all-reduce ms/step':>18} | "
        f"{'wait ms/step':>12}"
    )
    for row in rows:
        print(
            f"{row['processes']:>9} | {row['transitions_per_s']:>13,.0f} | "
            f"{row['ms_per_iteration']:>8.1f} | "
            f"{row['all_reduce_ms_per_step']:>18.3f} | {row['wait_ms_per_step']:>12.3f}"
        )
    out = Path(args.out) if args.out else RESULTS / "distributed-cpu.json"
    out.write_text(
        json.dumps(
            {"settings": settings, "config": CONFIG, "torch": torch.__version__, "rows": rows},
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
