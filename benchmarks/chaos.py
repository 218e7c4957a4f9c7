"""Crash consistency: ``rlstack train`` killed anywhere, its tracking server
stopped, its checkpoint disk full, against a run never disturbed.

Run ``python -m benchmarks.chaos`` from the repository root. It starts an
MLflow tracking server (``mlflow server``, SQLite store, in a temp folder),
trains a built-in env once undisturbed (the reference), then trains it
again with the same seed and steps while a schedule drawn from ``--seed``:

* SIGKILLs the training process ``--kills`` times and resumes it with
  ``--resume <newest checkpoint>`` each time, one of the kills the moment a
  checkpoint's temp file appears (during its write);
* stops the tracking server (SIGKILL) ``--outages`` times for a number of
  seconds drawn from ``--outage-s`` and starts it again;
* fills the checkpoint folder's disk once: the folder is a small tmpfs
  where this process may mount one, else it is named in
  ``RLSTACK_TEST_DISK_FULL`` (the documented test hook of
  :func:`rlstack.integrations.atomic_files.atomic_write`, which then fails
  with ENOSPC); the run must stop with a one-line error, then it resumes.

Then it compares: the final checkpoint's params and optimizer state
bit-identical to the reference's; each step's metrics in MLflow once, with
the reference's values (the timing and memory metrics aside); the run
FINISHED; no lock or temp file left in the folder. It prints kills
survived, outage seconds, steps redone and values lost or duplicated
(target: 0 and 0), and writes ``benchmarks/results/chaos-cpu.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import torch

#: Metrics that measure the machine, not the training: they differ between any two runs.
MACHINE_METRICS = ("profiling/", "memory/", "time/", "compile/")
#: The training run: small enough for a quick test, with a checkpoint big enough to be caught
#: while it is written.
TRAIN_ARGS = [
    "--env",
    "CartPole",
    "--num-envs",
    "64",
    "--horizon",
    "16",
    "--hiddens",
    "256,256",
    "--log-every-s",
    "0",
    "--checkpoint-every-s",
    "1",
]


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """An MLflow tracking server on ``port`` over a SQLite store in ``folder``, stopped and
    started at will.
    """

    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port, self.process = folder, port, None
        self.uri = f"http://127.0.0.1:{port}"

    def start(self, timeout_s: float = 120.0) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.folder / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.folder / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "server.log", "a"),  # noqa: SIM115
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{self.uri}/health", timeout=1).read()
                return
            time.sleep(0.2)
        raise RuntimeError(f"the MLflow server did not start in {timeout_s} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None


def end_group(process: subprocess.Popen) -> None:
    """Kill what is left of ``process``'s session: itself, and a compiling child that a run
    leaves to finish its pieces into the compile cache.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def wait_group(process: subprocess.Popen, timeout_s: float) -> None:
    """Wait for ``process`` and what is left of its session (a compiling child finishing its
    pieces into the compile cache) to end, then kill what is left.
    """
    process.wait()
    deadline = time.monotonic() + timeout_s
    with contextlib.suppress(ProcessLookupError):
        while time.monotonic() < deadline:
            os.killpg(process.pid, 0)
            time.sleep(0.2)
    end_group(process)


def newest_checkpoint(folder: Path) -> Path | None:
    """The ``step-<N>.pt`` of the highest N in ``folder``."""
    files = sorted(folder.glob("step-*.pt"))
    return files[-1] if files else None


def train(
    folder: Path,
    steps: int,
    seed: int,
    env: dict,
    resume: Path | None = None,
    experiment: str = "chaos",
    compile_args: list[str] = (),
) -> subprocess.Popen:
    """Start ``rlstack train`` (fresh with ``compile_args``, or resumed from ``resume``, whose
    compile mode and switch points it keeps) writing checkpoints to ``folder``; its stdout and
    stderr go to files beside it.
    """
    if resume is None:
        args = [*TRAIN_ARGS, *compile_args, "--seed", str(seed), "--experiment-name", experiment]
    else:
        args = ["--resume", str(resume), "--log-every-s", "0", "--checkpoint-every-s", "1"]
    logs = folder.parent / f"{folder.name}-logs"
    logs.mkdir(exist_ok=True)
    count = len(list(logs.glob("*.out")))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rlstack",
            "train",
            *args,
            "--max-steps",
            str(steps),
            "--checkpoint-dir",
            str(folder),
        ],
        stdout=open(logs / f"{count:02d}.out", "w"),  # noqa: SIM115
        stderr=open(logs / f"{count:02d}.err", "w"),  # noqa: SIM115
        env=env,
        start_new_session=True,
    )


