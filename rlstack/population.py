"""``Population``: ``K`` PPO runs trained in one process by ``torch.func.vmap``.

Every piece of state of an :class:`~rlstack.Algorithm` (params, optimizer
state, normalisation statistics, env carry, random key) is stacked along a
leading member axis ``K``; one vmapped (and compiled) rollout and one
vmapped update advance all members together. Members differ in their seed
and in the hyperparameters that enter as data (:data:`PER_MEMBER`: the
learning rate, and :class:`~rlstack.types.HParams`' gamma, GAE lambda,
clip parameter and entropy coefficient). Member ``k``'s random key is
derived from its seed exactly as a single run's, so it trains as
``Algorithm(seed=seeds[k], <its hyperparameters>)`` would alone (to float
rounding: batched matrix products round differently from single ones).

A member that meets its stop condition, or whose update turns non-finite,
is frozen: the population keeps stepping, but that member's state is
selected unchanged, on device, at every later collect and step. Any member
can be taken out as an ordinary :class:`~rlstack.Algorithm`
(:meth:`Population.member`), to checkpoint, resume, evaluate or export.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any, Mapping, Sequence

import optree
import torch

from . import random, serialization
from .algorithm import NON_FINITE, Algorithm, _check_finite, _drop_empty_episode_means
from .config import AlgorithmConfig
from .envs import env_defaults
from .evaluation import EVAL_STREAM
from .optim import set_learning_rate, tree_select
from .torch_optimizers import torch_optimizer_options
from .policy import build_policy
from .ppo import config_hparams
from .normalization import reset_returns
from .rollout import env_rewards, reset_carry, reward_stats, trajectory_stats
from .types import RolloutCarry

#: Hyperparameters that may take one value per member (lists of length K).
PER_MEMBER = ("lr", "gamma", "gae_lambda", "clip_param", "entropy_coeff")


def grid(**values: Sequence[Any]) -> dict[str, list[Any]]:
    """Every combination of the given values, as per-member lists (the
    first name varies slowest), for ``Trainer(env, num_members=len(...),
    **grid(...))``.

    Examples:
        >>> grid(lr=[1e-3, 3e-4], entropy_coeff=[0.0, 0.01])
        {'lr': [0.001, 0.001, 0.0003, 0.0003], 'entropy_coeff': [0.0, 0.01, 0.0, 0.01]}
    """
    for name, options in values.items():
        if name not in PER_MEMBER:
            raise ValueError(f"grid: `{name}` cannot differ across members; per-member hyperparameters are {PER_MEMBER}.")
        if isinstance(options, (str, bytes)) or not isinstance(options, Sequence) or not options:
            raise ValueError(f"grid: `{name}` must be a non-empty list of values, got {options!r}.")
    combinations = list(itertools.product(*values.values()))
    return {name: [combo[i] for combo in combinations] for i, name in enumerate(values)}


def _per_member(name: str, value: Any, num_members: int) -> list[Any]:
    """``value`` as a list of ``num_members`` values (one value is repeated;
    a schedule, itself a list, is one value)."""
    if isinstance(value, (list, tuple)) and not name.endswith("_schedule"):
        if name not in PER_MEMBER:
            raise ValueError(
                f"`{name}` cannot differ across members (it is static: shapes, schedules or graph structure); "
                f"per-member hyperparameters are {PER_MEMBER}, got a list {list(value)!r}."
            )
        if len(value) != num_members:
            raise ValueError(f"`{name}` has {len(value)} values for num_members={num_members}: give one or {num_members}.")
        return list(value)
    return [value] * num_members


def member_configs(
    num_members: Any, hparams: Mapping[str, Any], optimizer_cls: type, optimizer_config: Mapping[str, Any] | None,
    seed: Any,
) -> tuple[list[AlgorithmConfig], list[float], list[int]]:
    """Validate a population's arguments and split them per member.

    Args:
        num_members: ``K`` (an int >= 1).
        hparams: PPO hyperparameters; those in :data:`PER_MEMBER` may be
            lists of ``K`` values (``lr`` stands for
            ``optimizer_config['lr']``).
        optimizer_cls: as for :class:`~rlstack.Algorithm`.
        optimizer_config: as for :class:`~rlstack.Algorithm`;
            ``optimizer_config['lr']`` may be a list of ``K`` values.
        seed: an int (member ``k`` gets ``seed + k``), a list of ``K``
            distinct ints, or ``None`` (drawn once from torch's generator).

    Returns:
        ``(configs, learning_rates, seeds)``, one of each per member.

    Raises:
        ValueError, TypeError: naming the argument, and the member for a
            per-member value that is out of range.
    """
    if not isinstance(num_members, int) or isinstance(num_members, bool) or num_members < 1:
        raise ValueError(f"`num_members` must be an int >= 1, got {num_members!r}.")
    hparams = dict(hparams)
    if "lr" in hparams:  # `lr=` (what grid() returns) is optimizer_config['lr']
        if "lr" in (optimizer_config or {}):
            raise ValueError("Give the learning rate once: `lr=` or `optimizer_config['lr']`, not both.")
        optimizer_config = {**(optimizer_config or {}), "lr": hparams.pop("lr")}
    lists = {name: _per_member(name, value, num_members) for name, value in hparams.items()}
    configs = []
    for k in range(num_members):
        try:
            configs.append(AlgorithmConfig.from_mapping({name: values[k] for name, values in lists.items()}))
        except (TypeError, ValueError) as e:
            raise type(e)(f"member {k}: {e}") from None
    optimizer_config = dict(optimizer_config or {})
    lrs = _per_member("lr", optimizer_config.get("lr", 1e-3), num_members)
    for k, lr in enumerate(lrs):
        try:
            torch_optimizer_options(optimizer_cls, {**optimizer_config, "lr": lr})
        except (TypeError, ValueError) as e:
            raise type(e)(f"member {k}: {e}") from None
    if len(set(map(float, lrs))) > 1 and configs[0].lr_schedule is not None:
        raise ValueError("per-member `lr` values and an `lr_schedule` exclude each other: the schedule sets the rate.")
    entropies = {c.entropy_coeff for c in configs}
    if len(entropies) > 1 and configs[0].entropy_coeff_schedule is not None:
        raise ValueError(
            "per-member `entropy_coeff` values and an `entropy_coeff_schedule` exclude each other: the schedule sets it."
        )
    if seed is None:
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    if isinstance(seed, int) and not isinstance(seed, bool):
        seeds = [seed + k for k in range(num_members)]
    elif isinstance(seed, (list, tuple)) and len(seed) == num_members:
        seeds = list(seed)
    else:
        raise ValueError(f"`seed` must be an int, None or a list of {num_members} ints (one per member), got {seed!r}.")
    for k, s in enumerate(seeds):
        if not isinstance(s, int) or isinstance(s, bool) or s < 0:
            raise ValueError(f"`seed` of member {k} must be a non-negative int, got {s!r}.")
    if len(set(seeds)) != num_members:
        raise ValueError(f"`seed` must give each member its own seed, got {seeds}.")
    return configs, [float(lr) for lr in lrs], seeds


def stack(trees: Sequence[Any]) -> Any:
    """Stack equal-structured pytrees of tensors along a new leading axis."""
    return optree.tree_map(lambda *xs: torch.stack(xs), *trees)


def take(tree: Any, k: int) -> Any:
    """Member ``k`` of a stacked pytree (every leaf indexed ``[k]``)."""
    return optree.tree_map(lambda x: x[k], tree)


def select_members(active: torch.Tensor, new: Any, old: Any) -> Any:
    """``new`` for the members where ``active`` ``[K]`` holds, ``old``
    elsewhere, leaf by leaf (a frozen member keeps its state)."""
    return torch.func.vmap(tree_select)(active, new, old)


class Population(Algorithm):
    """``num_members`` PPO runs stepped together by one vmapped rollout and update.

    Args:
        env: a pure env (class or instance); 1.x stateful and gymnasium
            envs keep state outside the graph and cannot be vmapped.
        num_members: ``K``.
        seed: see :func:`member_configs`.
        optimizer_config: as for :class:`~rlstack.Algorithm`; ``lr`` may be
            a list of ``K`` rates (or pass ``lr=`` directly, as
            :func:`grid` returns it).
        **hparams: PPO hyperparameters as :class:`~rlstack.Algorithm`
            takes them; those in :data:`PER_MEMBER` may be lists of ``K``.
            The other arguments (``env_config``, ``model_cls``, ``device``,
            ``compile``, ...) are :class:`~rlstack.Algorithm`'s.

    ``collect()`` and ``step()`` return one stats dict per member;
    ``active`` says which members still train. Counters (``collects``,
    ``steps``, ``env_steps``) are the population's; ``member_steps[k]`` is
    the number of updates member ``k`` took before it was frozen.

    Examples:
        >>> from rlstack.envs import CartPole
        >>> pop = Population(CartPole, num_members=2, entropy_coeff=[0.0, 0.01], num_envs=16, horizon=8,
        ...                  compile=False, model_config={"hiddens": (8,)})
        >>> len(pop.collect()), len(pop.step())
        (2, 2)
        >>> pop.member(1).config.entropy_coeff
        0.01
    """

    _population = True

    def __init__(
        self,
        env: Any,
        /,
        *,
        num_members: int,
        seed: int | Sequence[int] | None = None,
        optimizer_cls: type = torch.optim.Adam,
        optimizer_config: Mapping[str, Any] | None = None,
        env_config: Mapping[str, Any] | None = None,
        model_cls: type | None = None,
        model_config: Mapping[str, Any] | None = None,
        distribution_cls: type | None = None,
        device: Any = "cpu",
        compile: bool | None = None,
        cuda_graphs: bool = False,
        allow_tf32: bool = False,
        **hparams: Any,
    ) -> None:
        hparams = {**env_defaults(env), **hparams}  # as Algorithm's, before the members' configs are made
        configs, lrs, seeds = member_configs(num_members, hparams, optimizer_cls, optimizer_config, seed)
        hparams.pop("lr", None)
        optimizer_config = {k: v for k, v in (optimizer_config or {}).items() if k != "lr"}
        self.num_members, self.member_config, self.member_lrs, self.seeds = num_members, configs, lrs, seeds
        first = configs[0].to_dict()
        super().__init__(
            env, env_config=env_config, model_cls=model_cls, model_config=model_config,
            distribution_cls=distribution_cls, optimizer_cls=optimizer_cls,
            optimizer_config={**optimizer_config, "lr": lrs[0]}, device=device, seed=seeds[0],
            compile=compile, cuda_graphs=cuda_graphs, allow_tf32=allow_tf32, **first,
        )
        if not self.env.compilable:
            raise ValueError(
                f"A population needs a pure env (rlstack.envs.Env) to vmap; {self.build_config['env']} is a stateful "
                "env whose state lives outside the graph."
            )
        self.build_config.update(seed=seeds, num_members=num_members,
                                 optimizer_config={**optimizer_config, "lr": lrs})
        # Member k's state, built as Algorithm(seed=seeds[k]) builds it, then stacked.
        member_params = [self.params] + [
            build_policy(self.env.observation_space, self.env.action_space, type(self.policy.model),
                         dict(model_config or {}), self.policy.distribution_cls, seed=s, device=self.device)[1]
            for s in seeds[1:]
        ]
        self.params = stack(member_params)
        opt_states = [set_learning_rate(self._optimizer.init(p), torch.tensor(lr, device=self.device))
                      for p, lr in zip(member_params, lrs)]
        self.opt_state = stack(opt_states)
        self.root_key = stack([random.key(s, self.device) for s in seeds])
        self.key = torch.func.vmap(random.fold_in, in_dims=(0, None))(self.root_key, 0)
        self._hparams = stack([config_hparams(c, self.device) for c in configs])
        self._initial_norm = stack([self._initial_norm] * num_members)
        #: ``[K]`` bool: the members still training.
        self.active = torch.ones(num_members, dtype=torch.bool, device=self.device)
        self.member_steps = [0] * num_members
        #: Why each frozen member stopped (``None`` while it trains).
        self.stopped: list[str | None] = [None] * num_members

    # ------------------------------------------------------------- members
    def _split_keys(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's ``random.split`` of its key: ``(next keys [K, 2], drawn keys [K, 2])``."""
        keys = torch.func.vmap(random.split)(self.key)
        return keys[:, 0].contiguous(), keys[:, 1].contiguous()

    def _fresh_carry(self, env: Any, env_config: Mapping[str, Any] | None, key: torch.Tensor) -> RolloutCarry:
        """Reset each member's envs from its key ``[K, 2]`` (see :meth:`Algorithm._fresh_carry`)."""
        norm = reset_returns(self.carry.norm) if self.carry is not None else self._initial_norm
        num_envs, config, policy = self.config.num_envs, env_config or self.env_config, self.policy
        reset = torch.func.vmap(lambda member_key: reset_carry(env, member_key, num_envs, config=config,
                                                               policy=policy))
        return reset(key)._replace(norm=norm)

    def failed(self, k: int) -> bool:
        """Whether member ``k`` was frozen for a non-finite update or rollout
        (for good: checkpointed, never unfrozen)."""
        return self.stopped[k] is not None and self.stopped[k].startswith(NON_FINITE)

    def freeze(self, k: int, why: str) -> None:
        """Stop training member ``k``: from now on its state is kept as it is."""
        if self.stopped[k] is None:
            self.stopped[k] = why
            self.active = self.active.clone()
            self.active[k] = False

    def unfreeze(self, k: int) -> None:
        """Let member ``k``, stopped by a condition, train again (a new
        :meth:`Trainer.run <rlstack.Trainer.run>` does this); a member
        stopped by a non-finite update stays frozen."""
        if self.stopped[k] is not None and not self.failed(k):
            self.stopped[k] = None
            self.active = self.active.clone()
            self.active[k] = True

    def unfreeze_all(self) -> None:
        """:meth:`unfreeze` every member stopped by a condition."""
        for k in range(self.num_members):
            self.unfreeze(k)

    def collect(self, *, env_config: Mapping[str, Any] | None = None, deterministic: bool = False) -> list[dict[str, float]]:
        """One vmapped rollout of every member (see :meth:`Algorithm.collect`).

        Returns:
            One stats dict per member (a frozen member's are of a rollout
            whose results it discards).
        """
        start = time.perf_counter()
        reset = self._needs_reset()
        old_key, old_carry = self.key, self.carry
        if reset:
            self.key, reset_key = self._split_keys()
            self.carry = self._fresh_carry(self.env, env_config, reset_key)
        with self._matmul_precision():
            carry, traj = self._rollout_fn(deterministic)(self.params, self.carry, self._hparams)
        stats = self._per_member_stats(torch.func.vmap(trajectory_stats)(traj))
        for k, member_stats in enumerate(stats):
            if self.stopped[k] is None and not all(map(math.isfinite, member_stats.values())):
                self.freeze(k, f"{NON_FINITE} rewards in collect {self.collects + 1}.")
        if not bool(self.active.all()) and old_carry is not None:  # frozen members keep their carry and key
            carry, self.key = select_members(self.active, (carry, self.key), (old_carry, old_key))
        self.carry, self.trajectory = carry, traj
        self.collects += 1
        transitions = self.config.num_envs * self.config.horizon
        self.env_steps += transitions
        elapsed = 1000.0 * (time.perf_counter() - start)
        for member_stats in stats:
            _drop_empty_episode_means(member_stats)
            member_stats.update({"env/steps": transitions, "env/resets": self.config.num_envs if reset else 0,
                                 "profiling/collect_ms": elapsed})
        return stats

    def _per_member_stats(self, stats: Mapping[str, torch.Tensor]) -> list[dict[str, float]]:
        """``{name: [K]}`` tensors to one ``{name: float}`` dict per member, with one device sync."""
        if not stats:
            return [{} for _ in range(self.num_members)]
        values = torch.stack([v.detach().float() for v in stats.values()]).tolist()  # [names][K]
        return [{name: row[k] for name, row in zip(stats, values)} for k in range(self.num_members)]

    def step(self) -> list[dict[str, float]]:
        """One vmapped update of every member on its last trajectory.

        A member whose update is not finite is frozen with the state of its
        last good step (the others carry on); :class:`FloatingPointError`
        only when no member is left.

        Returns:
            One stats dict per member.
        """
        if self.trajectory is None:
            raise RuntimeError("Population.step() needs a trajectory: call collect() first.")
        if not bool(self.active.any()):
            raise RuntimeError(f"Every member of the population has stopped: {self.stopped}.")
        failed_before = sum(map(self.failed, range(self.num_members)))
        start = time.perf_counter()
        old_key = self.key  # a frozen member's key does not advance
        self.key, update_key = self._split_keys()
        with self._matmul_precision():
            params, opt_state, metrics = self._update(self.params, self.opt_state, self.trajectory, update_key,
                                                      self._hparams)
        stats = self._per_member_stats(metrics)
        for k, member_stats in enumerate(stats):
            try:
                _check_finite(member_stats, f"at step {self.steps + 1}")
            except FloatingPointError as e:
                self.freeze(k, str(e))
        keep = self.active
        self.params, self.opt_state = select_members(keep, (params, opt_state), (self.params, self.opt_state))
        self.key = select_members(keep, self.key, old_key)
        self.trajectory = None
        self.steps += 1
        for k in range(self.num_members):
            if self.stopped[k] is None:
                self.member_steps[k] += 1
        elapsed = 1000.0 * (time.perf_counter() - start)
        for k, member_stats in enumerate(stats):
            member_stats.update(self.member_coefficients(k))
            member_stats["profiling/step_ms"] = elapsed
        if not bool(self.active.any()) and sum(map(self.failed, range(self.num_members))) > failed_before:
            raise FloatingPointError(f"No member of the population is left training: {self.stopped}.")
        return stats

    def member_coefficients(self, k: int) -> dict[str, float]:
        """Member ``k``'s logged learning rate and coefficients (see :meth:`Algorithm.coefficients`)."""
        coefficients = super().coefficients()
        if self.config.lr_schedule is None:
            coefficients["coefficients/lr"] = self.member_lrs[k]
        if self.config.entropy_coeff_schedule is None:
            coefficients["coefficients/entropy"] = self.member_config[k].entropy_coeff
        return coefficients

    # ------------------------------------------------------------ evaluation
    def evaluate(
        self, *, env_config: Mapping[str, Any] | None = None, deterministic: bool = True, horizons: int = 1,
    ) -> list[dict[str, float]]:
        """Every member on freshly reset envs (see :meth:`Algorithm.evaluate`),
        in one vmapped rollout; one stats dict per member."""
        if not isinstance(horizons, int) or isinstance(horizons, bool) or horizons < 1:
            raise ValueError(f"`horizons` must be a positive int, got {horizons!r}.")
        rollout = self._rollout_fn(deterministic, training=False)
        fold = torch.func.vmap(random.fold_in, in_dims=(0, None))
        carry = self._fresh_carry(self.env, env_config, fold(fold(self.root_key, EVAL_STREAM), self.steps))
        rewards = []
        with self._matmul_precision():
            for _ in range(horizons):
                carry, traj = rollout(self.params, carry, self._hparams)
                rewards.append(env_rewards(traj))
        rewards = torch.cat(rewards, dim=1)  # [K, horizons * T, N]
        stats = torch.func.vmap(reward_stats)(rewards)
        return self._per_member_stats(stats)

    def predict(self, obs: Any, deterministic: bool = True) -> Any:
        raise TypeError("A population has K policies: act with one member, `population.member(k).predict(obs)`.")

    def hparams_by_member(self) -> dict[str, Any]:
        """The shared config, with a list of per-member values for each
        hyperparameter of :data:`PER_MEMBER` that differs between members."""
        hparams = self.member_config[0].to_dict()
        for name in PER_MEMBER[1:]:
            values = [getattr(c, name) for c in self.member_config]
            hparams[name] = values if len(set(values)) > 1 else values[0]
        return hparams

    # ---------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The whole population's train state (see :meth:`Algorithm.state_dict`):
        stacked tensors, per-member hyperparameters as lists, and which
        members are frozen."""
        data = serialization.state_dict(self)
        data["hparams"] = self.hparams_by_member()
        data["settings"] = {**data["settings"], "seed": list(self.seeds),
                            "optimizer_config": {**data["settings"]["optimizer_config"], "lr": list(self.member_lrs)}}
        # A stop condition freezes a member for one Trainer.run only; a non-finite update for good.
        failed = [why if self.failed(k) else None for k, why in enumerate(self.stopped)]
        data["population"] = {"num_members": self.num_members, "member_steps": list(self.member_steps),
                              "stopped": failed}
        return data

    def load_state_dict(self, data: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` into this (identically configured) population."""
        serialization.load_state_dict(self, data)
        population = data["population"]
        self.member_steps, self.stopped = list(population["member_steps"]), list(population["stopped"])
        self.active = torch.tensor([why is None for why in self.stopped], device=self.device)

    # ---------------------------------------------------------- extraction
    def member_state_dict(self, k: int) -> dict[str, Any]:
        """Member ``k``'s train state in :class:`~rlstack.Algorithm`'s
        checkpoint format (its seed, hyperparameters and counters)."""
        if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < self.num_members:
            raise ValueError(f"`k` must be a member index in [0, {self.num_members}), got {k!r}.")
        data = serialization.state_dict(self)
        data["params"] = {name: value[k] for name, value in data["params"].items()}
        data["opt_state"] = [leaf[k] for leaf in data["opt_state"]]
        if data["carry"] is not None:
            data["carry"] = [leaf[k] for leaf in data["carry"]]
        if self.trajectory is not None:
            data["trajectory"] = serialization.encode_tree(take(self.trajectory, k))
        data["key"] = data["key"][k]
        data["hparams"] = self.member_config[k].to_dict()
        data["settings"] = {**data["settings"], "seed": self.seeds[k],
                            "optimizer_config": {**data["settings"]["optimizer_config"], "lr": self.member_lrs[k]}}
        # Its own counters: a member that was frozen for a while took fewer steps.
        steps = self.member_steps[k]
        pending = self.trajectory is not None and self.stopped[k] is None
        if not pending:
            data["trajectory"] = None
        collects = steps + int(pending)
        data["counters"] = {"horizons": collects, "steps": steps,
                            "env_steps": collects * self.config.num_envs * self.config.horizon}
        return data

    def member(self, k: int) -> Algorithm:
        """Member ``k`` as an ordinary :class:`~rlstack.Algorithm` (a copy):
        the same params, optimizer state, env carry, key and counters; it
        continues exactly as the member would."""
        return Algorithm._from_state_dict(
            self.member_state_dict(k), self._env_spec, model_cls=type(self.policy.model),
            distribution_cls=self.policy.distribution_cls,
        )
