"""The options continuous control needs (issue 23), each against an independent
formulation: CleanRL's ppo_continuous_action arithmetic (or rlstack 1.x's)
written out here, and the continuous preset as the CLI applies it.
"""

import math

import numpy as np
import optree
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlstack import Algorithm, random
from rlstack.cli.arguments import build_parser
from rlstack.cli.config import train_config
from rlstack.core.schedules import by_optimizer_steps, device_schedule, linear_anneal
from rlstack.core.spaces import Box, Discrete
from rlstack.envs import ContinuousDummyEnv, DiscreteDummyEnv
from rlstack.learn.advantages import per_minibatch_standardised
from rlstack.learn.loss import ppo_loss, value_loss_terms
from rlstack.policy.distributions import Normal
from rlstack.policy.models import MLPModel
from rlstack.shell.presets import PRESETS, preset_for

# ---------------------------------------------------------------- the model


def test_a_state_independent_log_std_starts_at_its_value_and_is_cleanrls_normal():
    """CleanRL: ``action_logstd = actor_logstd.expand_as(action_mean)``,
    ``Normal(action_mean, exp(action_logstd)).log_prob(a).sum(1)``.
    """
    model = MLPModel(Box((5,)), Box((3,)), hiddens=(16,), log_std_init=-0.5)
    params = dict(model.named_parameters())
    assert torch.equal(params["log_std"], torch.full((3,), -0.5))
    obs = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    (mean, log_std), _ = model(obs)
    assert torch.equal(log_std, torch.full((7, 3), -0.5))  # the same for every observation
    action = torch.randn(7, 3, generator=torch.Generator().manual_seed(1))
    cleanrl = torch.distributions.Normal(mean, log_std.exp()).log_prob(action).sum(1)
    torch.testing.assert_close(Normal.log_prob((mean, log_std), action), cleanrl)
    torch.testing.assert_close(
        Normal.entropy((mean, log_std)),
        torch.distributions.Normal(mean, log_std.exp()).entropy().sum(1),
    )
    # It is learned: d/d log_std of the summed log-prob is sum_b ((a - mu)^2 / sigma^2 - 1).
    Normal.log_prob(model(obs)[0], action).sum().backward()
    sigma = math.exp(-0.5)
    expected = (((action - mean.detach()) / sigma) ** 2 - 1).sum(0)
    torch.testing.assert_close(model.log_std.grad, expected)
    assert "log_std" not in dict(
        MLPModel(Box((5,)), Box((3,)), hiddens=(16,)).named_parameters()
    )  # 1.x's tanh head
    for bad, space in ((float("nan"), Box((3,))), (True, Box((3,))), (0.0, Discrete(3))):
        with pytest.raises(ValueError, match="`log_std_init` is a finite number for Box actions"):
            MLPModel(Box((5,)), space, hiddens=(16,), log_std_init=bad)


def test_orthogonal_init_is_cleanrls_layer_init():
    """CleanRL's ``layer_init``: orthogonal weights (gain sqrt(2) hidden,
    0.01 on the actor's mean, 1.0 on the critic), zero biases: every
    singular value of a weight equals its gain.
    """
    model = MLPModel(
        Box((11,)),
        Box((3,)),
        hiddens=(64, 32),
        activation_fn="tanh",
        log_std_init=0.0,
        init="orthogonal",
    )
    gains = {
        "actor.0": math.sqrt(2),
        "actor.2": math.sqrt(2),
        "critic.0": math.sqrt(2),
        "critic.2": math.sqrt(2),
        "actor_head": 0.01,
        "critic_head": 1.0,
    }
    params = dict(model.named_parameters())
    for name, gain in gains.items():
        singular = torch.linalg.svdvals(params[f"{name}.weight"].detach())
        torch.testing.assert_close(singular, torch.full_like(singular, gain), rtol=1e-4, atol=1e-6)
        assert not params[f"{name}.bias"].any()
    default = dict(MLPModel(Box((11,)), Box((3,)), hiddens=(64, 32)).named_parameters())
    assert (
        default["actor_head.weight"].abs().max() <= 1e-3 and default["actor.0.bias"].any()
    )  # 1.x's init
    with pytest.raises(
        ValueError, match=r"`init` must be one of \['default', 'orthogonal'\], got 'xavier'"
    ):
        MLPModel(Box((11,)), Box((3,)), init="xavier")


