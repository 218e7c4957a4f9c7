"""How an :class:`~rlstack.Algorithm` is built: its arguments validated
once at the shell boundary (:func:`check_arguments`, before anything is
built), then its env (:func:`build_env`) and first
:class:`~rlstack.learn.train_state.TrainState` (:func:`initial_state`), the same
code for one run and for the ``K`` members of a population, for every kind
of model (the model decides whether the policy is recurrent).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import torch

from ..core import random
from ..core.checks import check_build_arguments
from ..core.config import AlgorithmConfig, for_model
from ..core.device import resolve_device
from ..core.normalization import init_norm_state
from ..core.optim import set_learning_rate
from ..core.spaces import Box
from ..core.torch_optimizers import torch_optimizer_options
from ..envs import check_env, env_defaults, make_env
from ..integrations import checkpoint as ckpt
from ..integrations import compile_cache, distributed
from ..learn.loss import config_hparams
from ..learn.optimizer import make_optimizer
from ..learn.train_state import TrainState, each_member, stack
from ..policy.build import build_policy, check_model_config, is_recurrent_model
from ..policy.distributions import default_distribution_cls
from ..policy.policy import Policy
from . import serialization
from .members import member_configs

#: The compile modes an Algorithm resolves ``compile`` to (see :func:`compile_mode`).
COMPILE_MODES = ("eager", "compiled", "background")


@dataclasses.dataclass(frozen=True, kw_only=True)
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
        compile: the resolved compile mode, one of :data:`COMPILE_MODES`.
        compile_switches: the updates at which pieces switch to their
            compiled form (``"background"`` only; empty: as soon as ready).
        compile_cache: the folder of compiled pieces (``"background"`` only).
    """

    config: AlgorithmConfig
    configs: list[AlgorithmConfig]
    lrs: list[float]
    seeds: list[int]
    optimizer_cls: type
    optimizer_config: dict[str, Any]
    num_members: int | None
    device: torch.device
    compile: str
    compile_switches: dict[str, int]
    compile_cache: str | None
    env_config: dict[str, Any]
    model_cls: type
    model_config: dict[str, Any]
    distribution_cls: Any
    cuda_graphs: bool
    allow_tf32: bool

    def build_config(self, env: Any) -> dict[str, Any]:
        """How the run was built, besides the config (logged as MLflow params)."""
        members = self.num_members is not None
        optimizer_config = dict(self.optimizer_config)
        if members:
            optimizer_config["lr"] = list(self.lrs)
        return {
            "env": getattr(env, "__name__", type(env).__name__),
            "env_config": self.env_config,
            "model_cls": getattr(self.model_cls, "__name__", str(self.model_cls)),
            "model_config": dict(self.model_config),
            "optimizer_cls": self.optimizer_cls.__name__,
            "optimizer_config": optimizer_config,
            "device": str(self.device),
            "seed": list(self.seeds) if members else self.seeds[0],
            "compile": self.compile,
            "cuda_graphs": self.cuda_graphs,
            "allow_tf32": self.allow_tf32,
        } | ({"num_members": self.num_members} if members else {})


