"""rsl_rl (rsl-rl-lib 5.5.1, in its own venv) and rlstack on the same env behind
rsl_rl's VecEnv, side by side.

Run ``python -m benchmarks.rsl_rl`` from the repository root. The first run
builds a venv (``~/.cache/rlstack-peers/rsl-rl-venv``) with rsl-rl-lib and
tensordict over this interpreter's packages (the same torch, and rlstack
for the env's physics). The env is rlstack's episodic Pendulum-v1 behind
the protocol (``benchmarks/rsl_rl_env.py``), 4096 envs on the CPU, at two
of rsl_rl's settings:

* ``cartpole``: Isaac Lab's Cartpole PPO (16 steps, actor and critic MLPs
  32-32 ELU, 5 epochs x 4 minibatches, adaptive lr from 1e-3, desired KL
  0.01);
* ``locomotion``: rsl_rl's locomotion defaults (24 steps, 256-256-256 ELU,
  the same PPO settings).

Each round runs rsl_rl's ``OnPolicyRunner`` in a child process (its first
``learn(1)`` timed from construction, then one ``learn(--iterations)``)
and then rlstack's ``Trainer``-less ``Algorithm`` (compiled; the first
``collect()`` + ``step()`` timed from construction, compile included, in
the first round only), so both sides of a round meet the same machine. The
table reports transitions/s of collect + update (median over rounds, and
the median per-round ratio), the first iteration's seconds, and the mean
return of the last 100 episodes each side finished over the same env steps
(``--learn-iterations`` iterations, in the last round). Writes
``benchmarks/results/rsl-rl-<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.peers import ensure_peer_venv  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
REQUIREMENTS = ["rsl-rl-lib==5.5.1", "tensordict"]
PPO = {
    "num_learning_epochs": 5,
    "num_mini_batches": 4,
    "learning_rate": 1e-3,
    "schedule": "adaptive",
    "desired_kl": 0.01,
    "gamma": 0.99,
    "lam": 0.95,
    "clip_param": 0.2,
    "entropy_coef": 0.005,
    "value_loss_coef": 1.0,
    "max_grad_norm": 1.0,
    "use_clipped_value_loss": True,
}
CONFIGS = {
    "cartpole": {"steps": 16, "hidden": [32, 32]},
    "locomotion": {"steps": 24, "hidden": [256, 256, 256]},
}

# Runs in rsl_rl's venv; prints one JSON line.
PEER_SCRIPT = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[5]))
from rsl_rl.runners import OnPolicyRunner
sys.path.insert(0, sys.argv[4])
from rsl_rl_env import PendulumVecEnv, runner_config
config, iterations, learn_iterations = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
num_envs, cfg = config["num_envs"], runner_config(config)
torch.manual_seed(0)
start = time.perf_counter()
env = PendulumVecEnv(num_envs, seed=0)
runner = OnPolicyRunner(env, cfg, log_dir=None, device="cpu")
runner.learn(1)
first = time.perf_counter() - start
start = time.perf_counter()
# one call: its set-up (logging writer, observations) amortised as in a real run
runner.learn(iterations)
result = {"first_s": first, "iteration_s": (time.perf_counter() - start) / iterations}
if learn_iterations:
    env = PendulumVecEnv(num_envs, seed=0)
    runner = OnPolicyRunner(env, cfg, log_dir=None, device="cpu")
    runner.learn(learn_iterations)
    last = env.finished_returns[-100:]
    result["return_last_100"] = sum(last) / max(1, len(last))
    result["episodes"] = len(env.finished_returns)
print(json.dumps(result))
"""


def rsl_rl_config(name: str, num_envs: int) -> dict:
    return {"ppo": PPO, "num_envs": num_envs, **CONFIGS[name]}


