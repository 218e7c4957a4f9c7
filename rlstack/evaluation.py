"""Acting without training: an Algorithm's ``evaluate`` (fresh envs) and
``predict`` (a batch of observations), written as the :class:`Evaluating`
part of :class:`~rlstack.algorithm.Algorithm`. Both leave its training
state (params, carry, training key) untouched."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch

from . import random
from .envs import make_env
from .policy import act_in_env
from .rollout import env_rewards, reward_stats
from .spaces import as_batch, is_numpy, to_numpy

if TYPE_CHECKING:
    from .algorithm import Algorithm

#: Key streams derived from the Algorithm's root key (stream 0 is training).
EVAL_STREAM, PREDICT_STREAM = 1, 2


def sync(stats: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Bring a dict of 0-d tensors to the host with a single device sync."""
    if not stats:
        return {}
    values = torch.stack([v.detach().float().reshape(()) for v in stats.values()]).tolist()
    return dict(zip(stats.keys(), values))


class Evaluating:
    """:class:`~rlstack.algorithm.Algorithm`'s ``evaluate`` and ``predict``."""

    def evaluate(
        self: "Algorithm", *, env_config: Mapping[str, Any] | None = None, deterministic: bool = True,
        horizons: int = 1,
    ) -> dict[str, float]:
        """Roll the current policy out on freshly reset envs without touching
        the training carry or key.

        Args:
            env_config: reset config for the evaluation envs (default: the
                Algorithm's).
            deterministic: act with the distribution's mode.
            horizons: consecutive rollouts of ``horizon`` steps to run.

        Returns:
            ``returns/*`` and ``rewards/*`` over all evaluation steps.
        """
        if not isinstance(horizons, int) or isinstance(horizons, bool) or horizons < 1:
            raise ValueError(f"`horizons` must be a positive int, got {horizons!r}.")
        if self._eval_env is None:  # a stateful env (1.x, gymnasium): evaluate on a second instance
            self._eval_env = make_env(
                self._env_spec, num_envs=self.config.num_envs, horizon=self.config.horizon,
                config=self.env_config, device=self.device,
            )
        env = self._eval_env
        rollout = self._rollout_fn(deterministic, training=False, env=None if env is self.env else env)
        # Evaluation's own key, from the seed and the step: training is the same with or without it.
        key = random.fold_in(random.fold_in(self.root_key, EVAL_STREAM), self.steps)
        carry = self._fresh_carry(env, env_config, key)
        trajectories = []
        with self._matmul_precision():
            for _ in range(horizons):
                carry, traj = rollout(self.params, carry)
                trajectories.append(traj)
        rewards = torch.cat([env_rewards(t) for t in trajectories])
        return sync(reward_stats(rewards))

    def _predict_key(self: "Algorithm", deterministic: bool) -> torch.Tensor | None:
        """The key a stochastic ``predict`` samples from (the predict stream,
        one fold per call; training's key is untouched); ``None`` when
        deterministic."""
        if deterministic:
            return None
        key = random.fold_in(random.fold_in(self.root_key, PREDICT_STREAM), self._predict_calls)
        self._predict_calls += 1
        return key

    def predict(
        self: "Algorithm", obs: Any, deterministic: bool = True, *, memory: Any = None, starts: Any = None
    ) -> Any:
        """Actions of the current policy for a batch of observations.

        A policy with memory (a window of past observations,
        :mod:`rlstack.windows`) also returns it, to pass back with the next
        observations of the same envs: ``actions, memory = predict(obs,
        memory=memory)``.

        Args:
            obs: ``[B, *obs_shape]`` observations as a tensor, NumPy array
                (or dict of them for composite spaces).
            deterministic: take the distribution's mode (default) or sample
                (from the predict key stream: training is left unchanged).
            memory: what the last call returned for these envs; ``None``:
                every env's episode begins at ``obs``. Only for a policy
                with memory.
            starts: ``[B]`` bool, envs whose episode begins at ``obs`` (their
                memory starts over); ``None``: none.

        Returns:
            ``[B, *action_shape]`` actions inside the env's action space (see
            :func:`rlstack.policy.to_action_space`), a NumPy array if ``obs``
            was one, else a tensor on the Algorithm's device; with memory,
            ``(actions, memory)``.

        Raises:
            ValueError: if ``obs`` does not fit the observation space, or
                ``memory`` is passed to a policy without memory.
        """
        actions, memory = self._predict_with_memory(obs, deterministic, memory, starts)
        return (actions, memory) if self.policy.has_memory else actions

    def actor(self: "Algorithm", deterministic: bool = True) -> Callable[[Any], Any]:
        """``act(obs) -> actions`` over successive observations of the same
        envs (e.g. ``env.success(algo.actor())``): a policy with memory
        carries it from one call to the next, every episode beginning at the
        first call; a policy without memory acts as :meth:`predict`."""
        memory = None

        def act(obs: Any) -> Any:
            nonlocal memory
            actions, new_memory = self._predict_with_memory(obs, deterministic, memory, None)
            memory = new_memory if self.policy.has_memory else None
            return actions

        return act

    def _predict_with_memory(
        self: "Algorithm", obs: Any, deterministic: bool, memory: Any, starts: Any
    ) -> tuple[Any, Any]:
        """``(actions, memory)`` for :meth:`predict` (``memory`` ``()`` for a
        policy without memory)."""
        if not self.policy.has_memory and memory is not None:
            raise ValueError(f"`memory` is for a policy with memory (recurrent, or a window of observations); "
                             f"{type(self.policy.model).__name__} has none: pass obs alone.")
        obs_t = as_batch(self.env.observation_space, obs, self.device)
        if starts is not None:
            starts = torch.as_tensor(starts, dtype=torch.bool, device=self.device)
        key = self._predict_key(deterministic)
        action, _, _, memory = act_in_env(
            self.policy, self.params, obs_t, memory, starts, self.env.action_space, obs_moments=self.obs_moments,
            deterministic=deterministic, key=key,
        )
        return (to_numpy(action) if is_numpy(obs) else action), memory
