"""Tuned keyword arguments per built-in env: ``Trainer(env, **PRESETS[name])``.

Each preset was found by measurement and reaches the target named beside
it; how long that takes, and on which machine, is recorded in
benchmarks/README.md (``benchmarks/classic_control.py`` measures it again).
"""

from __future__ import annotations

import copy
from typing import Any

from ..core.schedules import linear_anneal
from ..core.spaces import Box

_DUMMY = {
    "num_envs": 512,
    "horizon": 32,
    "sgd_minibatch_size": 4096,
    "num_sgd_iters": 4,
    "model_config": {"hiddens": (64, 64)},
    "optimizer_config": {"lr": 1e-3},
}

_CARTPOLE = {
    "num_envs": 512,
    "horizon": 64,
    "horizons_per_env_reset": 1,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "sgd_minibatch_size": 4096,
    "num_sgd_iters": 8,
    "model_config": {"hiddens": (64, 64)},
    "optimizer_config": {"lr": 2e-3},
}
_PENDULUM = {
    "num_envs": 1024,
    "horizon": 32,
    "horizons_per_env_reset": 4,
    "gamma": 0.95,
    "gae_lambda": 0.95,
    "sgd_minibatch_size": 4096,
    "num_sgd_iters": 8,
    "normalize_obs": True,
    "normalize_rewards": True,
    "model_config": {"hiddens": (64, 64)},
    "optimizer_config": {"lr": 1e-3},
}
_MOUNTAIN_CAR = {
    "num_envs": 128,
    "horizon": 32,
    "horizons_per_env_reset": 8,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "sgd_minibatch_size": 1024,
    "num_sgd_iters": 4,
    "entropy_coeff": 0.01,
    "normalize_obs": True,
    "normalize_rewards": True,
    "model_config": {"hiddens": (64, 64)},
    "optimizer_config": {"lr": 1e-3},
}
_EPISODIC_CARTPOLE = {**_CARTPOLE, "horizons_per_env_reset": -1}
# Pendulum-v1 keeps the infinite-horizon preset's resets of every env every 4 horizons (128
# steps, before the 200-step time limit): with no scheduled resets every env's episode runs in
# lockstep with the others, a rollout sees one phase of the swing-up alone, and the policy forgot
# one phase while learning the next (seeds 2 and 3 never passed -200 in 1.3M env steps).
_EPISODIC_PENDULUM = {**_PENDULUM, "horizons_per_env_reset": 4}
_EPISODIC_MOUNTAIN_CAR = {
    **_MOUNTAIN_CAR,
    "horizons_per_env_reset": -1,
    "env_config": {"reward": "speed"},
}

# Continuous control on gymnasium's simulators (MuJoCo), CleanRL's ppo_continuous_action settings:
# 2048 transitions per update (8 envs x 256 steps), 10 epochs of 64-transition minibatches,
# advantages standardised per minibatch, value clipped relative to the old value at 0.2, tanh 64x64
# with CleanRL's orthogonal init and a state-independent log-std from 0, observations and rewards
# normalised (clipped at 10), Adam (eps 1e-5) at 3e-4 annealed linearly to 0 over CleanRL's
# 1M env steps (488 updates; rlstack train stops there unless --max-steps is given).
CONTINUOUS_ENV_STEPS = 1_000_000
_CONTINUOUS = {
    "num_envs": 8,
    "horizon": 256,
    "horizons_per_env_reset": -1,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "clip_param": 0.2,
    "vf_clip_param": 0.2,
    "vf_clip_kind": "relative",
    "vf_coeff": 0.5,
    "entropy_coeff": 0.0,
    "max_grad_norm": 0.5,
    "sgd_minibatch_size": 64,
    "num_sgd_iters": 10,
    "normalize_advantages": True,
    "normalize_advantages_per_minibatch": True,
    "normalize_obs": True,
    "normalize_rewards": True,
    "lr_schedule": linear_anneal(
        3e-4, updates=CONTINUOUS_ENV_STEPS // 2048, transitions_per_update=2048
    ),
    "lr_schedule_kind": "interp",
    "model_config": {
        "hiddens": (64, 64),
        "activation_fn": "tanh",
        "log_std_init": 0.0,
        "init": "orthogonal",
    },
    "optimizer_config": {"lr": 3e-4, "eps": 1e-5},
    # No compile setting: 320 minibatches of 64 per update and one policy step per env step are
    # small calls, several times faster compiled, and the default mode switches to their compiled
    # forms as soon as they are ready, without waiting for them (benchmarks/README.md).
}

