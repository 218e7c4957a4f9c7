"""Compiled rollout/update: same numbers as eager, no graph breaks, no recompiles."""

import optree
import pytest
import torch
import torch._dynamo
from hypothesis import given, settings
from hypothesis import strategies as st

from rlstack import Algorithm, SquashedNormal, optim, random
from rlstack.core.config import AlgorithmConfig
from rlstack.core.normalization import init_norm_state
from rlstack.core.optim import adam
from rlstack.envs import ContinuousDummyEnv, DiscreteDummyEnv
from rlstack.functional import RolloutCarry, make_rollout, make_update
from rlstack.learn.transforms import compiled, settled
from rlstack.policy.distributions import Categorical
from rlstack.policy.models import MLPModel
from rlstack.policy.policy import Policy


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


def _run(env, policy, compile, normalize=False, seed=0, num_envs=32, horizon=8):
    params = policy.init_params()
    opt = adam()
    rollout = make_rollout(
        env, policy, horizon, normalize_obs=normalize, normalize_rewards=normalize
    )
    hparams = {
        "num_envs": num_envs,
        "horizon": horizon,
        "sgd_minibatch_size": 64,
        "target_kl": 0.02 if normalize else None,
    }
    update = make_update(policy, opt, AlgorithmConfig(**hparams), entropy_coeff=0.01)
    if compile:  # the pieces compiled from outside; the loops stay in Python
        rollout, update = compiled(rollout), compiled(update)
    torch.manual_seed(seed)
    norm = init_norm_state((1,), num_envs, normalize_obs=normalize, normalize_rewards=normalize)
    carry = RolloutCarry(*env.reset(random.key(0), num_envs), random.key(1), norm)
    opt_state = opt.init(params)
    outputs = []
    for lr in (
        1e-3,
        5e-4,
    ):  # a changed learning rate (a tensor in the optimizer state) must not recompile
        carry, traj = rollout(params, carry)
        opt_state = optim.set_learning_rate(opt_state, torch.tensor(lr))
        params, opt_state, metrics = update(random.key(3), params, opt_state, traj)
        outputs.append((traj, params, metrics))
    return outputs


class EagerContinuousEnv(ContinuousDummyEnv):
    """ContinuousDummyEnv as an env that cannot be compiled (as gymnasium's): the
    rollout compiles around it (``act``, the env, ``learn_then_act``).
    """

    compilable = False


@pytest.mark.parametrize(
    "env, dist, normalize",
    [
        (DiscreteDummyEnv(), Categorical, False),
        (ContinuousDummyEnv(), SquashedNormal, True),
        (EagerContinuousEnv(), SquashedNormal, True),
    ],
    ids=["discrete", "continuous-normalized-target-kl", "around-an-eager-env"],
)
def test_compiled_rollout_and_update_equal_eager_without_graph_breaks(env, dist, normalize):
    torch.manual_seed(0)
    policy = Policy(MLPModel(env.observation_space, env.action_space, hiddens=(32, 32)), dist)
    eager = _run(env, policy, compile=False, normalize=normalize)
    compiled = _run(env, policy, compile=True, normalize=normalize)
    for (traj_e, params_e, metrics_e), (traj_c, params_c, metrics_c) in zip(
        eager, compiled, strict=True
    ):
        for a, b in zip(optree.tree_leaves(traj_e), optree.tree_leaves(traj_c), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        for k in params_e:
            torch.testing.assert_close(params_e[k], params_c[k], rtol=1e-4, atol=1e-5)
        for k in metrics_e:
            torch.testing.assert_close(metrics_e[k], metrics_c[k], rtol=1e-3, atol=1e-4)
    assert not torch._dynamo.utils.counters["graph_break"], dict(
        torch._dynamo.utils.counters["graph_break"]
    )


def test_algorithm_second_iteration_does_not_recompile():
    algo = Algorithm(
        DiscreteDummyEnv,
        num_envs=64,
        horizon=8,
        sgd_minibatch_size=128,
        model_config={"hiddens": (32,)},
        lr_schedule=[(0, 1e-3), (512, 1e-4)],
        lr_schedule_kind="interp",
        entropy_coeff_schedule=[(0, 0.01), (512, 0.0)],
        entropy_coeff_schedule_kind="interp",
        compile=True,
    )
    algo.collect()
    algo.step()
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert frames > 0
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(3):  # the schedules change lr and entropy every step
            algo.collect()
            stats = algo.step()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == frames
    assert stats["coefficients/lr"] < 1e-3
    assert not torch._dynamo.utils.counters["graph_break"]


def test_a_rollout_around_an_eager_env_is_the_rollout_with_the_env_inside():
    """The split steps (act once, then env and learn_then_act; the last next
    action dropped) give the fused step's trajectory and carry bit for bit,
    rollout after rollout.
    """
    env, eager_env = ContinuousDummyEnv(), EagerContinuousEnv()
    torch.manual_seed(0)
    policy = Policy(
        MLPModel(env.observation_space, env.action_space, hiddens=(16,)), SquashedNormal
    )
    params = policy.init_params()
    carries = []
    for e in (env, eager_env):
        rollout = make_rollout(e, policy, 6, normalize_obs=True, normalize_rewards=True)
        assert sorted(rollout.pieces) == (
            ["bootstrap_value", "defaults", "record", "step"]
            if e.compilable
            else ["act", "bootstrap_value", "defaults", "env_step", "learn_then_act", "record"]
        )
        norm = init_norm_state((1,), 16, normalize_obs=True, normalize_rewards=True)
        carry = RolloutCarry(*e.reset(random.key(0), 16), random.key(1), norm)
        trajs = []
        for _ in range(2):
            carry, traj = rollout(params, carry)
            trajs.append(traj)
        carries.append((carry, trajs))
    (fused_carry, fused), (split_carry, split) = carries
    for a, b in zip(
        optree.tree_leaves((fused_carry, fused)),
        optree.tree_leaves((split_carry, split)),
        strict=True,
    ):
        assert torch.equal(a, b)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.sampled_from(["contiguous", "transposed", "expanded", "sliced"]), min_size=1, max_size=6
    )
)
def test_loops_copy_to_contiguous_until_a_steps_outputs_already_are(layouts):
    """``settled``: every leaf comes back contiguous with its values, and the
    loop may stop copying only when every leaf already was (came back as itself).
    """
    base = torch.arange(12.0).reshape(3, 4)
    made = {
        "contiguous": lambda: base.clone(),
        "transposed": lambda: base.t(),
        "expanded": lambda: base[:1].expand(3, 4),
        "sliced": lambda: base[:, ::2],
    }
    tree = {f"leaf{i}": made[layout]() for i, layout in enumerate(layouts)}
    out, stable = settled(tree)
    for name, leaf in tree.items():
        assert out[name].is_contiguous() and torch.equal(out[name], leaf)
    assert stable == all(layout == "contiguous" for layout in layouts)
    assert stable == all(out[name] is leaf for name, leaf in tree.items())
