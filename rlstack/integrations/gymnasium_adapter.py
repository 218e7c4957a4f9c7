"""Train on gymnasium vector envs: an episodic :class:`~rlstack.envs.Env` adapter.

``gymnasium`` is an optional extra (``pip install rlstack[gymnasium]``).
Any ``gymnasium.vector.VectorEnv`` whose autoreset mode is ``SAME_STEP``, or
any registered env id (built with ``gymnasium.make_vec(id, num_envs,
vectorization_mode="sync")`` in that mode), trains through
:class:`GymnasiumEnv`:

>>> from rlstack import Trainer                              # doctest: +SKIP
>>> from rlstack.integrations.gymnasium_adapter import gymnasium_env      # doctest: +SKIP
>>> Trainer(gymnasium_env("CartPole-v1"), num_envs=8, horizons_per_env_reset=-1)  # doctest: +SKIP

and ``python -m rlstack train --env gymnasium:CartPole-v1``. Like rlstack
1.x's stateful envs, these run eagerly (NumPy on the CPU, never compiled):
each step copies the actions out and the observations, rewards and flags in
once. Their randomness is gymnasium's own, seeded from the reset key.
Spaces: ``Box`` (bounds reduced to their minimum and maximum; observations
become float32), ``Discrete`` (``start`` 0) and ``Dict`` of those.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np
import optree
import torch

from ..core import random
from ..core.spaces import Box, Discrete, Space
from ..envs import Env
from ..envs._base import check_num_envs

#: ``env_config["vectorization_mode"]`` of a gymnasium id: how its sub-envs are stepped.
VECTORIZATION_MODES = ("sync", "async")
EXTRA_HINT = (
    "gymnasium is not installed: pip install 'rlstack[gymnasium]' (or pip install gymnasium)."
)


def _gymnasium():
    try:
        import gymnasium
    except ImportError as e:
        raise ImportError(EXTRA_HINT) from e
    return gymnasium


def space_from_gymnasium(space: Any, name: str) -> Space:
    """Rlstack's space for a gymnasium ``Box``, ``Discrete`` or ``Dict``.

    Raises:
        ValueError: for any other space, naming it.
    """
    spaces = _gymnasium().spaces
    if isinstance(space, spaces.Dict):
        return {k: space_from_gymnasium(sub, f"{name}[{k!r}]") for k, sub in space.spaces.items()}
    if isinstance(space, spaces.Discrete):
        if int(space.start) != 0:
            raise ValueError(
                f"{name}: Discrete spaces must start at 0, got start={int(space.start)}."
            )
        return Discrete(int(space.n))
    if isinstance(space, spaces.Box) and np.issubdtype(space.dtype, np.floating):
        return Box(space.shape, low=float(np.min(space.low)), high=float(np.max(space.high)))
    raise ValueError(
        f"{name} {space!r} is not supported; expected a float Box, a Discrete or a Dict of them."
    )


class GymnasiumState(NamedTuple):
    """The adapter's state: the real state lives in the gymnasium env.

    Attributes:
        final_obs: leaves ``[N, ...]``, the last step's observations before
            gymnasium's auto-reset (see :meth:`GymnasiumEnv.final_observation`).
    """

    final_obs: Any


class GymnasiumEnv(Env):
    """A ``gymnasium.vector.VectorEnv`` (autoreset mode ``SAME_STEP``) as an
    episodic rlstack env.

    Args:
        vector_env: the vector env; its number of sub-envs is ``num_envs``.
        device: where observations, rewards and flags are put.
        config: the options the vector env was made with
            (``gymnasium.make`` keyword arguments), the one reset ``config``
            it accepts besides None.

    Raises:
        TypeError: if ``vector_env`` is not a ``gymnasium.vector.VectorEnv``
            (a single ``gymnasium.Env`` must be vectorised first).
        ValueError: for another autoreset mode or an unsupported space.
    """

    compilable = False
    episodic = True
    #: What messages call it, and say of its options.
    kind = "gymnasium vector env"
    takes_options = "gymnasium envs take their options at creation (env_config)"

    def __init__(
        self, vector_env: Any, device: Any = "cpu", config: Mapping[str, Any] | None = None
    ) -> None:
        gymnasium = _gymnasium()
        if not isinstance(vector_env, gymnasium.vector.VectorEnv):
            raise TypeError(
                "`vector_env` must be a gymnasium.vector.VectorEnv, got "
                f"{type(vector_env).__name__}; vectorise it "
                "with gymnasium.make_vec(id, num_envs, vectorization_mode='sync', "
                "vector_kwargs={'autoreset_mode': gymnasium.vector.AutoresetMode.SAME_STEP})."
            )
        mode = vector_env.metadata.get("autoreset_mode")
        if mode != gymnasium.vector.AutoresetMode.SAME_STEP:
            raise ValueError(
                "`vector_env` must auto-reset in the same step (AutoresetMode.SAME_STEP), got "
                f"{mode}: in "
                "NEXT_STEP mode every episode end costs a step whose action is ignored."
            )
        self.vector_env, self.device, self.config = (
            vector_env,
            torch.device(device),
            dict(config or {}),
        )
        self.num_envs = int(vector_env.num_envs)
        self.observation_space = space_from_gymnasium(
            vector_env.single_observation_space, "observation_space"
        )
        self.action_space = space_from_gymnasium(vector_env.single_action_space, "action_space")
        self.name = (
            getattr(getattr(vector_env, "spec", None), "id", None) or type(vector_env).__name__
        )
        # success(): long enough for every sub-env to finish its first episode.
        self.eval_steps = int(
            getattr(getattr(vector_env, "spec", None), "max_episode_steps", None) or 1000
        )

    def _obs(self, obs: Any) -> Any:
        if isinstance(self.observation_space, dict):
            return {
                k: self._tensor(obs[k], np.float32 if isinstance(s, Box) else np.int64)
                for k, s in self.observation_space.items()
            }
        return self._tensor(
            obs, np.float32 if isinstance(self.observation_space, Box) else np.int64
        )

    def _tensor(self, array: Any, dtype: Any) -> torch.Tensor:
        """A copy of ``array`` as a ``dtype`` tensor on the device: gymnasium
        reuses its buffers from step to step, so nothing is shared with them.
        """
        tensor = torch.from_numpy(np.array(array, dtype=dtype))
        return tensor if self.device.type == "cpu" else tensor.to(self.device)

    def reset(
        self, key: torch.Tensor, num_envs: int, *, config: Mapping[str, Any] | None = None
    ) -> tuple[Any, Any]:
        """Reset every sub-env, seeding gymnasium from ``key``.

        Raises:
            ValueError: if ``num_envs`` differs from the vector env's or a
                ``config`` other than the one it was made with is given
                (gymnasium envs take their options at creation).
        """
        obs, _ = self.vector_env.reset(seed=self.reset_seed(key, num_envs, config))
        obs = self._obs(obs)
        return GymnasiumState(obs), obs

    def reset_seed(self, key: torch.Tensor, num_envs: int, config: Mapping[str, Any] | None) -> int:
        """The seed a reset draws from ``key``, after checking ``num_envs``
        and ``config`` against what the env was made with (see :meth:`reset`).
        """
        check_num_envs(num_envs, self.num_envs, self.kind)
        if config and dict(config) != self.config:
            raise ValueError(
                f"{self.kind} {self.name} was made with options {self.config}, got reset `config` "
                f"{dict(config)}; {self.takes_options}."
            )
        return int(random.bits(key, (1,))[0])

    def step(
        self, key: torch.Tensor, state: GymnasiumState, action: Any
    ) -> tuple[Any, Any, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step of every sub-env (``key`` is unused: gymnasium draws its own)."""
        obs, reward, terminated, truncated, info = self.vector_env.step(actions_to_numpy(action))
        final_obs = None  # where no episode ended, the final observations are the next ones
        if "_final_obs" in info and np.any(info["_final_obs"]):
            final_obs = _with_final(obs, info["final_obs"], info["_final_obs"])
        return self._stepped(obs, final_obs, reward, terminated, truncated)

    def _stepped(
        self, next_obs: Any, final_obs: Any, reward: Any, terminated: Any, truncated: Any
    ) -> tuple:
        """A step's NumPy results as :meth:`step` returns them; ``final_obs``
        None where no episode ended (then a copy of the next observations:
        two inputs of the rollout's step, never one aliased).
        """
        next_tensors = self._obs(next_obs)
        final = (
            optree.tree_map(torch.clone, next_tensors)
            if final_obs is None
            else self._obs(final_obs)
        )
        return (
            GymnasiumState(final),
            next_tensors,
            self._tensor(reward, np.float32),
            self._tensor(terminated, np.bool_),
            self._tensor(truncated, np.bool_),
        )

    def final_observation(self, state: GymnasiumState) -> Any:
        """See :meth:`rlstack.envs.Env.final_observation`."""
        return state.final_obs

    def __repr__(self) -> str:
        return f"GymnasiumEnv({self.name!r}, num_envs={self.num_envs})"


