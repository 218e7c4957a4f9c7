"""Rollouts and GAE give the numbers they gave before the env step and the
acting path were unified (issue 21): stored outputs of rlstack at commit
a345974, one per kind of env and memory, compared with today's.

Regenerate (only on purpose, after a change of the mathematics):
``python tests/test_reference_rollouts.py``.
"""

from pathlib import Path

import pytest
import torch

from rlstack import random
from rlstack.core.normalization import init_norm_state
from rlstack.envs import CartPole, CartPoleV1, DiscreteDummyEnv, Pendulum, PendulumV1
from rlstack.learn.carry import reset_carry
from rlstack.learn.loss import prepare_batch
from rlstack.learn.rollout import make_rollout
from rlstack.policy.distributions import Categorical, SquashedNormal
from rlstack.policy.models import MLPModel, RecurrentModel
from rlstack.policy.policy import Policy

STORED = Path(__file__).parent / "data" / "reference_rollouts.pt"
HORIZON, NUM_ENVS = 8, 4

#: name -> (env, distribution, model kwargs, normalise obs and rewards, rollout kwargs)
SCENARIOS = {
    "cartpole-mlp": (CartPole, Categorical, {"hiddens": (8,)}, False, {}),
    "pendulum-normalised": (Pendulum, SquashedNormal, {"hiddens": (8,)}, True, {}),
    "dummy-window": (DiscreteDummyEnv, Categorical, {"hiddens": (8,), "obs_window": 3}, False, {}),
    "cartpole-gru": (
        CartPole,
        Categorical,
        {"hidden_size": 8},
        False,
        {"seq_len": 4, "seqs_per_state_reset": 1},
    ),
    "cartpole-v1-mlp": (CartPoleV1, Categorical, {"hiddens": (8,)}, True, {}),
    "pendulum-v1-gru": (PendulumV1, SquashedNormal, {"hidden_size": 8}, False, {"seq_len": 4}),
    "cartpole-v1-window": (CartPoleV1, Categorical, {"hiddens": (8,), "obs_window": 2}, False, {}),
}


def run(name: str) -> dict[str, torch.Tensor]:
    """Three rollouts of scenario ``name`` from seeded params and keys, and
    GAE on the last: the tensors a change must not move.
    """
    env_cls, dist_cls, model_config, normalise, rollout_kwargs = SCENARIOS[name]
    env = env_cls()
    model_cls = RecurrentModel if "hidden_size" in model_config else MLPModel
    torch.manual_seed(0)
    policy = Policy(model_cls(env.observation_space, env.action_space, **model_config), dist_cls)
    params = policy.init_params()
    norm = init_norm_state(
        env.observation_space.shape, NUM_ENVS, normalize_obs=normalise, normalize_rewards=normalise
    )
    carry = reset_carry(random.key(7), env, NUM_ENVS, norm=norm, policy=policy)
    rollout = make_rollout(
        env, policy, HORIZON, normalize_obs=normalise, normalize_rewards=normalise, **rollout_kwargs
    )
    for _ in range(3):
        carry, traj = rollout(params, carry)
    batch = prepare_batch(
        traj, gamma=0.99, gae_lambda=0.95, normalize_advantages=True, memory=policy.memory
    )
    return {
        "actions": traj.actions,
        "log_probs": traj.log_probs,
        "values": traj.values,
        "rewards": traj.rewards,
        "advantages": batch.advantages,
        "returns": batch.returns,
        "key": carry.key,
    }


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_rollouts_and_gae_give_the_stored_numbers(name):
    stored = torch.load(STORED, weights_only=True)[name]
    for field, value in run(name).items():
        torch.testing.assert_close(
            value, stored[field], rtol=1e-6, atol=1e-6, msg=f"{name}: {field}"
        )


if __name__ == "__main__":
    STORED.parent.mkdir(exist_ok=True)
    torch.save({name: run(name) for name in SCENARIOS}, STORED)
    print(f"wrote {STORED}")