def mount_tmpfs(folder: Path, size: str) -> bool:
    """Mount a tmpfs of ``size`` at ``folder`` (root with CAP_SYS_ADMIN only); whether it did."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
    )
    return done.returncode == 0


def fill(folder: Path) -> Path:
    """Take every free byte of ``folder``'s disk with one file; returns it."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: nothing left to fail at close
        for size in (1 << 20, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)
    return filler


class Schedule:
    """The seeded moments of the chaos: per process, the seconds after its start at which it
    is killed (one kill waits for a checkpoint write instead); the outages' starts and
    lengths, in seconds from the chaos run's start; the kill after which the disk fills.
    """

    def __init__(self, seed: int, kills: int, outages: int, outage_s: tuple[float, float]):
        rng = random.Random(seed)
        self.kill_after = [rng.uniform(4.0, 9.0) for _ in range(kills)]
        self.write_kill = rng.randrange(kills)  # which kill waits for a checkpoint write
        starts = [rng.uniform(3.0, 10.0) + 45.0 * k for k in range(outages)]
        self.outages = [(start, rng.uniform(*outage_s)) for start in starts]
        self.disk_full_after = rng.randrange(kills)  # after which kill the disk fills


class Disk:
    """The checkpoint folder's disk, made full and freed: a tmpfs filled with a file, else
    the test hook set in the training processes' environment.
    """

    def __init__(self, folder: Path, env: dict) -> None:
        self.folder, self.env = folder, env
        self.tmpfs = mount_tmpfs(folder, "64m")
        self.filler: Path | None = None

    def make_full(self) -> None:
        if self.tmpfs:
            self.filler = fill(self.folder)
        else:
            self.env["RLSTACK_TEST_DISK_FULL"] = str(self.folder)

    def free(self) -> None:
        if self.filler is not None:
            self.filler.unlink()
            self.filler = None
        self.env.pop("RLSTACK_TEST_DISK_FULL", None)

    def release(self) -> None:
        if self.tmpfs:
            subprocess.run(["umount", str(self.folder)], check=False)


class Outages:
    """The tracking server stopped and started on the schedule."""

    def __init__(self, server: Server, outages: list[tuple[float, float]]) -> None:
        self.server, self.pending, self.down_since = server, list(outages), None
        self.seconds = 0.0

    def tick(self, now: float) -> None:
        """At ``now`` (seconds from the start): stop or start the server where it is time."""
        if self.down_since is None and self.pending and now >= self.pending[0][0]:
            self.server.stop()
            self.down_since = now
        elif self.down_since is not None and now >= self.down_since + self.pending[0][1]:
            self.end(now)

    def end(self, now: float) -> None:
        """Start the server if it is down."""
        if self.down_since is not None:
            self.server.start()
            self.seconds += now - self.down_since
            self.down_since = None
            self.pending.pop(0)


#: ``--compile`` -> the fresh reference run's flags (background: the default, no flag).
COMPILE_ARGS = {"false": ["--compile", "false"], "true": ["--compile", "true"], "background": []}


def switch_points(checkpoint: Path) -> list[str]:
    """The flags that replay the switch points recorded in ``checkpoint`` (none where the run
    compiled nothing in the background).
    """
    settings = torch.load(checkpoint, map_location="cpu", weights_only=True)["settings"]
    record = settings.get("compile_record") or {}
    pairs = ",".join(f"{piece}={steps}" for piece, steps in sorted(record.items()))
    return ["--compile-switches", pairs] if pairs else []


