"""rsl_rl's adaptive learning rate (``desired_kl``): the rule against rsl_rl's
own arithmetic, and its place in the update (one adaptation per optimizer
step, from the KL before it, kept in the optimizer state and logged).
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlstack import Algorithm, optim, random
from rlstack.core.config import AlgorithmConfig
from rlstack.core.types import RolloutCarry
from rlstack.envs import DiscreteDummyEnv
from rlstack.functional import make_rollout, make_update
from rlstack.policy.distributions import Categorical
from rlstack.policy.models import MLPModel
from rlstack.policy.policy import Policy


def rsl_rl_rule(learning_rate: float, kl_mean: float, desired_kl: float) -> float:
    """rsl_rl 5.5.1's PPO.update (schedule "adaptive"), written out."""
    if kl_mean > desired_kl * 2.0:
        learning_rate = max(1e-5, learning_rate / 1.5)
    elif kl_mean < desired_kl / 2.0 and kl_mean > 0.0:
        learning_rate = min(1e-2, learning_rate * 1.5)
    return learning_rate


@settings(deadline=None, max_examples=200)
@given(
    lr=st.floats(1e-6, 5e-2),
    desired=st.floats(1e-4, 0.1),
    kls=st.lists(st.one_of(st.just(0.0), st.floats(-1e-3, 1.0)), min_size=1, max_size=12),
)
def test_the_rate_follows_rsl_rls_rule_step_after_step(lr, desired, kls):
    state = optim.adam(lr).init({"w": torch.zeros(2)})
    expected = torch.tensor(lr, dtype=torch.float32).item()  # the rate as the state holds it
    for kl in kls:
        state = optim.adapt_learning_rate(state, torch.tensor(kl), desired_kl=desired)
        expected = rsl_rl_rule(expected, torch.tensor(kl).item(), desired)
        assert optim.learning_rate(state).item() == pytest.approx(expected, rel=1e-6)


def _setup(num_envs=32, horizon=8):
    env = DiscreteDummyEnv()
    torch.manual_seed(0)
    policy = Policy(MLPModel(env.observation_space, env.action_space, hiddens=(16,)), Categorical)
    params = policy.init_params()
    _, traj = make_rollout(env, policy, horizon)(
        params, RolloutCarry(*env.reset(random.key(0), num_envs), random.key(1))
    )
    return (
        policy,
        params,
        traj,
        {"num_envs": num_envs, "horizon": horizon, "sgd_minibatch_size": 32, "num_sgd_iters": 2},
    )


def test_every_optimizer_step_adapts_the_rate_from_the_kl_before_it():
    policy, params, traj, config = _setup()
    opt = optim.adam(1e-3)
    steps = 2 * (32 * 8 // 32)  # epochs x minibatches
    # A KL far below desired_kl / 2 raises the rate at every step but the first, whose KL is 0
    # (the params are still the behaviour policy's): 1e-3 * 1.5 ** 15 is capped at 1e-2.
    _, state, metrics = make_update(policy, opt, AlgorithmConfig(**{**config, "desired_kl": 1e6}))(
        random.key(3), params, opt.init(params), traj
    )
    assert optim.learning_rate(state).item() == pytest.approx(
        min(1e-2, 1e-3 * 1.5 ** (steps - 1)), rel=1e-5
    )
    # A KL above twice a tiny desired_kl lowers it at every step after the first, floored at 1e-5.
    _, state, metrics = make_update(
        policy, opt, AlgorithmConfig(**{**config, "desired_kl": 1e-12})
    )(random.key(3), params, opt.init(params), traj)
    assert optim.learning_rate(state).item() == pytest.approx(
        max(1e-5, 1e-3 / 1.5 ** (steps - 1)), rel=1e-5
    )
    assert metrics["coefficients/lr"].item() == optim.learning_rate(state).item()


def test_without_desired_kl_the_rate_stays_and_is_not_an_update_metric():
    policy, params, traj, config = _setup()
    opt = optim.adam(1e-3)
    _, state, metrics = make_update(policy, opt, AlgorithmConfig(**config))(
        random.key(3), params, opt.init(params), traj
    )
    assert (
        optim.learning_rate(state).item() == pytest.approx(1e-3)
        and "coefficients/lr" not in metrics
    )


def test_the_algorithm_logs_the_adapted_rate_and_checkpoints_it(tmp_path):
    algo = Algorithm(
        DiscreteDummyEnv,
        num_envs=32,
        horizon=8,
        sgd_minibatch_size=32,
        num_sgd_iters=2,
        desired_kl=1e-12,
        model_config={"hiddens": (16,)},
        optimizer_config={"lr": 1e-3},
    )
    algo.collect()
    stats = algo.step()
    adapted = optim.learning_rate(algo.opt_state).item()
    assert adapted < 1e-3 and stats["coefficients/lr"] == pytest.approx(adapted)
    restored = Algorithm.from_checkpoint(algo.save_checkpoint(tmp_path / "ckpt.pt"))
    assert optim.learning_rate(restored.opt_state).item() == adapted


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"desired_kl": 0.0}, r"`desired_kl` must be > 0 \(or None\), got 0.0"),
        (
            {"desired_kl": 0.01, "lr_schedule": [(0, 1e-3), (1000, 0.0)]},
            r"`desired_kl` 0.01 adapts the learning rate",
        ),
    ],
)
def test_bad_adaptive_settings_are_refused_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Algorithm(DiscreteDummyEnv, **kwargs)
