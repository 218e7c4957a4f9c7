import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from trees import assert_same_shapes

from rlstack import optim, random
from rlstack.core.config import AlgorithmConfig
from rlstack.core.optim import adam
from rlstack.envs import DiscreteDummyEnv
from rlstack.functional import (
    RolloutCarry,
    gae,
    make_optimizer,
    make_rollout,
    make_update,
    ppo_loss,
)
from rlstack.policy.distributions import Categorical
from rlstack.policy.models import MLPModel
from rlstack.policy.policy import Policy


def gae_reference(rewards, values, gamma, lam):
    """Textbook GAE, element by element, in plain Python floats."""
    T, N = len(rewards), len(rewards[0])
    adv = [[0.0] * N for _ in range(T)]
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            delta = rewards[t][n] + gamma * values[t + 1][n] - values[t][n]
            running = delta + gamma * lam * running
            adv[t][n] = running
    return adv


@settings(deadline=None, max_examples=30)
@given(
    T=st.integers(1, 12),
    N=st.integers(1, 5),
    gamma=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 1.0),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_gae_matches_reference_loop(T, N, gamma, lam, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(T, N, generator=g, dtype=dtype)
    values = torch.randn(T + 1, N, generator=g, dtype=dtype)
    adv, ret = gae(rewards, values, gamma=gamma, gae_lambda=lam)
    expected = torch.tensor(
        gae_reference(rewards.tolist(), values.tolist(), gamma, lam), dtype=dtype
    )
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    assert adv.dtype == dtype and adv.shape == (T, N)
    torch.testing.assert_close(adv, expected, **tol)
    torch.testing.assert_close(ret, expected + values[:-1], **tol)


def test_gae_with_gamma_and_lambda_one_is_reward_to_go_plus_bootstrap_minus_value():
    rewards = torch.randn(7, 3, dtype=torch.float64)
    values = torch.randn(8, 3, dtype=torch.float64)
    adv, ret = gae(rewards, values, gamma=1.0, gae_lambda=1.0)
    reward_to_go = rewards.flip(0).cumsum(0).flip(0)
    torch.testing.assert_close(ret, reward_to_go + values[-1])
    torch.testing.assert_close(adv, reward_to_go + values[-1] - values[:-1])


def test_gae_with_lambda_zero_is_one_step_td_error():
    rewards, values = torch.randn(5, 2), torch.randn(6, 2)
    adv, _ = gae(rewards, values, gamma=0.9, gae_lambda=0.0)
    torch.testing.assert_close(adv, rewards + 0.9 * values[1:] - values[:-1])


def episodic_gae_reference(rewards, values, terminated, truncated, final_values, gamma, lam):
    """GAE episode by episode: cut each env's steps into episodes, bootstrap each episode's
    last step from 0 (terminated), its final observation's value (truncated) or values[T]
    (still running at the end of the rollout), and run textbook GAE inside each episode.
    """
    T, N = len(rewards), len(rewards[0])
    adv = [[0.0] * N for _ in range(T)]
    for n in range(N):
        start = 0
        for t in range(T):
            ends = terminated[t][n] or truncated[t][n] or t == T - 1
            if not ends:
                continue
            if terminated[t][n]:
                tail = 0.0
            elif truncated[t][n]:
                tail = final_values[t][n]
            else:
                tail = values[T][n]
            running = 0.0
            for u in reversed(range(start, t + 1)):
                next_value = tail if u == t else values[u + 1][n]
                running = rewards[u][n] + gamma * next_value - values[u][n] + gamma * lam * running
                adv[u][n] = running
            start = t + 1
    return adv


@settings(deadline=None, max_examples=40)
@given(
    T=st.integers(1, 12),
    N=st.integers(1, 4),
    gamma=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 1.0),
    p_end=st.floats(0.0, 0.6),
    seed=st.integers(0, 2**16),
)
def test_gae_with_terminations_and_truncations_matches_an_episode_by_episode_reference(
    T, N, gamma, lam, p_end, seed
):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(T, N, generator=g, dtype=torch.float64)
    values = torch.randn(T + 1, N, generator=g, dtype=torch.float64)
    final_values = torch.randn(T, N, generator=g, dtype=torch.float64)
    ends = torch.rand(T, N, generator=g) < p_end
    terminated = ends & (torch.rand(T, N, generator=g) < 0.5)
    truncated = ends & ~terminated
    adv, ret = gae(
        rewards,
        values,
        gamma=gamma,
        gae_lambda=lam,
        terminated=terminated,
        truncated=truncated,
        final_values=final_values,
    )
    expected = torch.tensor(
        episodic_gae_reference(
            rewards.tolist(),
            values.tolist(),
            terminated.tolist(),
            truncated.tolist(),
            final_values.tolist(),
            gamma,
            lam,
        ),
        dtype=torch.float64,
    )
    torch.testing.assert_close(adv, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ret, expected + values[:-1], rtol=1e-10, atol=1e-10)


