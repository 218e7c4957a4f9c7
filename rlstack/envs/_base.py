"""The pure ``Env`` base class shared by the built-in envs."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

import torch

from ..spaces import Space
from ..types import Tree


class Env:
    """A batched, infinite-horizon environment made of two pure functions.

    Subclasses set ``observation_space`` and ``action_space`` (spaces of one
    env) and implement ``reset`` and ``step``. Neither may mutate its inputs,
    keep state on ``self`` or sync with the host, so both can be compiled and
    vmapped. There are no terminal states: every env is reset together by
    the caller.

    Class attribute ``default_config`` lists the keys ``reset`` accepts in
    ``config`` and their defaults; :meth:`resolve_config` validates a user's
    config against it.
    """

    observation_space: Space
    action_space: Space
    default_config: Mapping[str, Any] = {}
    #: Whether ``reset``/``step`` may be handed to ``torch.compile``.
    compilable: bool = True
    #: Steps :meth:`success` runs a policy for.
    eval_steps: int = 200

    def reset(
        self, num_envs: int, *, config: Mapping[str, Any] | None = None, device: Any = "cpu"
    ) -> tuple[Tree, Tree]:
        """Start ``num_envs`` new episodes.

        Returns:
            ``(state, obs)``: the state pytree and the first observation,
            leaves ``[num_envs, ...]``.
        """
        raise NotImplementedError

    def step(self, state: Tree, action: Tree) -> tuple[Tree, Tree, torch.Tensor]:
        """Advance every env by one transition.

        Returns:
            ``(state, obs, reward)``: new state, its observation and the
            ``[N]`` float reward of the transition.
        """
        raise NotImplementedError

    def run_policy(
        self, act: Callable[[Tree], Tree], *, num_envs: int, config: Mapping[str, Any] | None, device: Any
    ) -> Iterator[tuple[Tree, Tree, torch.Tensor]]:
        """Act for ``eval_steps`` steps from fresh resets, without gradients.

        Yields:
            ``(state, obs, reward [N])`` after each step, for a success
            measure to fold over.
        """
        state, obs = self.reset(num_envs, config=config, device=device)
        for _ in range(self.eval_steps):
            with torch.no_grad():
                state, obs, reward = self.step(state, act(obs))
            yield state, obs, reward

    def success(
        self,
        act: Callable[[Tree], Tree],
        *,
        num_envs: int = 1024,
        config: Mapping[str, Any] | None = None,
        device: Any = "cpu",
    ) -> dict[str, float]:
        """The task's own success measure for a policy ``act(obs) -> action``.

        Reports ``success/reward_per_step``, the mean reward per env step over
        :meth:`run_policy`. Envs with a sharper notion of success override
        this and add their own keys.
        """
        total = sum(reward for _, _, reward in self.run_policy(act, num_envs=num_envs, config=config, device=device))
        return {"success/reward_per_step": (total.mean() / self.eval_steps).item()}

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
    config: Mapping[str, Any], names: tuple[str, ...], num_envs: int, device: Any
) -> dict[str, torch.Tensor]:
    """Per-env ``[N]`` float32 tensors for physical constants in ``config``.

    Each constant is a number (the same for every env) or a ``[low, high]``
    pair, sampled uniformly per env at reset (domain randomisation).

    Raises:
        ValueError: for anything else, naming the key.
    """
    out = {}
    for name in names:
        value = config[name]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = torch.full((num_envs,), float(value), device=device)
        elif (
            isinstance(value, (tuple, list))
            and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            and value[0] <= value[1]
        ):
            low, high = float(value[0]), float(value[1])
            out[name] = low + (high - low) * torch.rand(num_envs, device=device)
        else:
            raise ValueError(f"`config[{name!r}]` must be a number or a [low, high] range, got {value!r}.")
    return out


def check_positive(config: Mapping[str, Any], names: tuple[str, ...]) -> None:
    """Raise ValueError naming the key if a constant (or range) is not > 0."""
    for name in names:
        value = config[name]
        low = min(value) if isinstance(value, (tuple, list)) else value
        if isinstance(low, (int, float)) and not low > 0:
            raise ValueError(f"`config[{name!r}]` must be > 0, got {value!r}.")
