"""Train on EnvPool's gymnasium envs: the one env protocol over next-step autoreset.

``envpool`` is an optional extra (``pip install rlstack[envpool]``).
``envpool.make(task_id, env_type="gymnasium", num_envs=N)`` steps its envs
in C++ threads and resets an ended episode on the *next* step: that step
ignores the action, returns the new episode's first observation and a
reward of 0. rlstack's protocol resets in the same step, so
:class:`EnvPoolEnv` takes EnvPool's reset step inside its own ``step``, for
the envs that ended only (EnvPool steps a subset by ``env_id``): the step
that ended an episode returns the episode's true last observation as the
final observation (a truncated episode bootstraps from its value, as with
gymnasium's same-step autoreset) and the new episode's first observation
as the next one. The reset step's transition (action ignored, reward 0)
never reaches training, so there is nothing to mask.

>>> from rlstack import Trainer                                         # doctest: +SKIP
>>> from rlstack.integrations.envpool_adapter import envpool_env         # doctest: +SKIP
>>> Trainer(envpool_env("HalfCheetah-v5"), num_envs=8)                   # doctest: +SKIP

and ``rlstack train --env envpool:HalfCheetah-v5``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from ..core.spaces import Space
from .gymnasium_adapter import GymnasiumEnv, GymnasiumState, actions_to_numpy, space_from_gymnasium

EXTRA_HINT = "envpool is not installed: pip install 'rlstack[envpool]' (or pip install envpool)."


def _envpool():
    try:
        import envpool
    except ImportError as e:
        raise ImportError(EXTRA_HINT) from e
    return envpool


class EnvPoolEnv(GymnasiumEnv):
    """An EnvPool gymnasium env pool (next-step autoreset) as an episodic rlstack env.

    Args:
        pool: made by ``envpool.make(task_id, env_type="gymnasium", ...)``
            (any object with its API: ``num_envs``, single-env
            ``observation_space`` and ``action_space``, ``reset(seed=)``,
            ``step(action, env_id=None)``).
        device: where observations, rewards and flags are put.
        config: the options the pool was made with (the one reset
            ``config`` it accepts besides None).
        name: what messages call it (default ``envpool:<class name>``).
        make_pool: ``seed -> pool``, the same pool made anew with ``seed``
            (EnvPool fixes its seeds at ``envpool.make`` and ignores
            ``reset(seed=)``): each reset makes the pool with the seed it
            draws from its key, so two keys give two env streams and one key
            repeats one. ``envpool_env`` passes it; a pool given without it
            keeps the seed it was made with, whatever the key.

    Raises:
        ValueError: for a pool whose batch is not all its envs (EnvPool's
            asynchronous ``batch_size < num_envs`` mode) or an unsupported space.
    """

    kind = "env pool"
    takes_options = "EnvPool takes its options at creation (env_config)"

    def __init__(
        self,
        pool: Any,
        device: Any = "cpu",
        config: Mapping[str, Any] | None = None,
        name: str | None = None,
        make_pool: Callable[[int], Any] | None = None,
    ) -> None:
        pool_config = getattr(pool, "config", {}) or {}
        batch_size = pool_config.get("batch_size", pool.num_envs)
        if batch_size not in (None, 0, pool.num_envs):
            raise ValueError(
                f"`pool` must step all its envs at once (batch_size = num_envs = {pool.num_envs}), "
                f"got batch_size {batch_size}."
            )
        self.vector_env, self.device, self.config = pool, torch.device(device), dict(config or {})
        self.num_envs = int(pool.num_envs)
        self.observation_space = space_from_gymnasium(pool.observation_space, "observation_space")
        self.action_space = space_from_gymnasium(pool.action_space, "action_space")
        self.name = name or f"envpool:{type(pool).__name__}"
        self.eval_steps = int(pool_config.get("max_episode_steps") or 1000)
        self._idle = _zeros_like_action(pool.action_space)
        self.make_pool = make_pool
        self.pool_seed: int | None = None  # the seed of the pool made at the last reset

    def step(self, key: torch.Tensor, state: GymnasiumState, action: Any):
        """One step of every env, and EnvPool's reset step for those that ended (``key`` is
        unused).
        """
        obs, reward, terminated, truncated, _ = self.vector_env.step(actions_to_numpy(action))
        ended = np.flatnonzero(np.logical_or(terminated, truncated))
        if not ended.size:
            return self._stepped(obs, None, reward, terminated, truncated)
        idle = np.stack([self._idle] * ended.size)  # ignored by a reset step
        first_obs, _, _, _, info = self.vector_env.step(idle, env_id=ended)
        # obs: the true last observations of the episodes that ended; the next ones have the reset
        # rows
        return self._stepped(
            _with_rows(obs, np.asarray(info["env_id"]), first_obs),
            obs,
            reward,
            terminated,
            truncated,
        )

    def reset(self, key: torch.Tensor, num_envs: int, *, config: Mapping[str, Any] | None = None):
        """Reset every env; with ``make_pool``, first make the pool with a seed drawn from
        ``key`` (below 2**31, as EnvPool takes; env ``i`` of the pool gets ``seed + i``).

        Raises:
            ValueError: as :meth:`GymnasiumEnv.reset`.
        """
        seed = self.reset_seed(key, num_envs, config) % 2**31
        if self.make_pool is not None and seed != self.pool_seed:
            self.vector_env.close()
            self.vector_env, self.pool_seed = self.make_pool(seed), seed
        obs, _ = self.vector_env.reset()
        obs = self._obs(obs)
        return GymnasiumState(obs), obs

    def __repr__(self) -> str:
        return f"EnvPoolEnv({self.name!r}, num_envs={self.num_envs})"


def _zeros_like_action(space: Any) -> np.ndarray:
    """An action of the single-env ``space`` (any: a reset step ignores it)."""
    return np.zeros(space.shape, dtype=space.dtype)


def _with_rows(obs: Any, ids: np.ndarray, rows: Any) -> Any:
    """``obs`` (``[N, ...]``, or a dict of them) with rows ``ids`` replaced by ``rows``."""
    if isinstance(obs, dict):
        return {k: _with_rows(v, ids, rows[k]) for k, v in obs.items()}
    out = np.array(obs, copy=True)
    out[ids] = rows
    return out


class envpool_env:  # noqa: N801 - used like a class: Trainer(envpool_env("HalfCheetah-v5"))
    """An EnvPool task id to train on: rlstack makes the pool with the run's
    ``num_envs`` (``make_env`` calls :meth:`build_env`).

    Args:
        task_id: an EnvPool id such as ``"HalfCheetah-v5"``.
        **make_kwargs: passed on to ``envpool.make``; a run's ``env_config``
            adds to them.

    Raises:
        ImportError: naming the extra, when envpool is missing.
    """

    #: The envs simulated where the run sets no ``num_envs``.
    default_num_envs = 8
    episodic = True

    def __init__(self, task_id: str, **make_kwargs: Any) -> None:
        _envpool()
        self.task_id, self.make_kwargs = task_id, make_kwargs
        self.__name__ = f"envpool:{task_id}"
        self._action_space: Space | None = None

    def build_env(
        self, *, num_envs: int, device: Any = "cpu", config: Mapping[str, Any] | None = None
    ) -> EnvPoolEnv:
        """A pool of ``num_envs`` envs (all stepped at once), made with ``make_kwargs`` and
        ``config``.

        Raises:
            ValueError: for options EnvPool does not take.
        """
        options = {**self.make_kwargs, **(config or {})}
        if "seed" in options:
            raise ValueError(
                f"envpool:{self.task_id} takes its seed from the run's key, got env_config "
                f"seed {options['seed']!r}; set the run's seed instead."
            )

        def make_pool(seed: int | None = None) -> Any:
            seeded = {} if seed is None else {"seed": seed}
            return _envpool().make(
                self.task_id,
                env_type="gymnasium",
                num_envs=num_envs,
                **options,
                **seeded,
            )

        try:
            pool = make_pool()  # its spaces and options; each reset makes it again, seeded
        except (TypeError, KeyError, ValueError) as e:
            raise ValueError(
                f"envpool:{self.task_id} could not be made with env_config {dict(config or {})}: "
                f"{e}"
            ) from None
        return EnvPoolEnv(
            pool,
            device=device,
            config=config,
            name=f"envpool:{self.task_id}",
            make_pool=make_pool,
        )

    @property
    def action_space(self) -> Space:
        """The task's action space (the first read makes a pool of one env)."""
        if self._action_space is None:
            self._action_space = self.build_env(num_envs=1).action_space
        return self._action_space

    def __repr__(self) -> str:
        return f"envpool_env({self.task_id!r})"


__all__ = ["EnvPoolEnv", "envpool_env"]