def test_gae_never_bootstraps_a_termination_and_bootstraps_a_truncation_from_its_final_value():
    # One env, 3 steps, reward 1, every value 10, final observation's value 5.
    rewards, values, final = torch.ones(3, 1), torch.full((4, 1), 10.0), torch.full((3, 1), 5.0)
    term = torch.tensor([[False], [True], [False]])
    adv, _ = gae(
        rewards,
        values,
        gamma=0.5,
        gae_lambda=1.0,
        terminated=term,
        truncated=torch.zeros_like(term),
        final_values=final,
    )
    # step 1 terminates: 1 + 0 - 10 = -9; step 0: 1 + 0.5*10 - 10 + 0.5*(-9) = -8.5; step 2: 1 +
    # 0.5*10 - 10 = -4
    torch.testing.assert_close(adv.squeeze(-1), torch.tensor([-8.5, -9.0, -4.0]))
    adv, _ = gae(rewards, values, gamma=0.5, gae_lambda=1.0, truncated=term, final_values=final)
    # step 1 is truncated: 1 + 0.5*5 - 10 = -6.5; step 0: -4 + 0.5*(-6.5) = -7.25
    torch.testing.assert_close(adv.squeeze(-1), torch.tensor([-7.25, -6.5, -4.0]))
    with pytest.raises(ValueError, match="`truncated` needs `final_values`"):
        gae(rewards, values, gamma=0.5, gae_lambda=1.0, truncated=term)
    with pytest.raises(
        ValueError, match=r"`terminated` must have the shape of `rewards` \[3, 1\], got \[3\]"
    ):
        gae(rewards, values, gamma=0.5, gae_lambda=1.0, terminated=term.squeeze(-1))


def test_gae_rejects_mismatched_values():
    with pytest.raises(ValueError, match=r"`values` must have shape \[T \+ 1, ...\]"):
        gae(torch.zeros(4, 2), torch.zeros(4, 2), gamma=0.9, gae_lambda=0.9)


def _loss_inputs():
    # Two samples: one with positive advantage whose ratio rose past the clip,
    # one with negative advantage whose ratio rose a lot.
    old_log_probs = torch.tensor([math.log(0.5), math.log(0.2)])
    log_probs = torch.tensor([math.log(0.75), math.log(0.8)])  # ratios 1.5 and 4.0
    advantages = torch.tensor([2.0, -1.0])
    values = torch.tensor([1.0, -3.0])
    old_values = torch.tensor([0.0, -1.0])
    returns = torch.tensor([2.0, 0.0])
    entropy = torch.tensor([0.6, 0.2])
    return log_probs, old_log_probs, advantages, values, old_values, returns, entropy


