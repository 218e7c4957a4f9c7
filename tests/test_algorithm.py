import math

import numpy as np
import pytest
import torch
from torch import nn

from rlstack import Algorithm, SquashedNormal, optim
from rlstack.env import ContinuousDummyEnv, DiscreteDummyEnv

SMALL = dict(num_envs=32, horizon=8, model_config={"hiddens": (16,)}, compile=False)


class _RecordingEnv(DiscreteDummyEnv):
    built = 0

    def __init__(self):
        type(self).built += 1


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_envs": 0}, ValueError, "`num_envs` must be >= 1, got 0"),
        ({"horizon": -3}, ValueError, "`horizon` must be >= 1, got -3"),
        ({"num_sgd_iters": 0}, ValueError, "`num_sgd_iters` must be >= 1, got 0"),
        ({"num_envs": 2.5}, TypeError, r"`num_envs` must be an int, got 2.5"),
        ({"gamma": 1.5}, ValueError, r"`gamma` must be in \[0, 1\], got 1.5"),
        ({"gae_lambda": -0.1}, ValueError, r"`gae_lambda` must be in \[0, 1\], got -0.1"),
        ({"gamma": float("nan")}, ValueError, "`gamma` must be finite, got nan"),
        ({"clip_param": -0.2}, ValueError, "`clip_param` must be >= 0.0, got -0.2"),
        ({"vf_clip_param": -1.0}, ValueError, "`vf_clip_param` must be >= 0.0, got -1.0"),
        (
            {"dual_clip_param": 0.5},
            ValueError,
            r"`dual_clip_param` must be > 1 \(or None\), got 0.5",
        ),
        ({"max_grad_norm": 0.0}, ValueError, "`max_grad_norm` must be > 0"),
        ({"entropy_coeff": -1.0}, ValueError, "`entropy_coeff` must be >= 0.0"),
        (
            {"num_envs": 32, "horizon": 8, "sgd_minibatch_size": 512},
            ValueError,
            r"`sgd_minibatch_size` must divide num_envs \* horizon = 32 \* 8 = 256 and be at most "
            r"that, got 512",
        ),
        (
            {"num_envs": 32, "horizon": 8, "sgd_minibatch_size": 100},
            ValueError,
            "must divide num_envs",
        ),
        (
            {"lr_schedule": [(0, 1e-3)], "lr_schedule_kind": "cosine"},
            ValueError,
            "`lr_schedule_kind` must be one of",
        ),
        (
            {"entropy_coeff_schedule": [(0, 0.1), (100, 0.0), (50, 0.0)]},
            ValueError,
            "`entropy_coeff_schedule` must be sorted",
        ),
        (
            {"horizons_per_env_reset": 0},
            ValueError,
            "`horizons_per_env_reset` must be a non-zero int",
        ),
        ({"shuffle_minibatches": "yes"}, TypeError, "`shuffle_minibatches` must be a bool"),
        ({"learning_rate": 0.1}, TypeError, r"Unknown hyperparameters \['learning_rate'\]"),
        (
            {"optimizer_cls": torch.optim.RMSprop},
            ValueError,
            "`optimizer_cls` 'RMSprop' is not supported",
        ),
        ({"device": "tpu:0"}, ValueError, "`device` must be a torch device"),
        ({"seed": -1}, ValueError, "`seed` must be a non-negative int or None, got -1"),
    ],
)
def test_bad_hyperparameters_raise_before_env_or_model_is_built(kwargs, error, match):
    _RecordingEnv.built = 0
    with pytest.raises(error, match=match):
        Algorithm(_RecordingEnv, **kwargs)
    assert _RecordingEnv.built == 0


class _WrongValueShape(nn.Module):
    def __init__(self, observation_space, action_space):
        super().__init__()
        self.net = nn.Linear(1, 2)

    def forward(self, obs):
        logits = self.net(obs)
        return logits.unsqueeze(1), logits.sum(-1, keepdim=True)  # value [B, 1], not [B]


class _WrongLogits(nn.Module):
    def __init__(self, observation_space, action_space):
        super().__init__()
        self.net = nn.Linear(1, 3)

    def forward(self, obs):
        return self.net(obs), self.net(obs)[:, 0]  # logits [B, 3]: action [B], not [B, 1]


@pytest.mark.parametrize(
    "model_cls, match",
    [
        (_WrongValueShape, r"must return a value of shape \[B\] = \[3\], got \[3, 1\]"),
        (
            _WrongLogits,
            r"gives actions that do not fit action_space Discrete\(2, shape=\(1,\)\): expected "
            r"shape \[3, 1\], got \[3\]",
        ),
    ],
)
def test_model_whose_outputs_do_not_fit_the_distribution_raises(model_cls, match):
    with pytest.raises(ValueError, match=match):
        Algorithm(DiscreteDummyEnv, model_cls=model_cls, num_envs=8, horizon=4, compile=False)


