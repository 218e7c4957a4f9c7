"""How an :class:`~rlstack.Algorithm` is built: its arguments validated
once at the shell boundary (:func:`check_arguments`, before anything is
built), then its env (:func:`build_env`) and first
:class:`~rlstack.learn.train_state.TrainState` (:func:`initial_state`), the same
code for one run and for the ``K`` members of a population.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..core import random
from ..core.config import AlgorithmConfig, check_build_arguments
from ..core.device import default_compile, resolve_device
from ..core.normalization import init_norm_state
from ..core.optim import set_learning_rate
from ..core.spaces import Box
from ..core.torch_optimizers import torch_optimizer_options
from ..envs import check_env, env_defaults, make_env
from ..integrations import checkpoint as ckpt
from ..integrations import distributed
from ..learn.cuda_graphs import CudaGraphed
from ..learn.loss import config_hparams
from ..learn.rollout import make_rollout
from ..learn.train_state import TrainState, each_member, stack
from ..learn.transforms import Staged, compiled, over_members
from ..learn.update import make_optimizer, make_update
from ..policy.build import build_policy, check_model_config
from ..policy.distributions import default_distribution_cls
from ..policy.policy import Policy
from . import serialization
from .members import member_configs


@dataclass(frozen=True)
class BuildArguments:
    """An Algorithm's validated arguments (one entry per member in the lists:
    one for a single run).

    Attributes:
        config: the shared (static) config; ``configs[0]``.
        configs: each member's config (they differ only in
            :data:`rlstack.shell.members.PER_MEMBER` values).
        lrs: each member's learning rate.
        seeds: each member's seed.
        optimizer_config: the optimizer's keyword arguments (with the first
            member's ``lr``).
        num_members: ``None`` for one run, else ``K``.
    """

    config: AlgorithmConfig
    configs: list[AlgorithmConfig]
    lrs: list[float]
    seeds: list[int]
    optimizer_cls: type
    optimizer_config: dict[str, Any]
    num_members: int | None
    device: torch.device
    compile: bool
    env_config: dict[str, Any]
    given: dict[str, Any]  # model_cls, model_config, cuda_graphs and allow_tf32 as passed

    def build_config(self, env: Any) -> dict[str, Any]:
        """How the run was built, besides the config (logged as MLflow params)."""
        given, members = self.given, self.num_members is not None
        optimizer_config = (
            {**self.optimizer_config, "lr": list(self.lrs)}
            if members
            else dict(self.optimizer_config)
        )
        model_cls = given["model_cls"]
        return {
            "env": getattr(env, "__name__", type(env).__name__),
            "env_config": self.env_config,
            "model_cls": getattr(model_cls, "__name__", str(model_cls)),
            "model_config": dict(given["model_config"] or {}),
            "optimizer_cls": self.optimizer_cls.__name__,
            "optimizer_config": optimizer_config,
            "device": str(self.device),
            "seed": list(self.seeds) if members else self.seeds[0],
            "compile": self.compile,
            "cuda_graphs": given["cuda_graphs"],
            "allow_tf32": given["allow_tf32"],
        } | ({"num_members": self.num_members} if members else {})


def check_arguments(
    algorithm_cls: type,
    env: Any,
    *,
    env_config: Any,
    model_cls: Any,
    model_config: Any,
    optimizer_cls: type,
    optimizer_config: Any,
    device: Any,
    seed: Any,
    compile: Any,
    cuda_graphs: Any,
    allow_tf32: Any,
    num_members: Any,
    hparams: Mapping[str, Any],
) -> BuildArguments:
    """Validate every argument of ``algorithm_cls(env, ...)`` before anything
    is built; a population's split per member (:func:`rlstack.shell.members.member_configs`).

    Raises:
        TypeError, ValueError: one line naming the argument and what it must be.
    """
    hparams = {**env_defaults(env), **hparams}
    if num_members is None:
        configs = [algorithm_cls._config_cls.from_mapping(hparams)]
        lrs = [torch_optimizer_options(optimizer_cls, optimizer_config)[0]]
        seeds = [seed]
    elif algorithm_cls._recurrent:
        raise ValueError(
            f"`num_members`: populations of {algorithm_cls.__name__} are not supported."
        )
    else:
        configs, lrs, seeds = member_configs(
            num_members, hparams, optimizer_cls, optimizer_config, seed
        )
        optimizer_config = {k: v for k, v in (optimizer_config or {}).items() if k != "lr"} | {
            "lr": lrs[0]
        }
    device = distributed.local_device(resolve_device(device))
    check_build_arguments(
        env_config=env_config,
        model_config=model_config,
        seed=seeds[0],
        compile=compile,
        cuda_graphs=cuda_graphs,
        allow_tf32=allow_tf32,
        device=device,
    )
    model_cls = model_cls or algorithm_cls._default_model_cls
    check_model_config(model_cls, model_config or {})
    if seeds[0] is None:  # drawn once, so torch.manual_seed before construction reproduces the run
        seeds = [int(torch.randint(0, 2**62, (), dtype=torch.int64))]
    if num_members is not None and distributed.world_size() > 1:
        raise ValueError(
            "A population trains in one process: `num_members` with torch.distributed "
            f"({distributed.world_size()} ranks) is not supported; launch one process per "
            "population."
        )
    return BuildArguments(
        config=configs[0],
        configs=configs,
        lrs=[float(lr) for lr in lrs],
        seeds=seeds,
        optimizer_cls=optimizer_cls,
        optimizer_config=dict(optimizer_config or {}),
        num_members=num_members,
        device=device,
        compile=default_compile(device) if compile is None else compile,
        env_config=dict(env_config or {}),
        given={
            "model_cls": model_cls,
            "model_config": model_config,
            "cuda_graphs": cuda_graphs,
            "allow_tf32": allow_tf32,
        },
    )


def build_env(env: Any, args: BuildArguments) -> Any:
    """The batched env of ``num_envs`` copies, checked against the arguments
    (a population's and CUDA graphs' need a pure env; ``normalize_obs`` a Box).
    """
    config = args.config
    built = make_env(
        env,
        num_envs=config.num_envs,
        horizon=config.horizon,
        config=args.env_config,
        device=args.device,
    )
    name = getattr(env, "__name__", type(env).__name__)
    for asked, what in (
        (args.given["cuda_graphs"], "`cuda_graphs=True` needs a pure env (rlstack.envs.Env)"),
        (args.num_members is not None, "A population needs a pure env (rlstack.envs.Env) to vmap"),
    ):
        if asked and not built.compilable:
            raise ValueError(
                f"{what}; {name} is a stateful env whose state lives outside the graph."
            )
    check_env(built, num_envs=config.num_envs, config=args.env_config, device=args.device)
    space = built.observation_space
    if config.normalize_obs and not all(
        isinstance(s, Box) for s in (space.values() if isinstance(space, dict) else [space])
    ):
        raise ValueError(
            f"`normalize_obs=True` needs a Box observation space or a dict of them, got {space!r}; "
            "normalise other observations in your model instead."
        )
    return built


def initial_state(
    env: Any,
    args: BuildArguments,
    model_cls: type,
    model_config: dict[str, Any],
    distribution_cls: type | None,
    *,
    recurrent: bool,
) -> tuple[Policy, TrainState, torch.Tensor, Any]:
    """The policy and the first train state: member ``k``'s built from
    ``seeds[k]`` exactly as a single run with that seed builds it, then
    stacked over the members (a single run: its own).

    Returns:
        ``(policy, state, root_key, initial_norm)``: ``root_key`` ``[2]``
        (``[K, 2]``) is the seed's key every stream derives from; training's
        ``state.key`` is its fold 0 (and, under torch.distributed, the rank).
    """
    config, device, count = args.config, args.device, len(args.seeds)
    gather = (lambda trees: trees[0]) if args.num_members is None else stack
    distribution_cls = distribution_cls or default_distribution_cls(env.action_space)
    built = [
        build_policy(
            env.observation_space,
            env.action_space,
            model_cls,
            model_config,
            distribution_cls,
            seed=seed,
            device=device,
            recurrent=recurrent,
        )
        for seed in args.seeds
    ]
    policy, member_params = built[0][0], [params for _, params in built]
    if distributed.world_size() > 1:  # rank 0's params, a key per rank
        member_params = [distributed.broadcast_tree(member_params[0])]
    optimizer = make_optimizer(config, args.optimizer_cls, args.optimizer_config)
    opt_states = [
        set_learning_rate(optimizer.init(p), torch.tensor(lr, device=device))
        for p, lr in zip(member_params, args.lrs, strict=True)
    ]
    root_key = gather([random.key(seed, device) for seed in args.seeds])
    key = each_member(random.fold_in, args.num_members, in_dims=(0, None))(root_key, 0)
    if distributed.world_size() > 1:
        key = random.fold_in(key, distributed.rank())
    norm = init_norm_state(
        observation_shapes(env.observation_space),
        config.num_envs,
        normalize_obs=config.normalize_obs,
        normalize_rewards=config.normalize_rewards,
        device=device,
    )
    state = TrainState(
        params=gather(member_params),
        opt_state=gather(opt_states),
        carry=None,
        trajectory=None,
        key=key,
        hparams=gather([config_hparams(c, device) for c in args.configs]),
    )
    return policy, state, root_key, gather([norm] * count)


def observation_shapes(space: Any) -> Any:
    """A space's shape, or a dict space's shapes by key (what the observation statistics mirror)."""
    if isinstance(space, dict):
        return {k: observation_shapes(v) for k, v in space.items()}
    return tuple(getattr(space, "shape", ()))


def names_of(env: Any, policy: Policy) -> dict[str, str]:
    """How a checkpoint names the env, model and distribution classes."""
    return {
        "env": serialization.env_class_name(env),
        "model_cls": ckpt.qualified_name(type(policy.model)),
        "distribution_cls": ckpt.qualified_name(policy.distribution_cls),
    }


class RunFunctions:
    """An Algorithm's pure rollouts and update as it runs them: built for one
    member (:func:`~rlstack.learn.rollout.make_rollout`,
    :func:`~rlstack.learn.update.make_update`), mapped over the members of a
    population (:func:`~rlstack.learn.transforms.over_members`), compiled when
    asked (:func:`~rlstack.learn.transforms.compiled`) and, with ``cuda_graphs``,
    captured (:class:`~rlstack.learn.cuda_graphs.CudaGraphed`).

    Attributes:
        update: ``update(key, params, opt_state, traj, hparams) ->
            (params, opt_state, metrics)``.
        rollouts: the training env's rollouts built so far, by
            ``(deterministic, training)``.
    """

    def __init__(
        self, env_spec: Any, env: Any, policy: Policy, args: BuildArguments, *, recurrent: bool
    ) -> None:
        self.env_spec, self.env, self.policy, self.args, self.recurrent = (
            env_spec,
            env,
            policy,
            args,
            recurrent,
        )
        self._eval_env = env if env.compilable else None
        optimizer = make_optimizer(args.config, args.optimizer_cls, args.optimizer_config)
        reduce_grads = distributed.all_reduce_mean if distributed.world_size() > 1 else None
        self.update = self.transformed(
            make_update(policy, optimizer, args.config, reduce_grads=reduce_grads)
        )
        if args.given["cuda_graphs"]:
            self.update = CudaGraphed(self.update)
        self.rollouts: dict[tuple[bool, bool], Any] = {}

    def transformed(self, staged: Staged) -> Staged:
        """A member-level function as the Algorithm runs it: mapped over the
        members of a population, then compiled when asked.
        """
        if self.args.num_members is not None:
            staged = over_members(staged)
        return compiled(staged) if self.args.compile else staged

    def rollout(self, deterministic: bool, training: bool = True, env: Any = None) -> Any:
        """``rollout(params, carry, hparams) -> (carry, traj)`` for the
        training env (cached) or another ``env``; with ``training=False``
        normalisation statistics stay frozen.
        """
        config, cache_key = self.args.config, (deterministic, training)
        if env is None and cache_key in self.rollouts:
            return self.rollouts[cache_key]
        recurrent = (
            {"seq_len": config.seq_len, "seqs_per_state_reset": config.seqs_per_state_reset}
            if self.recurrent
            else {}
        )
        rollout = self.transformed(
            make_rollout(
                env or self.env,
                self.policy,
                config.horizon,
                deterministic=deterministic,
                normalize_obs=config.normalize_obs,
                normalize_rewards=config.normalize_rewards,
                gamma=config.gamma,
                update_normalization=training,
                **recurrent,
            )
        )
        if env is None:
            if self.args.given["cuda_graphs"]:
                rollout = CudaGraphed(rollout)
            self.rollouts[cache_key] = rollout
        return rollout

    def evaluation_rollout(self, deterministic: bool) -> tuple[Any, Any]:
        """``(env, rollout)`` that evaluation runs (normalisation frozen): the
        training env for a pure env, a second instance of a stateful one
        (1.x, gymnasium; built on first use).
        """
        if self._eval_env is None:
            self._eval_env = build_env(self.env_spec, self.args)
        env = self._eval_env
        return env, self.rollout(
            deterministic, training=False, env=None if env is self.env else env
        )