def test_ppo_loss_by_hand_without_dual_clip():
    loss, m = ppo_loss(
        *_loss_inputs(),
        clip_param=0.2,
        vf_clip_param=0.5,
        dual_clip_param=None,
        vf_coeff=0.5,
        entropy_coeff=0.1,
    )
    # Sample 1: ratio 1.5, A=2: min(3.0, 1.2*2=2.4) = 2.4.
    # Sample 2: ratio 4.0, A=-1: min(-4.0, 1.2*-1=-1.2) = -4.0.
    # policy loss = -(2.4 - 4.0)/2 = 0.8
    torch.testing.assert_close(m["losses/policy"], torch.tensor(0.8))
    # Values: sample 1: (1-2)^2=1; clipped V = 0+clip(1,-.5,.5)=0.5 -> (0.5-2)^2=2.25; max 2.25.
    #         sample 2: (-3-0)^2=9; clipped V = -1+clip(-2)=-1.5 -> 2.25; max 9.
    # vf loss = 0.5 * (2.25 + 9)/2 = 2.8125
    torch.testing.assert_close(m["losses/vf"], torch.tensor(2.8125))
    torch.testing.assert_close(m["losses/entropy"], torch.tensor(0.4))
    # total = 0.8 + 0.5*2.8125 - 0.1*0.4 = 2.16625
    torch.testing.assert_close(loss, torch.tensor(2.16625))
    torch.testing.assert_close(m["losses/total"], loss)
    # KL estimate: mean((r-1) - log r) = ((0.5 - log 1.5) + (3 - log 4)) / 2
    expected_kl = ((0.5 - math.log(1.5)) + (3.0 - math.log(4.0))) / 2
    torch.testing.assert_close(m["monitors/kl_div"], torch.tensor(expected_kl))
    torch.testing.assert_close(m["monitors/clip_fraction"], torch.tensor(1.0))


def test_ppo_loss_dual_clip_bounds_negative_advantage_term():
    _, m = ppo_loss(
        *_loss_inputs(),
        clip_param=0.2,
        vf_clip_param=None,
        dual_clip_param=3.0,
        vf_coeff=1.0,
        entropy_coeff=0.0,
    )
    # Sample 2 now: max(-4.0, 3 * -1) = -3.0 -> policy loss = -(2.4 - 3.0)/2 = 0.3
    torch.testing.assert_close(m["losses/policy"], torch.tensor(0.3))
    # Unclipped value loss: 0.5 * (1 + 9)/2 = 2.5
    torch.testing.assert_close(m["losses/vf"], torch.tensor(2.5))


def test_ppo_loss_gradient_is_zero_where_ratio_is_clipped():
    log_probs = torch.tensor([math.log(0.75), math.log(0.45)], requires_grad=True)
    old = torch.tensor([math.log(0.5), math.log(0.5)])  # ratios 1.5 (clipped) and 0.9 (not)
    adv = torch.tensor([1.0, 1.0])
    zeros = torch.zeros(2)
    loss, _ = ppo_loss(
        log_probs,
        old,
        adv,
        zeros,
        zeros,
        zeros,
        zeros,
        clip_param=0.2,
        vf_clip_param=None,
        dual_clip_param=None,
        vf_coeff=0.0,
        entropy_coeff=0.0,
    )
    loss.backward()
    assert log_probs.grad[0] == 0.0
    torch.testing.assert_close(log_probs.grad[1], torch.tensor(-0.9 / 2))


def _setup(num_envs=16, horizon=8, **hparams):
    env = DiscreteDummyEnv()
    policy = Policy(
        MLPModel(env.observation_space, env.action_space, hiddens=(16, 16)), Categorical
    )
    params = policy.init_params()
    opt = adam(1e-2)
    carry = RolloutCarry(*env.reset(random.key(0), num_envs), random.key(1))
    _, traj = make_rollout(env, policy, horizon)(params, carry)
    update = make_update(
        policy, opt, AlgorithmConfig(**{"num_envs": num_envs, "horizon": horizon, **hparams})
    )
    return params, opt.init(params), traj, update


def test_update_is_pure_and_changes_params():
    params, opt_state, traj, update = _setup(sgd_minibatch_size=32)
    snapshot = {k: v.clone() for k, v in params.items()}
    traj_rewards = traj.rewards.clone()
    new_params, new_state, metrics = update(random.key(3), params, opt_state, traj)
    for k in params:
        assert torch.equal(params[k], snapshot[k])
        assert not torch.equal(new_params[k], params[k])
    assert torch.equal(traj.rewards, traj_rewards) and optim.step_count(opt_state).item() == 0
    assert_same_shapes(new_params, params)
    assert_same_shapes(new_state, opt_state)
    # 4 epochs x 4 minibatches of 32 = 16 optimizer steps.
    assert optim.step_count(new_state).item() == 16
    assert {
        "losses/policy",
        "losses/vf",
        "losses/entropy",
        "losses/total",
        "monitors/kl_div",
        "monitors/clip_fraction",
        "monitors/grad_norm",
        "monitors/param_norm",
    } <= set(metrics)
    assert all(v.dim() == 0 for v in metrics.values())