def test_gaussian_policy_on_a_bounded_box_is_accepted_for_any_seed():
    """Normal samples may leave Box bounds (envs clip them); that is no model error."""
    from rlstack.envs import Pendulum

    for seed in range(8):
        Algorithm(
            Pendulum,
            seed=seed,
            num_envs=8,
            horizon=4,
            model_config={"hiddens": (8,)},
            compile=False,
        )


def test_quick_start_collect_and_step_keys():
    algo = Algorithm(DiscreteDummyEnv, **SMALL)
    collect = algo.collect()
    for key in (
        "returns/mean",
        "returns/std",
        "rewards/mean",
        "env/steps",
        "env/resets",
        "profiling/collect_ms",
    ):
        assert key in collect
    assert collect["env/steps"] == 256
    step = algo.step()
    for key in (
        "losses/policy",
        "losses/vf",
        "losses/entropy",
        "losses/total",
        "monitors/kl_div",
        "monitors/clip_fraction",
        "coefficients/lr",
        "coefficients/entropy",
        "profiling/step_ms",
    ):
        assert key in step and isinstance(step[key], float)
    assert isinstance(algo.params, dict) and algo.policy.model is not None
    with pytest.raises(RuntimeError, match=r"call collect\(\) first"):
        algo.step()


def test_rlstack_1x_style_keyword_combinations_run():
    algo = Algorithm(
        DiscreteDummyEnv,
        optimizer_cls=torch.optim.SGD,
        optimizer_config={"lr": 0.01, "momentum": 0.9},
        accumulate_grads=True,
        enable_amp=True,
        sgd_minibatch_size=64,
        **SMALL,
    )
    algo.collect()
    assert algo.step()["coefficients/lr"] == 0.01
    assert optim.step_count(algo.opt_state).item() == 4  # one step per epoch with accumulation
    algo = Algorithm(
        ContinuousDummyEnv, distribution_cls=SquashedNormal, gae_lambda=0.99, gamma=0.99, **SMALL
    )
    algo.collect()
    algo.step()
    assert algo.predict(np.zeros((5, 1), dtype=np.float32)).shape == (5, 1)


def test_envs_reset_every_horizons_per_env_reset_collects():
    algo = Algorithm(DiscreteDummyEnv, horizons_per_env_reset=2, **SMALL)
    resets = []
    for _ in range(4):
        resets.append(algo.collect()["env/resets"])
        algo.step()
    assert resets == [32, 0, 32, 0]
    # Without a reset the next rollout starts where the last one ended.
    algo.collect()
    last_obs = algo.carry.obs.clone()
    algo.step()
    algo.collect()
    torch.testing.assert_close(algo.trajectory.obs[0], last_obs)


def test_seed_makes_runs_reproducible():
    runs = []
    for _ in range(2):
        algo = Algorithm(DiscreteDummyEnv, seed=7, **SMALL)
        algo.collect()
        runs.append((algo.step(), algo.params))
    assert runs[0][0]["losses/total"] == runs[1][0]["losses/total"]
    for k in runs[0][1]:
        assert torch.equal(runs[0][1][k], runs[1][1][k])


def test_predict_returns_deterministic_actions_of_the_policy_and_checks_obs():
    algo = Algorithm(DiscreteDummyEnv, **SMALL)
    obs = np.linspace(-5, 5, 11, dtype=np.float32).reshape(11, 1)
    actions = algo.predict(obs)
    assert isinstance(actions, np.ndarray) and actions.shape == (11, 1)
    logits, _ = algo.policy.apply(algo.params, torch.as_tensor(obs))
    np.testing.assert_array_equal(actions, logits.argmax(-1).numpy())
    assert isinstance(algo.predict(torch.as_tensor(obs)), torch.Tensor)
    with pytest.raises(
        ValueError,
        match=r"`obs` does not fit observation_space.*expected shape \[11, 1\], got \[11, 2\]",
    ):
        algo.predict(np.zeros((11, 2), dtype=np.float32))


def test_evaluate_leaves_the_training_carry_alone():
    algo = Algorithm(DiscreteDummyEnv, **SMALL)
    algo.collect()
    carry = algo.carry.obs.clone()
    stats = algo.evaluate(env_config={"bounds": 1.0}, horizons=2)
    assert torch.equal(algo.carry.obs, carry)
    assert (
        stats["rewards/min"] >= -1.0 - 16
    )  # started within 1 of the origin, 16 unit moves at most


