"""Seconds from a fresh process to a default Trainer's first step, and where they go.

Run ``python -m benchmarks.startup`` from the repository root. Each case runs
in a fresh Python process, first as on a fresh machine (``cold``: a new
``TORCHINDUCTOR_CACHE_DIR`` and a new MLflow SQLite store, which MLflow
creates and migrates), then again with the cache and store that run left
(``warm``: a second run), in rounds. Each process reports:

* ``import``: ``import rlstack`` (torch included);
* ``build``: ``Trainer(env, **kwargs)`` (MLflow imported, model, env, the
  MLflow run created);
* ``collect`` / ``step``: the first ``collect()`` and ``step()``
  (compilation included);
* ``first step``: the sum, from the start of the process's import;
* ``compile``: all of ``torch.compile``'s time (``torch._dynamo.utils.compile_times``),
  split into ``tracing`` (Dynamo), ``codegen`` (AOTAutograd and Inductor's
  lowering and code generation) and ``cxx`` (the C++ compiler, and waiting
  for its workers).

Cases: ``1x-default`` (``Trainer(DiscreteDummyEnv)``: 8192 envs x 32,
(256, 256), rlstack 1.x's defaults), ``1x-tests`` (64 envs x 32, the size of
rlstack 1.1.0's own trainer tests), ``recurrent`` (``RecurrentTrainer`` at 64
envs x 32), each with the default ``compile`` (eager on CPU), and
``1x-tests-compiled`` (``compile=True``). Prints the medians and writes
``benchmarks/results/startup-cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

CASES = {
    "1x-default": ("Trainer", {}),
    "1x-tests": ("Trainer", {"num_envs": 64, "horizon": 32}),
    "recurrent": ("RecurrentTrainer", {"num_envs": 64, "horizon": 32}),
    "1x-tests-compiled": ("Trainer", {"num_envs": 64, "horizon": 32, "compile": True}),
}

# Runs in the fresh process; prints one JSON line.
CHILD = r"""
import json, sys, time
start = time.perf_counter()
import torch
import rlstack
from rlstack.env import DiscreteDummyEnv
imported = time.perf_counter()
cls_name, kwargs = sys.argv[1], json.loads(sys.argv[2])
trainer = getattr(rlstack, cls_name)(DiscreteDummyEnv, **kwargs)
built = time.perf_counter()
trainer.algorithm.collect()
collected = time.perf_counter()
trainer.algorithm.step()
stepped = time.perf_counter()
trainer.close()
from torch._dynamo.utils import compile_times
names, values = compile_times(repr="csv", aggregate=True)
times = dict(zip(names, values))
def seconds(*keys):
    return sum(float(times.get(k, 0.0) or 0.0) for k in keys)
print(json.dumps({
    "import_s": imported - start, "build_s": built - imported, "collect_s": collected - built,
    "step_s": stepped - collected, "first_step_s": stepped - start,
    "compile_s": seconds("_compile.compile_inner"),
    "tracing_s": seconds("_compile.compile_inner") - seconds("OutputGraph.call_user_compiler"),
    "codegen_s": seconds("OutputGraph.call_user_compiler")
                 - seconds("compile_file", "async_compile.wait"),
    "cxx_s": seconds("compile_file", "async_compile.wait"),
    "compile_times": {k: float(v or 0.0) for k, v in times.items()},
}))
"""


def run_case(name: str, cache_dir: str, store: str) -> dict:
    cls_name, kwargs = CASES[name]
    env = {
        **os.environ,
        "TORCHINDUCTOR_CACHE_DIR": cache_dir,
        "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db",
        "PYTHONPATH": str(ROOT),
    }
    out = subprocess.run(
        [sys.executable, "-c", CHILD, cls_name, json.dumps(kwargs)],
        env=env,
        cwd=store,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--rounds", type=int, default=3, help="cold-then-warm pairs per case")
    parser.add_argument(
        "--out", default=None, help="JSON path (default benchmarks/results/startup-cpu.json)"
    )
    args = parser.parse_args(argv)

    rows = {(case, cache): [] for case in args.cases for cache in ("cold", "warm")}
    for _ in range(args.rounds):
        for case in args.cases:
            with tempfile.TemporaryDirectory() as cache_dir, tempfile.TemporaryDirectory() as store:
                for cache in ("cold", "warm"):
                    rows[case, cache].append(run_case(case, cache_dir, store))

    keys = (
        "import_s",
        "build_s",
        "collect_s",
        "step_s",
        "first_step_s",
        "compile_s",
        "tracing_s",
        "codegen_s",
        "cxx_s",
    )
    print(f"{'case':<12}{'cache':<7}" + "".join(f"{k.removesuffix('_s'):>12}" for k in keys))
    summary = []
    for (case, cache), runs in rows.items():
        medians = {k: statistics.median(r[k] for r in runs) for k in keys}
        summary.append(
            {
                "case": case,
                "cache": cache,
                "kwargs": CASES[case][1],
                "trainer": CASES[case][0],
                **medians,
            }
        )
        print(f"{case:<12}{cache:<7}" + "".join(f"{medians[k]:>12.1f}" for k in keys), flush=True)
    out = Path(args.out or RESULTS / "startup-cpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    import torch

    out.write_text(
        json.dumps(
            {
                "torch": torch.__version__,
                "cpu_count": os.cpu_count(),
                "summary": summary,
                "runs": {f"{c}/{k}": r for (c, k), r in rows.items()},
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