# ---------------------------------------------------------------- advantages per minibatch


@settings(max_examples=30, deadline=None)
@given(
    minibatches=st.integers(1, 6),
    rows=st.integers(2, 9),
    steps=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_per_minibatch_advantages_are_cleanrls(minibatches, rows, steps, seed):
    """CleanRL: ``mb_advantages = b_advantages[mb_inds]``, then
    ``(mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)``,
    for consecutive slices ``mb_inds`` of the epoch's permutation (rows may
    be a recurrent policy's sequences of ``steps``).
    """
    g = torch.Generator().manual_seed(seed)
    size = minibatches * rows
    advantages = torch.randn(size, steps, generator=g).squeeze(-1) * 3 + 1
    order = torch.randperm(size, generator=g)
    ours = per_minibatch_standardised(advantages, order, rows)
    for start in range(0, size, rows):
        mb_inds = order[start : start + rows]
        mb = advantages[mb_inds]
        torch.testing.assert_close(ours[mb_inds], (mb - mb.mean()) / (mb.std() + 1e-8))


def test_the_update_standardises_each_minibatch_with_the_option_and_the_buffer_without():
    seen = []

    def recording(params, batch, hparams, base):
        seen.append(batch.advantages.detach().clone())
        return base(params, batch, hparams)

    from rlstack.learn.loss import make_ppo_loss
    from rlstack.learn.optimizer import make_optimizer
    from rlstack.learn.update import make_update

    for per_minibatch in (True, False):
        seen.clear()
        algo = Algorithm(
            ContinuousDummyEnv,
            num_envs=16,
            horizon=8,
            sgd_minibatch_size=32,
            num_sgd_iters=2,
            compile=False,
            model_config={"hiddens": (8,)},
            seed=0,
            normalize_advantages_per_minibatch=per_minibatch,
        )
        base = make_ppo_loss(algo.policy, algo.config)
        update = make_update(
            algo.policy,
            make_optimizer(algo.config),
            algo.config,
            loss=lambda p, b, h, base=base: recording(p, b, h, base),
        )
        algo.collect()
        update(
            random.key(1),
            algo.params,
            make_optimizer(algo.config).init(algo.params),
            algo.trajectory,
        )
        assert len(seen) == 8  # 4 minibatches x 2 epochs
        means = torch.stack([a.mean() for a in seen])
        stds = torch.stack([a.std() for a in seen])
        if per_minibatch:
            torch.testing.assert_close(means, torch.zeros(8), atol=1e-5, rtol=0)
            torch.testing.assert_close(stds, torch.ones(8), atol=1e-4, rtol=0)
        else:  # standardised over the buffer: a minibatch's own mean and std vary
            assert means.abs().max() > 1e-3 and (stds - 1).abs().max() > 1e-3
            torch.testing.assert_close(
                torch.cat(seen[:4]).mean(), torch.tensor(0.0), atol=1e-5, rtol=0
            )
    with pytest.raises(
        ValueError, match="`normalize_advantages_per_minibatch` needs `normalize_advantages=True`"
    ):
        Algorithm(
            ContinuousDummyEnv,
            num_envs=4,
            horizon=4,
            normalize_advantages=False,
            normalize_advantages_per_minibatch=True,
        )


# ---------------------------------------------------------------- learning rate annealing


@settings(max_examples=20, deadline=None)
@given(
    updates=st.integers(1, 40),
    per_update=st.integers(1, 5000),
    steps=st.integers(1, 12),
    lr=st.floats(1e-5, 1.0),
)
def test_linear_anneal_is_cleanrls_anneal_lr(updates, per_update, steps, lr):
    """CleanRL: ``frac = 1.0 - (update - 1.0) / num_updates; lrnow = frac *
    learning_rate`` for update 1..num_updates, the same for each of its
    optimizer steps, as the device schedule computes it from the step count.
    """
    schedule = by_optimizer_steps(
        device_schedule(
            linear_anneal(lr, updates=updates, transitions_per_update=per_update), "interp"
        ),
        steps_per_update=steps,
        transitions_per_update=per_update,
    )
    for update in range(1, updates + 1):
        lrnow = (1.0 - (update - 1.0) / updates) * lr
        for s in range(steps):
            count = torch.tensor((update - 1) * steps + s)
            assert schedule(count).item() == pytest.approx(lrnow, rel=1e-5, abs=1e-12)


def test_an_annealed_run_logs_cleanrls_learning_rates_and_the_cli_anneals_over_max_steps():
    algo = Algorithm(
        DiscreteDummyEnv,
        num_envs=8,
        horizon=4,
        compile=False,
        model_config={"hiddens": (8,)},
        lr_schedule=linear_anneal(1e-3, updates=4, transitions_per_update=32),
        lr_schedule_kind="interp",
    )
    logged = []
    for _ in range(4):
        algo.collect()
        logged.append(algo.step()["coefficients/lr"])
    assert logged == pytest.approx([1e-3 * (1 - u / 4) for u in range(4)])
    spec = train_config(
        build_parser().parse_args(
            [
                "train",
                "--env",
                "DiscreteDummyEnv",
                "--max-steps",
                "10",
                "--anneal-lr",
                "--lr",
                "0.002",
            ]
        )
    )
    kwargs, notes = spec.trainer_arguments(DiscreteDummyEnv)
    assert kwargs["lr_schedule"] == linear_anneal(
        0.002, updates=10, transitions_per_update=512 * 32
    )
    assert kwargs["lr_schedule_kind"] == "interp" and notes == [
        "learning rate 0.002 annealed linearly to 0 over 10 updates"
    ]
    with pytest.raises(
        ValueError, match="--anneal-lr anneals the learning rate over the run: give --max-steps"
    ):
        train_config(
            build_parser().parse_args(["train", "--env", "DiscreteDummyEnv", "--anneal-lr"])
        )


# ---------------------------------------------------------------- value clipping


@settings(max_examples=30, deadline=None)
@given(B=st.integers(1, 32), k=st.floats(0.01, 3.0), seed=st.integers(0, 2**31 - 1))
def test_value_clipping_relative_is_cleanrls_and_absolute_is_rlstack_1x(B, k, seed):
    g = torch.Generator().manual_seed(seed)
    newvalue, b_values, b_returns = (torch.randn(B, generator=g) * 2 for _ in range(3))
    # CleanRL's clip_vloss, with clip_coef k:
    v_loss_unclipped = (newvalue - b_returns) ** 2
    v_clipped = b_values + torch.clamp(newvalue - b_values, -k, k)
    v_loss_clipped = (v_clipped - b_returns) ** 2
    cleanrl = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
    torch.testing.assert_close(
        value_loss_terms(newvalue, b_values, b_returns, k, "relative").mean(), cleanrl
    )
    # rlstack 1.1.0's ppo_losses: mean(clamp(smooth_l1_loss(values, returns, reduction="none"), 0,
    # vf_clip_param)).
    huber = torch.where(
        (newvalue - b_returns).abs() < 1,
        0.5 * (newvalue - b_returns) ** 2,
        (newvalue - b_returns).abs() - 0.5,
    )
    torch.testing.assert_close(
        value_loss_terms(newvalue, b_values, b_returns, k, "absolute").mean(),
        huber.clamp(0, k).mean(),
    )
    torch.testing.assert_close(
        value_loss_terms(newvalue, b_values, b_returns, None, "absolute"), 0.5 * v_loss_unclipped
    )


def test_ppo_loss_reports_the_clipped_value_loss_it_minimises():
    values, old, returns = (
        torch.tensor([0.0, 3.0]),
        torch.tensor([0.0, 0.0]),
        torch.tensor([0.5, 0.0]),
    )
    zeros = torch.zeros(2)
    common = dict(
        clip_param=0.2, vf_clip_param=1.0, dual_clip_param=None, vf_coeff=1.0, entropy_coeff=0.0
    )
    # absolute: Huber(0.5) = 0.125; Huber(3.0) = 2.5 clipped to 1.0 -> mean 0.5625
    loss, metrics = ppo_loss(
        zeros, zeros, zeros, values, old, returns, zeros, vf_clip_kind="absolute", **common
    )
    assert metrics["losses/vf"].item() == pytest.approx(0.5625) and loss.item() == pytest.approx(
        0.5625
    )
    # relative: 0.5 max(0.25, 0.25) = 0.125; 0.5 max(9, (0 + 1 - 0)^2) = 4.5 -> mean 2.3125
    loss, metrics = ppo_loss(
        zeros, zeros, zeros, values, old, returns, zeros, vf_clip_kind="relative", **common
    )
    assert metrics["losses/vf"].item() == pytest.approx(2.3125)
    with pytest.raises(
        ValueError, match=r"`vf_clip_kind` must be one of \['relative', 'absolute'\], got 'huber'"
    ):
        Algorithm(DiscreteDummyEnv, num_envs=4, horizon=4, vf_clip_kind="huber")


# ---------------------------------------------------------------- the continuous preset


def test_gymnasium_envs_with_box_actions_get_the_continuous_preset_from_the_cli(capsys):
    gymnasium = pytest.importorskip("gymnasium")
    from rlstack.cli import main
    from rlstack.integrations.gymnasium_adapter import gymnasium_env

    assert preset_for("gymnasium:Pendulum-v1", gymnasium_env("Pendulum-v1")) == "continuous"
    assert (
        preset_for("gymnasium:Acrobot-v1", gymnasium_env("Acrobot-v1")) is None
    )  # Discrete actions
    assert preset_for("CartPole-v1", None) == "CartPole-v1"
    spec = train_config(build_parser().parse_args(["train", "--env", "gymnasium:Pendulum-v1"]))
    kwargs, preset = spec.trainer, PRESETS["continuous"]
    assert spec.preset == "continuous" and {k: kwargs[k] for k in preset} == preset
    assert kwargs["model_config"] == {
        "hiddens": (64, 64),
        "activation_fn": "tanh",
        "log_std_init": 0.0,
        "init": "orthogonal",
    }
    # The schedule takes the rate to 0 at CleanRL's 1M env steps: without --max-steps the run stops
    # there.
    max_steps, notes = spec.length(gymnasium_env("Pendulum-v1"))
    assert max_steps == 488 and "reaches 0 after 488 updates (999,424 env steps)" in notes[0]
    # By name from the CLI, with the common options as flags.
    kwargs = train_config(
        build_parser().parse_args(
            [
                "train",
                "--env",
                "ContinuousDummyEnv",
                "--preset",
                "continuous",
                "--activation",
                "relu",
                "--distribution",
                "squashed",
                "--vf-clip-kind",
                "absolute",
            ]
        )
    ).trainer
    from rlstack import SquashedNormal

    assert (
        kwargs["model_config"]["activation_fn"] == "relu"
        and kwargs["distribution_cls"] is SquashedNormal
    )
    assert kwargs["vf_clip_kind"] == "absolute" and kwargs["sgd_minibatch_size"] == 64
    with pytest.raises(
        ValueError, match=r"--preset must be one of \[.*'continuous'.*\], got 'mujoco'"
    ):
        train_config(
            build_parser().parse_args(
                ["train", "--env", "ContinuousDummyEnv", "--preset", "mujoco"]
            )
        )
    assert (
        main(
            [
                "train",
                "--env",
                "gymnasium:Pendulum-v1",
                "--max-steps",
                "1",
                "--num-envs",
                "2",
                "--horizon",
                "32",
                "--num-sgd-iters",
                "1",
                "--compile",
                "false",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "rlstack: preset continuous for gymnasium:Pendulum-v1 "
        "(rlstack.presets.PRESETS['continuous']: "
        "CleanRL's ppo_continuous_action settings, for Box actions); --preset NAME, flags or -f "
        "FILE change it."
    )
    del gymnasium


def test_a_toml_file_selects_the_preset_distribution_and_annealing(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        'env = "ContinuousDummyEnv"\npreset = "continuous"\ndistribution = "normal"\nanneal_lr = '
        "true\n"
        "max_steps = 5\n[model_config]\nlog_std_init = -1.0\n"
    )
    spec = train_config(build_parser().parse_args(["train", "-f", str(path)]))
    kwargs = spec.trainer
    assert spec.preset == "continuous" and spec.anneal_lr and kwargs["distribution_cls"] is Normal
    assert (
        kwargs["model_config"]["log_std_init"] == -1.0
        and kwargs["model_config"]["init"] == "orthogonal"
    )
    kwargs, _ = spec.trainer_arguments(ContinuousDummyEnv)
    assert kwargs["lr_schedule"] == linear_anneal(3e-4, updates=5, transitions_per_update=8 * 256)


def test_env_config_reaches_gymnasium_make():
    pytest.importorskip("gymnasium")
    from rlstack.integrations.gymnasium_adapter import gymnasium_env

    algo = Algorithm(
        gymnasium_env("Pendulum-v1"),
        env_config={"g": 5.0},
        horizon=4,
        model_config={"hiddens": (8,)},
    )
    assert all(env.unwrapped.g == 5.0 for env in algo.env.vector_env.envs)
    algo.collect()
    algo.step()
    with pytest.raises(
        ValueError, match=r"gymnasium:Pendulum-v1 does not take env_config \{'gravity': 5.0\}"
    ):
        Algorithm(gymnasium_env("Pendulum-v1"), env_config={"gravity": 5.0}, horizon=4)
    assert np.isfinite(algo.evaluate()["returns/mean"])


def test_async_gymnasium_envs_step_as_the_sync_ones_on_the_same_seeds():
    """``vectorization_mode="async"`` (worker processes, from env_config or
    --vectorization-mode) gives the sync vector env's trajectory.
    """
    pytest.importorskip("gymnasium")
    from rlstack.integrations.gymnasium_adapter import gymnasium_env

    trajectories = []
    for mode in ("sync", "async"):
        algo = Algorithm(
            gymnasium_env("Pendulum-v1"),
            env_config={"vectorization_mode": mode},
            num_envs=3,
            horizon=8,
            compile=False,
            model_config={"hiddens": (8,)},
            seed=4,
            normalize_obs=True,
        )
        assert (
            type(algo.env.vector_env).__name__
            == {"sync": "SyncVectorEnv", "async": "AsyncVectorEnv"}[mode]
        )
        algo.collect()
        algo.step()
        algo.collect()
        trajectories.append(algo.trajectory)
        algo.env.vector_env.close()
    for a, b in zip(*(optree.tree_leaves(t) for t in trajectories), strict=True):
        assert torch.equal(a, b)
    spec = train_config(
        build_parser().parse_args(
            ["train", "--env", "gymnasium:Pendulum-v1", "--vectorization-mode", "async"]
        )
    )
    assert spec.trainer["env_config"] == {"vectorization_mode": "async"}
    with pytest.raises(
        ValueError, match=r"`vectorization_mode` must be one of \['sync', 'async'\], got 'threads'"
    ):
        Algorithm(
            gymnasium_env("Pendulum-v1"), env_config={"vectorization_mode": "threads"}, horizon=4
        )


def test_mujocos_model_warnings_are_printed_once_not_once_per_sub_env(capfd, monkeypatch):
    pytest.importorskip("mujoco")
    from rlstack.integrations import gymnasium_adapter

    monkeypatch.setattr(gymnasium_adapter, "_MUJOCO_WARNED", set())
    env = gymnasium_adapter.gymnasium_env("HalfCheetah-v5")
    assert env.action_space.shape == (6,)
    env.build_env(num_envs=3)
    env.build_env(num_envs=2)  # an evaluation's envs
    out, err = capfd.readouterr()
    warned = [line for line in (out + err).splitlines() if "settotalmass" in line]
    assert len(warned) == 1 and warned[0].startswith("MuJoCo warning: ")