def test_accumulated_grads_take_one_step_per_epoch_equal_to_full_batch_step():
    """With accumulation, the averaged minibatch gradients of an epoch equal the
    whole-buffer gradient, so the update equals the whole-buffer update.
    """
    params, opt_state, traj, _ = _setup()
    common = dict(num_envs=16, horizon=8, shuffle_minibatches=False, normalize_advantages=True)
    env = DiscreteDummyEnv()
    policy = Policy(
        MLPModel(env.observation_space, env.action_space, hiddens=(16, 16)), Categorical
    )
    accumulating = optim.accumulate_gradients(
        adam(1e-2), every_k=4
    )  # 128 transitions, minibatches of 32
    acc = make_update(
        policy,
        accumulating,
        AlgorithmConfig(**{**common, "sgd_minibatch_size": 32, "accumulate_grads": True}),
    )
    full = make_update(
        policy, adam(1e-2), AlgorithmConfig(**{**common, "sgd_minibatch_size": None})
    )
    p_acc, s_acc, _ = acc(None, params, accumulating.init(params), traj)
    p_full, s_full, _ = full(None, params, opt_state, traj)
    assert optim.step_count(s_acc).item() == 4 == optim.step_count(s_full).item()
    for k in params:
        torch.testing.assert_close(p_acc[k], p_full[k], rtol=1e-4, atol=1e-6)


def test_accumulate_grads_is_the_optimizers_accumulation_and_a_plain_optimizer_is_refused():
    """``make_optimizer`` accumulates an epoch's minibatches
    (``optim.accumulate_gradients``): its update equals the whole-buffer
    update; ``make_update`` refuses an optimizer that does not accumulate.
    """
    params, _, traj, _ = _setup()
    env = DiscreteDummyEnv()
    policy = Policy(
        MLPModel(env.observation_space, env.action_space, hiddens=(16, 16)), Categorical
    )
    common = dict(num_envs=16, horizon=8, shuffle_minibatches=False)
    config = {**common, "sgd_minibatch_size": 32, "accumulate_grads": True}
    accumulating = make_optimizer(AlgorithmConfig(**config), torch.optim.SGD, {"lr": 0.1})
    whole_opt = make_optimizer(
        AlgorithmConfig(**{**common, "sgd_minibatch_size": None}), torch.optim.SGD, {"lr": 0.1}
    )
    p_acc, s_acc, m_acc = make_update(policy, accumulating, AlgorithmConfig(**config))(
        None, params, accumulating.init(params), traj
    )
    p_full, _, _ = make_update(
        policy, whole_opt, AlgorithmConfig(**{**common, "sgd_minibatch_size": None})
    )(None, params, whole_opt.init(params), traj)
    assert isinstance(s_acc, optim.AccumulateState) and m_acc["monitors/sgd_steps"].item() == 4
    for k in params:
        torch.testing.assert_close(p_acc[k], p_full[k], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match=r"`accumulate_grads` needs an optimizer that accumulates"):
        make_update(policy, adam(1e-2), AlgorithmConfig(**config))(
            None, params, adam(1e-2).init(params), traj
        )


def test_update_rejects_minibatch_size_not_dividing_the_trajectory():
    params, opt_state, traj, _ = _setup(num_envs=16, horizon=8)
    env = DiscreteDummyEnv()
    policy = Policy(MLPModel(env.observation_space, env.action_space, hiddens=(16,)), Categorical)
    update = make_update(
        policy, adam(), AlgorithmConfig(**{"num_envs": 20, "horizon": 8, "sgd_minibatch_size": 40})
    )
    with pytest.raises(ValueError, match="`sgd_minibatch_size` 40 must divide the 128 transitions"):
        update(random.key(3), policy.init_params(), adam().init(policy.init_params()), traj)


