"""Tuned keyword arguments per built-in env: ``Trainer(env, **PRESETS[name])``.

Each preset was found by measurement (see benchmarks/README.md): it reaches
the env's near-optimal return within the listed budget on a 2-core CPU.
"""

from __future__ import annotations

from typing import Any

_DUMMY = {
    "num_envs": 512,
    "horizon": 32,
    "sgd_minibatch_size": 4096,
    "num_sgd_iters": 4,
    "model_config": {"hiddens": (64, 64)},
    "optimizer_config": {"lr": 1e-3},
}

#: env name -> Trainer/Algorithm keyword arguments.
PRESETS: dict[str, dict[str, Any]] = {
    # Near-optimal (within 2% of the move-to-origin oracle) in ~10 steps.
    "DiscreteDummyEnv": dict(_DUMMY),
    "ContinuousDummyEnv": dict(_DUMMY),
}
