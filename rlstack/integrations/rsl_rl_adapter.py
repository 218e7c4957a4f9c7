"""Train on GPU simulators through rsl_rl's ``VecEnv`` protocol: an episodic
:class:`~rlstack.envs.Env` adapter.

Isaac Lab (``RslRlVecEnvWrapper``), ManiSkill3, mjlab and other massively
parallel simulators hand rsl_rl an object with ``num_envs``,
``num_actions``, ``device``, ``max_episode_length``, ``episode_length_buf``,
``get_observations()`` (a TensorDict, or a dict, of observation groups
``[N, ...]``) and ``step(actions) -> (obs, rewards, dones, extras)``, on
their own device, resetting each env where its episode ends. Such an object
trains with rlstack unchanged:

>>> from rlstack import Trainer                                   # doctest: +SKIP
>>> from rlstack.integrations.rsl_rl_adapter import RslRlEnv      # doctest: +SKIP
>>> env = RslRlVecEnvWrapper(gym.make("Isaac-Cartpole-v0", cfg=env_cfg))  # doctest: +SKIP
>>> Trainer(RslRlEnv(env), device=env.device, horizon=24)         # doctest: +SKIP

(docs/guides/rsl_rl.md lists the keyword arguments that reproduce rsl_rl's
PPO settings; there is no preset for a simulator rlstack does not know),

and ``rlstack train --env module:factory`` where ``factory(num_envs=,
device=)`` returns one (see :func:`rsl_rl_env`). Nothing is copied off the
env's device and no NumPy is involved: actions go in as the policy made
them, observations, rewards and flags come back as the env's tensors.
The simulator runs eagerly (``compilable = False``): rlstack's policy step
is compiled around it (:func:`rlstack.learn.steps.split_steps`).

Time-outs and bootstrapping: ``extras["time_outs"]`` marks the ``dones``
that are truncations; the rest are terminations. A truncated episode is
bootstrapped from the value of its final observation. rsl_rl's protocol
does not carry that observation (the env has already reset), so, unless the
wrapper puts it in ``extras[final_obs_key]``, the adapter uses the
observation the ending action was taken from, ``s_t``: the reward of the
truncated step becomes ``r_t + gamma * V(s_t)``, exactly rsl_rl's
approximation (``rewards += gamma * values * time_outs``). A wrapper that
provides the true final observation (as a dict of groups, or a tensor for
a single group) gets ``r_t + gamma * V(s_{t+1})``.

Episode statistics: ``extras["log"]`` (scalars or tensors; a tensor's mean
is taken) is averaged over the steps of each rollout that reported each key
and logged with the collect's stats under rsl_rl's names: a key with a
``/`` as it is (Isaac Lab's ``Episode_Reward/...``), any other as
``Episode/<key>``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch

from ..core import random
from ..core.spaces import Box
from ..envs import Env
from ..envs._base import check_num_envs, where_done

#: Where a wrapper may put the true final observation of the envs that ended (see the module's
# docstring).
FINAL_OBS_KEY = "final_observation"
#: The protocol's attributes and methods, checked at construction.
PROTOCOL = ("num_envs", "num_actions", "device", "get_observations", "step")


def observation_groups(obs: Any, name: str = "observations") -> dict[str, torch.Tensor]:
    """The observation groups of what an rsl_rl env returns, as a plain dict
    ``{group: [N, ...] tensor}``: a TensorDict or dict of groups as it is, a
    tensor as the one group ``"policy"``, and rsl_rl 2.x's ``(obs,
    extras)`` as ``"policy"`` plus ``extras["observations"]``' groups.

    Raises:
        TypeError: for anything else, or a group that is not a tensor.
    """
    if isinstance(obs, tuple) and len(obs) == 2 and isinstance(obs[1], Mapping):  # rsl_rl 2.x
        return {"policy": obs[0], **observation_groups(dict(obs[1].get("observations", {})), name)}
    if isinstance(obs, torch.Tensor):
        return {"policy": obs}
    if not callable(getattr(obs, "keys", None)):
        raise TypeError(
            f"{name} must be a TensorDict, a dict of tensors or a tensor, got {type(obs).__name__}."
        )
    groups = {str(k): obs[k] for k in obs.keys()}  # noqa: SIM118 (a TensorDict)
    for group, value in groups.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{name}[{group!r}] must be a tensor [num_envs, ...], got {type(value).__name__}."
            )
    return groups


def _indexed(device: torch.device) -> torch.device:
    """``cuda`` as the ``cuda:<i>`` it means now (keys name their device's index)."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


class RslRlState(NamedTuple):
    """The adapter's state (the real state lives in the simulator).

    Attributes:
        obs: ``{group: [N, ...]}``, the observation the next action is taken from.
        final_obs: ``{group: [N, ...]}``, each env's final observation of
            the last step (see :meth:`RslRlEnv.final_observation`).
    """

    obs: Any
    final_obs: Any


class RslRlEnv(Env):
    """An env that follows rsl_rl's ``VecEnv`` protocol, as an episodic rlstack env.

    Observations are a dict of the env's observation groups (each a
    float32 ``Box`` of its shape, unbounded), which the default model maps
    to the actor and the critic with ``model_config={"obs_groups":
    {"actor": [...], "critic": [...]}}`` as rsl_rl does; actions a
    ``Box((num_actions,))`` with no bounds (the env clips, as under rsl_rl).

    Args:
        vec_env: the env (any object with the protocol's attributes).
        final_obs_key: the ``extras`` key of the true final observations,
            used where present (see the module's docstring).
        random_episode_starts: at the first reset, spread the envs' episode
            clocks (``episode_length_buf``) uniformly over
            ``[0, max_episode_length)``, drawn from the reset key: rsl_rl's
            ``init_at_random_ep_len``, so time-outs do not all come at once.

    Raises:
        TypeError: if ``vec_env`` lacks an attribute of the protocol, naming it.
    """

    compilable = False
    episodic = True
    #: What messages call it.
    kind = "rsl_rl VecEnv"

    def __init__(
        self,
        vec_env: Any,
        *,
        final_obs_key: str = FINAL_OBS_KEY,
        random_episode_starts: bool = False,
    ) -> None:
        missing = [a for a in PROTOCOL if not hasattr(vec_env, a)]
        if missing:
            raise TypeError(
                f"`vec_env` must follow rsl_rl's VecEnv protocol; {type(vec_env).__name__} has no "
                f"{missing}."
            )
        self.vec_env, self.final_obs_key, self.random_episode_starts = (
            vec_env,
            final_obs_key,
            random_episode_starts,
        )
        self.num_envs, self.device = int(vec_env.num_envs), _indexed(torch.device(vec_env.device))
        groups = observation_groups(vec_env.get_observations(), "get_observations()")
        self.observation_space = {k: Box(tuple(v.shape[1:])) for k, v in groups.items()}
        self.action_space = Box((int(vec_env.num_actions),))
        self.eval_steps = int(getattr(vec_env, "max_episode_length", 1000))
        self.name = type(getattr(vec_env, "unwrapped", vec_env)).__name__
        self._log_sums: dict[str, torch.Tensor] = {}
        self._log_counts: dict[str, int] = {}
        self._started = False

    def _groups(self, obs: Any, name: str) -> dict[str, torch.Tensor]:
        groups = observation_groups(obs, name)
        if set(groups) != set(self.observation_space):
            raise ValueError(
                f"{name} has groups {sorted(groups)}, expected {sorted(self.observation_space)}."
            )
        return {k: groups[k].float() for k in self.observation_space}

    def reset(
        self, key: torch.Tensor, num_envs: int, *, config: Mapping[str, Any] | None = None
    ) -> tuple[Any, Any]:
        """The env's current observations (its envs reset themselves; the
        protocol has no reset), after checking ``num_envs``, the device and
        ``config``; the first reset spreads the episode clocks if asked.

        Raises:
            ValueError: for another ``num_envs``, a ``key`` (the policy's
                device) other than the env's device, or a ``config``.
        """
        check_num_envs(num_envs, self.num_envs, self.kind)
        if key.device != self.device:
            raise ValueError(
                f"The {self.kind} {self.name} runs on {self.device}, the policy on {key.device}: "
                "pass "
                f"device={str(self.device)!r} (rlstack never copies observations between devices)."
            )
        if config:
            raise ValueError(
                f"A {self.kind} takes no reset `config` (its options are the env's cfg), got "
                f"{dict(config)}."
            )
        if self.random_episode_starts and not self._started:
            horizon = int(self.vec_env.max_episode_length)
            buf = self.vec_env.episode_length_buf
            self.vec_env.episode_length_buf = (random.bits(key, tuple(buf.shape)) % horizon).to(
                buf.dtype
            )
        self._started = True
        self._log_sums, self._log_counts = {}, {}
        obs = self._groups(self.vec_env.get_observations(), "get_observations()")
        return RslRlState(obs, obs), obs

    def step(
        self, key: torch.Tensor, state: RslRlState, action: Any
    ) -> tuple[Any, Any, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step of every env (``key`` is unused: the simulator draws its own)."""
        obs, rewards, dones, extras = self.vec_env.step(action)
        obs = self._groups(obs, "step()'s observations")
        n = self.num_envs
        done = dones.reshape(n).bool()
        time_outs = extras.get("time_outs")
        time_out = time_outs.reshape(n).bool() if time_outs is not None else torch.zeros_like(done)
        truncated, terminated = done & time_out, done & ~time_out
        final = extras.get(self.final_obs_key)
        known = (
            self._groups(final, f"extras[{self.final_obs_key!r}]")
            if final is not None
            else state.obs
        )
        final_obs = where_done(done, {k: known[k] for k in obs}, obs)
        self._add_log(extras.get("log"))
        return RslRlState(obs, final_obs), obs, rewards.reshape(n).float(), terminated, truncated

    def final_observation(self, state: RslRlState) -> Any:
        """See :meth:`rlstack.envs.Env.final_observation`."""
        return state.final_obs

    def _add_log(self, log: Mapping[str, Any] | None) -> None:
        """Fold one step's ``extras["log"]`` into the rollout's sums, on device."""
        for key, value in (log or {}).items():
            name = key if "/" in key else f"Episode/{key}"
            mean = torch.as_tensor(value, dtype=torch.float32, device=self.device).mean()
            self._log_sums[name] = self._log_sums[name] + mean if name in self._log_sums else mean
            self._log_counts[name] = self._log_counts.get(name, 0) + 1

    def rollout_log(self) -> dict[str, torch.Tensor]:
        """Each ``extras["log"]`` key's mean over the steps since the last
        call that reported it (0-d tensors on the env's device), then
        forgotten.
        """
        means = {name: total / self._log_counts[name] for name, total in self._log_sums.items()}
        self._log_sums, self._log_counts = {}, {}
        return means

    def __repr__(self) -> str:
        return f"RslRlEnv({self.name}, num_envs={self.num_envs}, device={str(self.device)!r})"


#: ``env_config`` keys that are :class:`RslRlEnv`'s own options, not the factory's arguments
#: (so a TOML file's ``[env_config]`` or ``--random-episode-starts`` reaches the adapter).
ADAPTER_OPTIONS = ("random_episode_starts", "final_obs_key")


class rsl_rl_env:  # noqa: N801 - used like a class: Trainer(rsl_rl_env(make_isaac_env))
    """A function that makes an rsl_rl env, as an rlstack env factory: rlstack
    calls ``factory(num_envs=<the run's>, device=<the run's>, **env_config)``
    and wraps what it returns in :class:`RslRlEnv`. ``rlstack train --env
    module:factory`` does this for any plain function. The ``env_config``
    keys in :data:`ADAPTER_OPTIONS` go to :class:`RslRlEnv` instead of the
    factory, over ``**options``.

    Args:
        factory: makes the env (an Isaac Lab task behind
            ``RslRlVecEnvWrapper``, ManiSkill3's or mjlab's rsl_rl wrapper).
        **options: :class:`RslRlEnv`'s keyword arguments.
    """

    def __init__(self, factory: Callable[..., Any], **options: Any) -> None:
        if not callable(factory):
            raise TypeError(
                "`factory` must be callable (num_envs=, device=) -> an rsl_rl env, got "
                f"{factory!r}."
            )
        self.factory, self.options = factory, options
        self.__name__ = getattr(factory, "__name__", type(factory).__name__)
        self._built: dict[tuple, RslRlEnv] = {}

    #: Every rsl_rl env is episodic (it resets its own envs).
    episodic = True
    #: The envs simulated where the run sets no ``num_envs`` (rsl_rl's locomotion tasks' default).
    default_num_envs = 4096

    def build_env(
        self, *, num_envs: int, device: Any = "cpu", config: Mapping[str, Any] | None = None
    ) -> RslRlEnv:
        """The factory's env for ``num_envs`` envs on ``device``, wrapped;
        made once per arguments (a GPU simulator is one per process, so
        evaluation steps the same one).

        Raises:
            ValueError: if the env made simulates another number of envs.
        """
        factory_config = dict(config or {})
        options = {**self.options}
        for key in ADAPTER_OPTIONS:
            if key in factory_config:
                options[key] = factory_config.pop(key)
        if not isinstance(options.get("random_episode_starts", False), bool):
            raise TypeError(
                "env_config.random_episode_starts must be true or false, got "
                f"{options['random_episode_starts']!r}."
            )
        arguments = (num_envs, str(device), repr(sorted(dict(config or {}).items())))
        if arguments not in self._built:
            env = self.factory(num_envs=num_envs, device=str(device), **factory_config)
            if int(getattr(env, "num_envs", num_envs)) != num_envs:
                raise ValueError(
                    f"{self.__name__}(num_envs={num_envs}) made an env of {env.num_envs} envs."
                )
            self._built[arguments] = RslRlEnv(env, **options)
        return self._built[arguments]

    @property
    def import_spec(self) -> str | None:
        """``module:function`` that imports the factory again (what a checkpoint
        records, so that it is rebuilt without naming the env); ``None`` for
        one that cannot be imported by name (a lambda, a local function, one
        defined in ``__main__``).
        """
        module = getattr(self.factory, "__module__", None)
        qualname = getattr(self.factory, "__qualname__", "")
        if not module or module == "__main__" or "<" in qualname:
            return None
        return f"{module}:{qualname}"

    def __repr__(self) -> str:
        return f"rsl_rl_env({self.__name__})"


__all__ = [
    "ADAPTER_OPTIONS",
    "FINAL_OBS_KEY",
    "RslRlEnv",
    "RslRlState",
    "observation_groups",
    "rsl_rl_env",
]