@pytest.mark.parametrize("accumulate", [False, True])
def test_chunked_minibatches_give_the_same_update(accumulate):
    """Chunks average to the minibatch gradient: same params up to float rounding."""
    params, opt_state, traj, _ = _setup()
    env = DiscreteDummyEnv()
    policy = Policy(
        MLPModel(env.observation_space, env.action_space, hiddens=(16, 16)), Categorical
    )
    common = dict(
        num_envs=16,
        horizon=8,
        shuffle_minibatches=False,
        sgd_minibatch_size=64,
        accumulate_grads=accumulate,
    )
    opt = optim.accumulate_gradients(adam(1e-2), every_k=2) if accumulate else adam(1e-2)
    whole = make_update(policy, opt, AlgorithmConfig(**common))
    chunked = make_update(policy, opt, AlgorithmConfig(**{**common, "sgd_chunk_size": 16}))
    p_whole, s_whole, m_whole = whole(None, params, opt.init(params), traj)
    p_chunk, s_chunk, m_chunk = chunked(None, params, opt.init(params), traj)
    assert (
        optim.step_count(s_whole).item()
        == optim.step_count(s_chunk).item()
        == (4 if accumulate else 8)
    )
    for k in params:
        torch.testing.assert_close(p_chunk[k], p_whole[k], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        m_chunk["losses/total"], m_whole["losses/total"], rtol=1e-5, atol=1e-6
    )


def test_default_chunk_size_is_cache_sized_on_cpu_and_bounded_by_memory_elsewhere():
    from rlstack.learn.minibatches import default_chunk_size

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert default_chunk_size(262_144, cpu) == 8192 and default_chunk_size(4096, cpu) == 4096
    assert default_chunk_size(3 * 5000, cpu) == 7500  # largest divisor up to 8192
    assert default_chunk_size(262_144, cuda) == 262_144  # whole minibatch on a GPU
    assert default_chunk_size(131_072 * 32, cuda) == 1 << 20  # 4M transitions: 4 chunks of 2**20
    assert default_chunk_size(3 * 1_000_000, cuda) == 1_000_000
    # A recurrent minibatch counts sequences of seq_len transitions: 4096 transitions a chunk on
    # CPU.
    assert (
        default_chunk_size(65_536, cpu, seq_len=4) == 1024
        and default_chunk_size(100, cpu, seq_len=16) == 100
    )
    assert default_chunk_size(65_536, cuda, seq_len=4) == 65_536


def test_chunk_size_must_divide_the_minibatch():
    from rlstack.core.config import AlgorithmConfig

    with pytest.raises(
        ValueError, match="`sgd_chunk_size` must divide the minibatch size 128, got 48"
    ):
        AlgorithmConfig(num_envs=16, horizon=8, sgd_minibatch_size=128, sgd_chunk_size=48)


def test_a_custom_loss_term_plugs_into_the_update_without_touching_the_library():
    """``loss=`` replaces the differentiated function; the default is make_ppo_loss."""
    from rlstack.functional import make_ppo_loss

    params, opt_state, traj, _ = _setup(sgd_minibatch_size=32)
    env = DiscreteDummyEnv()
    policy = Policy(
        MLPModel(env.observation_space, env.action_space, hiddens=(16, 16)), Categorical
    )
    config = {"num_envs": 16, "horizon": 8, "sgd_minibatch_size": 32}
    base = make_ppo_loss(policy, AlgorithmConfig(**config))

    def with_l2(p, batch, hparams):
        loss, metrics = base(p, batch, hparams)
        l2 = sum((w**2).sum() for w in p.values())
        return loss + 1.0 * l2, {**metrics, "losses/l2": l2.detach()}

    default = make_update(policy, adam(1e-2), AlgorithmConfig(**config))(
        random.key(3), params, opt_state, traj
    )
    explicit = make_update(policy, adam(1e-2), AlgorithmConfig(**config), loss=base)(
        random.key(3), params, opt_state, traj
    )
    custom = make_update(policy, adam(1e-2), AlgorithmConfig(**config), loss=with_l2)(
        random.key(3), params, opt_state, traj
    )
    for k in params:
        assert torch.equal(default[0][k], explicit[0][k])
    assert "losses/l2" in custom[2] and "losses/l2" not in default[2]
    assert (
        custom[2]["monitors/param_norm"] < default[2]["monitors/param_norm"]
    )  # the L2 term shrinks the weights
