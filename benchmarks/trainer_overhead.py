"""What the Trainer costs on top of the bare Algorithm, at a small scale.

Run ``python -m benchmarks.trainer_overhead`` from the repository root.
CartPole, 64 envs x 16 steps, a 64x64 MLP, compiled on CPU: the size where
a step takes milliseconds and writing to the tracking store could dominate.
Each round times, on the same warm Algorithm, ``--steps`` iterations of

* ``algorithm``: ``collect()`` + ``step()`` (no logging);
* ``trainer.run``: ``Trainer.run`` (memory stats, counters, metrics
  buffered and written in batches; MLflow's default SQLite store in a
  temporary directory);
* ``trainer.step``: ``Trainer.step()`` called on its own, then
  ``flush_metrics()`` (so each measurement pays for the points it
  recorded, as ``run()`` does when it returns, and none is left for the
  next measurement to write),

in alternation, so a shared machine's drift hits all three alike. Drift
between rounds still moves the overhead by several percent on a shared
2-core machine, so each Trainer row also reports its *shell share*: the
time of the call outside the Algorithm's ``collect_each``/``step_each``
over the time inside them, measured within the same call (immune to
drift between calls; the Algorithm's own work is the bare row's). With
``--members K`` the same is measured for ``Trainer(num_members=K)`` (a
parent run and K nested member runs) against the bare
:class:`rlstack.Population`. Prints
the median ms per iteration over rounds and the overhead over the bare
Algorithm, and writes ``benchmarks/results/trainer-overhead-<device>.json``
(``trainer-overhead-K<K>-<device>.json`` for a population).
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

import mlflow  # noqa: E402
import torch  # noqa: E402

from rlstack import Trainer  # noqa: E402
from rlstack.envs import CartPole  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CONFIG = dict(
    num_envs=64,
    horizon=16,
    sgd_minibatch_size=256,
    num_sgd_iters=4,
    model_config={"hiddens": (64, 64)},
)


def _per_step_ms(fn, steps: int) -> float:
    start = time.perf_counter()
    fn(steps)
    return 1000.0 * (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="iterations per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--members", type=int, default=None, metavar="K", help="a population of K members"
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    if args.out:
        args.out = str(Path(args.out).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # the SQLite store's artifacts go to ./mlruns
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        trainer = Trainer(
            CartPole, **CONFIG, compile=args.compile, seed=0, num_members=args.members
        )
        algo = trainer.algorithm
        for _ in range(3):  # compile and warm up
            trainer.step()

        inside = [
            0.0
        ]  # seconds spent in the Algorithm's collect_each/step_each during a Trainer measurement

        def timed(fn):
            def call(*a, **kw):
                start = time.perf_counter()
                try:
                    return fn(*a, **kw)
                finally:
                    inside[0] += time.perf_counter() - start

            return call

        algo.collect_each, algo.step_each = timed(algo.collect_each), timed(algo.step_each)

        def bare(steps: int) -> None:
            for _ in range(steps):
                algo.collect()
                algo.step()

        def run(steps: int) -> None:
            target = algo.steps + steps
            trainer.run(stop_conditions=[lambda s: s["algorithm/steps"] >= target])

        def step(steps: int) -> None:
            for _ in range(steps):
                trainer.step()
            trainer.flush_metrics()

        timings = {"algorithm": [], "trainer.run": [], "trainer.step": []}
        shell = {
            "trainer.run": [],
            "trainer.step": [],
        }  # the Trainer's own share of each call, measured inside it
        for _ in range(args.rounds):
            for name, fn in (("algorithm", bare), ("trainer.run", run), ("trainer.step", step)):
                inside[0] = 0.0
                timings[name].append(_per_step_ms(fn, args.steps))
                if name in shell:
                    algorithm_ms = 1000.0 * inside[0] / args.steps
                    shell[name].append(timings[name][-1] / algorithm_ms - 1.0)
        trainer.close()
    medians = {name: statistics.median(values) for name, values in timings.items()}
    base = medians["algorithm"]
    rows = [
        {
            "what": name,
            "ms_per_step": medians[name],
            "overhead": medians[name] / base - 1.0,
            "rounds_ms": timings[name],
            "shell_share": statistics.median(shell[name]) if name in shell else 0.0,
            "rounds_shell_share": shell.get(name, []),
        }
        for name in timings
    ]
    members = (
        f", population of {args.members} (parent + {args.members} member runs)"
        if args.members
        else ""
    )
    print(
        f"CartPole, 64 envs x 16 steps, 64x64{members}, {'compiled' if args.compile else 'eager'}, "
        f"{args.steps} steps x {args.rounds} rounds (median)"
    )
    print(
        f"{'what':<14} {'ms/step':>8} {'overhead over algorithm':>24} "
        f"{'shell share, same calls':>24}"
    )
    for row in rows:
        print(
            f"{row['what']:<14} {row['ms_per_step']:>8.2f} {100 * row['overhead']:>23.1f}% "
            f"{100 * row['shell_share']:>23.1f}%"
        )
    suffix = f"K{args.members}-" if args.members else ""
    out = Path(args.out) if args.out else RESULTS / f"trainer-overhead-{suffix}{device.type}.json"
    meta = {
        "torch": torch.__version__,
        "device": str(device),
        "config": {**CONFIG, "compile": args.compile, "num_members": args.members},
        "steps": args.steps,
        "rounds": args.rounds,
        "date": time.strftime("%Y-%m-%d"),
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