def run_chaos(
    args: argparse.Namespace,
    work: Path,
    server: Server,
    env: dict,
    compile_args: list[str],
) -> dict:
    """The disturbed run, started with ``compile_args``; returns what happened (see the module
    docstring).
    """
    folder = work / "chaos"
    disk = Disk(folder, env)
    schedule = Schedule(args.seed, args.kills, args.outages, tuple(args.outage_s))
    outages = Outages(server, schedule.outages)
    report = {"kills": 0, "kills_during_write": 0, "disk_full_errors": [], "restarts": 0}
    report["tmpfs"], report["steps_redone"] = disk.tmpfs, 0
    try:
        start = time.monotonic()
        process = train(folder, args.steps, args.seed, env, compile_args=compile_args)
        launched = time.monotonic()
        started_at = 0  # the step the process started from
        while True:
            outages.tick(time.monotonic() - start)
            code = process.poll()
            if code is not None:  # finished, stopped by the full disk, or refused to start
                end_group(process)
                if code == 0:
                    break
                err = sorted((work / "chaos-logs").glob("*.err"))[-1].read_text().strip()
                if "No space left" in err:
                    report["disk_full_errors"].append(err)
                    disk.free()
                else:  # the server away while a resume reads the run: try again
                    report["restarts"] += 1
                    time.sleep(1.0)
                process, launched = _resume(folder, args, env, report), time.monotonic()
                started_at = _step(newest_checkpoint(folder))
                continue
            kill = report["kills"]
            due = kill < args.kills and time.monotonic() - launched >= schedule.kill_after[kill]
            if due and _step(newest_checkpoint(folder)) > started_at:  # it made progress
                writing = any(folder.glob(".step-*.tmp"))
                if kill == schedule.write_kill and not writing:
                    time.sleep(0.0002)  # until a checkpoint write begins
                    continue
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                report["kills"] += 1
                report["kills_during_write"] += writing
                if kill == schedule.disk_full_after:
                    disk.make_full()
                process, launched = _resume(folder, args, env, report), time.monotonic()
                started_at = _step(newest_checkpoint(folder))
                continue
            time.sleep(0.005)
        report["folder_left"] = sorted(p.name for p in folder.iterdir())
        report["left_clean"] = not any(name.startswith(".") for name in report["folder_left"])
        shutil.copy(newest_checkpoint(folder), work / "chaos-final.pt")  # the tmpfs goes
    finally:
        end_group(process)
        disk.release()
    outages.end(time.monotonic() - start)
    report["seconds"] = time.monotonic() - start
    report["outage_s"] = outages.seconds
    report["disk_full_one_line"] = len(report["disk_full_errors"]) == 1 and all(
        len(e.splitlines()) == 1 and e.startswith("rlstack: error:")
        for e in report["disk_full_errors"]
    )
    return report


def _step(checkpoint: Path | None) -> int:
    """The step of a ``step-<N>.pt`` file (0 for none)."""
    return int(checkpoint.stem.removeprefix("step-")) if checkpoint else 0


def _resume(folder: Path, args: argparse.Namespace, env: dict, report: dict) -> subprocess.Popen:
    """Resume from the newest checkpoint (afresh where none was written yet), counting the
    steps the killed process had done beyond it (from its progress lines, at least).
    """
    newest = newest_checkpoint(folder)
    resumed_at = _step(newest)
    out = sorted((folder.parent / "chaos-logs").glob("*.out"))[-1].read_text()
    reached = [int(line.split()[1]) for line in out.splitlines() if line.startswith("step ")]
    report["steps_redone"] += max(0, max(reached, default=0) - resumed_at)
    return train(folder, args.steps, args.seed, env, resume=newest)


