"""An Algorithm's pure rollouts and update as it runs them (:class:`RunFunctions`)."""

from __future__ import annotations

from typing import Any

from ..integrations import compile_cache, distributed
from ..learn.cuda_graphs import CudaGraphed
from ..learn.optimizer import make_optimizer
from ..learn.rollout import make_rollout
from ..learn.transforms import INDUCTOR_OPTIONS, Staged, compiled, over_members
from ..learn.update import make_update
from ..policy.policy import Policy
from .build import BuildArguments, build_env
from .compile_strategy import CompileStrategy

#: The rollout the background strategy compiles: the training env's, sampling actions.
TRAINING = (False, True)


class RunFunctions:
    """An Algorithm's pure rollouts and update as it runs them: built for one
    member (:func:`~rlstack.learn.rollout.make_rollout`,
    :func:`~rlstack.learn.update.make_update`), mapped over the members of a
    population (:func:`~rlstack.learn.transforms.over_members`), then, by the
    compile mode: eager; compiled before the first call
    (:func:`~rlstack.learn.transforms.compiled`) and, with ``cuda_graphs``,
    captured (:class:`~rlstack.learn.cuda_graphs.CudaGraphed`); or eager at
    first with the training rollout's and the update's pieces switching to
    compiled forms as a background thread has them
    (:class:`~rlstack.shell.compile_strategy.CompileStrategy`, at
    :meth:`before_collect` and :meth:`before_step`).

    Args:
        env_spec: the env as the Algorithm was given it (evaluation builds a
            second stateful env from it).
        env: the built training env.
        policy: the :class:`~rlstack.policy.policy.Policy`.
        args: the validated :class:`~rlstack.shell.build.BuildArguments`.
        classes: how a checkpoint names the env, model and distribution
            (part of what a compiled piece is keyed by).

    Attributes:
        update: ``update(key, params, opt_state, traj, hparams) ->
            (params, opt_state, metrics)``.
        rollouts: the training env's rollouts built so far, by
            ``(deterministic, training)``.
        strategy: the :class:`CompileStrategy` in the ``"background"`` mode, else ``None``.
    """

    def __init__(
        self,
        env_spec: Any,
        env: Any,
        policy: Policy,
        args: BuildArguments,
        classes: dict[str, str],
    ) -> None:
        self.env_spec = env_spec
        self.env = env
        self.policy = policy
        self.args = args
        self.classes = classes
        self._eval_env = env if env.compilable else None
        self.strategy = None
        if args.compile == "background":
            self.strategy = CompileStrategy(
                self.describe,
                folder=args.compile_cache,
                switches=args.compile_switches,
                free=not args.compile_switches,
            )
        optimizer = make_optimizer(args.config, args.optimizer_cls, args.optimizer_config)
        reduce_grads = distributed.all_reduce_mean if distributed.world_size() > 1 else None
        update = make_update(policy, optimizer, args.config, reduce_grads=reduce_grads)
        self.update = self._as_run(update, "update")
        if args.cuda_graphs:
            self.update = CudaGraphed(self.update)
        self.rollouts: dict[tuple[bool, bool], Any] = {}

    def _as_run(self, staged: Staged, kind: str | None) -> Any:
        """A member-level staged function as the Algorithm runs it (``kind``:
        ``"rollout"`` or ``"update"`` for the functions the background
        strategy compiles, ``None`` for others, which stay eager then).
        """
        if self.args.num_members is not None:
            staged = over_members(staged)
        if self.args.compile == "compiled":
            return compiled(staged)
        if self.strategy is not None and kind is not None:
            return self.strategy.recording(kind, staged)
        return staged

    def rollout(self, deterministic: bool, training: bool = True, env: Any = None) -> Any:
        """``rollout(params, carry, hparams) -> (carry, traj)`` for the
        training env (cached) or another ``env``; with ``training=False``
        normalisation statistics stay frozen.
        """
        config, cache_key = self.args.config, (deterministic, training)
        if env is None and cache_key in self.rollouts:
            return self.rollouts[cache_key]
        rollout = make_rollout(
            env or self.env,
            self.policy,
            config.horizon,
            deterministic=deterministic,
            normalize_obs=config.normalize_obs,
            normalize_rewards=config.normalize_rewards,
            gamma=config.gamma,
            update_normalization=training,
            seq_len=config.seq_len,
            seqs_per_state_reset=config.seqs_per_state_reset,
        )
        rollout = self._as_run(
            rollout, "rollout" if env is None and cache_key == TRAINING else None
        )
        if env is None:
            if self.args.cuda_graphs:
                rollout = CudaGraphed(rollout)
            self.rollouts[cache_key] = rollout
        return rollout

    def before_collect(self, steps: int) -> None:
        """Swap in the training rollout's compiled pieces due after ``steps`` updates."""
        if self.strategy is not None and TRAINING in self.rollouts:
            self.rollouts[TRAINING] = self.strategy.before(
                "rollout", self.rollouts[TRAINING], steps
            )
        elif self.strategy is not None:  # its first collect (the rollout is built in it)
            self.strategy.begin("rollout", steps)

    def before_step(self, steps: int) -> None:
        """Swap in the update's compiled pieces due after ``steps`` updates."""
        if self.strategy is not None:
            self.update = self.strategy.before("update", self.update, steps)

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

    def describe(self, piece: str, args: tuple) -> dict[str, Any]:
        """Everything that shapes ``piece``'s graph for the inputs ``args``:
        its key in the compile cache.
        """
        build = self.args
        return {
            "piece": piece,
            "classes": self.classes,
            "config": build.config.to_dict(),
            "env_config": build.env_config,
            "spaces": [repr(self.env.observation_space), repr(self.env.action_space)],
            "model_config": build.model_config,
            "optimizer": [build.optimizer_cls.__name__, _without_lr(build.optimizer_config)],
            "num_members": build.num_members,
            "world_size": distributed.world_size(),
            "device": str(build.device),
            "inductor": INDUCTOR_OPTIONS,
            "inputs": compile_cache.signature(args),
            **compile_cache.versions(),
        }


def _without_lr(optimizer_config: dict[str, Any]) -> dict[str, Any]:
    """The optimizer's settings that shape its graph (its rate is data)."""
    return {k: v for k, v in optimizer_config.items() if k != "lr"}
