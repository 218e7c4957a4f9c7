"""Collection speed on gymnasium vector envs: rlstack against the raw vector env and
Stable-Baselines3.

Run ``python -m benchmarks.gymnasium`` from the repository root (HalfCheetah
needs ``pip install -e ".[mujoco]"``). For each env id, at the same
``--num-envs`` sub-envs in a sync vector env, each round measures env
steps/s of

* ``raw``: the vector env alone, stepped with pre-drawn random actions
  (twice per round, ``raw`` and ``raw (A/A)``: the spread between the two
  is the machine's drift, the control for every other ratio);
* ``rlstack eager`` / ``rlstack compiled``: ``Algorithm.collect()`` of
  ``--horizon`` steps with the env's preset (``continuous`` for Box
  actions, ``gymnasium:CartPole-v1``'s for CartPole), compiled around the
  env or not (the first collect, compile included, is not timed);
* ``SB3 PPO``: Stable-Baselines3's ``collect_rollouts`` of the same
  ``--horizon`` steps with ``PPO("MlpPolicy")`` on a ``DummyVecEnv`` of
  the same size, in its own venv (built on first use in
  ``~/.cache/rlstack-peers/sb3-venv``; ``--sb3-venv`` picks another place;
  ``--no-sb3`` leaves it out).

in that order, ``--rounds`` times, and reports the median steps/s over
rounds and each row's median per-round ratio to ``raw``. Writes
``benchmarks/results/gymnasium-cpu.json``. Target (issue 23): rlstack's
collection at least 70% of the raw sync vector env's steps/s.
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.peers import ensure_peer_venv  # noqa: E402

SB3_REQUIREMENTS = ["stable-baselines3==2.9.2", "gymnasium[mujoco]>=1.0", "torch==2.13.0"]
ENV_IDS = ["CartPole-v1", "HalfCheetah-v5"]

# Runs inside the SB3 venv: prints one JSON line with the env steps/s of `repeats` rollouts.
SB3_SCRIPT = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[4]))
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
env_id, num_envs, horizon = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
repeats = int(sys.argv[5])
vec_env = make_vec_env(env_id, n_envs=num_envs, seed=0)
model = PPO("MlpPolicy", vec_env, n_steps=horizon, batch_size=64, device="cpu")
_, callback = model._setup_learn(total_timesteps=10**9, callback=None)
callback.on_training_start(locals(), globals())
# warm-up
model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=horizon)
start = time.perf_counter()
for _ in range(repeats):
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=horizon)
print(json.dumps({"steps_per_s": repeats * horizon * num_envs / (time.perf_counter() - start)}))
"""


def sb3_python(path: Path) -> Path:
    """The SB3 venv's python, built with :data:`SB3_REQUIREMENTS` on first use."""
    return ensure_peer_venv(path, SB3_REQUIREMENTS)


def run_sb3(python: Path, env_id: str, num_envs: int, horizon: int, repeats: int) -> float:
    with tempfile.TemporaryDirectory() as cwd:  # keep this checkout off the child's path
        out = subprocess.run(
            [
                str(python),
                "-c",
                SB3_SCRIPT,
                env_id,
                str(num_envs),
                str(horizon),
                str(torch.get_num_threads()),
                str(repeats),
            ],
            cwd=cwd,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": ""},
        )
    if out.returncode != 0:
        raise RuntimeError(f"SB3 failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["steps_per_s"]


def raw_steps_per_s(vector_env, horizon: int, repeats: int) -> float:
    """Env steps/s of the vector env alone, with actions drawn beforehand."""
    actions = [vector_env.action_space.sample() for _ in range(horizon)]
    vector_env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(repeats):
        for action in actions:
            vector_env.step(action)
    return repeats * horizon * vector_env.num_envs / (time.perf_counter() - start)


def rlstack_algorithm(env_id: str, num_envs: int, horizon: int, compile: bool):
    from rlstack import Algorithm
    from rlstack.integrations.gymnasium_adapter import gymnasium_env
    from rlstack.shell.presets import PRESETS, preset_for

    env = gymnasium_env(env_id)
    name = f"gymnasium:{env_id}"
    preset = dict(PRESETS.get(preset_for(name, env) or "", {}))
    preset.update(num_envs=num_envs, horizon=horizon, compile=compile)
    preset.pop("sgd_minibatch_size", None)
    algo = Algorithm(env, seed=0, **preset)
    algo.collect()  # compile, if any, and warm-up
    return algo


def collect_steps_per_s(algo, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        algo.collect()
    return repeats * algo.config.num_envs * algo.config.horizon / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--envs", nargs="*", default=ENV_IDS)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--horizon", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="rollouts per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sb3", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--sb3-venv", default=str(Path.home() / ".cache" / "rlstack-peers" / "sb3-venv")
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import gymnasium

    sb3 = sb3_python(Path(args.sb3_venv)) if args.sb3 else None
    results = {}
    for env_id in args.envs:
        vector_env = gymnasium.make_vec(
            env_id,
            num_envs=args.num_envs,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": gymnasium.vector.AutoresetMode.SAME_STEP},
        )
        algos = {
            "rlstack eager": rlstack_algorithm(env_id, args.num_envs, args.horizon, False),
            "rlstack compiled": rlstack_algorithm(env_id, args.num_envs, args.horizon, True),
        }
        rounds = []
        for _ in range(args.rounds):
            row = {"raw": raw_steps_per_s(vector_env, args.horizon, args.repeats)}
            row["raw (A/A)"] = raw_steps_per_s(vector_env, args.horizon, args.repeats)
            for label, algo in algos.items():
                row[label] = collect_steps_per_s(algo, args.repeats)
            if sb3 is not None:
                row["SB3 PPO"] = run_sb3(sb3, env_id, args.num_envs, args.horizon, args.repeats)
            rounds.append(row)
            print(env_id, {k: round(v) for k, v in row.items()}, flush=True)
        results[env_id] = {
            "rounds": rounds,
            "median_steps_per_s": {k: statistics.median(r[k] for r in rounds) for k in rounds[0]},
            "median_ratio_to_raw": {
                k: statistics.median(r[k] / r["raw"] for r in rounds) for k in rounds[0]
            },
        }
    print(
        f"\n{args.num_envs} sync sub-envs, {args.horizon} steps per rollout, {args.rounds} rounds "
        "(medians)"
    )
    print(f"{'env':<16}{'what':<20}{'env steps/s':>12}{'x raw':>8}")
    for env_id, result in results.items():
        for label, rate in result["median_steps_per_s"].items():
            print(
                f"{env_id:<16}{label:<20}{rate:>12,.0f}{result['median_ratio_to_raw'][label]:>8.2f}"
            )
    out = Path(args.out or Path(__file__).parent / "results" / "gymnasium-cpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "num_envs": args.num_envs,
        "horizon": args.horizon,
        "repeats": args.repeats,
        "rounds": args.rounds,
        "numpy": np.__version__,
        "gymnasium": gymnasium.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
