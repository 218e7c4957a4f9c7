"""rlstack 1.1.0 (from PyPI) and this rlstack on the same work, side by side.

Run ``python -m benchmarks.peers`` from the repository root. The first run
builds a virtual environment for rlstack 1.1.0 (cached in
``~/.cache/rlstack-peers/venv``; ``--venv`` picks another place).
rlstack 1.1.0 pins nothing and does not import with current torchrl; this
set works with the CPU torch 2.13.0:

    python -m venv VENV
    VENV/bin/pip install torch==2.13.0
    VENV/bin/pip install rlstack==1.1.0 torchrl==0.10.1 "tensordict>=0.10,<0.11" torch==2.13.0

Each configuration runs one warm-up iteration (``collect()`` + ``step()``)
and then the median of ``--repeats`` iterations, first rlstack 1.1.0 in its
venv (a child process), then ours in this process (fp32, compiled and
eager; bf16 AMP as an extra row). Prints a table with the ratio and writes
``benchmarks/results/peers-cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = {
    "1x-default": {"hiddens": [256, 256]},
    "small-64x64": {"hiddens": [64, 64]},
}
PEER_REQUIREMENTS = ["rlstack==1.1.0", "torchrl==0.10.1", "tensordict>=0.10,<0.11", "torch==2.13.0"]

# Runs inside the rlstack 1.1.0 venv; prints one JSON line.
PEER_SCRIPT = r"""
import json, statistics, sys, time, torch
from rlstack import Algorithm
from rlstack.env import DiscreteDummyEnv
hiddens, repeats = json.loads(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
algo = Algorithm(DiscreteDummyEnv, model_config={"hiddens": tuple(hiddens)})
start = time.perf_counter(); algo.collect(); algo.step(); first = time.perf_counter() - start
times = []
for _ in range(repeats):
    start = time.perf_counter(); algo.collect(); algo.step(); times.append(time.perf_counter() - start)
print(json.dumps({"transitions": algo.hparams.num_envs * algo.hparams.horizon, "iteration_s": statistics.median(times),
                  "first_iteration_s": first, "torch": torch.__version__}))
"""


def ensure_peer_venv(path: Path) -> Path:
    """Create (once) the venv with rlstack 1.1.0; returns its python."""
    python = path / "bin" / "python"
    marker = path / ".rlstack-peers-ready"
    if marker.exists():
        return python
    print(f"peers: building the rlstack 1.1.0 venv in {path} (once) ...", flush=True)
    venv.create(path, with_pip=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, *PEER_REQUIREMENTS], check=True)
    marker.write_text(" ".join(PEER_REQUIREMENTS))
    return python


def run_peer(python: Path, hiddens: list[int], repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as cwd:  # keep this checkout's rlstack off the child's path
        out = subprocess.run(
            [str(python), "-c", PEER_SCRIPT, json.dumps(hiddens), str(repeats)],
            cwd=cwd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""},
        )
    if out.returncode != 0:
        raise RuntimeError(f"rlstack 1.1.0 failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_ours(hiddens: list[int], repeats: int, *, compile: bool, amp: bool) -> dict:
    from rlstack import Algorithm
    from rlstack.env import DiscreteDummyEnv

    torch._dynamo.reset()
    algo = Algorithm(DiscreteDummyEnv, model_config={"hiddens": tuple(hiddens)}, compile=compile, enable_amp=amp, seed=0)
    start = time.perf_counter()
    algo.collect()
    algo.step()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        algo.collect()
        algo.step()
        times.append(time.perf_counter() - start)
    return {"transitions": algo.hparams.num_envs * algo.hparams.horizon, "iteration_s": statistics.median(times),
            "first_iteration_s": first}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", default=str(Path.home() / ".cache" / "rlstack-peers" / "venv"))
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    python = ensure_peer_venv(Path(args.venv))
    rows = []
    print(f"{'config':<14}{'implementation':<28}{'transitions/s':>15}{'1st iter s':>12}{'vs 1.1.0':>10}", flush=True)
    for name in args.configs:
        hiddens = CONFIGS[name]["hiddens"]
        peer = run_peer(python, hiddens, args.repeats)
        base = peer["transitions"] / peer["iteration_s"]
        results = [("rlstack 1.1.0", peer)]
        for label, compile, amp in (("rlstack 2 eager", False, False), ("rlstack 2 compiled", True, False),
                                    ("rlstack 2 compiled + bf16 AMP", True, True)):
            results.append((label, run_ours(hiddens, args.repeats, compile=compile, amp=amp)))
        for label, result in results:
            rate = result["transitions"] / result["iteration_s"]
            rows.append({"config": name, "implementation": label, "transitions_per_s": rate,
                         "first_iteration_s": result["first_iteration_s"], "ratio_vs_1_1_0": rate / base})
            print(f"{name:<14}{label:<28}{rate:>15,.0f}{result['first_iteration_s']:>12.1f}{rate / base:>9.2f}x", flush=True)
    out = Path(__file__).parent / "results" / "peers-cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"torch": torch.__version__, "peer_requirements": PEER_REQUIREMENTS, "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
