"""``Algorithm``: the one place where training state changes between calls.

It holds a :class:`~rlstack.learn.train_state.TrainState` (params, optimizer
state, env carry, trajectory, key, hyperparameters) and the counters, and
changes them in :meth:`Algorithm.collect` (one rollout) and
:meth:`Algorithm.step` (one update). The kind of run is data decided once:
``num_members=K`` stacks the state over ``K`` members and the same code runs
the pure functions mapped over that axis; the model decides the policy's
memory (none, a window, a recurrent state). It is composed of what
:mod:`rlstack.shell.build` builds, the functions it runs
(:class:`~rlstack.shell.functions.RunFunctions`), the members' status, and
the functions of :mod:`rlstack.shell.evaluation` (acting outside training)
and :mod:`rlstack.shell.serialization` (checkpoints), which read its public
attributes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from types import SimpleNamespace
from typing import Any

import optree
import torch

from ..core.device import matmul_precision
from ..core.types import RolloutCarry
from ..integrations import atomic_files, distributed
from ..integrations import checkpoint as ckpt
from ..learn.rollout import check_window
from ..learn.train_state import MemberStatus, TrainState, each_member
from ..policy.distributions import Distribution
from ..policy.models import MLPModel
from . import evaluation, iteration, loading, serialization
from .build import build_env, check_arguments, initial_state, names_of
from .functions import RunFunctions
from .members import hparams_by_member

#: How the error (and a member's stop reason) for non-finite stats begins.
NON_FINITE = MemberStatus.NON_FINITE


def _state_field(name: str) -> property:
    """``Algorithm.<name>``: that field of its train state, read and replaced."""

    def get(algo: Algorithm) -> Any:
        return getattr(algo.train_state, name)

    def replace(algo: Algorithm, value: Any) -> None:
        algo.train_state = algo.train_state._replace(**{name: value})

    return property(get, replace, doc=f"``train_state.{name}`` (see ``TrainState``).")


class Algorithm:
    """PPO on a batched env: owns the train state (params, optimizer state,
    env carry) of one run, or of ``num_members`` runs stepped together.

    ``collect()`` runs one rollout and ``step()`` one update; everything
    between is bookkeeping. Arguments are validated before any env or model
    is built.

    Args:
        env: a pure env (class or instance), an env factory
            (``gymnasium_env(id)``, ``rsl_rl_env(factory)``) or an rlstack 1.x
            style stateful env class.
        **hparams: the PPO hyperparameters
            (:class:`rlstack.core.config.AlgorithmConfig`, kept as ``config``).
            The keyword arguments before them build the run (the env's
            options, model, distribution, optimizer, device, seed, compile
            mode, population size), documented once, on
            :func:`rlstack.shell.build.check_arguments`.

    Counters: ``collects`` (rollouts collected; rlstack 1.x's name
    ``horizons`` stays as an alias), ``steps`` (updates) and ``env_steps``
    (env transitions collected).

    Under ``torch.distributed`` (see :mod:`rlstack.integrations.distributed`)
    each rank builds an Algorithm with the same arguments (checked at
    construction): ``num_envs`` and the counters are per rank, params are
    rank 0's and stay identical, each rank's key is the run's folded with
    its rank, and the stats returned are combined over ranks.

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
        compile: bool | None = None,
        compile_switches: Mapping[str, int] | None = None,
        compile_cache: str | os.PathLike | None = None,
        cuda_graphs: bool = False,
        allow_tf32: bool = False,
        num_members: int | None = None,
        **hparams: Any,
    ) -> None:
        args = check_arguments(  # everything validated before anything is built
            env,
            env_config=env_config,
            model_cls=model_cls or MLPModel,
            model_config=model_config,
            distribution_cls=distribution_cls,
            optimizer_cls=optimizer_cls,
            optimizer_config=optimizer_config,
            device=device,
            seed=seed,
            compile=compile,
            compile_switches=compile_switches,
            compile_cache=compile_cache,
            cuda_graphs=cuda_graphs,
            allow_tf32=allow_tf32,
            num_members=num_members,
            hparams=hparams,
        )
        #: The validated arguments (:class:`~rlstack.shell.build.BuildArguments`).
        self.build_args = args
        self.config = args.config
        self.member_config = args.configs
        self.member_lrs = args.lrs
        self.seeds = args.seeds
        self.seed = args.seeds[0] if num_members is None else list(args.seeds)
        self.lr = args.lrs[0]
        self.num_members = num_members
        self.device = args.device
        self.compile = args.compile  # the mode: "eager", "compiled" or "background"
        self.cuda_graphs = args.cuda_graphs
        self.allow_tf32 = args.allow_tf32
        self.env_config = args.env_config
        self.env_spec = env  # as given: what a member or a second env is built from
        self.env = build_env(env, args)
        #: How the run was built, besides ``config``: logged as MLflow params.
        self.build_config = args.build_config(env)
        self.world_size, self.rank = distributed.world_size(), distributed.rank()
        if self.world_size > 1:  # the same config on every rank
            shared = {k: v for k, v in self.build_config.items() if k != "device"}
            distributed.check_same_config({**self.config.to_dict(), **shared})
        self.policy, state, self.root_key, self.initial_norm = initial_state(self.env, args)
        check_window(self.policy, self.config.horizon)
        self.build_config["distribution_cls"] = getattr(
            self.policy.distribution_cls, "__name__", ""
        )
        self.classes = names_of(env, self.policy)  # how a checkpoint names them
        self.train_state: TrainState = state
        self.members = MemberStatus(num_members or 1, self.device)
        self.predict_calls = 0  # stochastic predicts so far: the predict stream folds it
        #: The pure rollouts and update, transformed from outside.
        self.functions = RunFunctions(env, self.env, self.policy, args, self.classes)
        self.collects = self.steps = self.env_steps = 0

    params = _state_field("params")
    opt_state = _state_field("opt_state")
    carry = _state_field("carry")
    trajectory = _state_field("trajectory")
    key = _state_field("key")

    @property
    def compile_switches(self) -> dict[str, int]:
        """Piece name -> the update count at which it switched to its compiled
        form (``compile=None``; what ``compile_switches=`` replays).
        """
        strategy = self.functions.strategy
        return strategy.record if strategy is not None else {}

    @property
    def hparams(self) -> Any:
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
        collected), ``seqs`` (sequences of ``seq_len`` steps collected per
        env) and ``buffered`` (a rollout is waiting for :meth:`step`).
        """
        return SimpleNamespace(
            horizons=self.collects,
            seqs=self.collects * (self.config.horizon // self.config.seq_len),
            buffered=self.trajectory is not None,
        )

    def each(self, fn: Callable, in_dims: Any = 0) -> Callable:
        """``fn`` over this Algorithm's members (:func:`~rlstack.learn.train_state.each_member`)."""
        return each_member(fn, self.num_members, in_dims)

    def matmul_precision(self) -> Iterator[None]:
        """See :func:`rlstack.core.device.matmul_precision`."""
        return matmul_precision(self.device, self.allow_tf32)

    def fresh_carry(
        self, key: torch.Tensor, env: Any, env_config: Mapping[str, Any] | None
    ) -> RolloutCarry:
        """See :func:`rlstack.shell.iteration.fresh_carry`."""
        return iteration.fresh_carry(key, self, env, env_config)

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
            ``episodes/terminated`` (see
            :func:`rlstack.learn.stats.episode_stats`); and what the env
            reports of its own (:meth:`rlstack.envs.Env.rollout_log`: an
            rsl_rl env's ``extras["log"]``, this rank's); synced from the
            device once. A population: one dict per member (:meth:`collect_each`).
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
        return iteration.collect(self, env_config=env_config, deterministic=deterministic)

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
        return iteration.update(self)

    def state_is_finite(self) -> bool:
        """Whether every float tensor of ``params`` and the optimizer state is
        finite (one sync; asked before checkpointing a failed run).
        """
        leaves = optree.tree_leaves((self.params, self.opt_state))
        floats = [x for x in leaves if isinstance(x, torch.Tensor) and x.is_floating_point()]
        return all(bool(torch.isfinite(x).all()) for x in floats)

    @property
    def obs_moments(self) -> Any:
        """The running observation statistics ``predict`` standardises with
        (a :class:`~rlstack.core.normalization.RunningMoments`), or ``()`` when
        ``normalize_obs`` is off.
        """
        return (self.carry.norm if self.carry is not None else self.initial_norm).obs

    def hparams_by_member(self) -> dict[str, Any]:
        """See :func:`rlstack.shell.members.hparams_by_member`."""
        return hparams_by_member(self.member_config)

    def evaluate(
        self,
        *,
        env_config: Mapping[str, Any] | None = None,
        deterministic: bool = True,
        horizons: int = 1,
    ) -> Any:
        """Roll the current policy out on freshly reset envs for ``horizons``
        rollouts without touching the training carry or key (see
        :func:`rlstack.shell.evaluation.evaluate_algorithm`); a population:
        one dict per member.
        """
        stats = self.evaluate_each(
            env_config=env_config, deterministic=deterministic, horizons=horizons
        )
        return stats[0] if self.num_members is None else stats

    def evaluate_each(self, **options: Any) -> list[dict[str, float]]:
        """:meth:`evaluate`, one stats dict per member (one for a single run)."""
        return evaluation.evaluate_algorithm(self, **options)

    def predict(
        self,
        obs: Any,
        deterministic: bool = True,
        *,
        memory: Any = None,
        starts: Any = None,
        hidden: Any = None,
    ) -> Any:
        """Actions of the current policy for a batch of observations; a policy
        with memory (recurrent, or a window of observations) also returns it,
        to pass back with the next observations of the same envs:
        ``actions, memory = predict(obs, memory=memory)`` (``hidden`` is
        rlstack 1.x's name for a recurrent policy's). See
        :func:`rlstack.shell.evaluation.predict_algorithm`.
        """
        if hidden is not None and memory is not None:
            raise ValueError("pass the memory as `memory` or as `hidden`, not both.")
        memory = hidden if memory is None else memory
        actions, memory = evaluation.predict_algorithm(self, obs, deterministic, memory, starts)
        return (actions, memory) if self.policy.has_memory else actions

    def actor(self, deterministic: bool = True) -> Callable[[Any], Any]:
        """``act(obs) -> actions`` over successive observations of the same
        envs (e.g. ``env.success(algo.actor())``), a policy's memory carried
        from one call to the next (see :func:`rlstack.shell.evaluation.actor`).
        """

        def predict(obs: Any, memory: Any) -> tuple[Any, Any]:
            return evaluation.predict_algorithm(self, obs, deterministic, memory, None)

        return evaluation.actor(predict, self.policy.has_memory)

    def initial_hidden(self, batch_size: int) -> Any:
        """A recurrent policy's initial hidden state for ``batch_size`` envs, on the device."""
        return self.policy.initial_hidden(batch_size, self.device)

    def state_dict(self) -> dict[str, Any]:
        """The whole train state as tensors and plain containers (see
        :func:`rlstack.shell.serialization.state_dict`).
        """
        return serialization.state_dict(self)

    def load_state_dict(self, data: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` into this (identically configured)
        Algorithm (see :func:`rlstack.shell.serialization.load_state_dict`).
        """
        serialization.load_state_dict(self, loading.upgrade(data))

    def save_checkpoint(self, path: str | os.PathLike) -> str:
        """Write :meth:`state_dict` to ``path`` atomically; returns the path."""
        return str(atomic_files.atomic_save(self.state_dict(), path))

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, env: Any = None, **options: Any) -> Algorithm:
        """Rebuild the Algorithm a checkpoint holds, whatever its kind (one run,
        a population, a recurrent policy), and restore its state.

        Built-in envs, models and distributions are found by name; a user's
        own ``env``, ``model_cls`` or ``distribution_cls`` must be passed
        (a checkpoint never imports code by itself). ``device`` and
        ``compile`` default to the checkpoint's (see
        :func:`rlstack.shell.loading.constructor_arguments`).

        Raises:
            FileNotFoundError, CheckpointError: see
                :func:`rlstack.integrations.checkpoint.safe_load` and :meth:`load_state_dict`.
        """
        return loading.restore(Algorithm, ckpt.safe_load(path), env, **options)

    def member(self, k: int) -> Algorithm:
        """Member ``k`` as an ordinary single-run Algorithm (a copy): its
        slice of the train state, its seed, hyperparameters and counters
        (:func:`rlstack.shell.serialization.member_state_dict`); it continues
        exactly as the member would.
        """
        return loading.restore(
            Algorithm,
            serialization.member_state_dict(self, k),
            self.env_spec,
            model_cls=type(self.policy.model),
            distribution_cls=self.policy.distribution_cls,
        )
