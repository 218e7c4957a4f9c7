import optree
import pytest
import torch
from trees import assert_shape_prefix, assert_trees_close, assert_trees_equal

from rlstack import optim, random
from rlstack.core.config import AlgorithmConfig
from rlstack.core.optim import adam
from rlstack.envs import ContinuousDummyEnv, DiscreteDummyEnv
from rlstack.functional import RolloutCarry, make_rollout, make_update
from rlstack.policy.distributions import Categorical, Normal
from rlstack.policy.models import MLPModel
from rlstack.policy.policy import Policy


def _policy(env, dist, seed=0, hiddens=(16, 16)):
    torch.manual_seed(seed)
    return Policy(MLPModel(env.observation_space, env.action_space, hiddens=hiddens), dist)


@pytest.mark.parametrize(
    "env, dist", [(DiscreteDummyEnv(), Categorical), (ContinuousDummyEnv(), Normal)]
)
def test_rollout_shapes_and_consistency(env, dist):
    policy = _policy(env, dist)
    params = policy.init_params()
    T, N = 6, 5
    carry0 = RolloutCarry(*env.reset(random.key(0), N), random.key(1))
    snapshot = carry0.obs.clone()
    carry, traj = make_rollout(env, policy, T)(params, carry0)
    assert traj.obs.shape == (T, N, 1) and traj.actions.shape == (T, N, 1)
    assert (
        traj.log_probs.shape == (T, N)
        and traj.values.shape == (T + 1, N)
        and traj.rewards.shape == (T, N)
    )
    assert torch.equal(carry0.obs, snapshot)  # pure: the input carry is untouched
    torch.testing.assert_close(traj.obs[0], carry0.obs)
    # Each observation is the env's step of the previous one under the recorded action.
    for t in range(T - 1):
        _, next_obs, reward, _, _ = env.step(random.key(2), traj.obs[t], traj.actions[t])
        torch.testing.assert_close(traj.obs[t + 1], next_obs)
        torch.testing.assert_close(traj.rewards[t], reward)
    # Stored log-probs and values are the policy's for the stored obs/actions.
    dist_inputs, values = policy.apply(params, traj.obs.reshape(T * N, 1))
    torch.testing.assert_close(traj.values[:T].reshape(-1), values)
    torch.testing.assert_close(
        traj.log_probs.reshape(-1), dist.log_prob(dist_inputs, traj.actions.reshape(T * N, 1))
    )
    torch.testing.assert_close(traj.values[T], policy.apply(params, carry.obs)[1])


def test_deterministic_rollout_takes_the_mode():
    env = DiscreteDummyEnv()
    policy = _policy(env, Categorical)
    params = policy.init_params()
    _, traj = make_rollout(env, policy, 4, deterministic=True)(
        params, RolloutCarry(*env.reset(random.key(0), 8), random.key(1))
    )
    logits, _ = policy.apply(params, traj.obs.reshape(32, 1))
    torch.testing.assert_close(traj.actions.reshape(32, 1), logits.argmax(-1))


def _stack(*trees):
    return optree.tree_map(lambda *xs: torch.stack(xs), *trees)


def _member(tree, i):
    return optree.tree_map(lambda x: x[i], tree)


def _population(seeds, num_envs=8):
    """Members whose params, env starts and action keys all come from their own seeds."""
    env = DiscreteDummyEnv()
    policy = _policy(env, Categorical)
    members = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = MLPModel(env.observation_space, env.action_space, hiddens=(16, 16))
        params = {k: v.detach().clone() for k, v in model.named_parameters()}
        reset_key, rollout_key = random.split(random.key(seed))
        members.append((params, RolloutCarry(*env.reset(reset_key, num_envs), rollout_key)))
    return env, policy, members


def test_vmap_members_with_the_same_seed_agree_with_each_other_and_the_unbatched_run():
    env, policy, members = _population([3, 3, 4])
    rollout = make_rollout(env, policy, 5)
    params, carry = _stack(*[m[0] for m in members]), _stack(*[m[1] for m in members])
    # No randomness= needed: nothing draws from torch's generator, every member from its own key.
    final, traj = torch.func.vmap(rollout)(params, carry)
    single_final, single = rollout(*members[0])
    assert_shape_prefix(
        (traj.obs, traj.actions, traj.log_probs, traj.rewards), (3, 5, 8)
    )  # [members, T, N, ...]
    assert_shape_prefix(
        traj.values, (3, 6, 8)
    )  # [members, T + 1, N]: the bootstrap value at the end
    for member in (0, 1):  # exact for actions and keys; float rounding for values
        assert_trees_close(
            _member((final, traj), member), (single_final, single), rtol=1.3e-6, atol=1e-5
        )
    assert not torch.equal(traj.rewards[2], traj.rewards[0])  # other seed, other run


def test_rollout_is_a_function_of_its_inputs_and_different_keys_differ():
    env, policy, members = _population([3])
    rollout = make_rollout(env, policy, 5)
    params, carry = members[0]
    before = optree.tree_map(torch.clone, (params, carry))
    first, again = rollout(params, carry), rollout(params, carry)
    assert_trees_equal(first, again)  # same inputs, same outputs
    assert_trees_equal((params, carry), before)  # inputs untouched
    other = rollout(params, carry._replace(key=random.key(99)))
    assert not torch.equal(other[1].actions, first[1].actions)
    assert not torch.equal(first[0].key, carry.key)  # the carry hands on a fresh key


def traj_equal(a, b):
    return all(
        torch.equal(x, y) for x, y in zip(optree.tree_leaves(a), optree.tree_leaves(b), strict=True)
    )


def test_update_batches_under_vmap_over_params_opt_state_trajectory_and_keys():
    env, policy, members = _population([3, 3, 4])
    rollout = make_rollout(env, policy, 4)
    opt = adam(1e-2)
    update = make_update(
        policy, opt, AlgorithmConfig(**{"num_envs": 8, "horizon": 4, "sgd_minibatch_size": 16})
    )
    params, carry = _stack(*[m[0] for m in members]), _stack(*[m[1] for m in members])
    opt_state = torch.func.vmap(opt.init)(params)
    _, traj = torch.func.vmap(rollout)(params, carry)
    keys = torch.stack([random.key(7), random.key(7), random.key(7)])
    new_params, new_state, metrics = torch.func.vmap(update)(keys, params, opt_state, traj)
    single_params, _, single_metrics = update(
        random.key(7), members[0][0], opt.init(members[0][0]), _member(traj, 0)
    )
    for member in (0, 1):
        assert_trees_close(_member(new_params, member), single_params, rtol=1e-5, atol=1e-6)
    for k in single_params:
        assert not torch.equal(new_params[k][2], new_params[k][0])
    assert metrics["losses/total"].shape == (3,) and optim.step_count(new_state).tolist() == [
        8.0,
        8.0,
        8.0,
    ]
    # Each member shuffles its minibatches with its own key: members 0 and 1 are identical
    # (same seed, same trajectory), yet with other keys their two minibatches come in other orders.
    assert torch.equal(traj.obs[0], traj.obs[1]) and torch.equal(traj.actions[0], traj.actions[1])
    other, _, _ = torch.func.vmap(update)(
        torch.stack([random.key(7), random.key(8), random.key(7)]), params, opt_state, traj
    )
    assert any(not torch.equal(other[k][0], other[k][1]) for k in other)
