"""Envs that follow rsl_rl's ``VecEnv`` protocol exactly, written for the tests
(rsl_rl 5.5.1's ``rsl_rl/env/vec_env.py``): what Isaac Lab's
``RslRlVecEnvWrapper`` hands rsl_rl's ``OnPolicyRunner``.
"""

from __future__ import annotations

import torch

from rlstack import random
from rlstack.envs import PendulumV1


class GroupDict(dict):
    """A stand-in for a TensorDict of observation groups (``keys()``, ``[]``, ``batch_size``)."""

    @property
    def batch_size(self) -> torch.Size:
        return torch.Size([next(iter(self.values())).shape[0]])


class ProtocolPendulum:
    """rlstack's episodic Pendulum-v1 behind rsl_rl's protocol: it resets
    each env where its 200-step episode times out, reports ``time_outs``,
    and hands out the groups ``policy`` (cos, sin, angular velocity) and,
    with ``privileged``, ``critic`` (the same plus the raw angle and
    velocity: state the actor does not see). ``extras["log"]`` reports the mean return of the
    episodes that ended (``Episode_Reward/swing``) and their count
    (``resets``), on the steps where some ended, as Isaac Lab does.
    """

    def __init__(
        self,
        num_envs: int = 16,
        device: str = "cpu",
        *,
        privileged: bool = False,
        seed: int = 0,
        tensordict: bool = True,
    ) -> None:
        self.env = PendulumV1()
        self.num_envs, self.num_actions, self.device = num_envs, 1, torch.device(device)
        self.max_episode_length = self.env.max_episode_steps
        self.episode_length_buf = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.cfg = {"privileged": privileged}
        self.privileged, self.tensordict = privileged, tensordict
        self._key = random.key(seed, self.device)
        self.state, self.obs = self.env.reset(random.fold_in(self._key, -1), num_envs)
        self.returns = torch.zeros(num_envs, device=self.device)
        self.steps = 0
        self.logged: list[dict] = []  # every extras["log"] handed out

    def _groups(self, obs: torch.Tensor, state) -> dict:
        groups = {"policy": obs.clone()}
        if self.privileged:
            groups["critic"] = torch.cat([obs, state.env.physics], -1)  # the raw angle and velocity
        return GroupDict(groups) if self.tensordict else groups

    def get_observations(self):
        return self._groups(self.obs, self.state)

    def step(self, actions: torch.Tensor):
        assert actions.shape == (self.num_envs, self.num_actions) and actions.device == self.device
        self.steps += 1
        self.state, self.obs, reward, terminated, truncated = self.env.step(
            random.fold_in(self._key, self.steps), self.state, actions.clamp(-2.0, 2.0)
        )
        self.episode_length_buf += 1
        self.returns += reward
        dones = terminated | truncated
        extras = {"time_outs": truncated.clone()}
        if dones.any():
            extras["log"] = {
                "Episode_Reward/swing": self.returns[dones].mean(),
                "resets": float(dones.sum()),
            }
            self.logged.append(extras["log"])
        self.returns = torch.where(dones, torch.zeros_like(self.returns), self.returns)
        self.episode_length_buf = torch.where(
            dones, torch.zeros_like(self.episode_length_buf), self.episode_length_buf
        )
        return self._groups(self.obs, self.state), reward.clone(), dones.float(), extras


def make_pendulum(num_envs: int, device: str, **options) -> ProtocolPendulum:
    """The factory ``rlstack train --env rsl_rl_envs:make_pendulum`` calls."""
    return ProtocolPendulum(num_envs, device, **options)


class Scripted:
    """A protocol env whose episodes end where the test says: ``ends[t]`` is
    a list of ``(env, time_out)`` ending at step ``t + 1``. Observations
    count the steps: group ``policy`` is ``[t, env]``; a reset env's
    observation is ``[-1, env]``. With ``final_obs``, ``extras`` carries
    the true last observation ``[t, env]`` of the envs that ended.
    """

    def __init__(
        self, num_envs: int, ends: dict[int, list[tuple[int, bool]]], final_obs: bool = False
    ) -> None:
        self.num_envs, self.num_actions, self.device = num_envs, 2, torch.device("cpu")
        self.max_episode_length, self.cfg = 100, {}
        self.episode_length_buf = torch.zeros(num_envs, dtype=torch.long)
        self.ends, self.final_obs, self.t = ends, final_obs, 0
        self.obs = torch.stack(
            [torch.zeros(num_envs), torch.arange(num_envs, dtype=torch.float32)], -1
        )

    def get_observations(self):
        return {"policy": self.obs.clone()}

    def step(self, actions):
        self.t += 1
        true_obs = torch.stack(
            [
                torch.full((self.num_envs,), float(self.t)),
                torch.arange(self.num_envs, dtype=torch.float32),
            ],
            -1,
        )
        dones, time_outs = torch.zeros(self.num_envs), torch.zeros(self.num_envs, dtype=torch.bool)
        for env, time_out in self.ends.get(self.t - 1, []):
            dones[env], time_outs[env] = 1.0, time_out
        self.obs = torch.where(
            dones.bool().unsqueeze(-1),
            torch.tensor([-1.0, 0.0]) + true_obs * torch.tensor([0.0, 1.0]),
            true_obs,
        )
        extras = {"time_outs": time_outs}
        if self.final_obs:
            extras["final_observation"] = {"policy": true_obs}
        return {"policy": self.obs.clone()}, torch.ones(self.num_envs), dones, extras
