"""Throughput of rlstack's rollout and full collect()+step() iteration.

Run ``python -m benchmarks.throughput`` (or ``python benchmarks/throughput.py``)
from the repository root. Prints a table and writes
``benchmarks/results/throughput-<device>.json``.

For each configuration and mode (eager, compiled, compiled + bf16 AMP; on
CUDA also TF32 and CUDA graphs) it reports env transitions per second for
``rollout()`` alone and for a full ``collect()`` + ``step()`` iteration
(median over repeats after warm-up), the first iteration's wall time
(compile time included), peak memory (process max RSS on CPU, max allocated
on CUDA), the model's FLOPs per transition and the fraction of the device's
measured fp32 matmul rate that the iteration reaches.

On CPU the modes of a configuration are timed in alternation (one
iteration each, ``--repeats`` rounds): the shared machines this runs on
drift in speed for minutes at a time, and alternation makes the drift hit
every mode alike.

FLOPs per transition (docs/design.md): with P the actor+critic weights touched by
a matmul, the rollout forward costs 2P and each SGD epoch a forward and a
backward (2P + 4P), so a transition costs about 2P(1 + 3E) for E epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script:
    # the repository root in place of benchmarks/, whose gymnasium.py would shadow gymnasium
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks import contention  # noqa: E402
from rlstack import Algorithm, Population, RecurrentAlgorithm  # noqa: E402
from rlstack.envs import CartPole, ContinuousDummyEnv, DiscreteDummyEnv  # noqa: E402
from rlstack.shell.presets import PRESETS  # noqa: E402

try:
    from rlstack.integrations.env_names import load_env
except ImportError:  # a revision before it moved (compare_revisions measures older trees with this)
    from rlstack.cli.arguments import load_env

# Every config: 4 epochs over the whole buffer per update (rlstack 1.x's defaults).
CONFIGS = {
    # rlstack 1.x defaults: 8192 envs, horizon 32, (256, 256).
    "discrete-1x-default": dict(
        env=DiscreteDummyEnv, num_envs=8192, horizon=32, hiddens=(256, 256)
    ),
    "continuous-1x-default": dict(
        env=ContinuousDummyEnv, num_envs=8192, horizon=32, hiddens=(256, 256)
    ),
    # Small model: overhead dominates.
    "discrete-small-64x64": dict(env=DiscreteDummyEnv, num_envs=8192, horizon=32, hiddens=(64, 64)),
    # A real env step (Euler integration, 4-d observations) with its preset's model.
    "cartpole-64x64": dict(env=CartPole, num_envs=8192, horizon=32, hiddens=(64, 64)),
    # Enough envs to fill a GPU (4.2M transitions per update there); 4x the default on CPU.
    "discrete-large": dict(
        env=DiscreteDummyEnv,
        num_envs={"cpu": 32768, "cuda": 131072},
        horizon=32,
        hiddens=(256, 256),
    ),
    # RecurrentAlgorithm at rlstack 1.x's defaults: an LSTM of 256, seq_len 4 (benchmarks/peers.py's
    # recurrent-1x-default); `hiddens` is the width the matmul ceiling is measured at.
    "recurrent-1x-default": dict(
        env=DiscreteDummyEnv,
        num_envs=8192,
        horizon=32,
        hiddens=(256,),
        algorithm=RecurrentAlgorithm,
        model_config={"hidden_size": 256},
    ),
    # A population of 8 CartPole runs in one vmapped rollout and update (issue 21's K=8
    # configuration): 1024 envs x 32 steps per member, the preset's 64x64 model; transitions count
    # every member's.
    "population-k8": dict(
        env=CartPole,
        num_envs=1024,
        horizon=32,
        hiddens=(64, 64),
        algorithm=Population,
        algorithm_kwargs={"num_members": 8},
    ),
    # CartPole-v1's preset as `rlstack train --env CartPole-v1` runs it: 512 envs x 64 steps, 64x64.
    "cartpole-v1-preset": dict(
        env="CartPole-v1",
        num_envs=512,
        horizon=64,
        hiddens=(64, 64),
        preset="CartPole-v1",
    ),
    # Gymnasium's HalfCheetah-v5 (the mujoco extra) with the continuous preset's settings,
    # CleanRL's: 8 eager MuJoCo sub-envs x 256 steps, 10 epochs of 64-transition minibatches, tanh
    # 64x64.
    "halfcheetah-continuous": dict(
        env="gymnasium:HalfCheetah-v5",
        num_envs=8,
        horizon=256,
        hiddens=(64, 64),
        preset="continuous",
    ),
}
# Default config list per device: the large config takes minutes per iteration on a small CPU, the
# recurrent one tens of seconds, and HalfCheetah needs the mujoco extra (name any of them to run
# it).
_NAMED_ONLY = (
    "recurrent-1x-default",
    "population-k8",
    "cartpole-v1-preset",
    "halfcheetah-continuous",
)
DEFAULT_CONFIGS = {
    "cpu": [c for c in CONFIGS if c not in ("discrete-large", *_NAMED_ONLY)],
    "cuda": [c for c in CONFIGS if c not in _NAMED_ONLY],
}

# Mode -> Algorithm switches. TF32 and CUDA graphs exist on CUDA only.
MODES = {
    "eager": dict(compile=False),
    "compiled": dict(compile=True),
    "compiled-amp": dict(compile=True, enable_amp=True),
    "compiled-tf32": dict(compile=True, allow_tf32=True),
    "compiled-graphs": dict(compile=True, cuda_graphs=True),
    "compiled-amp-graphs": dict(compile=True, enable_amp=True, cuda_graphs=True),
}
DEFAULT_MODES = {"cpu": ["eager", "compiled", "compiled-amp"], "cuda": list(MODES)}


def members(algo: Algorithm) -> int:
    """K, the runs one collect + step trains (1 but for a population)."""
    return getattr(algo, "num_members", None) or 1  # None: one run


def matmul_weights(algo: Algorithm) -> int:
    """P: weights of the 2-D (matmul) parameters of actor and critic (of
    every member of a population, whose params are ``[K, ...]``).
    """
    matrix_dim = 2 if members(algo) == 1 else 3
    return sum(p.numel() for p in algo.params.values() if p.dim() == matrix_dim)


def measured_matmul_flops(
    device: torch.device,
    n: int,
    width: int,
    dtype: torch.dtype = torch.float32,
    repeats: int = 20,
    tf32: bool = False,
) -> float:
    """FLOP/s of an ``[n, width] @ [width, width]`` matmul in ``dtype`` on
    ``device`` (float32 in TF32 when ``tf32``).
    """
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    try:
        return _matmul_rate(device, n, width, dtype, repeats)
    finally:
        torch.set_float32_matmul_precision(previous)


def _matmul_rate(
    device: torch.device, n: int, width: int, dtype: torch.dtype, repeats: int
) -> float:
    a = torch.randn(n, width, device=device, dtype=dtype)
    b = torch.randn(width, width, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - start)
    # A ceiling is the best rate the device shows, not a typical one.
    return 2.0 * n * width * width / min(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build(spec: dict, mode: str, *, device: torch.device) -> tuple[Algorithm, float, float]:
    """An Algorithm for ``spec`` in ``mode``, warmed up.

    Returns ``(algo, first_iteration_s, warmup_s)``: the wall time of the
    first ``collect()`` + ``step()`` (model build excluded, compilation
    included) and of all warm-up iterations (with CUDA graphs: two eager
    calls, then the capture on the third).
    """
    algorithm_cls = spec.get("algorithm", Algorithm)
    env = (
        load_env(spec["env"]) if isinstance(spec["env"], str) else spec["env"]
    )  # a name, as --env takes it
    preset = dict(PRESETS[spec["preset"]]) if "preset" in spec else {}
    for name in ("num_envs", "horizon", "compile"):  # the config's and the mode's
        preset.pop(name, None)
    preset_model = preset.pop("model_config", {"hiddens": spec["hiddens"]})
    model_config = spec.get("model_config", preset_model)
    algo = algorithm_cls(
        env,
        num_envs=spec["num_envs"],
        horizon=spec["horizon"],
        model_config=model_config,
        device=device,
        seed=0,
        **MODES[mode],
        **preset,
        **spec.get("algorithm_kwargs", {}),
    )
    start = time.perf_counter()
    algo.collect()
    algo.step()
    first_iteration_s = time.perf_counter() - start
    for _ in range(2 if algo.cuda_graphs else 0):
        algo.collect()
        algo.step()
    return algo, first_iteration_s, time.perf_counter() - start


def time_iteration(algo: Algorithm) -> tuple[float, float]:
    """``(rollout_s, iteration_s)`` of one ``collect()`` + ``step()``; each
    syncs the device once (its stats), so wall-clock time is exact.
    """
    start = time.perf_counter()
    algo.collect()
    rollout_s = time.perf_counter() - start
    algo.step()
    return rollout_s, time.perf_counter() - start


def make_row(
    name: str, spec: dict, mode: str, algo: Algorithm, timings: dict, device: torch.device
) -> dict:
    transitions = spec["num_envs"] * spec["horizon"] * members(algo)
    P = matmul_weights(algo) // members(algo)
    flops_per_transition = 2 * P * (1 + 3 * algo.config.num_sgd_iters)
    iteration_rate = transitions / statistics.median(timings["iteration_s"])
    return {
        "config": name,
        "env": getattr(spec["env"], "__name__", spec["env"]),
        "algorithm": type(algo).__name__,
        "num_envs": spec["num_envs"],
        "horizon": spec["horizon"],
        "hiddens": list(spec["hiddens"]),
        "mode": mode,
        "compile": algo.compile,
        "amp": algo.config.enable_amp,
        "tf32": algo.allow_tf32,
        "cuda_graphs": algo.cuda_graphs,
        "device": str(device),
        "rollout_transitions_per_s": transitions / statistics.median(timings["rollout_s"]),
        "iteration_transitions_per_s": iteration_rate,
        "iteration_ms": 1000 * statistics.median(timings["iteration_s"]),
        "iteration_ms_all": [1000 * t for t in timings["iteration_s"]],
        "first_iteration_s": timings["first_iteration_s"],
        "warmup_s": timings["warmup_s"],
        "peak_memory_mb": peak_memory_mb(device),
        "matmul_params": P,
        "flops_per_transition": flops_per_transition,
        "achieved_flops": iteration_rate * flops_per_transition,
    }


def bench_config(
    name: str, spec: dict, modes: list[str], *, device: torch.device, repeats: int, interleave: bool
):
    """Rows for every mode of one config.

    With ``interleave``, every mode's Algorithm is built first and the timed
    iterations then alternate between modes, so slow spells of a shared
    machine hit all modes alike; otherwise each mode runs alone (and, on
    CUDA, reports its own peak memory).
    """
    torch._dynamo.reset()
    timings = {mode: {"rollout_s": [], "iteration_s": []} for mode in modes}
    algos = {}

    def start(mode: str) -> None:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        algo, first, warmup = build(spec, mode, device=device)
        algos[mode] = algo
        timings[mode].update(first_iteration_s=first, warmup_s=warmup)

    def record(mode: str) -> None:
        rollout_s, iteration_s = time_iteration(algos[mode])
        timings[mode]["rollout_s"].append(rollout_s)
        timings[mode]["iteration_s"].append(iteration_s)

    if interleave:
        for mode in modes:
            start(mode)
        for _ in range(repeats):
            for mode in modes:
                record(mode)
        yield from (
            make_row(name, spec, mode, algos[mode], timings[mode], device) for mode in modes
        )
        return
    for mode in modes:
        start(mode)
        for _ in range(repeats):
            record(mode)
        yield make_row(name, spec, mode, algos.pop(mode), timings[mode], device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--configs",
        nargs="*",
        default=None,
        choices=list(CONFIGS),
        help="default: all (all but discrete-large on CPU)",
    )
    parser.add_argument(
        "--modes",
        nargs="*",
        default=None,
        choices=list(MODES),
        help="default: eager, compiled, compiled-amp (and the TF32 / CUDA-graph modes on CUDA)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed iterations per mode (median)")
    parser.add_argument(
        "--interleave",
        type=lambda t: t.lower() in ("1", "true", "yes"),
        default=None,
        metavar="BOOL",
        help="alternate the modes' timed iterations (default: true on CPU, false on CUDA)",
    )
    parser.add_argument(
        "--num-envs", type=int, default=None, help="override num_envs of every config"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="JSON path (default benchmarks/results/throughput-<device>.json)",
    )
    parser.add_argument(
        "--contended",
        type=int,
        default=None,
        metavar="K",
        help="the contended mode (benchmarks/contention.py): eager collect + update quiet and "
        "beside K busy processes, under rlstack's and libgomp's default wait policies "
        "(default configs: cartpole-v1-preset; --repeats iterations per child, 2 rounds)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the contended mode")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.contended is not None:
        return contention.contended(
            args.configs or ["cartpole-v1-preset"],
            busy=args.contended,
            rounds=args.rounds,
            repeats=args.repeats,
            out=Path(args.out or Path(__file__).parent / "results" / "contended-cpu.json"),
        )
    configs = args.configs or DEFAULT_CONFIGS[device.type]
    modes = args.modes or DEFAULT_MODES[device.type]
    for mode in modes:
        if device.type != "cuda" and ({"allow_tf32", "cuda_graphs"} & set(MODES[mode])):
            parser.error(f"--modes {mode} needs --device cuda")

    rows = []
    for name in configs:
        spec = dict(CONFIGS[name])
        if isinstance(spec["num_envs"], dict):
            spec["num_envs"] = spec["num_envs"][device.type]
        if args.num_envs:
            spec["num_envs"] = args.num_envs
        interleave = args.interleave if args.interleave is not None else device.type == "cpu"
        for row in bench_config(
            name, spec, modes, device=device, repeats=args.repeats, interleave=interleave
        ):
            width = spec["hiddens"][0]
            # AMP rows are held to the bf16 matmul rate, TF32 rows to TF32's, the others to fp32's.
            dtype = torch.bfloat16 if row["amp"] else torch.float32
            row["device_matmul_flops"] = measured_matmul_flops(
                device, spec["num_envs"], width, dtype, tf32=row["tf32"]
            )
            row["ceiling_dtype"] = (
                "tf32" if row["tf32"] and not row["amp"] else str(dtype).removeprefix("torch.")
            )
            row["ceiling_fraction"] = row["achieved_flops"] / row["device_matmul_flops"]
            row["ceiling_transitions_per_s"] = (
                row["device_matmul_flops"] / row["flops_per_transition"]
            )
            rows.append(row)
            print_row(row, header=len(rows) == 1)

    out = Path(args.out or Path(__file__).parent / "results" / f"throughput-{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"\nwrote {out}")
    return 0


def print_row(row: dict, header: bool) -> None:
    if header:
        print(
            f"{'config':<24}{'mode':<21}{'rollout/s':>12}{'iter/s':>12}{'iter ms':>10}"
            f"{'1st iter s':>11}"
            f"{'peak MB':>9}{'FLOP/trans':>12}{'ceiling':>9}"
        )
    print(
        f"{row['config']:<24}{row['mode']:<21}{row['rollout_transitions_per_s']:>12,.0f}"
        f"{row['iteration_transitions_per_s']:>12,.0f}{row['iteration_ms']:>10.0f}"
        f"{row['first_iteration_s']:>11.1f}"
        f"{row['peak_memory_mb']:>9.0f}{row['flops_per_transition'] / 1e6:>11.2f}M"
        f"{100 * row['ceiling_fraction']:>8.1f}%",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
