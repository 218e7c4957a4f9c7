"""rlstack 1.1.0 (from PyPI) and this rlstack on the same work, side by side.

Run ``python -m benchmarks.peers`` from the repository root. The first run
builds a virtual environment for rlstack 1.1.0 (cached in
``~/.cache/rlstack-peers/venv``; ``--venv`` picks another place).
rlstack 1.1.0 pins nothing and does not import with current torchrl; this
set works with the CPU torch 2.13.0:

    python -m venv VENV
    VENV/bin/pip install torch==2.13.0
    VENV/bin/pip install rlstack==1.1.0 torchrl==0.10.1 "tensordict>=0.10,<0.11" torch==2.13.0

Each measurement runs one warm-up iteration (``collect()`` + ``step()``)
and then the median of ``--repeats`` iterations, first rlstack 1.1.0 in its
venv (a child process), then ours in this process (fp32, compiled and
eager; bf16 AMP as an extra row). ``--rounds`` repeats the whole pairing:
on a shared machine whose speed drifts by 10-15% over minutes, the two
sides of one round run under the same conditions, so the table reports
the median rate over rounds and the median of the per-round ratios. Prints
a table and writes ``benchmarks/results/peers-cpu.json``.
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
    # RecurrentAlgorithm at 1.1.0's defaults: 8192 envs x 32 steps, seq_len 4, an LSTM of 256, one
    # minibatch of every sequence, 4 epochs (our default RecurrentModel is the same network).
    "recurrent-1x-default": {"recurrent": True},
}
# (label, compile, amp); compile None is rlstack 1.1.0 in its venv.
IMPLEMENTATIONS = [
    ("rlstack 1.1.0", None, False),
    ("rlstack 2 eager", False, False),
    ("rlstack 2 compiled", True, False),
    ("rlstack 2 compiled + bf16 AMP", True, True),
]
PEER_REQUIREMENTS = ["rlstack==1.1.0", "torchrl==0.10.1", "tensordict>=0.10,<0.11", "torch==2.13.0"]

# Runs inside the rlstack 1.1.0 venv; prints one JSON line.
PEER_SCRIPT = r"""
import json, statistics, sys, time, torch
from rlstack import Algorithm, RecurrentAlgorithm
from rlstack.env import DiscreteDummyEnv
config, repeats = json.loads(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
if config.get("recurrent"):
    algo = RecurrentAlgorithm(DiscreteDummyEnv)
else:
    algo = Algorithm(DiscreteDummyEnv, model_config={"hiddens": tuple(config["hiddens"])})
def iteration():
    start = time.perf_counter()
    algo.collect()
    algo.step()
    return time.perf_counter() - start
first = iteration()
times = [iteration() for _ in range(repeats)]
config = getattr(algo, "config", None) or algo.hparams  # RecurrentAlgorithm has only 1.x's name
print(json.dumps({"transitions": config.num_envs * config.horizon,
                  "iteration_s": statistics.median(times),
                  "first_iteration_s": first, "torch": torch.__version__}))
"""


def ensure_peer_venv(
    path: Path, requirements: list[str] = PEER_REQUIREMENTS, *, system_site_packages: bool = False
) -> Path:
    """Create (once) a venv with ``requirements`` (default: rlstack 1.1.0's), CPU torch 2.13.0
    first, or over this interpreter's packages (its torch, and this rlstack) with
    ``system_site_packages``; returns its python. A venv built for other requirements is built
    again.
    """
    python = path / "bin" / "python"
    marker = path / ".rlstack-peers-ready"
    wanted = " ".join(requirements) + (" +system" if system_site_packages else "")
    if marker.exists() and marker.read_text() == wanted:
        return python
    print(f"peers: building the venv of {requirements} in {path} (once) ...", flush=True)
    venv.create(path, with_pip=True, system_site_packages=system_site_packages, clear=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if not system_site_packages:
        subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, *requirements], check=True)
    marker.write_text(wanted)
    return python


def run_peer(python: Path, config: dict, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as cwd:  # keep this checkout's rlstack off the child's path
        out = subprocess.run(
            [str(python), "-c", PEER_SCRIPT, json.dumps(config), str(repeats)],
            cwd=cwd,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": ""},
        )
    if out.returncode != 0:
        raise RuntimeError(f"rlstack 1.1.0 failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_ours(config: dict, repeats: int, *, compile: bool, amp: bool) -> dict:
    from rlstack import Algorithm, RecurrentAlgorithm
    from rlstack.env import DiscreteDummyEnv

    torch._dynamo.reset()
    if config.get("recurrent"):
        algo = RecurrentAlgorithm(DiscreteDummyEnv, compile=compile, enable_amp=amp, seed=0)
    else:
        algo = Algorithm(
            DiscreteDummyEnv,
            model_config={"hiddens": tuple(config["hiddens"])},
            compile=compile,
            enable_amp=amp,
            seed=0,
        )
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
    return {
        "transitions": algo.config.num_envs * algo.config.horizon,
        "iteration_s": statistics.median(times),
        "first_iteration_s": first,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--venv", default=str(Path.home() / ".cache" / "rlstack-peers" / "venv"))
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument(
        "--implementations",
        nargs="*",
        default=[label for label, *_ in IMPLEMENTATIONS],
        choices=[label for label, *_ in IMPLEMENTATIONS],
        help="rows to run (1.1.0 always runs)",
    )
    parser.add_argument(
        "--out", default=None, help="JSON path (default benchmarks/results/peers-cpu.json)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed iterations per measurement (median)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="1.1.0-then-ours pairings per config")
    args = parser.parse_args(argv)
    python = ensure_peer_venv(Path(args.venv))
    rows = []
    print(
        f"{'config':<14}{'implementation':<31}{'transitions/s':>15}{'1st iter s':>12}"
        f"{'vs 1.1.0':>10}"
        "  per-round ratios",
        flush=True,
    )
    for name in args.configs:
        config = CONFIGS[name]
        chosen = [
            row for row in IMPLEMENTATIONS if row[1] is None or row[0] in args.implementations
        ]
        rates: dict[str, list[float]] = {label: [] for label, *_ in chosen}
        firsts: dict[str, list[float]] = {label: [] for label, *_ in chosen}
        for _ in range(args.rounds):
            for label, compile, amp in chosen:
                if compile is None:
                    result = run_peer(python, config, args.repeats)
                else:
                    result = run_ours(config, args.repeats, compile=compile, amp=amp)
                rates[label].append(result["transitions"] / result["iteration_s"])
                firsts[label].append(result["first_iteration_s"])
        base = rates[IMPLEMENTATIONS[0][0]]
        for label, *_ in chosen:
            ratios = [ours / peer for ours, peer in zip(rates[label], base, strict=True)]
            row = {
                "config": name,
                "implementation": label,
                "transitions_per_s": statistics.median(rates[label]),
                "first_iteration_s": statistics.median(firsts[label]),
                "ratio_vs_1_1_0": statistics.median(ratios),
                "per_round_transitions_per_s": rates[label],
                "per_round_ratios": ratios,
            }
            rows.append(row)
            print(
                f"{name:<14}{label:<31}{row['transitions_per_s']:>15,.0f}{row['first_iteration_s']:>12.1f}"
                f"{row['ratio_vs_1_1_0']:>9.2f}x  {' '.join(f'{r:.2f}' for r in ratios)}",
                flush=True,
            )
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / "peers-cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "peer_requirements": PEER_REQUIREMENTS,
        "repeats": args.repeats,
        "rounds": args.rounds,
        "cpu_count": os.cpu_count(),
    }
    out.write_text(json.dumps({**meta, "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