def check_arguments(
    env: Any,
    *,
    env_config: Any,
    model_cls: type,
    model_config: Any,
    distribution_cls: Any,
    optimizer_cls: type,
    optimizer_config: Any,
    device: Any,
    seed: Any,
    compile: Any,
    compile_switches: Any,
    compile_cache: Any,
    cuda_graphs: Any,
    allow_tf32: Any,
    num_members: Any,
    hparams: Mapping[str, Any],
) -> BuildArguments:
    """Validate every argument of ``Algorithm(env, ...)`` before anything is
    built; a population's split per member (:func:`rlstack.shell.members.member_configs`),
    each config's sequence settings decided by the model
    (:func:`rlstack.core.config.for_model`). These are the arguments of
    :class:`~rlstack.Algorithm` (and :class:`~rlstack.Trainer`), documented here once.

    Args:
        env: a pure env (class or instance, e.g. ``DiscreteDummyEnv``), an
            env factory (``gymnasium_env(id)``) or an rlstack 1.x style
            stateful env class.
        env_config: config dict passed to the env's reset.
        model_cls: ``model_cls(observation_space, action_space,
            **model_config)`` -> ``nn.Module``; default
            :class:`~rlstack.policy.models.MLPModel`. A
            recurrent model (with ``initial_hidden``, e.g.
            :class:`~rlstack.policy.models.RecurrentModel`) makes a recurrent
            policy trained over sequences of ``seq_len`` steps.
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
        compile: ``None`` (default): start eager and switch each piece of
            the rollout and the update to its compiled form as soon as a
            background thread has compiled it or loaded it from the compile
            cache (:mod:`rlstack.shell.compile_strategy`); ``True``: compile
            before the first iteration; ``False``: never.
        compile_switches: with ``compile=None``, the update counts at which
            pieces switch (a run's :attr:`rlstack.Algorithm.compile_switches`): each switches
            exactly there, waiting for it if needed, and no other piece does,
            so the recorded run is reproduced bit for bit.
        compile_cache: the folder of compiled pieces (default
            ``$RLSTACK_COMPILE_CACHE``, else ``~/.cache/rlstack/compile``).
        cuda_graphs: on a CUDA device, capture the whole rollout and the
            whole update each as one CUDA graph and replay them (see
            :mod:`rlstack.learn.cuda_graphs`); needs a pure (compilable) env.
        allow_tf32: on a CUDA device, let float32 matmuls use TF32 inside
            ``collect``, ``step`` and ``evaluate`` (restored after each).
        num_members: ``None`` (one run) or ``K``: a population of ``K`` runs
            in one process (see :mod:`rlstack.shell.population`).
        hparams: PPO hyperparameters, see
            :class:`rlstack.core.config.AlgorithmConfig` (kept as ``config``);
            where unset, the defaults that fit ``env``
            (:func:`rlstack.envs.env_defaults`) come before 1.x's.

    Raises:
        TypeError, ValueError: one line naming the argument and what it must be.
    """
    device = distributed.local_device(resolve_device(device))
    configs, lrs, seeds = _member_arguments(
        {**env_defaults(env), **hparams}, optimizer_cls, optimizer_config, seed, num_members
    )
    check_build_arguments(
        env_config=env_config,
        model_config=model_config,
        seed=seeds[0],
        compile=compile,
        cuda_graphs=cuda_graphs,
        allow_tf32=allow_tf32,
        device=device,
    )
    check_model_config(model_cls, model_config or {})
    recurrent = is_recurrent_model(model_cls)
    if num_members is not None and (recurrent or distributed.world_size() > 1):
        raise ValueError(
            "`num_members`: a population trains feedforward policies in one process; got "
            + ("a recurrent model." if recurrent else f"{distributed.world_size()} ranks.")
        )
    name = getattr(model_cls, "__name__", str(model_cls))
    configs = [for_model(c, recurrent=recurrent, model_name=name) for c in configs]
    return BuildArguments(
        config=configs[0],
        configs=configs,
        lrs=[float(lr) for lr in lrs],
        seeds=seeds,
        optimizer_cls=optimizer_cls,
        optimizer_config={
            **{k: v for k, v in (optimizer_config or {}).items() if k != "lr"},
            "lr": lrs[0],
        },
        num_members=num_members,
        device=device,
        compile=compile_mode(compile, cuda_graphs),
        compile_switches=check_compile_switches(compile_switches),
        compile_cache=None if compile_cache is None else os.fspath(compile_cache),
        env_config=dict(env_config or {}),
        model_cls=model_cls,
        model_config=dict(model_config or {}),
        distribution_cls=distribution_cls,
        cuda_graphs=cuda_graphs,
        allow_tf32=allow_tf32,
    )


def _member_arguments(
    hparams: Mapping[str, Any],
    optimizer_cls: type,
    optimizer_config: Any,
    seed: Any,
    num_members: int | None,
) -> tuple[list[AlgorithmConfig], list[float], list[int]]:
    """Each member's config, learning rate and seed (one of each for a single
    run); a seed drawn once from torch's generator where none is given, so
    ``torch.manual_seed`` before construction reproduces the run.
    """
    if num_members is not None:
        return member_configs(num_members, hparams, optimizer_cls, optimizer_config, seed)
    config = AlgorithmConfig.from_mapping(hparams)
    lr = torch_optimizer_options(optimizer_cls, optimizer_config)[0]
    if seed is None:  # validated by check_build_arguments otherwise
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    return [config], [lr], [seed]


def compile_mode(compile: bool | None, cuda_graphs: bool) -> str:
    """The compile mode ``compile`` resolves to: ``False`` eager, ``True``
    compiled before the first iteration (``"compiled"``), ``None`` (the
    default) ``"background"``: eager at once, each piece switching to its
    compiled form when a background thread has compiled or loaded it
    (:mod:`rlstack.shell.compile_strategy`). CUDA graphs capture compiled
    functions, so they compile first; where torch lacks the APIs the
    background mode needs, ``None`` compiles first too, saying so once.
    """
    if compile is not None:
        return "compiled" if compile else "eager"
    if cuda_graphs:
        return "compiled"
    missing = compile_cache.missing_api()
    if missing:
        compile_cache.notice(
            f"torch {torch.__version__} lacks {missing}: compiling before the first iteration "
            "instead of in the background."
        )
        return "compiled"
    return "background"


def check_compile_switches(switches: Any) -> dict[str, int]:
    """``compile_switches``: ``None`` or a dict of piece name -> update count.

    Raises:
        TypeError: naming ``compile_switches`` and what it must be.
    """
    if switches is None:
        return {}
    if not isinstance(switches, Mapping) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in switches.items()
    ):
        raise TypeError(
            "`compile_switches` must be a dict of piece name -> update count (an int >= 0), e.g. "
            f"{{'rollout/step': 1}}, got {switches!r}."
        )
    return dict(switches)


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
        (args.cuda_graphs, "`cuda_graphs=True` needs a pure env (rlstack.envs.Env)"),
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


def initial_state(env: Any, args: BuildArguments) -> tuple[Policy, TrainState, torch.Tensor, Any]:
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
    distribution_cls = args.distribution_cls or default_distribution_cls(env.action_space)
    built = [
        build_policy(
            env.observation_space,
            env.action_space,
            args.model_cls,
            args.model_config,
            distribution_cls,
            seed=seed,
            device=device,
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
