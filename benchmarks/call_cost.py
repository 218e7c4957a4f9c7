"""The cost of one call of a compiled piece, by the way it is called.

Run ``python -m benchmarks.call_cost`` from the repository root. For a
64x64 model on CartPole at 8 and at 4096 envs (``--num-envs``), an
Algorithm in the default compile mode trains until every piece has
switched to its form loaded from (or stored into) a fresh compile cache;
then the rollout's step and the update's minibatch step are called on the
inputs of their first call, in alternating rounds, as:

* ``eager``: the piece itself;
* ``compiled``: ``torch.compile(piece, fullgraph=True)``, all of its guards
  evaluated (``compile=True``'s first call of a loop);
* ``compiled, loop``: the same inside ``same_inputs_as_before`` (its later
  calls in a loop: only the guards that tell graphs apart);
* ``loaded``: the default mode's piece, ahead-of-time compiled and loaded,
  without torch's guards, behind rlstack's own check of the inputs
  (``CheckedPiece``, a loop's first call);
* ``loaded, loop``: the same inside a loop (the check skipped).

Prints microseconds per call (median over rounds) and writes
``benchmarks/results/call-cost-cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from rlstack import Algorithm  # noqa: E402
from rlstack.envs import CartPole  # noqa: E402
from rlstack.learn.transforms import INDUCTOR_OPTIONS, same_inputs_as_before  # noqa: E402
from rlstack.shell.functions import TRAINING  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
#: The acting piece and the update's minibatch piece (``sgd_step``, or ``grads`` where a
#: minibatch's gradients are accumulated over chunks, as at 4096 envs).
PIECES = ("rollout/step", "update/sgd_step", "update/grads")


def switched_algorithm(num_envs: int, cache: str, limit_s: float = 900.0):
    """An Algorithm whose pieces have all switched, and each piece's
    ``(eager, first inputs)`` by name.
    """
    algo = Algorithm(
        CartPole,
        num_envs=num_envs,
        horizon=16,
        model_config={"hiddens": (64, 64)},
        compile_cache=cache,
        seed=0,
    )
    algo.collect()
    algo.step()
    strategy = algo.functions.strategy
    inputs = {name: (job.fn, job.args) for name, job in strategy.jobs.items()}
    deadline = time.monotonic() + limit_s
    while not all(name in strategy.switched for name in strategy.jobs):
        if time.monotonic() > deadline:
            raise RuntimeError(f"pieces did not switch within {limit_s} s")
        algo.collect()
        algo.step()
    return algo, inputs


def loaded_piece(algo, name: str):
    kind, _, piece = name.partition("/")
    staged = algo.functions.rollouts[TRAINING] if kind == "rollout" else algo.functions.update
    return staged.pieces[piece]


def time_calls(fn, args: tuple, calls: int, loop: bool) -> float:
    """Microseconds per call of ``fn(*args)`` over ``calls`` calls."""
    with same_inputs_as_before(loop):
        fn(*args)
        start = time.perf_counter()
        for _ in range(calls):
            fn(*args)
        return (time.perf_counter() - start) / calls * 1e6


def measure(num_envs: int, rounds: int, calls: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as cache:
        algo, inputs = switched_algorithm(num_envs, cache)
        rows = []
        for name in (name for name in PIECES if name in inputs):
            eager, args = inputs[name]
            compiled = torch.compile(eager, fullgraph=True, options=INDUCTOR_OPTIONS)
            loaded = loaded_piece(algo, name)
            ways = {
                "eager": (eager, False),
                "compiled": (compiled, False),
                "compiled, loop": (compiled, True),
                "loaded": (loaded, False),
                "loaded, loop": (loaded, True),
            }
            for fn, loop in ways.values():  # warm-up: compile, first calls
                time_calls(fn, args, 3, loop)
            samples = {way: [] for way in ways}
            for _ in range(rounds):
                for way, (fn, loop) in ways.items():
                    samples[way].append(time_calls(fn, args, calls, loop))
            row = {"num_envs": num_envs, "piece": name}
            row.update({way: statistics.median(values) for way, values in samples.items()})
            rows.append(row)
            print(
                f"{num_envs:>6} {name:<17}" + "".join(f"{row[way]:>16,.0f}" for way in ways),
                flush=True,
            )
        return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, nargs="*", default=[8, 4096])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200, help="calls per round at 8 envs")
    parser.add_argument("--out", default=str(RESULTS / "call-cost-cpu.json"))
    args = parser.parse_args(argv)
    header = ("eager", "compiled", "compiled, loop", "loaded", "loaded, loop")
    print(f"us per call, CPU ({torch.get_num_threads()} threads), torch {torch.__version__}")
    print(f"{'envs':>6} {'piece':<17}" + "".join(f"{h:>16}" for h in header))
    rows = []
    for num_envs in args.num_envs:
        calls = max(10, args.calls * 8 // num_envs)  # about the same seconds per round
        rows += measure(num_envs, args.rounds, calls)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
