"""One fresh process of ``benchmarks/startup.py``: train one case for a window of seconds.

Run by startup.py as ``python benchmarks/startup_run.py CASE SECONDS`` with
the rlstack under test first on ``PYTHONPATH`` (this tree's or an older
revision's worktree), so it uses only names every measured revision has:
``Algorithm``, ``RecurrentAlgorithm``, the presets, the rsl_rl adapter and
``compile_switches`` where it exists. It prints one JSON line:

* ``import_s``: seconds from the process's first line to the end of
  ``import rlstack`` (torch included); every later time counts from there,
  "after the imports";
* ``build_s``: the Algorithm built (env, model, optimizer);
* ``iterations``: ``[seconds, transitions]`` at the end of each
  ``collect()`` + ``step()``, cumulative, until ``SECONDS`` after the imports;
* ``compiled_s``: when every compilable piece had switched to its compiled
  form (``None``: never, or the revision has no background strategy), and
  ``switches``, the update at which each switched and whether it was
  loaded or compiled;
* ``returns``: the mean return of the last 100 finished episodes, sampled
  at each iteration's end (``isaac-cartpole`` only, from the env);
* ``compiler_pids``: the compiling children still running at the end (the
  harness waits for them before the warm run).
"""

from __future__ import annotations

import time

START = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
# Not benchmarks/ (its gymnasium.py would shadow gymnasium); the rlstack under test comes first
# (PYTHONPATH), this tree's root last (benchmarks.rsl_rl, for a revision without it).
sys.path.pop(0)
sys.path.append(str(HERE.parent))

import torch  # noqa: E402, F401

import rlstack  # noqa: E402, F401

IMPORTED = time.perf_counter()


def build(case: str):
    """``(algo, transitions per iteration, returns)`` for ``case``; ``returns()``
    is the mean of the last 100 finished episodes' returns, or ``None``.
    """
    from rlstack import Algorithm, RecurrentAlgorithm
    from rlstack.envs import DiscreteDummyEnv
    from rlstack.shell.presets import PRESETS

    if case == "1x-default":
        algo = Algorithm(DiscreteDummyEnv, seed=0)
    elif case == "1x-tests":
        algo = Algorithm(DiscreteDummyEnv, num_envs=64, horizon=32, seed=0)
    elif case == "recurrent":
        algo = RecurrentAlgorithm(DiscreteDummyEnv, num_envs=64, horizon=32, seed=0)
    elif case == "isaac-cartpole":
        return _isaac_cartpole()
    elif case == "halfcheetah":
        from rlstack.integrations.gymnasium_adapter import gymnasium_env

        preset = dict(PRESETS["continuous"])
        preset.pop("compile", None)  # the default, as `rlstack train` runs it
        algo = Algorithm(gymnasium_env("HalfCheetah-v5"), seed=0, **preset)
    else:
        raise SystemExit(f"startup_run: unknown case {case!r}")
    config = getattr(algo, "config", None) or algo.hparams
    return algo, config.num_envs * config.horizon, lambda: None


def _isaac_cartpole():
    """Isaac Lab's Cartpole PPO through rsl_rl's VecEnv (benchmarks/rsl_rl.py's recipe)."""
    from benchmarks.rsl_rl import rlstack_kwargs, rsl_rl_config
    from benchmarks.rsl_rl_env import PendulumVecEnv
    from rlstack import Algorithm
    from rlstack.integrations.rsl_rl_adapter import RslRlEnv

    config = rsl_rl_config("cartpole", 4096)
    vec_env = PendulumVecEnv(config["num_envs"], seed=0)
    algo = Algorithm(RslRlEnv(vec_env), seed=0, **rlstack_kwargs(config))

    def returns() -> float | None:
        last = vec_env.finished_returns[-100:]
        return sum(last) / len(last) if last else None

    return algo, config["num_envs"] * config["steps"], returns


def switches(algo) -> tuple[dict, bool]:
    """``({piece: [update, how]}, every piece switched)``; ``({}, False)`` for a
    run (or revision) without the background strategy.
    """
    functions = getattr(algo, "functions", None)
    strategy = getattr(functions, "strategy", None)
    if strategy is None or not strategy.jobs:
        return {}, False
    record = {
        name: [strategy.switched.get(name), job.how or None] for name, job in strategy.jobs.items()
    }
    return record, all(name in strategy.switched for name in strategy.jobs)


def main(case: str, seconds: float) -> dict:
    algo, transitions, returns = build(case)
    built = time.perf_counter()
    iterations, sampled, compiled_s, done = [], [], None, 0
    while True:
        algo.collect()
        algo.step()
        now = time.perf_counter() - IMPORTED
        done += transitions
        iterations.append([now, done])
        sampled.append(returns())
        record, all_switched = switches(algo)
        if all_switched and compiled_s is None:
            compiled_s = now
        if now >= seconds:
            break
    try:
        from rlstack.shell.compile_worker import children
    except ImportError:  # a revision before the background strategy
        pids = []
    else:
        pids = sorted(children())
    return {
        "import_s": IMPORTED - START,
        "build_s": built - IMPORTED,
        "iterations": iterations,
        "returns": sampled,
        "compiled_s": compiled_s,
        "switches": record,
        "compiler_pids": pids,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], float(sys.argv[2]))), flush=True)
