"""``Algorithm``: the one place where training state changes between calls.

It holds a :class:`~rlstack.learn.train_state.TrainState` (params, optimizer
state, env carry, trajectory, key, hyperparameters) and the counters, and
changes them in :meth:`Algorithm.collect` (one rollout) and
:meth:`Algorithm.step` (one update). With ``num_members=K`` the state is
stacked over ``K`` members and the same code runs the pure functions mapped
over that axis (:mod:`rlstack.shell.population`). Building is
:mod:`rlstack.shell.build`'s; evaluation and ``predict``
(:class:`~rlstack.shell.evaluation.Acting`) and checkpoints
(:class:`~rlstack.shell.serialization.Checkpointing`) use its public attributes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from types import SimpleNamespace
from typing import Any

import optree
import torch

from ..core.config import AlgorithmConfig
from ..core.device import matmul_precision, memory_stats
from ..core.normalization import reset_returns
from ..core.schedules import logged_coefficients
from ..core.types import RolloutCarry
from ..integrations import distributed
from ..learn.rollout import check_window, reset_carry
from ..learn.stats import drop_empty_episode_means, trajectory_stats
from ..learn.train_state import MemberStatus, TrainState, each_member, split_key, to_host
from ..learn.transforms import Staged
from ..policy.distributions import Distribution
from ..policy.models import MLPModel
from .build import RunFunctions, build_env, check_arguments, initial_state, names_of
from .evaluation import Acting
from .members import hparams_by_member
from .serialization import Checkpointing, member_state_dict

#: How the error (and a member's stop reason) for non-finite stats begins.
NON_FINITE = MemberStatus.NON_FINITE


def _state_field(name: str) -> property:
    """``Algorithm.<name>``: the field of its :class:`~rlstack.learn.train_state.TrainState`, read "
    "and replaced.
    """

    def get(algo: Algorithm) -> Any:
        return getattr(algo.train_state, name)

    def replace(algo: Algorithm, value: Any) -> None:
        algo.train_state = algo.train_state._replace(**{name: value})

    return property(
        get,
        replace,
        doc=f"``train_state.{name}`` (see :class:`~rlstack.learn.train_state.TrainState`).",
    )


class Algorithm(Acting, Checkpointing):
    """PPO on a batched env: owns the train state (params, optimizer state,
    env carry) of one run, or of ``num_members`` runs stepped together.

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
            mapped onto :mod:`rlstack.core.optim`.
        optimizer_config: its keyword arguments (``lr`` defaults to 1e-3).
        device: where env, params and buffers live.
        seed: the run's random seed: model initialisation, env resets,
            actions and minibatch order all derive from it (through
            :mod:`rlstack.core.random` keys; torch's global generator is never
            used or changed). ``None``: drawn once from torch's global
            generator, so ``torch.manual_seed(s)`` before construction
            reproduces a run. A population's: see
            :func:`rlstack.shell.members.member_configs`.
        compile: compile the rollout and update bodies with
            ``torch.compile`` (``None``, the default: on CUDA, not on CPU).
        cuda_graphs: on a CUDA device, capture the whole rollout and the
            whole update each as one CUDA graph and replay them (see
            :mod:`rlstack.learn.cuda_graphs`); needs a pure (compilable) env.
        allow_tf32: on a CUDA device, let float32 matmuls use TF32 inside
            ``collect``, ``step`` and ``evaluate`` (restored after each).
        num_members: ``None`` (one run) or ``K``: a population of ``K`` runs
            in one process (:class:`rlstack.shell.population.Population`).
        **hparams: PPO hyperparameters, see
            :class:`rlstack.core.config.AlgorithmConfig` (kept as ``config``);
            where unset, the defaults that fit ``env``
            (:func:`rlstack.envs.env_defaults`: a vector env's ``num_envs``,
            no scheduled resets for an episodic env) come before 1.x's.

    Counters: ``collects`` (rollouts collected; rlstack 1.x's name
    ``horizons`` stays as an alias), ``steps`` (updates) and ``env_steps``
    (env transitions collected).

    Under ``torch.distributed`` (see :mod:`rlstack.integrations.distributed`) each rank
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

    #: Whether this class loads population checkpoints
    # (:class:`~rlstack.shell.population.Population`).
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
        num_members: int | None = None,
        **hparams: Any,
    ) -> None:
        args = check_arguments(  # everything validated before anything is built
            type(self),
            env,
            env_config=env_config,
            model_cls=model_cls,
            model_config=model_config,
            optimizer_cls=optimizer_cls,
            optimizer_config=optimizer_config,
            device=device,
            seed=seed,
            compile=compile,
            cuda_graphs=cuda_graphs,
            allow_tf32=allow_tf32,
            num_members=num_members,
            hparams=hparams,
        )
        self.config, self.member_config, self.member_lrs, self.seeds = (
            args.config,
            args.configs,
            args.lrs,
            args.seeds,
        )
        self.num_members, self.device, self.compile = num_members, args.device, args.compile
        self.cuda_graphs, self.allow_tf32, self.env_config = (
            cuda_graphs,
            allow_tf32,
            args.env_config,
        )
        self.seed = args.seeds[0] if num_members is None else list(args.seeds)
        self.lr = args.lrs[0]
        self.env_spec = env  # as given: what a member or a second env is built from
        self.env = build_env(env, args)
        #: How the run was built, besides ``config``: logged as MLflow params.
        self.build_config = args.build_config(env)
        self.world_size, self.rank = distributed.world_size(), distributed.rank()
        if self.world_size > 1:  # the same config on every rank
            distributed.check_same_config(
                {
                    **self.config.to_dict(),
                    **{k: v for k, v in self.build_config.items() if k != "device"},
                }
            )
        self.policy, state, self.root_key, self._initial_norm = initial_state(
            self.env,
            args,
            model_cls or self._default_model_cls,
            dict(model_config or {}),
            distribution_cls,
            recurrent=self._recurrent,
        )
        check_window(self.policy, self.config.horizon)
        self.build_config["distribution_cls"] = getattr(
            self.policy.distribution_cls, "__name__", ""
        )
        self.classes = names_of(env, self.policy)  # how a checkpoint names them
        self.train_state: TrainState = state
        self.members = MemberStatus(num_members or 1, self.device)
        self.predict_calls = 0  # stochastic predicts so far: the predict stream folds it
        #: The pure rollouts and update, transformed from outside (compiled lazily by torch on first
        # call).
        self.functions = RunFunctions(env, self.env, self.policy, args, recurrent=self._recurrent)
        self._update, self._rollouts = self.functions.update, self.functions.rollouts
        self.collects = self.steps = self.env_steps = 0

    # -------------------------------------------------------- the train state
    params = _state_field("params")
    opt_state = _state_field("opt_state")
    carry = _state_field("carry")
    trajectory = _state_field("trajectory")
    key = _state_field("key")

    @property
    def hparams(self) -> AlgorithmConfig:
        """Rlstack 1.x's name for :attr:`config`."""
        return self.config

    @property
    def horizons(self) -> int:
        """Rlstack 1.x's name for :attr:`collects` (rollouts collected)."""
        return self.collects

    @horizons.setter
    def horizons(self, value: int) -> None:
        self.collects = value

    @property
    def state(self) -> SimpleNamespace:
        """Rlstack 1.x's counters (a read-only view): ``horizons`` (rollouts
        collected) and ``buffered`` (a rollout is waiting for :meth:`step`).
        """
        return SimpleNamespace(horizons=self.collects, buffered=self.trajectory is not None)

    def each(self, fn: Callable, in_dims: Any = 0) -> Callable:
        """``fn`` over this Algorithm's members (:func:`~rlstack.learn.train_state.each_member`)."""
        return each_member(fn, self.num_members, in_dims)

    # ----------------------------------------------------------------- collect
    def _rollout_fn(self, deterministic: bool, training: bool = True, env: Any = None) -> Staged:
        """See :meth:`rlstack.shell.build.RunFunctions.rollout`."""
        return self.functions.rollout(deterministic, training, env)

    def matmul_precision(self) -> Iterator[None]:
        """See :func:`rlstack.core.device.matmul_precision`."""
        return matmul_precision(self.device, self.allow_tf32)

    def fresh_carry(
        self, key: torch.Tensor, env: Any, env_config: Mapping[str, Any] | None
    ) -> RolloutCarry:
        """Reset every env of every member from ``key`` (``[2]``, ``[K, 2]``
        for a population): each begins an episode with the policy's first
        memory; normalisation statistics and the step count carry over
        (returns zeroed).
        """
        num_envs, config, policy = self.config.num_envs, env_config or self.env_config, self.policy
        carry = self.each(lambda k: reset_carry(k, env, num_envs, config=config, policy=policy))(
            key
        )
        if self.carry is None:
            return carry._replace(norm=self._initial_norm)
        return carry._replace(norm=reset_returns(self.carry.norm), step=self.carry.step)

    def _needs_reset(self) -> bool:
        every = self.config.horizons_per_env_reset
        return self.carry is None or (every > 0 and self.collects % every == 0)

    def collect(
        self, *, env_config: Mapping[str, Any] | None = None, deterministic: bool = False
    ) -> Any:
        """Run one rollout of ``horizon`` steps from the current carry (all
        envs reset first every ``horizons_per_env_reset`` collects, with
        ``env_config`` if given, else the Algorithm's).

        Returns:
            ``returns/*`` and ``rewards/*`` (min, max, mean, std),
            ``env/steps`` (transitions collected), ``env/resets`` and
            ``profiling/collect_ms``; for an episodic env also
            ``episodes/count`` and, when an episode ended,
            ``episodes/return/mean``, ``episodes/length/mean`` and
            ``episodes/terminated`` (see :func:`rlstack.learn.stats.episode_stats`);
            and what the env reports of its own (:meth:`rlstack.envs.Env.rollout_log`:
            an rsl_rl env's ``extras["log"]``, this rank's); synced from the device once. A
            population: one dict per member (:meth:`collect_each`).
        """
        stats = self.collect_each(env_config=env_config, deterministic=deterministic)
        return stats[0] if self.num_members is None else stats

    def collect_each(
        self, *, env_config: Mapping[str, Any] | None = None, deterministic: bool = False
    ) -> list[dict[str, float]]:
        """:meth:`collect`, one stats dict per member (one for a single run).
        A member whose rewards are not finite stops; when none is left,
        :class:`FloatingPointError`.
        """
        start = time.perf_counter()
        before, reset = self.train_state, self._needs_reset()
        if reset:
            key, reset_key = split_key(before.key, self.num_members)
            self.train_state = before._replace(
                key=key, carry=self.fresh_carry(reset_key, self.env, env_config)
            )
        with self.matmul_precision():
            carry, traj = self._rollout_fn(deterministic)(
                self.params, self.carry, self.train_state.hparams
            )
        env_log = getattr(
            self.env, "rollout_log", dict
        )()  # a simulator's own stats (rsl_rl's extras["log"])
        host = to_host(
            {**self.each(trajectory_stats)(traj), **env_log}, self.num_members
        )  # one sync
        stats = [
            distributed.reduce_stats({k: v for k, v in s.items() if k not in env_log}) for s in host
        ]
        self.members.stop_non_finite(
            stats,
            f"in the rewards of collect {self.collects + 1}",
            population=self.num_members is not None,
        )
        self.train_state = self.members.keep_stopped(
            self.train_state._replace(carry=carry, trajectory=traj), before, ("carry", "key")
        )
        self.collects += 1
        transitions = self.config.num_envs * self.config.horizon
        self.env_steps += transitions
        elapsed = 1000.0 * (time.perf_counter() - start)
        for member_stats, member_host in zip(stats, host, strict=True):
            member_stats.update(
                {k: member_host[k] for k in env_log}
            )  # this rank's own (its keys may differ)
            drop_empty_episode_means(member_stats)
            member_stats.update(
                {
                    "env/steps": transitions,
                    "env/resets": self.config.num_envs if reset else 0,
                    "profiling/collect_ms": elapsed,
                }
            )
        return stats

    # -------------------------------------------------------------------- step
    def coefficients(self, member: int = 0) -> dict[str, float]:
        """Learning rate and entropy coefficient of ``member``'s next update, as
        logged (see :func:`rlstack.core.schedules.logged_coefficients`).
        """
        return logged_coefficients(
            self.config,
            self.member_lrs[member],
            self.member_config[member].entropy_coeff,
            self.env_steps,
        )

    def step(self) -> Any:
        """Update the policy on the last collected trajectory.

        Returns:
            ``losses/*``, ``monitors/*``, ``coefficients/*`` and
            ``profiling/step_ms``; synced from the device once. A
            population: one dict per member (:meth:`step_each`).

        Raises:
            RuntimeError: if nothing was collected since the last step.
            FloatingPointError: if a loss, a monitor or the parameters are
                not finite; the update is discarded, so ``params`` stay those
                of the last good step.
        """
        stats = self.step_each()
        return stats[0] if self.num_members is None else stats

    def step_each(self) -> list[dict[str, float]]:
        """:meth:`step`, one stats dict per member. A member whose update is
        not finite stops with the state of its last good step (the others
        carry on); :class:`FloatingPointError` when none is left.
        """
        if self.trajectory is None:
            raise RuntimeError(
                f"{type(self).__name__}.step() needs a trajectory: call collect() first."
            )
        training = self.members.training()
        if not any(training):
            raise RuntimeError(f"Every member has stopped: {self.members.stopped}.")
        start = time.perf_counter()
        before = self.train_state
        key, update_key = split_key(before.key, self.num_members)
        with self.matmul_precision():
            params, opt_state, metrics = self._update(
                update_key, before.params, before.opt_state, before.trajectory, before.hparams
            )
        stats = to_host(
            metrics, self.num_members
        )  # reduced across ranks with the gradients already
        where = (
            f"at step {self.steps + 1} (after {self.env_steps} env transitions); the update was "
            "discarded and "
            f"params kept from step {self.steps}"
        )
        self.members.stop_non_finite(stats, where, population=self.num_members is not None)
        new = before._replace(params=params, opt_state=opt_state, key=key, trajectory=None)
        self.train_state = self.members.keep_stopped(new, before, ("params", "opt_state", "key"))
        self.steps += 1
        self.members.steps = [
            n + int(on) for n, on in zip(self.members.steps, self.members.training(), strict=True)
        ]
        elapsed = 1000.0 * (time.perf_counter() - start)
        for k, member_stats in enumerate(stats):
            member_stats.update(
                {**self.coefficients(k), **member_stats}
            )  # a rate adapted on device is the update's
            member_stats["profiling/step_ms"] = elapsed
        return stats

    def state_is_finite(self) -> bool:
        """Whether every float tensor of ``params`` and the optimizer state is
        finite (one sync; asked before checkpointing a failed run).
        """
        leaves = optree.tree_leaves((self.params, self.opt_state))
        return all(
            bool(torch.isfinite(x).all())
            for x in leaves
            if isinstance(x, torch.Tensor) and x.is_floating_point()
        )

    @property
    def obs_moments(self) -> Any:
        """The running observation statistics ``predict`` standardises with
        (a :class:`~rlstack.core.normalization.RunningMoments`), or ``()`` when
        ``normalize_obs`` is off.
        """
        return (self.carry.norm if self.carry is not None else self._initial_norm).obs

    def memory_stats(self) -> dict[str, float]:
        """See :func:`rlstack.core.device.memory_stats`."""
        return memory_stats(self.device)

    def member(self, k: int) -> Algorithm:
        """Member ``k`` as an ordinary single-run Algorithm (a copy): its
        slice of the train state, its seed, hyperparameters and counters
        (:func:`rlstack.shell.serialization.member_state_dict`); it continues
        exactly as the member would.
        """
        single_run_cls = Algorithm if self.num_members is not None else type(self)
        return single_run_cls._from_state_dict(
            member_state_dict(self, k),
            self.env_spec,
            model_cls=type(self.policy.model),
            distribution_cls=self.policy.distribution_cls,
        )

    def hparams_by_member(self) -> dict[str, Any]:
        """See :func:`rlstack.shell.members.hparams_by_member`."""
        return hparams_by_member(self.member_config)
