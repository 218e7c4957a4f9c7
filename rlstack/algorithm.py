"""``Algorithm``: the one place where training state changes between calls.

It holds params, optimizer state, env carry, counters and the random key,
and changes them in :meth:`Algorithm.collect` (one rollout) and
:meth:`Algorithm.step` (one update). Evaluation and ``predict`` live in
:mod:`rlstack.evaluation`, checkpoints in :mod:`rlstack.serialization`,
device and precision settings in :mod:`rlstack.device`.
"""

from __future__ import annotations

import math
import time
from types import SimpleNamespace
from typing import Any, Iterator, Mapping

import optree
import torch

from . import checkpoint as ckpt
from . import distributed, random, serialization
from .config import AlgorithmConfig, check_build_arguments
from .cuda_graphs import CudaGraphed
from .device import default_compile, matmul_precision, memory_stats, resolve_device
from .distributions import Distribution, default_distribution_cls
from .envs import check_env, env_defaults, make_env
from .evaluation import Evaluating, sync
from .models import MLPModel
from .normalization import init_norm_state, reset_returns
from .torch_optimizers import torch_optimizer_options
from .policy import build_policy, check_model_config
from .ppo import config_hparams, make_optimizer, make_update
from .rollout import check_window, make_rollout, reset_carry, trajectory_stats
from .serialization import Checkpointing
from .schedules import schedule_value
from .spaces import Box
from .transforms import Staged, compiled, over_members
from .types import RolloutCarry, Trajectory


#: How the error for non-finite stats begins (a population matches it to tell failed members).
NON_FINITE = "Non-finite"


def _drop_empty_episode_means(stats: dict[str, float]) -> None:
    """Remove the episode means of a rollout in which no episode ended
    (``episodes/count`` 0): there is nothing to average."""
    if stats.get("episodes/count") == 0:
        for key in ("episodes/return/mean", "episodes/length/mean", "episodes/terminated"):
            stats.pop(key)


def _check_finite(stats: Mapping[str, float], where: str) -> None:
    bad = {k: v for k, v in stats.items() if not math.isfinite(v)}
    if bad:
        raise FloatingPointError(f"{NON_FINITE} {', '.join(f'{k}={v}' for k, v in bad.items())} {where}.")


