"""rlstack's episodic Pendulum-v1 behind rsl_rl's ``VecEnv`` protocol, for
``benchmarks/rsl_rl.py``: the one env both sides train on, imported by both
processes (rsl_rl's venv and this one), so the physics cost the same.

Observations come as a TensorDict where ``tensordict`` is installed (rsl_rl
needs one), else a dict; the group ``policy`` is the 3 Pendulum-v1
features. Episodes time out after 200 steps (``extras["time_outs"]``); the
env keeps every finished episode's return (``finished_returns``), the
independent record of how well either side learned.
"""

from __future__ import annotations

import torch

from rlstack import random
from rlstack.envs import PendulumV1

try:
    from tensordict import TensorDict
except ImportError:  # this side: rlstack reads a dict of groups as well
    TensorDict = None


def runner_config(config: dict) -> dict:
    """rsl_rl's ``OnPolicyRunner`` settings for ``config`` (benchmarks/rsl_rl.py's
    ``rsl_rl_config``): an MLP actor with a Gaussian of initial std 1 and an MLP
    critic, both on the ``policy`` group, ELU.
    """
    return {
        "num_steps_per_env": config["steps"],
        "save_interval": 10**9,
        "obs_groups": {"actor": ["policy"], "critic": ["policy"]},
        "algorithm": {"class_name": "PPO", **config["ppo"]},
        "actor": {
            "class_name": "MLPModel",
            "hidden_dims": config["hidden"],
            "activation": "elu",
            "distribution_cfg": {"class_name": "GaussianDistribution", "init_std": 1.0},
        },
        "critic": {
            "class_name": "MLPModel",
            "hidden_dims": config["hidden"],
            "activation": "elu",
        },
    }


class PendulumVecEnv:
    """``num_envs`` Pendulum-v1 envs on ``device`` (their tensors there, as a
    GPU simulator's are) with rsl_rl's attributes.
    """

    def __init__(self, num_envs: int, seed: int = 0, device: str = "cpu") -> None:
        self.env = PendulumV1()
        self.num_envs, self.num_actions, self.device = num_envs, 1, torch.device(device)
        self.max_episode_length = self.env.max_episode_steps
        self.episode_length_buf = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.cfg: dict = {}
        self._key, self._steps = random.key(seed, self.device), 0
        self.state, self.obs = self.env.reset(random.fold_in(self._key, -1), num_envs)
        self.returns = torch.zeros(num_envs, device=self.device)
        self._finished: list[float] = []
        self._ended: list[tuple[torch.Tensor, torch.Tensor]] = []  # (returns, dones) not read yet

    @property
    def finished_returns(self) -> list[float]:
        """Every finished episode's return, in the order they ended."""
        self._read_ended()
        return self._finished

    def _read_ended(self) -> None:
        """Read the finished returns of the steps not read yet from the device
        (on demand and every 256 steps, so that a step does not wait for it).
        """
        self._finished += [x for returns, dones in self._ended for x in returns[dones].tolist()]
        self._ended.clear()

    def _groups(self, obs: torch.Tensor):
        groups = {"policy": obs}
        return TensorDict(groups, batch_size=[self.num_envs]) if TensorDict is not None else groups

    def get_observations(self):
        return self._groups(self.obs)

    def step(self, actions: torch.Tensor):
        self._steps += 1
        self.state, self.obs, reward, terminated, truncated = self.env.step(
            random.fold_in(self._key, self._steps), self.state, actions.clamp(-2.0, 2.0)
        )
        dones = terminated | truncated
        self.returns += reward
        self._ended.append((self.returns.clone(), dones))
        if len(self._ended) == 256:
            self._read_ended()
        self.returns = torch.where(dones, torch.zeros_like(self.returns), self.returns)
        self.episode_length_buf = torch.where(
            dones, torch.zeros_like(self.episode_length_buf), self.episode_length_buf + 1
        )
        return self._groups(self.obs), reward, dones.float(), {"time_outs": truncated}
