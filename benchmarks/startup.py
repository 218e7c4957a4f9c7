"""The first minutes of a run: when its first iteration ends, how much it trains
in its first 60 and 300 seconds, and when it reaches compiled speed.

Run ``python -m benchmarks.startup`` from the repository root. Each case
trains with no flags but its size (the default compile mode) in a fresh
process (``benchmarks/startup_run.py``) for a window of seconds after the
imports, first with empty caches (``cold``: a new compile cache folder and
Inductor cache, as on a fresh machine), then again with what that run left
(``warm``; the harness first waits for the cold run's compiling child to
finish storing). Cases:

* ``1x-default``: ``Algorithm(DiscreteDummyEnv)``, rlstack 1.x's default
  (8192 envs x 32, 256x256), 300 s; rlstack 1.1.0's steady-state rate at
  the same size alongside (``benchmarks/peers.py``'s venv);
* ``1x-tests``: 64 envs x 32, the size of rlstack 1.1.0's own tests, 60 s;
* ``recurrent``: ``RecurrentAlgorithm`` at 64 envs x 32, 60 s;
* ``isaac-cartpole``: Isaac Lab's Cartpole PPO (4096 envs x 16, 32-32 ELU,
  5 epochs x 4 minibatches, adaptive KL) through the rsl_rl adapter on
  ``benchmarks/rsl_rl_env.py``'s Pendulum, 60 s; rsl_rl 5.5.1 trains the
  same env in the same window alongside (``benchmarks/rsl_rl.py``'s venv),
  and both report the mean return of their last 100 episodes at the end;
* ``halfcheetah``: the continuous preset on HalfCheetah-v5, 60 s.

With ``--before REV`` the same cases run on that git revision too (a
temporary worktree; "today's main" when this tree is a branch), in the same
round, so the machine's drift hits both. Prints the medians over rounds and
writes ``benchmarks/results/startup-cpu.json``. Reported per case, side
and cache: ``first`` (seconds from process start to the end of the first
``collect()`` + ``step()``), ``first/imp`` (the same, after the imports),
``60 s`` and ``300 s`` (transitions done by then after the imports),
``compiled`` (seconds after the imports when every piece had switched),
``rate`` (transitions/s over the window's last quarter).
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
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks import peers, rsl_rl  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
#: case -> its window, seconds after the imports.
CASES = {
    "1x-default": 300,
    "1x-tests": 60,
    "recurrent": 60,
    "isaac-cartpole": 60,
    "halfcheetah": 60,
}
MARKS = (60, 300)

# Runs in rsl_rl's venv: OnPolicyRunner.learn(1) until the window ends; prints one JSON line.
RSL_RL_WINDOW = r"""
import json, sys, time
start = time.perf_counter()
import torch
from rsl_rl.runners import OnPolicyRunner
imported = time.perf_counter()
torch.set_num_threads(int(sys.argv[4]))
sys.path.insert(0, sys.argv[3])
from rsl_rl_env import PendulumVecEnv, runner_config
config, seconds = json.loads(sys.argv[1]), float(sys.argv[2])
torch.manual_seed(0)
env = PendulumVecEnv(config["num_envs"], seed=0)
runner = OnPolicyRunner(env, runner_config(config), log_dir=None, device="cpu")
per_iteration, iterations, returns, done = config["num_envs"] * config["steps"], [], [], 0
while True:
    runner.learn(1)
    now = time.perf_counter() - imported
    done += per_iteration
    iterations.append([now, done])
    last = env.finished_returns[-100:]
    returns.append(sum(last) / len(last) if last else None)
    if now >= seconds:
        break
print(json.dumps({"import_s": imported - start, "iterations": iterations, "returns": returns}))
"""


def run_case(tree: Path, case: str, seconds: float, caches: Path) -> dict:
    """One fresh process of ``case`` from ``tree``'s rlstack, with its compile
    caches in ``caches``; waits for its compiling children to finish storing.
    """
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "RLSTACK_COMPILE_CACHE": str(caches / "rlstack"),
        "TORCHINDUCTOR_CACHE_DIR": str(caches / "inductor"),
    }
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "startup_run.py"), case, str(seconds)],
        env=env,
        cwd=caches,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"startup_run {case} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    _wait_for(result["compiler_pids"])
    return result


def _wait_for(pids: list[int], timeout_s: float = 900.0) -> None:
    """Wait until none of ``pids`` runs (a cold run's compiling children)."""
    deadline = time.monotonic() + timeout_s
    for pid in pids:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.5)


def run_rsl_rl(python: Path, seconds: float) -> dict:
    """rsl_rl on Isaac Lab's Cartpole settings for ``seconds`` after its imports."""
    config = rsl_rl.rsl_rl_config("cartpole", 4096)
    return rsl_rl.run_script(
        python,
        RSL_RL_WINDOW,
        json.dumps(config),
        str(seconds),
        str(ROOT / "benchmarks"),
        str(torch.get_num_threads()),
    )