class Algorithm(Evaluating, Checkpointing):
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
            ``torch.compile`` (``False``: run eagerly; ``None``, the
            default: compiled on CUDA, eager on CPU, see
            :func:`rlstack.device.default_compile`).
        cuda_graphs: on a CUDA device, capture the whole rollout and the
            whole update each as one CUDA graph and replay them (see
            :mod:`rlstack.cuda_graphs`); needs a pure (compilable) env.
        allow_tf32: on a CUDA device, let float32 matmuls use TF32 tensor
            cores (``torch.set_float32_matmul_precision("high")``) inside
            ``collect``, ``step`` and ``evaluate``; the global setting is
            restored after each call. No effect on CPU.
        **hparams: PPO hyperparameters, see
            :class:`rlstack.config.AlgorithmConfig` (kept as ``config``);
            where unset, the defaults that fit ``env``
            (:func:`rlstack.envs.env_defaults`: a vector env's ``num_envs``,
            no scheduled resets for an episodic env) come before 1.x's.

    Counters: ``collects`` (rollouts collected; rlstack 1.x's name
    ``horizons`` stays as an alias), ``steps`` (updates) and ``env_steps``
    (env transitions collected).

    Under ``torch.distributed`` (see :mod:`rlstack.distributed`) each rank
    builds an Algorithm with the same arguments (checked at construction):
    ``num_envs`` and the counters are per rank, params are rank 0's and
    stay identical, each rank's key is the run's folded with its rank, and
    the stats returned are combined over ranks.

    Examples:
        >>> from rlstack.env import DiscreteDummyEnv
        >>> algo = Algorithm(DiscreteDummyEnv, num_envs=64, horizon=8, compile=False,
        ...                  model_config={"hiddens": (16,)})
        >>> "returns/mean" in algo.collect() and "losses/total" in algo.step()
        True
    """

    #: Whether state has a leading member axis (:class:`rlstack.population.Population`).
    _population = False
    #: Whether the policy is recurrent (:class:`RecurrentAlgorithm`).
    _recurrent = False
    _config_cls: type[AlgorithmConfig] = AlgorithmConfig
    _default_model_cls: type = MLPModel

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
        compile: bool | None = None,
        cuda_graphs: bool = False,
        allow_tf32: bool = False,
        **hparams: Any,
    ) -> None:
        # Validate everything before building anything.
        self.config = self._config_cls.from_mapping({**env_defaults(env), **hparams})
        self.lr, _ = torch_optimizer_options(optimizer_cls, optimizer_config)
        self.device = distributed.local_device(resolve_device(device))
        check_build_arguments(env_config=env_config, model_config=model_config, seed=seed, compile=compile,
                              cuda_graphs=cuda_graphs, allow_tf32=allow_tf32, device=self.device)
        check_model_config(model_cls or self._default_model_cls, model_config or {})
        if seed is None:  # drawn once, so torch.manual_seed before construction reproduces the run
            seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
        compile = default_compile(self.device) if compile is None else compile
        self.seed, self.compile = seed, compile
        # The key of every random draw; streams: 0 training, 1 evaluation, 2 predict.
        self.root_key = random.key(seed, self.device)
        self.key = random.fold_in(self.root_key, 0)
        self._predict_calls = 0
        self.cuda_graphs, self.allow_tf32 = cuda_graphs, allow_tf32
        self.env_config = dict(env_config or {})
        #: How the run was built, besides ``config``: logged as MLflow params.
        self.build_config = {
            "env": getattr(env, "__name__", type(env).__name__),
            "env_config": self.env_config,
            "model_cls": getattr(model_cls or self._default_model_cls, "__name__", str(model_cls)),
            "model_config": dict(model_config or {}),
            "optimizer_cls": optimizer_cls.__name__,
            "optimizer_config": dict(optimizer_config or {}),
            "device": str(self.device),
            "seed": seed,
            "compile": compile,
            "cuda_graphs": cuda_graphs,
            "allow_tf32": allow_tf32,
        }

        # Env, then policy (model and distribution) and optimizer.
        config = self.config
        self._env_spec = env
        self.env = make_env(env, num_envs=config.num_envs, horizon=config.horizon, config=self.env_config, device=self.device)
        if cuda_graphs and not self.env.compilable:
            raise ValueError(
                f"`cuda_graphs=True` needs a pure env (rlstack.envs.Env); {self.build_config['env']} is a stateful "
                "env whose state lives outside the graph."
            )
        check_env(self.env, num_envs=config.num_envs, config=self.env_config, device=self.device)
        if config.normalize_obs and not isinstance(self.env.observation_space, Box):
            raise ValueError(
                f"`normalize_obs=True` needs a Box observation space, got {self.env.observation_space!r}; "
                "normalise composite observations in your model instead."
            )
        self._initial_norm = init_norm_state(
            tuple(getattr(self.env.observation_space, "shape", ())), config.num_envs,
            normalize_obs=config.normalize_obs, normalize_rewards=config.normalize_rewards, device=self.device,
        )
        model_cls = model_cls or self._default_model_cls
        distribution_cls = distribution_cls or default_distribution_cls(self.env.action_space)
        self.policy, self.params = build_policy(
            self.env.observation_space, self.env.action_space, model_cls, dict(model_config or {}), distribution_cls,
            seed=seed, device=self.device, recurrent=self._recurrent,
        )
        check_window(self.policy, config.horizon)
        self.build_config["distribution_cls"] = getattr(distribution_cls, "__name__", str(distribution_cls))
        self._classes = {
            "env": serialization.env_class_name(env),
            "model_cls": ckpt.qualified_name(type(self.policy.model)),
            "distribution_cls": ckpt.qualified_name(distribution_cls),
        }
        optimizer = self._optimizer = make_optimizer(config, optimizer_cls, optimizer_config)
        self.opt_state = optimizer.init(self.params)
        # gamma, gae_lambda, clip_param, entropy_coeff as 0-d tensors: data, as a population's members have them.
        self._hparams = config_hparams(config, self.device)

        # Data-parallel (rlstack.distributed): same config everywhere, rank 0's params, a key per rank.
        self.world_size, self.rank = distributed.world_size(), distributed.rank()
        reduce_grads = None
        if self.world_size > 1:
            if self._population:
                raise ValueError("A population trains in one process: `num_members` with torch.distributed "
                                 f"({self.world_size} ranks) is not supported; launch one process per population.")
            distributed.check_same_config({**config.to_dict(), **{k: v for k, v in self.build_config.items()
                                                                   if k != "device"}})
            self.params = distributed.broadcast_tree(self.params)
            self.opt_state = optimizer.init(self.params)
            self.key = random.fold_in(self.key, self.rank)
            reduce_grads = distributed.all_reduce_mean

        # Pure functions, transformed from outside (compiled lazily by torch on first call).
        self._rollouts: dict[tuple[bool, bool], Any] = {}
        self._update = self._transformed(make_update(self.policy, optimizer, config, reduce_grads=reduce_grads))
        if cuda_graphs:
            self._update = CudaGraphed(self._update)
        self._eval_env = self.env if self.env.compilable else None
        self.carry: RolloutCarry | None = None
        self.trajectory: Trajectory | None = None
        self.collects = 0
        self.steps = 0
        self.env_steps = 0

    @property
    def hparams(self) -> AlgorithmConfig:
        """rlstack 1.x's name for :attr:`config`."""
        return self.config

    @property
    def horizons(self) -> int:
        """rlstack 1.x's name for :attr:`collects` (rollouts collected)."""
        return self.collects

    @horizons.setter
    def horizons(self, value: int) -> None:
        self.collects = value

    @property
    def state(self) -> SimpleNamespace:
        """rlstack 1.x's counters (a read-only view): ``horizons`` (rollouts
        collected) and ``buffered`` (a rollout is waiting for :meth:`step`)."""
        return SimpleNamespace(horizons=self.collects, buffered=self.trajectory is not None)

    # ----------------------------------------------------------------- collect
    def _rollout_fn(self, deterministic: bool, training: bool = True, env: Any = None):
        """The rollout for the training env (cached) or another env; with
        ``training=False`` normalisation statistics stay frozen."""
        config, cache_key = self.config, (deterministic, training)
        if env is None and cache_key in self._rollouts:
            return self._rollouts[cache_key]
        rollout = self._transformed(make_rollout(
            env or self.env, self.policy, config.horizon, deterministic=deterministic,
            normalize_obs=config.normalize_obs, normalize_rewards=config.normalize_rewards, gamma=config.gamma,
            update_normalization=training,
            **({"seq_len": config.seq_len, "seqs_per_state_reset": config.seqs_per_state_reset} if self._recurrent else {}),
        ))
        if env is None:
            if self.cuda_graphs:
                rollout = CudaGraphed(rollout)
            self._rollouts[cache_key] = rollout
        return rollout

    def _transformed(self, staged: Staged) -> Staged:
        """A member-level rollout or update as this Algorithm runs it:
        mapped over the members of a population, then compiled when asked
        (:mod:`rlstack.transforms`)."""
        if self._population:
            staged = over_members(staged)
        return compiled(staged) if self.compile else staged

    def _matmul_precision(self) -> Iterator[None]:
        """See :func:`rlstack.device.matmul_precision`."""
        return matmul_precision(self.device, self.allow_tf32)

    def _fresh_carry(self, env: Any, env_config: Mapping[str, Any] | None, key: torch.Tensor) -> RolloutCarry:
        """Reset every env from ``key`` (each begins an episode, with the
        policy's first memory); normalisation statistics carry over
        (returns zeroed)."""
        norm = reset_returns(self.carry.norm) if self.carry is not None else self._initial_norm
        step = self.carry.step if self.carry is not None else None  # the run's step count runs on
        return reset_carry(env, key, self.config.num_envs, config=env_config or self.env_config, norm=norm,
                           policy=self.policy, step=step)

    def _needs_reset(self) -> bool:
        every = self.config.horizons_per_env_reset
        return self.carry is None or (every > 0 and self.collects % every == 0)

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
            carry, traj = self._rollout_fn(deterministic)(self.params, self.carry, self._hparams)
        stats = distributed.reduce_stats(sync(trajectory_stats(traj)))  # every rank sees every rank's numbers
        _check_finite(stats, f"in the rewards of collect {self.collects + 1}")
        _drop_empty_episode_means(stats)
        self.carry, self.trajectory = carry, traj
        self.collects += 1
        transitions = self.config.num_envs * self.config.horizon
        self.env_steps += transitions
        stats["env/steps"] = transitions
        stats["env/resets"] = self.config.num_envs if reset else 0
        stats["profiling/collect_ms"] = 1000.0 * (time.perf_counter() - start)
        return stats

    # -------------------------------------------------------------------- step
    def coefficients(self) -> dict[str, float]:
        """Learning rate and entropy coefficient of the next update, from their
        schedules at the env transitions collected so far. The update
        evaluates the same schedules on device (:mod:`rlstack.schedules`);
        these host values are what is logged."""
        config = self.config
        lr = self.lr
        if config.lr_schedule is not None:
            lr = schedule_value(config.lr_schedule, config.lr_schedule_kind, self.env_steps)
        entropy = config.entropy_coeff
        if config.entropy_coeff_schedule is not None:
            entropy = schedule_value(config.entropy_coeff_schedule, config.entropy_coeff_schedule_kind, self.env_steps)
        return {"coefficients/lr": lr, "coefficients/entropy": entropy, "coefficients/vf": config.vf_coeff}

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
        self.key, update_key = random.split(self.key)
        with self._matmul_precision():
            params, opt_state, metrics = self._update(
                self.params, self.opt_state, self.trajectory, update_key, self._hparams
            )
        stats = sync(metrics)  # reduced across ranks with the gradients already
        _check_finite(
            stats,
            f"at step {self.steps + 1} (after {self.env_steps} env transitions); the update was discarded "
            f"and params kept from step {self.steps}",
        )
        self.params, self.opt_state, self.trajectory = params, opt_state, None
        self.steps += 1
        stats.update(self.coefficients())
        stats["profiling/step_ms"] = 1000.0 * (time.perf_counter() - start)
        return stats

    def state_is_finite(self) -> bool:
        """Whether every floating-point tensor of ``params`` and the optimizer
        state is finite (one host sync; the shell asks before checkpointing a
        failed run)."""
        leaves = optree.tree_leaves((self.params, self.opt_state))
        return all(bool(torch.isfinite(x).all()) for x in leaves if isinstance(x, torch.Tensor) and x.is_floating_point())

    @property
    def obs_moments(self) -> Any:
        """The running observation statistics ``predict`` standardises with
        (a :class:`~rlstack.normalization.RunningMoments`), or ``()`` when
        ``normalize_obs`` is off."""
        return (self.carry.norm if self.carry is not None else self._initial_norm).obs

    def memory_stats(self) -> dict[str, float]:
        """See :func:`rlstack.device.memory_stats`."""
        return memory_stats(self.device)
