"""Throughput of two git revisions side by side, in alternating processes.

Run from the repository root::

    python -m benchmarks.compare_revisions --before REV [--configs ...] [--modes compiled] [--rounds
    3]

Checks ``REV`` out into a temporary git worktree, then for ``--rounds``
rounds runs ``benchmarks/throughput.py`` in that worktree, in this one, and
in the first again (the A/A control: one process per config, revision and
round, alternating), so the drift of a shared machine hits both revisions
alike and the control's ratio shows how far two runs of the same code
differ; both revisions are measured by this tree's ``throughput.py``.
Prints the median rollout and collect+step transitions/s of each
revision, the median over rounds of the ratio after/before and of the
control's before/before, and writes
``benchmarks/results/compare-<device>.json``. With ``--cold-cache`` every
process compiles into an empty cache of its own, so each first-iteration
time is a cold compile; by default they share torch.compile's on-disk
cache, where code compiled before (often the before side's) is warm.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_throughput(
    tree: Path,
    config: str,
    mode: str,
    repeats: int,
    device: str,
    out: Path,
    cache_dir: Path | None = None,
) -> dict:
    """One throughput.py process in ``tree``; its single result row. With
    ``cache_dir``, torch.compile's on-disk caches live there (a fresh folder:
    the first iteration is a cold compile).
    """
    env = {"PYTHONPATH": str(tree), **_env()}
    if cache_dir is not None:
        env["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)
    subprocess.run(
        [
            sys.executable,
            "benchmarks/throughput.py",
            "--device",
            device,
            "--configs",
            config,
            "--modes",
            mode,
            "--repeats",
            str(repeats),
            "--out",
            str(out),
        ],
        cwd=tree,
        check=True,
        stdout=subprocess.DEVNULL,
        env=env,
    )
    rows = json.loads(out.read_text())["rows"]
    return next(r for r in rows if r["config"] == config and r["mode"] == mode)


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--before", required=True, help="git revision to compare against (e.g. HEAD~1)"
    )
    parser.add_argument("--configs", nargs="*", default=["discrete-1x-default", "cartpole-64x64"])
    parser.add_argument(
        "--mode", default="compiled", help="a throughput.py mode (default compiled)"
    )
    parser.add_argument(
        "--label", default="", help="suffix of the default JSON name (compare-<device><label>.json)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds per config (default 3)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed iterations per process (median)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--out", default=None, help="JSON path (default benchmarks/results/compare-<device>.json)"
    )
    parser.add_argument(
        "--cold-cache",
        action="store_true",
        help="give every process an empty torch.compile cache, so each first iteration compiles "
        "cold "
        "(default: the shared cache, warm for code compiled before)",
    )
    args = parser.parse_args(argv)
    rev = subprocess.run(
        ["git", "rev-parse", "--short", args.before],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        worktree = Path(tmp) / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(worktree), rev],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        # One measuring script for both revisions (this tree's: its configs, its timing).
        shutil.copy(
            ROOT / "benchmarks" / "throughput.py", worktree / "benchmarks" / "throughput.py"
        )
        try:
            for config in args.configs:
                rounds = []
                for r in range(args.rounds):
                    caches = [
                        Path(tempfile.mkdtemp(dir=tmp)) if args.cold_cache else None
                        for _ in range(3)
                    ]
                    before = run_throughput(
                        worktree,
                        config,
                        args.mode,
                        args.repeats,
                        args.device,
                        Path(tmp) / "b.json",
                        caches[0],
                    )
                    after = run_throughput(
                        ROOT,
                        config,
                        args.mode,
                        args.repeats,
                        args.device,
                        Path(tmp) / "a.json",
                        caches[1],
                    )
                    control = run_throughput(
                        worktree,
                        config,
                        args.mode,
                        args.repeats,
                        args.device,
                        Path(tmp) / "c.json",
                        caches[2],
                    )
                    rounds.append({"before": before, "after": after, "control": control})
                    rate = "iteration_transitions_per_s"
                    print(
                        f"{config} round {r + 1}: after/before collect+step "
                        f"{after[rate] / before[rate]:.3f}, "
                        f"A/A {control[rate] / before[rate]:.3f}",
                        flush=True,
                    )
                results.append({"config": config, "rounds": rounds})
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(worktree)],
                cwd=ROOT,
                capture_output=True,
            )

    print(
        f"\n{'config':<22}{'metric':<14}{rev + ' (before)':>16}{head + ' (after)':>16}"
        f"{'after/before':>14}"
        f"{'A/A':>8}"
    )
    summary = []
    for item in results:
        for metric, key in (
            ("rollout", "rollout_transitions_per_s"),
            ("collect+step", "iteration_transitions_per_s"),
        ):
            before = statistics.median(r["before"][key] for r in item["rounds"])
            after = statistics.median(r["after"][key] for r in item["rounds"])
            ratio = statistics.median(r["after"][key] / r["before"][key] for r in item["rounds"])
            control = statistics.median(
                r["control"][key] / r["before"][key] for r in item["rounds"]
            )
            print(
                f"{item['config']:<22}{metric:<14}{before:>16,.0f}{after:>16,.0f}{ratio:>14.3f}{control:>8.3f}"
            )
            summary.append(
                {
                    "config": item["config"],
                    "metric": metric,
                    "before": before,
                    "after": after,
                    "ratio_median_of_rounds": ratio,
                    "control_ratio_median_of_rounds": control,
                }
            )
        first = [
            (
                r["before"]["first_iteration_s"],
                r["after"]["first_iteration_s"],
                r["control"]["first_iteration_s"],
            )
            for r in item["rounds"]
        ]
        print(
            f"{item['config']:<22}{'first iter s':<14}"
            f"{statistics.median(b for b, _, _ in first):>16.1f}"
            f"{statistics.median(a for _, a, _ in first):>16.1f}{'':>14}"
            f"{statistics.median(c for _, _, c in first):>8.1f}"
        )
    out = Path(
        args.out or ROOT / "benchmarks" / "results" / f"compare-{args.device}{args.label}.json"
    )
    out.write_text(
        json.dumps(
            {
                "before": rev,
                "after": head,
                "mode": args.mode,
                "cold_cache": args.cold_cache,
                "summary": summary,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