def run_script(python: Path, script: str, *args: str) -> dict:
    """``python -c script *args`` in an empty temp folder; the JSON of its last line."""
    with tempfile.TemporaryDirectory() as cwd:
        out = subprocess.run(
            [str(python), "-c", script, *args], cwd=cwd, capture_output=True, text=True
        )
    if out.returncode != 0:
        raise RuntimeError(f"rsl_rl failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_peer(python: Path, config: dict, iterations: int, learn_iterations: int) -> dict:
    return run_script(
        python,
        PEER_SCRIPT,
        json.dumps(config),
        str(iterations),
        str(learn_iterations),
        str(Path(__file__).resolve().parent),
        str(torch.get_num_threads()),
    )


def rlstack_kwargs(config: dict) -> dict:
    """The same PPO in rlstack's names (docs/guides/rsl_rl.md's table)."""
    ppo, steps, num_envs = config["ppo"], config["steps"], config["num_envs"]
    return dict(
        num_envs=num_envs,
        horizon=steps,
        num_sgd_iters=ppo["num_learning_epochs"],
        sgd_minibatch_size=num_envs * steps // ppo["num_mini_batches"],
        gamma=ppo["gamma"],
        gae_lambda=ppo["lam"],
        clip_param=ppo["clip_param"],
        vf_clip_param=ppo["clip_param"],
        vf_coeff=ppo["value_loss_coef"],
        entropy_coeff=ppo["entropy_coef"],
        max_grad_norm=ppo["max_grad_norm"],
        desired_kl=ppo["desired_kl"],
        optimizer_config={"lr": ppo["learning_rate"]},
        model_config={
            "hiddens": tuple(config["hidden"]),
            "activation_fn": "elu",
            "log_std_init": 0.0,
        },
    )


def make_ours(config: dict, seed: int = 0, compile: bool | None = True, device: str = "cpu"):
    """``(vec_env, algo)``: the env on ``device`` behind the adapter, and an
    Algorithm there (``compile``: True compiled first, None in the background).
    """
    from benchmarks.rsl_rl_env import PendulumVecEnv
    from rlstack import Algorithm
    from rlstack.integrations.rsl_rl_adapter import RslRlEnv

    vec_env = PendulumVecEnv(config["num_envs"], seed=seed, device=device)
    return vec_env, Algorithm(
        RslRlEnv(vec_env),
        seed=seed,
        compile=compile,
        device=device,
        **rlstack_kwargs(config),
    )


def iterate(algo) -> None:
    algo.collect()
    algo.step()


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(algo, args: argparse.Namespace) -> list[float]:
    """Seconds of each of ``args.iterations`` collect + update iterations."""
    times = []
    for _ in range(args.iterations):
        start = time.perf_counter()
        iterate(algo)
        _sync(args.device)
        times.append(time.perf_counter() - start)
    return times


def until_switched(algo) -> None:
    """Iterate a background-compiled ``algo`` until every piece has switched
    (its second iteration starts the lookups and the compiling).
    """
    strategy = algo.functions.strategy
    if strategy is None:
        return
    iterate(algo)
    for job in list(strategy.jobs.values()):
        job.done.wait(timeout=600)
    iterate(algo)


def ours_only(args: argparse.Namespace) -> int:
    """The rlstack side alone on ``args.device``, compiled first and in the background:
    the first iteration's seconds (from construction), transitions/s over
    ``args.rounds`` rounds of ``args.iterations`` iterations (the background
    run after every piece has switched) and peak device memory.
    """
    rows = []
    for name in args.configs:
        config = rsl_rl_config(name, args.num_envs)
        transitions = config["num_envs"] * config["steps"]
        for compile_mode in (True, None):
            if torch.device(args.device).type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            _, algo = make_ours(config, compile=compile_mode, device=args.device)
            iterate(algo)
            _sync(args.device)
            first = time.perf_counter() - start
            until_switched(algo)
            rates = [transitions / statistics.median(timed(algo, args)) for _ in range(args.rounds)]
            row = {
                "config": name,
                "device": args.device,
                "compile": algo.compile,
                "num_envs": config["num_envs"],
                "steps": config["steps"],
                "hidden": config["hidden"],
                "first_iteration_s": first,
                "switched": algo.compile_switches,
                "rlstack_transitions_per_s": statistics.median(rates),
                "rounds": rates,
                "peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20
                if torch.device(args.device).type == "cuda"
                else None,
            }
            rows.append(row)
            print(
                f"{name} {algo.compile}: first iteration {first:.1f} s, "
                f"{row['rlstack_transitions_per_s']:,.0f} transitions/s, "
                f"switched {row['switched']}",
                flush=True,
            )
    out = Path(args.out or RESULTS / f"rsl-rl-ours-{torch.device(args.device).type}.json")
    meta = {"torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "ours_only": True}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--num-envs", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--iterations", type=int, default=3, help="timed iterations per side per round"
    )
    parser.add_argument(
        "--learn-iterations",
        type=int,
        default=0,
        help="iterations of the learning comparison, in the last round (0: none)",
    )
    parser.add_argument(
        "--venv", default=str(Path.home() / ".cache" / "rlstack-peers" / "rsl-rl-venv")
    )
    parser.add_argument("--device", default="cpu", help="where the env's tensors and rlstack run")
    parser.add_argument(
        "--ours-only",
        action="store_true",
        help="rlstack alone (where rsl_rl's venv cannot be built, e.g. an offline GPU machine)",
    )
    parser.add_argument("--out", default=None, help="default results/rsl-rl-<device>.json")
    args = parser.parse_args(argv)
    if args.ours_only:
        return ours_only(args)
    python = ensure_peer_venv(Path(args.venv), REQUIREMENTS, system_site_packages=True)
    rows = []
    for name in args.configs:
        config = rsl_rl_config(name, args.num_envs)
        transitions = config["num_envs"] * config["steps"]
        start = time.perf_counter()
        vec_env, algo = make_ours(config, device=args.device)
        iterate(algo)
        _sync(args.device)
        ours_first = time.perf_counter() - start
        peer_rates, our_rates, peer_first = [], [], []
        for r in range(args.rounds):
            last = r == args.rounds - 1
            peer = run_peer(python, config, args.iterations, args.learn_iterations if last else 0)
            peer_first.append(peer["first_s"])
            peer_rates.append(transitions / peer["iteration_s"])
            our_rates.append(transitions / statistics.median(timed(algo, args)))
            print(
                f"{name} round {r + 1}: rsl_rl {peer_rates[-1]:,.0f}/s, rlstack "
                f"{our_rates[-1]:,.0f}/s",
                flush=True,
            )
        row = {
            "config": name,
            "num_envs": config["num_envs"],
            "steps": config["steps"],
            "hidden": config["hidden"],
            "rsl_rl_transitions_per_s": statistics.median(peer_rates),
            "rlstack_transitions_per_s": statistics.median(our_rates),
            "ratio_median_of_rounds": statistics.median(
                o / p for o, p in zip(our_rates, peer_rates, strict=True)
            ),
            "rsl_rl_first_iteration_s": statistics.median(peer_first),
            "rlstack_first_iteration_s": ours_first,
            "rounds": {"rsl_rl": peer_rates, "rlstack": our_rates},
        }
        if args.learn_iterations:
            vec_env, fresh = make_ours(config, device=args.device)
            for _ in range(args.learn_iterations):
                iterate(fresh)
            row["rlstack_return_last_100"] = sum(vec_env.finished_returns[-100:]) / max(
                1, len(vec_env.finished_returns[-100:])
            )
            row["rsl_rl_return_last_100"] = peer["return_last_100"]
            row["env_steps"] = args.learn_iterations * transitions
        rows.append(row)
    print(
        f"Pendulum-v1 behind rsl_rl's VecEnv, {args.num_envs} envs, CPU ({torch.get_num_threads()} "
        "threads), "
        f"{args.rounds} rounds"
    )
    print(
        f"{'config':<11} {'rsl_rl /s':>11} {'rlstack /s':>11} {'ratio':>6} {'first s rsl_rl':>15} "
        f"{'first s ours':>13}"
    )
    for row in rows:
        print(
            f"{row['config']:<11} {row['rsl_rl_transitions_per_s']:>11,.0f} "
            f"{row['rlstack_transitions_per_s']:>11,.0f} "
            f"{row['ratio_median_of_rounds']:>6.2f} {row['rsl_rl_first_iteration_s']:>15.2f} "
            f"{row['rlstack_first_iteration_s']:>13.2f}"
        )
        if "env_steps" in row:
            print(
                f"{'':<11} return of the last 100 episodes after {row['env_steps']:,} env steps: "
                f"rsl_rl {row['rsl_rl_return_last_100']:.1f}, rlstack "
                f"{row['rlstack_return_last_100']:.1f}"
            )
    out = Path(args.out or RESULTS / f"rsl-rl-{torch.device(args.device).type}.json")
    meta = {
        "torch": torch.__version__,
        "rsl_rl": REQUIREMENTS[0],
        "date": time.strftime("%Y-%m-%d"),
        "rounds": args.rounds,
        "iterations": args.iterations,
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