def metric_table(client, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Every metric of ``run_id`` but the machine's: ``key -> [(step, value)]`` in step order."""
    keys = [k for k in client.get_run(run_id).data.metrics if not k.startswith(MACHINE_METRICS)]
    return {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        for key in keys
    }


def compare(client, reference: str, chaos: str) -> dict:
    """Values lost (in the reference, not in the chaos run), duplicated (a step logged twice)
    and different (a step's value not the reference's).
    """
    ref, got = metric_table(client, reference), metric_table(client, chaos)
    lost = duplicated = different = 0
    for key, points in ref.items():
        steps = Counter(step for step, _ in got.get(key, []))
        duplicated += sum(n - 1 for n in steps.values())
        values = dict(got.get(key, []))
        for step, value in points:
            if step not in values:
                lost += 1
            elif values[step] != value:
                different += 1
    return {
        "values": sum(len(p) for p in ref.values()),
        "lost": lost,
        "duplicated": duplicated,
        "different": different,
        "extra_keys": sorted(set(got) - set(ref)),
    }


def same_state(a: Path, b: Path) -> bool:
    """Whether two checkpoints hold bit-identical params and optimizer state."""
    first, second = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
    keys = [k for k in ("params", "opt_state", "key", "carry") if k in first]
    leaves = [
        (x, y) for k in keys for x, y in zip(_tensors(first[k]), _tensors(second[k]), strict=True)
    ]
    return bool(keys) and all(torch.equal(x, y) for x, y in leaves)


def _tensors(tree) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for k in sorted(tree) for t in _tensors(tree[k])]
    if isinstance(tree, list | tuple):
        return [t for x in tree for t in _tensors(x)]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0, help="the schedule's and the run's seed")
    parser.add_argument("--steps", type=int, default=400, help="the run's updates")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--outages", type=int, default=2)
    parser.add_argument(
        "--outage-s", type=float, nargs=2, default=[20.0, 60.0], metavar=("MIN", "MAX")
    )
    parser.add_argument(
        "--compile",
        choices=list(COMPILE_ARGS),
        default="false",
        help="the runs' compile mode; background: the disturbed run is given the reference's "
        "switch points (--compile-switches), so it may equal it bit for bit",
    )
    parser.add_argument("--out", default="benchmarks/results/chaos-cpu.json")
    parser.add_argument("--keep", default=None, help="a folder to work in and keep (logs)")
    args = parser.parse_args(argv)
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory(prefix="rlstack-chaos-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        server = Server(work, free_port())
        server.start()
        env = {**os.environ, "MLFLOW_TRACKING_URI": server.uri}
        env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "2"  # a resume refused fast while it is away
        env["RLSTACK_COMPILE_CACHE"] = str(work / "compile-cache")  # cold for the reference
        try:
            if args.compile == "background":  # the cache warm, so the reference switches early
                warm_up = train(work / "warm-up", 2, args.seed, env, experiment="warm-up")
                wait_group(warm_up, timeout_s=1200)
            began = time.monotonic()
            compile_args = COMPILE_ARGS[args.compile]
            reference = train(
                work / "reference", args.steps, args.seed, env, compile_args=compile_args
            )
            code = reference.wait()
            end_group(reference)
            if code != 0:
                raise RuntimeError(f"the reference run failed: see {work / 'reference-logs'}")
            reference_s = time.monotonic() - began
            if args.compile == "background":
                compile_args = switch_points(newest_checkpoint(work / "reference"))
                if not compile_args:
                    raise RuntimeError("the reference run switched no piece: nothing to replay")
            report = run_chaos(args, work, server, env, compile_args)
            report["compile_args"] = compile_args
            client = MlflowClient(server.uri)
            runs = {
                r.data.tags.get("mlflow.runName"): r
                for r in client.search_runs([client.get_experiment_by_name("chaos").experiment_id])
            }
            ref_run, chaos_run = sorted(runs.values(), key=lambda r: r.info.start_time)[:2]
            report |= compare(client, ref_run.info.run_id, chaos_run.info.run_id)
            report["runs"] = len(runs)
            report["status"] = chaos_run.info.status
            report["bit_identical"] = same_state(
                newest_checkpoint(work / "reference"), work / "chaos-final.pt"
            )
        finally:
            server.stop()
    report |= {
        "reference_s": reference_s,
        "seed": args.seed,
        "steps": args.steps,
        "compile": args.compile,
    }
    _print(report)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    ok = (
        report["left_clean"]
        and report["disk_full_one_line"]
        and report["bit_identical"]
        and report["lost"] == report["duplicated"] == report["different"] == 0
        and report["status"] == "FINISHED"
        and report["runs"] == 2
    )
    return 0 if ok else 1


def _print(report: dict) -> None:
    rows = [
        ("kills survived (during a write)", f"{report['kills']} ({report['kills_during_write']})"),
        ("outage seconds", f"{report['outage_s']:.1f}"),
        (
            "full-disk stops (one-line error)",
            f"{len(report['disk_full_errors'])} ({report['disk_full_one_line']})",
        ),
        ("refused restarts (server away)", str(report["restarts"])),
        ("steps redone (at least)", str(report["steps_redone"])),
        ("metric values compared", str(report["values"])),
        (
            "lost / duplicated / different",
            f"{report['lost']} / {report['duplicated']} / {report['different']}",
        ),
        ("final params bit-identical", str(report["bit_identical"])),
        ("run status, runs in experiment", f"{report['status']}, {report['runs']}"),
        ("left in the folder", ", ".join(report["folder_left"])),
        ("seconds (reference)", f"{report['seconds']:.0f} ({report['reference_s']:.0f})"),
    ]
    for name, value in rows:
        print(f"{name:<34}{value}")


if __name__ == "__main__":
    raise SystemExit(main())