#: env name -> Trainer/Algorithm keyword arguments.
PRESETS: dict[str, dict[str, Any]] = {
    # Target: within 2% of the move-to-origin oracle's return.
    "DiscreteDummyEnv": dict(_DUMMY),
    "ContinuousDummyEnv": dict(_DUMMY),
    # Target: >= 95% of envs balanced for 500 steps; gymnasium's CartPole-v1 return >= 475.
    # Episodes of 64 steps keep the data near upright; no obs normalisation
    # (a fallen pole spins, and its unbounded angle would swamp the statistics).
    "CartPole": copy.deepcopy(_CARTPOLE),
    # Target: mean reward per step >= -1.0 (gymnasium's Pendulum-v1 return >= -200).
    "Pendulum": copy.deepcopy(_PENDULUM),
    # Target: gymnasium's MountainCar-v0 return >= -120 (deterministic policy). Entropy bonus and
    # normalised rewards keep the swinging behaviour exploring; 128 envs give many small updates.
    "MountainCar": copy.deepcopy(_MOUNTAIN_CAR),
    # Gymnasium's episodic tasks, built in (rlstack.envs.episodic): the infinite-horizon envs'
    # presets, with no scheduled resets (each env restarts where its episode ends).
    # Target: gymnasium's CartPole-v1 return >= 475 (deterministic policy).
    "CartPole-v1": copy.deepcopy(_EPISODIC_CARTPOLE),
    # Target: gymnasium's Pendulum-v1 return >= -200 (deterministic policy).
    "Pendulum-v1": copy.deepcopy(_EPISODIC_PENDULUM),
    # Target: gymnasium's MountainCar-v0 return >= -120 (deterministic policy), measured with its -1
    # reward. Trained on MountainCarV0's reward="speed" (the speed reward and a goal bonus): from -1
    # per step a policy that never reaches the goal has nothing to learn.
    "MountainCar-v0": copy.deepcopy(_EPISODIC_MOUNTAIN_CAR),
    # Gymnasium's own CartPole-v1 through rlstack.integrations.gymnasium_adapter (episodic, eager, 8
    # sub-envs): rl-baselines3-zoo's PPO settings. Target: mean episode return >= 400.
    "gymnasium:CartPole-v1": {
        "num_envs": 8,
        "horizon": 32,
        "horizons_per_env_reset": -1,
        "gamma": 0.98,
        "gae_lambda": 0.8,
        "sgd_minibatch_size": 256,
        "num_sgd_iters": 20,
        "vf_clip_param": None,
        "vf_coeff": 0.5,
        "max_grad_norm": 0.5,
        "compile": False,
        "model_config": {"hiddens": (64, 64)},
        "optimizer_config": {"lr": 1e-3},
    },
    # Not an env: the preset `rlstack train` applies to gymnasium envs with Box actions
    # (preset_for). Target: CleanRL's mean return at 1M env steps on HalfCheetah-v5, Hopper-v5 and
    # Walker2d-v5.
    "continuous": copy.deepcopy(_CONTINUOUS),
}


def preset_for(name: str, env: Any) -> str | None:
    """The preset ``rlstack train --env NAME`` applies: the env's own, else
    ``"continuous"`` for a gymnasium env (``gymnasium:ID``, or EnvPool's
    ``envpool:ID``) with a ``Box`` action space, else None (rlstack 1.x's defaults, fitted to the
    env). ``env`` is what NAME loads; reading a gymnasium env's action space
    builds one copy of it.
    """
    if name in PRESETS:
        return name
    if name.startswith(("gymnasium:", "envpool:")) and isinstance(
        getattr(env, "action_space", None), Box
    ):
        return "continuous"
    return None


# Partially observed CartPole (velocities hidden: position and angle only), for benchmarks/pomdp.py.
# Target: >= 95% of envs balanced for 500 steps (CartPole's success measure) with velocities hidden.
# The plain MLP cannot reach it. A window of the last 2 observations (a velocity is a difference)
# reaches it on gymnasium's episodic CartPole-v1, whose episodes end when the pole falls; a GRU of
# 64 (RecurrentAlgorithm: the preset has seq_len) on the infinite-horizon CartPole, with
# target_kl keeping it there (without, it fell back after reaching the target: once every env
# balances, the returns are all equal and the standardised advantages are noise).
_HIDDEN = {
    "env_config": {"hide_velocities": True},
    "num_envs": 512,
    "horizon": 64,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "sgd_minibatch_size": 4096,
    "num_sgd_iters": 8,
}

#: name -> Algorithm (RecurrentAlgorithm where ``seq_len`` is set) keyword arguments, for the env
#: :data:`POMDP_ENVS` names.
POMDP_PRESETS: dict[str, dict[str, Any]] = {
    "mlp": {
        **_HIDDEN,
        "horizons_per_env_reset": -1,
        "model_config": {"hiddens": (64, 64)},
        "optimizer_config": {"lr": 1e-3},
    },
    "window": {
        **_HIDDEN,
        "horizons_per_env_reset": -1,
        "model_config": {"hiddens": (64, 64), "obs_window": 2},
        "optimizer_config": {"lr": 1e-3},
    },
    "recurrent": {
        **_HIDDEN,
        "horizons_per_env_reset": 1,
        "seq_len": 16,
        "seqs_per_state_reset": -1,
        "target_kl": 0.02,
        "model_config": {"hidden_size": 64, "cell": "gru"},
        "optimizer_config": {"lr": 2e-3},
    },
}
#: name -> the built-in env each POMDP preset trains on (the success check is CartPole's either
# way).
POMDP_ENVS: dict[str, str] = {
    "mlp": "CartPole-v1",
    "window": "CartPole-v1",
    "recurrent": "CartPole",
}