class _ExplodingEnv(DiscreteDummyEnv):
    def step(self, key, state, action):
        state, obs, reward, terminated, truncated = super().step(key, state, action)
        return state, obs, reward * float("inf"), terminated, truncated


def test_non_finite_rewards_stop_collect_with_the_stat_named():
    algo = Algorithm(_ExplodingEnv, **SMALL)
    with pytest.raises(
        FloatingPointError, match=r"Non-finite returns/min=-inf.* in the rewards of collect 1"
    ):
        algo.collect()


def test_non_finite_update_is_discarded_and_names_step_and_stat():
    algo = Algorithm(DiscreteDummyEnv, **SMALL)
    algo.collect()
    algo.step()
    good = {k: v.clone() for k, v in algo.params.items()}
    algo.collect()
    algo.trajectory = algo.trajectory._replace(rewards=algo.trajectory.rewards * math.nan)
    with pytest.raises(
        FloatingPointError, match=r"Non-finite .*losses/vf=nan.*at step 2 .*params kept from step 1"
    ):
        algo.step()
    for k in good:
        assert torch.equal(algo.params[k], good[k])


@pytest.mark.parametrize("accumulate", [False, True])
def test_the_scheduled_learning_rate_used_on_device_is_the_one_logged(accumulate):
    """The update evaluates the env-transition schedule from its optimizer step
    count; the shell logs it from its transition counter: they agree exactly.
    """
    algo = Algorithm(
        DiscreteDummyEnv,
        lr_schedule=[(0, 1e-3), (700, 1e-4)],
        lr_schedule_kind="interp",
        accumulate_grads=accumulate,
        **{**SMALL, "sgd_minibatch_size": 64},
    )
    logged = []
    for _ in range(4):
        algo.collect()
        stats = algo.step()
        used = optim.learning_rate(algo.opt_state)  # the last step's rate
        assert used.item() == torch.tensor(stats["coefficients/lr"], dtype=torch.float32).item()
        logged.append(stats["coefficients/lr"])
    assert logged[0] > logged[1] > logged[2] and logged[3] == 1e-4


STEP_STATS = ("losses/entropy", "losses/policy", "losses/total", "losses/vf", "monitors/kl_div")


@pytest.mark.parametrize(
    "compile", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["eager", "compiled"]
)
@pytest.mark.parametrize("env_cls", [ContinuousDummyEnv, DiscreteDummyEnv])
@pytest.mark.parametrize("recurrent", [False, True], ids=["feedforward", "recurrent"])
def test_accumulated_minibatches_give_the_whole_buffer_step(recurrent, env_cls, compile):
    """The parity test of rlstack 1.1.0, for each algorithm and env kind, at
    1.x's defaults (compiled included): gradients accumulated over
    minibatches of 64 transitions step exactly as one step on the whole
    buffer (the mean of the minibatch gradients is the whole batch's), so
    the step stats agree to rel_tol 2e-5. Compiled, the
    recurrent policy loss differed by 2.8e-5 while its metrics were float32
    means; since Adam became optax's chain, scale_by_adam then
    scale_by_learning_rate, whose float32 rounding differs from the fused
    formula's, the compiled continuous entropy differs by 1.2e-5: the two
    runs' gradients differ in summation order, and four Adam steps carry
    that rounding into the params; eager, on another CPU's kernels, by
    1.16e-5 too.
    """
    from rlstack import RecurrentAlgorithm

    cls = RecurrentAlgorithm if recurrent else Algorithm
    stats = []
    for kwargs in ({}, {"accumulate_grads": True, "sgd_minibatch_size": 64}):
        algo = cls(
            env_cls, num_envs=64, horizon=32, entropy_coeff=1e-2, seed=42, compile=compile, **kwargs
        )
        algo.collect()
        stats.append(algo.step())
    whole, accumulated = stats
    for key in STEP_STATS:
        assert math.isclose(whole[key], accumulated[key], rel_tol=2e-5), (
            key,
            whole[key],
            accumulated[key],
        )


def test_compile_defaults_to_the_background_strategy_and_is_recorded_as_resolved(tmp_path):
    algo = Algorithm(
        DiscreteDummyEnv,
        num_envs=8,
        horizon=4,
        model_config={"hiddens": (8,)},
        compile_cache=tmp_path,
    )
    assert algo.compile == "background" and algo.build_config["compile"] == "background"
    eager = Algorithm(DiscreteDummyEnv, num_envs=8, horizon=4, compile=False)
    assert eager.compile == "eager" and eager.build_config["compile"] == "eager"
    with pytest.raises(
        TypeError,
        match=r"`compile` must be a bool or None \(the background strategy\), got 'yes'",
    ):
        Algorithm(DiscreteDummyEnv, num_envs=8, horizon=4, compile="yes")