def actions_to_numpy(action: Any) -> Any:
    """A batch of actions (a tensor, or a dict of them) as NumPy arrays on the host."""
    if isinstance(action, dict):
        return {k: v.detach().cpu().numpy() for k, v in action.items()}
    return action.detach().cpu().numpy()


def _with_final(obs: Any, final: np.ndarray, mask: np.ndarray) -> Any:
    """``obs`` with the ended sub-envs' entries replaced by their final observations."""
    ended = np.flatnonzero(mask)
    if isinstance(obs, dict):
        out = {k: np.array(v, copy=True) for k, v in obs.items()}
        for i in ended:
            for k in out:
                out[k][i] = final[i][k]
        return out
    out = np.array(obs, copy=True)
    for i in ended:
        out[i] = final[i]
    return out


class gymnasium_env:  # noqa: N801 - used like a class: Trainer(gymnasium_env("CartPole-v1"))
    """A registered gymnasium env id to train on: rlstack builds the vector
    env with the run's ``num_envs`` and device (``make_env`` calls
    :meth:`build_env`).

    Args:
        env_id: a gymnasium id such as ``"CartPole-v1"``.
        **make_kwargs: passed on to ``gymnasium.make_vec``'s env; a run's
            ``env_config`` adds to them (``env_config={"ctrl_cost_weight":
            0.1}``, TOML ``[env_config]``), and may name the
            ``vectorization_mode`` (see :meth:`build_env`).

    Raises:
        ImportError: naming the extra, when gymnasium is missing.
        ValueError: for an id gymnasium does not know.
    """

    def __init__(self, env_id: str, **make_kwargs: Any) -> None:
        gymnasium = _gymnasium()
        try:
            gymnasium.spec(env_id)
        except gymnasium.error.Error as e:
            raise ValueError(
                f"--env gymnasium:{env_id}: gymnasium does not know this id ({e})."
            ) from None
        self.env_id, self.make_kwargs = env_id, make_kwargs
        self.__name__ = f"gymnasium:{env_id}"
        self._action_space: Space | None = None

    #: The envs simulated where the run sets no ``num_envs`` (CPU sub-envs, stepped one by one).
    default_num_envs = 8
    #: Every gymnasium env is episodic here (see :class:`GymnasiumEnv`).
    episodic = True

    def build_env(
        self, *, num_envs: int, device: Any = "cpu", config: Mapping[str, Any] | None = None
    ) -> GymnasiumEnv:
        """``num_envs`` copies in a vector env, made with ``make_kwargs`` and
        ``config``: ``gymnasium.make`` keyword arguments, and
        ``vectorization_mode``, ``"sync"`` (default: every sub-env steps in
        this process) or ``"async"`` (worker processes, one per sub-env, with
        shared memory: the sub-envs step in parallel on every core).

        Raises:
            ValueError: for options the env does not take, naming them, or
                another vectorization mode.
        """
        gymnasium = _gymnasium()
        options = {**self.make_kwargs, **(config or {})}
        mode = options.pop("vectorization_mode", "sync")
        if mode not in VECTORIZATION_MODES:
            raise ValueError(
                f"`vectorization_mode` must be one of {list(VECTORIZATION_MODES)}, got {mode!r}."
            )
        try:
            with _mujoco_warnings_once(gymnasium, self.env_id):
                vector_env = gymnasium.make_vec(
                    self.env_id,
                    num_envs=num_envs,
                    vectorization_mode=mode,
                    vector_kwargs={"autoreset_mode": gymnasium.vector.AutoresetMode.SAME_STEP},
                    **options,
                )
        except TypeError as e:
            raise ValueError(
                f"gymnasium:{self.env_id} does not take env_config {dict(config or {})}: {e}"
            ) from None
        return GymnasiumEnv(vector_env, device=device, config=config)

    @property
    def action_space(self) -> Space:
        """The env's action space (the first read builds one copy of the env)."""
        if self._action_space is None:
            gymnasium = _gymnasium()
            with _mujoco_warnings_once(gymnasium, self.env_id):
                env = gymnasium.make(
                    self.env_id,
                    **{k: v for k, v in self.make_kwargs.items() if k != "vectorization_mode"},
                )
            self._action_space = space_from_gymnasium(env.action_space, "action_space")
            env.close()
        return self._action_space

    def __repr__(self) -> str:
        return f"gymnasium_env({self.env_id!r})"


#: The MuJoCo warnings this process has printed (each is printed once, not once per sub-env).
_MUJOCO_WARNED: set[str] = set()


@contextlib.contextmanager
def _mujoco_warnings_once(gymnasium: Any, env_id: str) -> Iterator[None]:
    """While a MuJoCo env is made, print each of MuJoCo's warnings once
    (MuJoCo prints each model's, e.g. a deprecated compiler attribute, once
    per sub-env); other envs, and runs without MuJoCo, are left alone.
    """
    try:
        entry_point = str(gymnasium.spec(env_id).entry_point)
    except Exception:  # an unknown id: make_vec says so
        entry_point = ""
    if "mujoco" not in entry_point:
        yield
        return
    import mujoco

    def warn_once(message: str) -> None:
        if message not in _MUJOCO_WARNED:
            _MUJOCO_WARNED.add(message)
            print(f"MuJoCo warning: {message}", file=sys.stderr, flush=True)

    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(warn_once)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


__all__ = [
    "VECTORIZATION_MODES",
    "GymnasiumEnv",
    "GymnasiumState",
    "gymnasium_env",
    "space_from_gymnasium",
]