def summarize(run: dict, seconds: float) -> dict:
    """The figures of one process's run (see the module docstring)."""
    times = [t for t, _ in run["iterations"]]
    done = [n for _, n in run["iterations"]]
    row = {
        "first_s": run["import_s"] + times[0],
        "first_after_imports_s": times[0],
        "compiled_s": run.get("compiled_s"),
        "iterations": len(times),
    }
    for mark in MARKS:
        if mark <= seconds:
            row[f"transitions_{mark}s"] = max(
                (n for t, n in zip(times, done, strict=True) if t <= mark), default=0
            )
    tail = [i for i, t in enumerate(times) if t >= 0.75 * times[-1]]
    start = max(tail[0] - 1, 0)
    if start < len(times) - 1:
        row["rate"] = (done[-1] - done[start]) / (times[-1] - times[start])
    returns = run.get("returns") or []
    at_60 = [r for t, r in zip(times, returns, strict=False) if t <= 60 and r is not None]
    if at_60:
        row["return_60s"] = at_60[-1]
    return row


def _worktree(rev: str, folder: Path) -> Path:
    tree = folder / "before"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(tree), rev],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return tree


def measure(args: argparse.Namespace, tmp: Path) -> dict[tuple[str, str, str], list[dict]]:
    """Every round's summaries, by ``(case, side, cache)``; sides ``"this"``,
    ``"before"`` (with ``--before``) and the peers.
    """
    trees = {"this": ROOT}
    if args.before:
        trees["before"] = _worktree(args.before, tmp)
    rsl_python = onex_python = None
    if args.peers and "isaac-cartpole" in args.cases:
        rsl_python = peers.ensure_peer_venv(
            Path(args.venv_dir) / "rsl-rl-venv", rsl_rl.REQUIREMENTS, system_site_packages=True
        )
    if args.peers and "1x-default" in args.cases:
        onex_python = peers.ensure_peer_venv(Path(args.venv_dir) / "venv")
    rows: dict[tuple[str, str, str], list[dict]] = {}
    for r in range(args.rounds):
        for case in args.cases:
            seconds = args.seconds or CASES[case]
            for side, tree in trees.items():
                caches = Path(tempfile.mkdtemp(dir=tmp))
                for cache in ("cold", "warm"):
                    row = summarize(run_case(tree, case, seconds, caches), seconds)
                    rows.setdefault((case, side, cache), []).append(row)
                    _say(r, case, side, cache, row)
            if case == "isaac-cartpole" and rsl_python is not None:
                row = summarize(run_rsl_rl(rsl_python, seconds), seconds)
                rows.setdefault((case, "rsl_rl 5.5.1", "-"), []).append(row)
                _say(r, case, "rsl_rl 5.5.1", "-", row)
            if case == "1x-default" and onex_python is not None:
                peer = peers.run_peer(onex_python, peers.CONFIGS["1x-default"], repeats=3)
                row = {
                    "first_s": peer["first_iteration_s"],
                    "rate": peer["transitions"] / peer["iteration_s"],
                }
                rows.setdefault((case, "rlstack 1.1.0", "steady"), []).append(row)
                _say(r, case, "rlstack 1.1.0", "steady", row)
    if args.before:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(trees["before"])], cwd=ROOT, check=False
        )
    return rows


def _say(r: int, case: str, side: str, cache: str, row: dict) -> None:
    figures = ", ".join(f"{k} {v:,.1f}" for k, v in row.items() if isinstance(v, float | int))
    print(f"round {r + 1} {case} {side} {cache}: {figures}", flush=True)


COLUMNS = (
    ("first", "first_s", "{:.1f}"),
    ("first/imp", "first_after_imports_s", "{:.1f}"),
    ("60 s", "transitions_60s", "{:,.0f}"),
    ("300 s", "transitions_300s", "{:,.0f}"),
    ("compiled", "compiled_s", "{:.1f}"),
    ("rate /s", "rate", "{:,.0f}"),
    ("return 60s", "return_60s", "{:.0f}"),
)


def median_rows(rows: dict[tuple[str, str, str], list[dict]]) -> list[dict]:
    """One row per ``(case, side, cache)``: each figure's median over rounds."""
    summary = []
    for (case, side, cache), runs in rows.items():
        row = {"case": case, "side": side, "cache": cache}
        for _, key, _ in COLUMNS:
            values = [run[key] for run in runs if run.get(key) is not None]
            row[key] = statistics.median(values) if values else None
        summary.append(row)
    return summary


def print_table(summary: list[dict]) -> None:
    print(f"{'case':<15}{'side':<15}{'cache':<7}" + "".join(f"{c:>12}" for c, _, _ in COLUMNS))
    for row in summary:
        cells = "".join(
            f"{(fmt.format(row[key]) if row[key] is not None else '-'):>12}"
            for _, key, fmt in COLUMNS
        )
        print(f"{row['case']:<15}{row['side']:<15}{row['cache']:<7}" + cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument(
        "--seconds", type=float, default=None, help="every case's window (default: per case)"
    )
    parser.add_argument("--before", default=None, help="a git revision measured alongside")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--no-peers", dest="peers", action="store_false", help="skip rsl_rl and rlstack 1.1.0"
    )
    parser.add_argument("--venv-dir", default=str(Path.home() / ".cache" / "rlstack-peers"))
    parser.add_argument("--out", default=str(RESULTS / "startup-cpu.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(args, Path(tmp))
    summary = median_rows(rows)
    print(
        f"CPU, {torch.get_num_threads()} threads, {args.rounds} round(s), torch {torch.__version__}"
    )
    print_table(summary)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
        "before": args.before,
        "rounds": args.rounds,
    }
    runs = {"/".join(key): value for key, value in rows.items()}
    out.write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
