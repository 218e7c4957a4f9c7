"""``Algorithm``: the one place where training state changes between calls."""

from __future__ import annotations

import contextlib
import math
import os
import resource
import time
from typing import Any, Iterator, Mapping

import torch

from . import checkpoint as ckpt
from . import random
from .config import AlgorithmConfig
from .cuda_graphs import CudaGraphed
from .distributions import Distribution, default_distribution_cls
from .env import check_env, make_env
from .models import MLPModel
from .normalization import init_norm_state, reset_returns
from .optim import TORCH_OPTIMIZERS_BY_NAME, from_torch
from .policy import Policy, make_skeleton
from .ppo import make_update
from .rollout import env_rewards, make_rollout, trajectory_stats
from .schedules import schedule_value
from .spaces import Box, as_batch, is_numpy, to_numpy
from .types import RolloutCarry, Trajectory, UpdateCoeffs


def _sync(stats: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Bring a dict of 0-d tensors to the host with a single device sync."""
    if not stats:
        return {}
    values = torch.stack([v.detach().float().reshape(()) for v in stats.values()]).tolist()
    return dict(zip(stats.keys(), values))


def _check_finite(stats: Mapping[str, float], where: str) -> None:
    bad = {k: v for k, v in stats.items() if not math.isfinite(v)}
    if bad:
        raise FloatingPointError(f"Non-finite {', '.join(f'{k}={v}' for k, v in bad.items())} {where}.")


def memory_stats(device: torch.device) -> dict[str, float]:
    """Host memory (``memory/free``, ``memory/total`` in bytes,
    ``memory/percent`` used, ``memory/max_rss_mb`` of this process) and, on
    CUDA, the device's (``memory/cuda_*``)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = os.sysconf("SC_PHYS_PAGES") * page
    free = os.sysconf("SC_AVPHYS_PAGES") * page
    stats = {
        "memory/free": float(free),
        "memory/total": float(total),
        "memory/percent": 100.0 * (total - free) / total,
        "memory/max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    if device.type == "cuda":
        cuda_free, cuda_total = torch.cuda.mem_get_info(device)
        stats["memory/cuda_free"] = float(cuda_free)
        stats["memory/cuda_total"] = float(cuda_total)
        stats["memory/cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return stats


def _resolve_device(device: Any) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"`device` must be a torch device such as 'cpu' or 'cuda', got {device!r}.") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device` is {str(device)!r} but CUDA is not available on this machine; use 'cpu'.")
    return device


def _env_class_name(env: Any) -> str:
    """How a checkpoint names the env: ``gymnasium:ID`` for a gymnasium id,
    else the ``module:Class`` of the env (class)."""
    name = getattr(env, "__name__", "")
    if not isinstance(env, type) and name.startswith("gymnasium:"):
        return name
    return ckpt.qualified_name(env if isinstance(env, type) else type(env))


def _check_spaces(data: Mapping[str, Any], env: Any, device: torch.device) -> None:
    """Refuse, before building anything, an env whose spaces differ from the
    checkpoint's (e.g. a CartPole checkpoint resumed with ``env=Pendulum``)."""
    hparams = data["hparams"]
    built = make_env(env, num_envs=hparams["num_envs"], horizon=hparams["horizon"],
                     config=data["settings"]["env_config"], device=device)
    name = getattr(env, "__name__", type(env).__name__)
    for key, space in (("observation", built.observation_space), ("action", built.action_space)):
        if data["spaces"][key] != repr(space):
            raise ckpt.CheckpointError(
                f"The checkpoint's {key} space is {data['spaces'][key]}, env {name}'s is {space!r}: "
                "pass the env it was trained on."
            )


class Algorithm:
    """PPO on a batched env: owns params, optimizer state and env carry.

    ``collect()`` runs one compiled rollout and ``step()`` one compiled
    update; everything between is bookkeeping. Hyperparameters are validated
    before any env or model is built.

    Args:
        env: a pure env (class or instance, e.g. ``DiscreteDummyEnv``) or an
            rlstack 1.x style stateful env class.
        env_config: config dict passed to the env's reset.
        model_cls: ``model_cls(observation_space, action_space,
            **model_config)`` -> ``nn.Module``; default :class:`MLPModel`.
        model_config: keyword arguments for ``model_cls``.
        distribution_cls: action distribution; default ``Categorical`` for
            discrete and ``Normal`` for continuous actions.
        optimizer_cls: ``torch.optim.Adam`` (default), ``AdamW`` or ``SGD``,
            mapped onto :mod:`rlstack.optim`.
        optimizer_config: its keyword arguments (``lr`` defaults to 1e-3).
        device: where env, params and buffers live.
        seed: the run's random seed: model initialisation, env resets,
            actions and minibatch order all derive from it (through
            :mod:`rlstack.random` keys; torch's global generator is never
            used or changed). ``None``: drawn once from torch's global
            generator, so ``torch.manual_seed(s)`` before construction
            reproduces a run.
        compile: compile the rollout and update bodies with
            ``torch.compile`` (``False``: run eagerly).
        cuda_graphs: on a CUDA device, capture the whole rollout and the
            whole update each as one CUDA graph and replay them (see
            :mod:`rlstack.cuda_graphs`); needs a pure (compilable) env.
        allow_tf32: on a CUDA device, let float32 matmuls use TF32 tensor
            cores (``torch.set_float32_matmul_precision("high")``) inside
            ``collect``, ``step`` and ``evaluate``; the global setting is
            restored after each call. No effect on CPU.
        **hparams: PPO hyperparameters, see
            :class:`rlstack.config.AlgorithmConfig`.

    Examples:
        >>> from rlstack.env import DiscreteDummyEnv
        >>> algo = Algorithm(DiscreteDummyEnv, num_envs=64, horizon=8, compile=False,
        ...                  model_config={"hiddens": (16,)})
        >>> "returns/mean" in algo.collect() and "losses/total" in algo.step()
        True
    """

    def __init__(
        self,
        env: Any,
        /,
        *,
        env_config: Mapping[str, Any] | None = None,
        model_cls: type | None = None,
        model_config: Mapping[str, Any] | None = None,
        distribution_cls: type[Distribution] | None = None,
        optimizer_cls: type = torch.optim.Adam,
        optimizer_config: Mapping[str, Any] | None = None,
        device: Any = "cpu",
        seed: int | None = None,
        compile: bool = True,
        cuda_graphs: bool = False,
        allow_tf32: bool = False,
        **hparams: Any,
    ) -> None:
        # Validate everything before building anything.
        self.hparams = AlgorithmConfig.from_mapping(hparams)
        optimizer, self.lr = from_torch(optimizer_cls, optimizer_config)
        self.device = _resolve_device(device)
        for name, value in (("env_config", env_config), ("model_config", model_config)):
            if value is not None and not isinstance(value, Mapping):
                raise TypeError(f"`{name}` must be a dict or None, got {type(value).__name__}.")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise ValueError(f"`seed` must be a non-negative int or None, got {seed!r}.")
        for name, value in (("compile", compile), ("cuda_graphs", cuda_graphs), ("allow_tf32", allow_tf32)):
            if not isinstance(value, bool):
                raise TypeError(f"`{name}` must be a bool, got {value!r}.")
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError(f"`cuda_graphs=True` needs a CUDA device, got device={str(self.device)!r}.")
        if seed is None:  # drawn once, so torch.manual_seed before construction reproduces the run
            seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
        self.seed, self.compile = seed, compile
        # The key of every random draw; streams: 0 training, 1 evaluation, 2 predict.
        self.root_key = random.key(seed, self.device)
        self.key = random.fold_in(self.root_key, 0)
        self._predict_calls = 0
        self.cuda_graphs, self.allow_tf32 = cuda_graphs, allow_tf32
        self.env_config = dict(env_config or {})
        self.settings = {
            "env": getattr(env, "__name__", type(env).__name__),
            "env_config": self.env_config,
            "model_cls": getattr(model_cls or MLPModel, "__name__", str(model_cls)),
            "model_config": dict(model_config or {}),
            "optimizer_cls": optimizer_cls.__name__,
            "optimizer_config": dict(optimizer_config or {}),
            "device": str(self.device),
            "seed": seed,
            "compile": compile,
            "cuda_graphs": cuda_graphs,
            "allow_tf32": allow_tf32,
        }

        # Env, model, distribution, policy.
        cfg = self.hparams
        self._env_spec = env
        self.env = make_env(env, num_envs=cfg.num_envs, horizon=cfg.horizon, config=self.env_config, device=self.device)
        if cuda_graphs and not self.env.compilable:
            raise ValueError(
                f"`cuda_graphs=True` needs a pure env (rlstack.envs.Env); {self.settings['env']} is an rlstack 1.x "
                "stateful env whose state lives outside the graph."
            )
        check_env(self.env, num_envs=cfg.num_envs, config=self.env_config, device=self.device)
        if cfg.normalize_obs and not isinstance(self.env.observation_space, Box):
            raise ValueError(
                f"`normalize_obs=True` needs a Box observation space, got {self.env.observation_space!r}; "
                "normalise composite observations in your model instead."
            )
        self._initial_norm = init_norm_state(
            tuple(getattr(self.env.observation_space, "shape", ())), cfg.num_envs,
            normalize_obs=cfg.normalize_obs, normalize_rewards=cfg.normalize_rewards, device=self.device,
        )
        # nn.Module initialisers draw from torch's global generator: seed a fork of it.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            model = (model_cls or MLPModel)(self.env.observation_space, self.env.action_space, **dict(model_config or {}))
        distribution_cls = distribution_cls or default_distribution_cls(self.env.action_space)
        self.settings["distribution_cls"] = getattr(distribution_cls, "__name__", str(distribution_cls))
        self._classes = {
            "env": _env_class_name(env),
            "model_cls": ckpt.qualified_name(type(model)),
            "distribution_cls": ckpt.qualified_name(distribution_cls),
        }
        self.policy = Policy(model.to(self.device), distribution_cls)
        self.params = self.policy.init_params()
        make_skeleton(self.policy.model)  # one copy of the weights: self.params
        self.policy.check(self.params, self.env.observation_space, self.env.action_space, self.device)
        self.opt_state = optimizer.init(self.params)

        # Pure functions, compiled lazily by torch on first call.
        self._rollouts: dict[tuple[bool, bool], Any] = {}
        self._update = make_update(self.policy, optimizer, cfg, lr=self.lr, compile=compile)
        if cuda_graphs:
            self._update = CudaGraphed(self._update)
        self._eval_env = self.env if self.env.compilable else None
        self.carry: RolloutCarry | None = None
        self.trajectory: Trajectory | None = None
        self.horizons = 0
        self.steps = 0
        self.env_steps = 0

    # ----------------------------------------------------------------- collect
    def _rollout_fn(self, deterministic: bool, training: bool = True, env: Any = None):
        """The rollout for the training env (cached) or another env; with
        ``training=False`` normalisation statistics stay frozen."""
        cfg, key = self.hparams, (deterministic, training)
        if env is None and key in self._rollouts:
            return self._rollouts[key]
        rollout = make_rollout(
            env or self.env, self.policy, cfg.horizon, deterministic=deterministic, compile=self.compile,
            normalize_obs=cfg.normalize_obs, normalize_rewards=cfg.normalize_rewards, gamma=cfg.gamma,
            update_normalization=training,
        )
        if env is None:
            if self.cuda_graphs:
                rollout = CudaGraphed(rollout)
            self._rollouts[key] = rollout
        return rollout

    @contextlib.contextmanager
    def _matmul_precision(self) -> Iterator[None]:
        """TF32 float32 matmuls on CUDA while inside, when ``allow_tf32``."""
        if not (self.allow_tf32 and self.device.type == "cuda"):
            yield
            return
        previous = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high")
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(previous)

    def _fresh_carry(self, env: Any, env_config: Mapping[str, Any] | None, key: torch.Tensor) -> RolloutCarry:
        """Reset every env from ``key``; normalisation statistics carry over (returns zeroed)."""
        norm = reset_returns(self.carry.norm) if self.carry is not None else self._initial_norm
        reset_key, rollout_key = random.split(key)
        state, obs = env.reset(reset_key, self.hparams.num_envs, config=env_config or self.env_config)
        return RolloutCarry(state, obs, rollout_key, norm)

    def _needs_reset(self) -> bool:
        every = self.hparams.horizons_per_env_reset
        return self.carry is None or (every > 0 and self.horizons % every == 0)

    def collect(self, *, env_config: Mapping[str, Any] | None = None, deterministic: bool = False) -> dict[str, float]:
        """Run one rollout of ``horizon`` steps from the current carry.

        All envs are reset first every ``horizons_per_env_reset`` collects
        (with ``env_config`` if given, else the Algorithm's).

        Returns:
            ``returns/*`` and ``rewards/*`` (min, max, mean, std),
            ``env/steps`` (transitions collected), ``env/resets`` and
            ``profiling/collect_ms``; for an episodic env also
            ``episodes/count`` and, when an episode ended,
            ``episodes/return/mean``, ``episodes/length/mean`` and
            ``episodes/terminated`` (see :func:`rlstack.rollout.episode_stats`);
            synced from the device once.
        """
        start = time.perf_counter()
        reset = self._needs_reset()
        if reset:
            self.key, reset_key = random.split(self.key)
            self.carry = self._fresh_carry(self.env, env_config, reset_key)
        with self._matmul_precision():
            carry, traj = self._rollout_fn(deterministic)(self.params, self.carry)
        stats = _sync(trajectory_stats(traj))
        _check_finite(stats, f"in the rewards of collect {self.horizons + 1}")
        if stats.get("episodes/count") == 0:  # no episode ended: no episode means to report
            for key in ("episodes/return/mean", "episodes/length/mean", "episodes/terminated"):
                stats.pop(key)
        self.carry, self.trajectory = carry, traj
        self.horizons += 1
        self.env_steps += self.hparams.num_envs * self.hparams.horizon
        stats["env/steps"] = self.hparams.num_envs * self.hparams.horizon
        stats["env/resets"] = self.hparams.num_envs if reset else 0
        stats["profiling/collect_ms"] = 1000.0 * (time.perf_counter() - start)
        return stats

    # -------------------------------------------------------------------- step
    def coefficients(self) -> dict[str, float]:
        """Learning rate and entropy coefficient for the next update, from
        their schedules at the env transitions collected so far."""
        cfg = self.hparams
        lr = self.lr if cfg.lr_schedule is None else schedule_value(cfg.lr_schedule, cfg.lr_schedule_kind, self.env_steps)
        entropy = (
            cfg.entropy_coeff
            if cfg.entropy_coeff_schedule is None
            else schedule_value(cfg.entropy_coeff_schedule, cfg.entropy_coeff_schedule_kind, self.env_steps)
        )
        return {"coefficients/lr": lr, "coefficients/entropy": entropy, "coefficients/vf": cfg.vf_coeff}

    def step(self) -> dict[str, float]:
        """Update the policy on the last collected trajectory.

        Returns:
            ``losses/*``, ``monitors/*``, ``coefficients/*`` and
            ``profiling/step_ms``; synced from the device once.

        Raises:
            RuntimeError: if nothing was collected since the last step.
            FloatingPointError: if a loss, a monitor or the parameters are
                not finite; the update is discarded, so ``params`` stay those
                of the last good step.
        """
        if self.trajectory is None:
            raise RuntimeError("Algorithm.step() needs a trajectory: call collect() first.")
        start = time.perf_counter()
        coeffs = self.coefficients()
        tensors = UpdateCoeffs(
            lr=torch.tensor(coeffs["coefficients/lr"], dtype=torch.float32, device=self.device),
            entropy_coeff=torch.tensor(coeffs["coefficients/entropy"], dtype=torch.float32, device=self.device),
        )
        self.key, update_key = random.split(self.key)
        with self._matmul_precision():
            params, opt_state, metrics = self._update(self.params, self.opt_state, self.trajectory, update_key, tensors)
        stats = _sync(metrics)
        _check_finite(
            stats,
            f"at step {self.steps + 1} (after {self.env_steps} env transitions); the update was discarded "
            f"and params kept from step {self.steps}",
        )
        self.params, self.opt_state, self.trajectory = params, opt_state, None
        self.steps += 1
        stats.update(coeffs)
        stats["profiling/step_ms"] = 1000.0 * (time.perf_counter() - start)
        return stats

    # -------------------------------------------------------------- evaluation
    def evaluate(
        self, *, env_config: Mapping[str, Any] | None = None, deterministic: bool = True, horizons: int = 1
    ) -> dict[str, float]:
        """Roll the current policy out on freshly reset envs without touching
        the training carry.

        Args:
            env_config: reset config for the evaluation envs (default: the
                Algorithm's).
            deterministic: act with the distribution's mode.
            horizons: consecutive rollouts of ``horizon`` steps to run.

        Returns:
            ``returns/*`` and ``rewards/*`` over all evaluation steps.
        """
        if not isinstance(horizons, int) or horizons < 1:
            raise ValueError(f"`horizons` must be a positive int, got {horizons!r}.")
        if self._eval_env is None:  # a 1.x stateful env: evaluate on a second instance
            self._eval_env = make_env(
                self._env_spec, num_envs=self.hparams.num_envs, horizon=self.hparams.horizon,
                config=self.env_config, device=self.device,
            )
        env = self._eval_env
        rollout = self._rollout_fn(deterministic, training=False, env=None if env is self.env else env)
        # Evaluation's own key, from the seed and the step: training is the same with or without it.
        carry = self._fresh_carry(env, env_config, random.fold_in(random.fold_in(self.root_key, 1), self.steps))
        trajectories = []
        with self._matmul_precision():
            for _ in range(horizons):
                carry, traj = rollout(self.params, carry)
                trajectories.append(traj)
        rewards = torch.cat([env_rewards(t) for t in trajectories])
        return _sync(trajectory_stats(Trajectory(None, None, None, None, rewards)))

    # ------------------------------------------------------------------ acting
    def predict(self, obs: Any, deterministic: bool = True) -> Any:
        """Actions of the current policy for a batch of observations.

        Args:
            obs: ``[B, *obs_shape]`` observations as a tensor, NumPy array
                (or dict of them for composite spaces).
            deterministic: take the distribution's mode (default) or sample.

        Returns:
            ``[B, *action_shape]`` actions inside the env's action space (see
            :func:`rlstack.policy.to_action_space`), a NumPy array if ``obs``
            was one, else a tensor on the Algorithm's device.

        Raises:
            ValueError: if ``obs`` does not fit the observation space.
        """
        obs_t = as_batch(self.env.observation_space, obs, self.device)
        key = None
        if not deterministic:  # its own stream: sampling here leaves training unchanged
            key = random.fold_in(random.fold_in(self.root_key, 2), self._predict_calls)
            self._predict_calls += 1
        action = self.policy.predict(
            self.params, obs_t, self.env.action_space, obs_moments=self.obs_moments, deterministic=deterministic,
            key=key,
        )
        return to_numpy(action) if is_numpy(obs) else action

    @property
    def obs_moments(self) -> Any:
        """The running observation statistics ``predict`` standardises with
        (a :class:`~rlstack.normalization.RunningMoments`), or ``()`` when
        ``normalize_obs`` is off."""
        return (self.carry.norm if self.carry is not None else self._initial_norm).obs

    def memory_stats(self) -> dict[str, float]:
        """See :func:`memory_stats`."""
        return memory_stats(self.device)

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The whole train state as tensors and plain containers (see
        :mod:`rlstack.checkpoint`): params, optimizer state, env carry, an
        uncollected trajectory, counters, the random key and every setting
        needed to rebuild this Algorithm."""
        return {
            "format": ckpt.FORMAT,
            "version": ckpt.VERSION,
            "classes": dict(self._classes),
            "settings": {
                "env_config": self.env_config,
                "model_config": self.settings["model_config"],
                "optimizer_cls": self.settings["optimizer_cls"],
                "optimizer_config": self.settings["optimizer_config"],
                "seed": self.seed,
                "compile": self.compile,
                "cuda_graphs": self.cuda_graphs,
                "allow_tf32": self.allow_tf32,
                "device": str(self.device),
            },
            "hparams": self.hparams.to_dict(),
            "spaces": {"observation": repr(self.env.observation_space), "action": repr(self.env.action_space)},
            "params": {k: v.detach().cpu() for k, v in self.params.items()},
            "opt_state": [t.cpu() for t in ckpt.leaves(self.opt_state)],
            # A 1.x stateful env keeps its state inside itself: it is reset on resume.
            "carry": [t.cpu() for t in ckpt.leaves(self.carry)] if self.carry is not None and self.env.compilable else None,
            "trajectory": [t.cpu() for t in ckpt.leaves(self.trajectory)] if self.trajectory is not None else None,
            "counters": {"horizons": self.horizons, "steps": self.steps, "env_steps": self.env_steps},
            "key": self.key.cpu(),
        }

    def load_state_dict(self, data: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` into this (identically configured) Algorithm.

        Raises:
            CheckpointError: naming what differs (spaces, parameter names or
                shapes, optimizer or env state structure).
        """
        spaces = {"observation": repr(self.env.observation_space), "action": repr(self.env.action_space)}
        for key, here in spaces.items():
            if data["spaces"][key] != here:
                raise ckpt.CheckpointError(f"Checkpoint {key} space is {data['spaces'][key]}, the env's is {here}.")
        stored = data["params"]
        if set(stored) != set(self.params):
            raise ckpt.CheckpointError(
                f"Checkpoint params differ from the model's: only in checkpoint {sorted(set(stored) - set(self.params))}, "
                f"only in model {sorted(set(self.params) - set(stored))}."
            )
        for name, value in stored.items():
            if value.shape != self.params[name].shape:
                raise ckpt.CheckpointError(
                    f"Checkpoint param {name!r} has shape {list(value.shape)}, the model's has {list(self.params[name].shape)}."
                )
        params = {k: v.to(self.device) for k, v in stored.items()}
        opt_state = ckpt.rebuild(self.opt_state, data["opt_state"], "optimizer state", self.device)
        fresh = self._fresh_carry(self.env, None, self.root_key)  # a template: its values are replaced
        carry = None if data["carry"] is None else ckpt.rebuild(fresh, data["carry"], "env carry", self.device)
        trajectory = None
        if data["trajectory"] is not None:
            template = self._rollout_fn(False)(params, carry or fresh)[1]
            trajectory = ckpt.rebuild(template, data["trajectory"], "trajectory", self.device)
        self.params, self.opt_state, self.carry, self.trajectory = params, opt_state, carry, trajectory
        counters = data["counters"]
        self.horizons, self.steps, self.env_steps = counters["horizons"], counters["steps"], counters["env_steps"]
        self.key = ckpt.rebuild(self.key, [data["key"]], "random key", self.device)

    def save_checkpoint(self, path: str | os.PathLike) -> str:
        """Write :meth:`state_dict` to ``path`` atomically; returns the path."""
        return str(ckpt.atomic_save(self.state_dict(), path))

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        env: Any = None,
        *,
        model_cls: type | None = None,
        distribution_cls: type | None = None,
        device: Any = None,
        compile: bool | None = None,
    ) -> "Algorithm":
        """Rebuild an Algorithm from a checkpoint and restore its state.

        Built-in envs, models and distributions are found by name; a user's
        own ``env``, ``model_cls`` or ``distribution_cls`` must be passed
        (a checkpoint never imports code by itself). ``device`` and
        ``compile`` default to the checkpoint's.

        Raises:
            FileNotFoundError, CheckpointError: see
                :func:`rlstack.checkpoint.safe_load` and :meth:`load_state_dict`.
        """
        data = ckpt.safe_load(path)
        return cls._from_state_dict(data, env, model_cls=model_cls, distribution_cls=distribution_cls, device=device, compile=compile)

    @classmethod
    def _from_state_dict(cls, data, env, *, model_cls, distribution_cls, device, compile) -> "Algorithm":
        classes, settings = data["classes"], data["settings"]
        optimizer_cls = TORCH_OPTIMIZERS_BY_NAME[settings["optimizer_cls"]]
        device = _resolve_device(device if device is not None else settings["device"])
        if env is None and classes["env"].startswith("gymnasium:"):
            from .gymnasium_adapter import gymnasium_env

            env = gymnasium_env(classes["env"].partition(":")[2])
        env = env if env is not None else ckpt.resolve(classes["env"], "env")
        _check_spaces(data, env, device)
        algo = cls(
            env,
            env_config=settings["env_config"],
            model_cls=model_cls or ckpt.resolve(classes["model_cls"], "model_cls"),
            model_config=settings["model_config"],
            distribution_cls=distribution_cls or ckpt.resolve(classes["distribution_cls"], "distribution_cls"),
            optimizer_cls=optimizer_cls,
            optimizer_config=settings["optimizer_config"],
            device=device,
            seed=settings["seed"],
            compile=settings["compile"] if compile is None else compile,
            # CUDA graphs only where the checkpoint is resumed on a GPU.
            cuda_graphs=settings.get("cuda_graphs", False) and device.type == "cuda",
            allow_tf32=settings.get("allow_tf32", False),
            **data["hparams"],
        )
        algo.load_state_dict(data)
        return algo
