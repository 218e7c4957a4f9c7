"""The pure ``Env`` base class shared by the built-in envs."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import optree
import torch

from ..core import random
from ..core.spaces import Space
from ..core.types import Tree

#: What every env's ``step`` returns: ``(state, obs, reward [N], terminated [N], truncated [N])``.
StepResult = tuple[Tree, Tree, torch.Tensor, torch.Tensor, torch.Tensor]


def where_done(done: torch.Tensor, new: Tree, old: Tree) -> Tree:
    """Per env: ``new`` where ``done`` (``[N]`` bool), else ``old``, leaf by
    leaf (``[N, ...]`` each). A leaf that is the same tensor in both (e.g.
    CartPole's shared ``observed`` mask ``[4]``) is kept as it is.
    """

    def pick(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a is b:
            return a
        return torch.where(done.reshape(-1, *[1] * (a.dim() - 1)), a, b)

    return optree.tree_map(pick, new, old)


def check_num_envs(num_envs: int, fixed: int, what: str) -> None:
    """Raise ``ValueError`` unless a reset asks for the ``fixed`` number of
    envs that ``what`` (an env made at one size) simulates.
    """
    if num_envs != fixed:
        raise ValueError(f"`num_envs` must be {fixed} for this {what}, got {num_envs}.")


class Env:
    """A batched environment made of two pure functions.

    Subclasses set ``observation_space`` and ``action_space`` (spaces of one
    env) and implement ``reset`` and ``step``. Neither may mutate its inputs,
    keep state on ``self``, sync with the host or draw from torch's global
    generator: randomness comes in as a key (:mod:`rlstack.core.random`), so
    both can be compiled and vmapped and the same key gives the same result.

    Every env's ``step`` returns ``(state, obs, reward, terminated,
    truncated)`` with ``[N]`` bool flags. An env whose episodes never end
    (rlstack 1.x's infinite-horizon protocol: every env is reset together
    by the caller) returns all-False flags through :meth:`no_episode_ends`
    and has no :meth:`final_observation`. An episodic env (``episodic =
    True``) resets the envs whose episode ended inside that same pure step
    (auto-reset: ``obs`` is then the new episode's first observation), and
    its :meth:`final_observation` gives the ended episodes' true last
    observation, from which a truncated episode is bootstrapped.

    Class attribute ``default_config`` lists the keys ``reset`` accepts in
    ``config`` and their defaults; :meth:`resolve_config` validates a user's
    config against it.
    """

    observation_space: Space
    action_space: Space
    default_config: Mapping[str, Any] = {}
    #: Whether ``reset``/``step`` may be handed to ``torch.compile``.
    compilable: bool = True
    #: Whether episodes end (``step`` may return True flags and auto-resets those envs).
    episodic: bool = False
    #: Steps :meth:`success` runs a policy for.
    eval_steps: int = 200

    def reset(
        self, key: torch.Tensor, num_envs: int, *, config: Mapping[str, Any] | None = None
    ) -> tuple[Tree, Tree]:
        """Start ``num_envs`` new episodes on the key's device.

        Args:
            key: ``[2]`` int64 random key (:func:`rlstack.core.random.key`).
            num_envs: ``N``.
            config: env parameters (see ``default_config``).

        Returns:
            ``(state, obs)``: the state pytree and the first observation,
            leaves ``[num_envs, ...]``.
        """
        raise NotImplementedError

    def step(self, key: torch.Tensor, state: Tree, action: Tree) -> StepResult:
        """Advance every env by one transition.

        Args:
            key: ``[2]`` int64 random key for any randomness of the step.
            state: the state pytree, leaves ``[N, ...]``.
            action: actions in ``action_space``, leaves ``[N, ...]``.

        Returns:
            ``(state, obs, reward, terminated, truncated)``: new state, its
            observation, the ``[N]`` float reward of the transition and
            ``[N]`` bool flags of the episodes it ended in a terminal state
            or cut short (a time limit).
        """
        raise NotImplementedError

    @staticmethod
    def no_episode_ends(state: Tree, obs: Tree, reward: torch.Tensor) -> StepResult:
        """The step result of an env whose episodes never end:
        ``(state, obs, reward, terminated, truncated)`` with both flags
        all-False ``[N]`` bool, on the reward's device.
        """
        never = torch.zeros(reward.shape, dtype=torch.bool, device=reward.device)
        return state, obs, reward, never, never

    def final_observation(self, state: Tree) -> Tree | None:
        """The observation each env reached in the last step, leaves
        ``[N, ...]``, before any auto-reset replaced it (equal to the
        returned ``obs`` where no episode ended); episodic envs override it.

        Returns ``None`` for an env whose episodes never end: each step's
        observation is its final one (a rollout bootstraps from the next
        step's value).
        """
        return None

    def rollout_log(self) -> dict[str, torch.Tensor]:
        """Statistics an env that runs outside the graph (``compilable =
        False``) reports of its steps since the last call, 0-d tensors,
        logged with each collect's stats (rsl_rl envs' ``extras["log"]``);
        none for a pure env, whose steps keep nothing on ``self``.
        """
        return {}

    def run_policy(
        self,
        act: Callable[[Tree], Tree],
        *,
        num_envs: int,
        config: Mapping[str, Any] | None,
        key: torch.Tensor,
    ) -> Iterator[tuple[Tree, Tree, torch.Tensor]]:
        """Act for ``eval_steps`` steps from fresh resets (drawn from ``key``,
        on its device), without gradients.

        Yields:
            ``(state, obs, reward [N])`` after each step, for a success
            measure to fold over.
        """
        reset_key, step_key = random.split(key)
        state, obs = self.reset(reset_key, num_envs, config=config)
        for t in range(self.eval_steps):
            with torch.no_grad():
                state, obs, reward, _, _ = self.step(random.fold_in(step_key, t), state, act(obs))
            yield state, obs, reward

    def success(
        self,
        act: Callable[[Tree], Tree],
        *,
        num_envs: int = 1024,
        config: Mapping[str, Any] | None = None,
        key: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """The task's own success measure for a policy ``act(obs) -> action``.

        Reports ``success/reward_per_step``, the mean reward per env step over
        :meth:`run_policy` from resets drawn from ``key`` (default
        ``rlstack.core.random.key(0)``, on the CPU). Envs with a sharper notion of
        success override this and add their own keys.
        """
        key = random.key(0) if key is None else key
        if self.episodic:
            return self.episode_success(act, num_envs=num_envs, config=config, key=key)
        total = sum(
            reward
            for _, _, reward in self.run_policy(act, num_envs=num_envs, config=config, key=key)
        )
        return {"success/reward_per_step": (total.mean() / self.eval_steps).item()}

    def episode_success(
        self, act, *, num_envs: int, config: Mapping[str, Any] | None, key: torch.Tensor
    ) -> dict[str, float]:
        """An episodic env's success: ``success/episode_return``, the mean undiscounted
        return of every env's first episode (the number papers report), and
        ``success/episode_length``; envs whose first episode outlasts
        ``eval_steps`` count with their return so far.
        """
        reset_key, step_key = random.split(key)
        state, obs = self.reset(reset_key, num_envs, config=config)
        returns = torch.zeros(num_envs, device=key.device)
        lengths = torch.zeros(num_envs, device=key.device)
        running = torch.ones(num_envs, dtype=torch.bool, device=key.device)
        for t in range(self.eval_steps):
            with torch.no_grad():
                state, obs, reward, terminated, truncated = self.step(
                    random.fold_in(step_key, t), state, act(obs)
                )
            returns += torch.where(running, reward.float(), torch.zeros_like(returns))
            lengths += running.float()
            running &= ~(terminated | truncated)
            if not running.any():
                break
        return {
            "success/episode_return": returns.mean().item(),
            "success/episode_length": lengths.mean().item(),
        }

    def resolve_config(self, config: Mapping[str, Any] | None) -> dict[str, Any]:
        """``default_config`` updated with ``config``.

        Raises:
            ValueError: if ``config`` has a key the env does not know.
            TypeError: if ``config`` is not a mapping.
        """
        if config is None:
            return dict(self.default_config)
        if not isinstance(config, Mapping):
            raise TypeError(f"`config` must be a dict, got {type(config).__name__}.")
        unknown = sorted(set(config) - set(self.default_config))
        if unknown:
            raise ValueError(
                f"{type(self).__name__} `config` has unknown keys {unknown}; "
                f"expected some of {sorted(self.default_config)}."
            )
        return {**self.default_config, **config}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def sample_constants(
    key: torch.Tensor, config: Mapping[str, Any], names: tuple[str, ...], num_envs: int
) -> dict[str, torch.Tensor]:
    """Per-env ``[N]`` float32 tensors for physical constants in ``config``.

    Each constant is a number (the same for every env) or a ``[low, high]``
    pair, sampled uniformly per env at reset (domain randomisation).

    Raises:
        ValueError: for anything else, naming the key.
    """
    out = {}
    for i, name in enumerate(names):
        value = config[name]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = torch.full((num_envs,), float(value), device=key.device)
        elif (
            isinstance(value, (tuple, list))
            and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            and value[0] <= value[1]
        ):
            low, high = float(value[0]), float(value[1])
            out[name] = random.uniform(random.fold_in(key, i), (num_envs,), low=low, high=high)
        else:
            raise ValueError(
                f"`config[{name!r}]` must be a number or a [low, high] range, got {value!r}."
            )
    return out


def check_positive(config: Mapping[str, Any], names: tuple[str, ...]) -> None:
    """Raise ValueError naming the key if a constant (or range) is not > 0."""
    for name in names:
        value = config[name]
        low = min(value) if isinstance(value, (tuple, list)) else value
        if isinstance(low, (int, float)) and not low > 0:
            raise ValueError(f"`config[{name!r}]` must be > 0, got {value!r}.")
