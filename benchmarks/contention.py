"""Throughput beside other busy processes: the contended mode of
``python -m benchmarks.throughput --contended K``.

For each config it times collect + update (eager) in a fresh child process
per measurement, quiet and beside ``K`` busy processes (single-threaded
Python loops, started before and killed after each contended block),
under these wait policies of OpenMP's idle threads:

- ``rlstack``: what the ``rlstack`` command and any program that imports
  rlstack before torch get (``rlstack.integrations.openmp``);
- ``rlstack (A/A)``: the same again, the control: how far two measurements
  of one thing differ on this machine in this run;
- ``spin 1000``: a shorter spin, for the choice of
  :data:`rlstack.integrations.openmp.SPIN_COUNT`;
- ``libgomp default``: ``GOMP_SPINCOUNT=300000``, what a program that
  imports torch first gets (rlstack before the change).

Rounds alternate the policies (the order rotates each round), so a slow
spell of a shared machine hits each alike. A process's share of the
machine beside K busy processes on C cores is ``max(C - K, C / (K + 1)) / C``
of what it has quiet; "contended / quiet" at or above the share is a run
that degrades in proportion to it.

Each child imports rlstack before torch, as the command does.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rlstack.integrations import openmp

ROOT = Path(__file__).resolve().parents[1]
#: Policy -> the environment variables its child gets (none: rlstack's choice).
POLICIES = {
    "rlstack": {},
    "rlstack (A/A)": {},
    "spin 1000": {"GOMP_SPINCOUNT": "1000"},
    "libgomp default": {"GOMP_SPINCOUNT": "300000"},
}
BUSY_LOOP = "while True: pass"


def share(busy: int, cores: int) -> float:
    """The fraction of its quiet speed a process is due beside ``busy``
    single-threaded busy processes on ``cores`` cores.
    """
    return max(cores - busy, cores / (busy + 1)) / cores


def measure(config: str, policy: str, repeats: int) -> float:
    """Median transitions/s of ``repeats`` collect + update iterations of
    ``config`` (eager), in a fresh child under ``policy``.
    """
    environ = {
        name: value
        for name, value in os.environ.items()
        if name not in openmp.WAIT_POLICY_VARIABLES
    }
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.contention", "--child", config, str(repeats)],
        cwd=ROOT,
        env={**environ, **POLICIES[policy]},
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    return float(result.stdout.strip().splitlines()[-1])


def start_busy(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(count)]


def stop_busy(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.kill()
        process.wait()


def run_rounds(
    configs: list[str],
    *,
    busy: int,
    rounds: int,
    repeats: int,
) -> dict[tuple[str, str, int], list[float]]:
    """``{(config, policy, busy processes): [transitions/s per round]}``,
    quiet (0 busy) and contended (``busy``).
    """
    rates: dict[tuple[str, str, int], list[float]] = {}
    policies = list(POLICIES)
    for round_index in range(rounds):
        order = policies[round_index % len(policies) :] + policies[: round_index % len(policies)]
        for config in configs:
            for load in (0, busy):
                processes = start_busy(load)
                try:
                    time.sleep(0.5 if load else 0)  # the busy loops running
                    for policy in order:
                        rate = measure(config, policy, repeats)
                        rates.setdefault((config, policy, load), []).append(rate)
                        print(
                            f"  round {round_index + 1} {config} {policy} "
                            f"{load} busy: {rate:,.0f}/s",
                            flush=True,
                        )
                finally:
                    stop_busy(processes)
    return rates


def contended(
    configs: list[str],
    *,
    busy: int,
    rounds: int,
    repeats: int,
    out: Path,
) -> int:
    """Measure, print the table, write ``out`` (JSON)."""
    cores = os.cpu_count() or 1
    rates = run_rounds(configs, busy=busy, rounds=rounds, repeats=repeats)
    due = share(busy, cores)
    rows = []
    print(
        f"\n{busy} busy processes on {cores} cores: a share of {due:.2f}; median of {rounds} rounds"
    )
    print(f"{'config':<22}{'policy':<18}{'quiet /s':>10}{'contended /s':>14}{'c/q':>7}")
    for config in configs:
        for policy in POLICIES:
            quiet = statistics.median(rates[config, policy, 0])
            loaded = statistics.median(rates[config, policy, busy])
            rows.append(
                {
                    "config": config,
                    "policy": policy,
                    "busy_processes": busy,
                    "quiet_transitions_per_s": quiet,
                    "contended_transitions_per_s": loaded,
                    "quiet_all": rates[config, policy, 0],
                    "contended_all": rates[config, policy, busy],
                    "contended_over_quiet": loaded / quiet,
                    "share": due,
                }
            )
            print(f"{config:<22}{policy:<18}{quiet:>10,.0f}{loaded:>14,.0f}{loaded / quiet:>7.2f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"cpu_count": cores, "rounds": rounds, "repeats": repeats, "mode": "eager"}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"\nwrote {out}")
    return 0


def child(config: str, repeats: int) -> None:
    """Print the median transitions/s of ``config`` (eager)."""
    # isort: off
    import rlstack  # noqa: F401  (first: it sets OpenMP's wait policy before torch loads)
    import torch
    from benchmarks import throughput

    # isort: on

    spec = dict(throughput.CONFIGS[config])
    algo, _, _ = throughput.build(spec, "eager", device=torch.device("cpu"))
    times = [throughput.time_iteration(algo)[1] for _ in range(repeats)]
    print(spec["num_envs"] * spec["horizon"] / statistics.median(times))


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    child(sys.argv[2], int(sys.argv[3]))
