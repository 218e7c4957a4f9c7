"""Recurrent PPO: the hidden state in the rollout, its resets, the exact replay in the update, and "
"the shell.
"""

import optree
import pytest
import torch
from trees import assert_trees_equal

from rlstack import Algorithm, RecurrentAlgorithm, RecurrentTrainer, Trainer, random
from rlstack.core.types import RolloutCarry
from rlstack.envs import CartPole, CartPoleV1
from rlstack.learn.loss import prepare_batch
from rlstack.learn.rollout import make_rollout
from rlstack.learn.transforms import compiled
from rlstack.policy.distributions import Categorical
from rlstack.policy.models import RecurrentModel
from rlstack.policy.policy import Policy


def replay(policy, params, batch):
    """``(log_probs, values)`` ``[B, L]`` of the batch's actions, the policy
    re-run over its sequences (``Policy.replay``).
    """
    dist_inputs, values = policy.replay(params, batch)
    actions = batch.actions.reshape(-1, *batch.actions.shape[2:])
    rows = batch.advantages.shape
    return policy.distribution_cls.log_prob(dist_inputs, actions).reshape(rows), values.reshape(
        rows
    )


SMALL = dict(
    num_envs=16,
    horizon=8,
    seq_len=4,
    sgd_minibatch_size=64,
    compile=False,
    model_config={"hidden_size": 8},
)


def rollout_of(
    env, *, horizon=16, seq_len=4, seqs_per_state_reset=2, rollouts=2, compile=False, num_envs=6
):
    torch.manual_seed(0)
    policy = Policy(
        RecurrentModel(env.observation_space, env.action_space, hidden_size=8), Categorical
    )
    params = {k: v.detach() for k, v in policy.model.named_parameters()}
    state, obs = env.reset(random.key(0), num_envs)
    carry = RolloutCarry(
        state, obs, random.key(1)
    )  # the rollout starts the memory: every env begins an episode
    rollout = make_rollout(
        env, policy, horizon, seq_len=seq_len, seqs_per_state_reset=seqs_per_state_reset
    )
    rollout = compiled(rollout) if compile else rollout
    for _ in range(rollouts):
        carry, traj = rollout(params, carry)
    return policy, params, traj


@pytest.mark.parametrize("env", [CartPole(), CartPoleV1()], ids=["infinite", "episodic"])
def test_the_update_replays_the_rollouts_log_probs_exactly(env):
    policy, params, traj = rollout_of(env)
    batch = prepare_batch(
        traj, gamma=0.99, gae_lambda=0.95, normalize_advantages=True, memory=policy.memory
    )
    log_probs, values = replay(policy, params, batch)
    assert torch.equal(log_probs, batch.log_probs)
    assert torch.allclose(
        values, batch.values, atol=1e-6
    )  # another batch size: matmuls round differently


def test_hidden_states_reset_on_schedule_and_where_episodes_end():
    _, _, traj = rollout_of(CartPoleV1(), horizon=16, seq_len=4, seqs_per_state_reset=2)
    done = traj.terminated | traj.truncated
    ended_before = torch.cat(
        [torch.zeros(1, 6, dtype=torch.bool), done[:-1]]
    )  # the 1st step follows the last rollout
    scheduled = torch.tensor([(16 + t) % 8 == 0 for t in range(16)])[
        :, None
    ]  # steps 16..31, every 2 x 4 steps
    assert torch.equal(traj.memory.resets[1:], (ended_before | scheduled)[1:])
    assert traj.memory.resets[
        0
    ].all()  # step 16 starts a sequence whose index (4) is a multiple of 2
    assert done.any()  # the episodic case is exercised
    hidden, cell = traj.memory.hiddens
    assert hidden.shape == (4, 6, 1, 8)


def test_a_sequence_replays_from_its_own_state_alone_and_a_mid_sequence_reset_forgets_it():
    policy, params, traj = rollout_of(CartPole(), seqs_per_state_reset=-1, rollouts=1)
    resets = traj.memory.resets.clone()
    resets[6, 2] = True  # env 2 resets in the middle of its second sequence (steps 4-7)
    traj = traj._replace(memory=traj.memory._replace(resets=resets))
    batch = prepare_batch(
        traj, gamma=0.99, gae_lambda=0.95, normalize_advantages=False, memory=policy.memory
    )
    row = 1 * 6 + 2  # sequence 1 of env 2
    base, _ = replay(policy, params, batch)
    hiddens = tuple(h.clone() for h in batch.memory.hiddens)
    for h in hiddens:
        h[row] = 5.0
    changed, _ = replay(
        policy, params, batch._replace(memory=batch.memory._replace(hiddens=hiddens))
    )
    assert not torch.equal(
        changed[row, :2], base[row, :2]
    )  # before the reset the stored state matters
    assert torch.equal(changed[row, 2:], base[row, 2:])  # after it, nothing of it is left
    others = torch.arange(batch.memory.resets.shape[0]) != row
    assert torch.equal(changed[others], base[others])  # no state leaks between sequences
    order = torch.randperm(batch.memory.resets.shape[0])
    shuffled, _ = replay(policy, params, optree.tree_map(lambda x: x[order], batch))
    assert torch.equal(shuffled, base[order])


def test_recurrent_algorithm_trains_counts_as_1x_and_resumes_exactly(tmp_path):
    algo = RecurrentAlgorithm(CartPoleV1, seed=0, **SMALL)
    for _ in range(2):
        algo.collect()
        algo.step()
    assert (algo.state.horizons, algo.state.seqs, algo.state.buffered) == (2, 4, False)
    algo.collect()
    path = algo.save_checkpoint(tmp_path / "r.pt")
    resumed = RecurrentAlgorithm.from_checkpoint(path)
    for a in (algo, resumed):
        a.step()
        a.collect()
        a.step()
    assert_trees_equal(algo.params, resumed.params)
    assert_trees_equal(algo.carry.memory, resumed.carry.memory)
    # One loader: the checkpoint's model makes the policy recurrent, whichever class loads it.
    assert Algorithm.from_checkpoint(path).policy.recurrent


def test_predict_carries_the_hidden_state_between_calls():
    algo = RecurrentAlgorithm(CartPole, seed=0, **SMALL)
    obs = torch.randn(5, 4)
    first, hidden = algo.predict(obs)
    assert first.shape == (5,) and hidden[0].shape == (5, 1, 8)
    _, again = algo.predict(obs, hidden=hidden)
    assert not torch.equal(again[0], hidden[0])  # the state moved on
    fresh, fresh_hidden = algo.predict(obs)  # None: the initial state, as the first call
    assert torch.equal(fresh, first) and torch.equal(fresh_hidden[0], hidden[0])


def test_recurrent_trainer_runs_and_resumes_as_recurrent(tmp_path):
    trainer = RecurrentTrainer(CartPole, **SMALL)
    trainer.run(
        stop_conditions=[lambda s: s["algorithm/steps"] >= 2],
        checkpoint_every=2,
        checkpoint_dir=tmp_path,
    )
    trainer.close()
    resumed = Trainer.from_checkpoint(next(tmp_path.glob("*.pt")))
    assert resumed.algorithm.policy.recurrent and resumed.step()["algorithm/steps"] == 3
    resumed.close()
    with pytest.raises(ValueError, match="a population trains feedforward policies .* recurrent"):
        RecurrentTrainer(CartPole, num_members=2, **SMALL)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(horizon=10, sgd_minibatch_size=None), r"`seq_len` 4 must divide `horizon` 10"),
        (dict(sgd_minibatch_size=2), r"`sgd_minibatch_size` 2 must be a multiple of `seq_len` 4"),
        (dict(seqs_per_state_reset=0), r"`seqs_per_state_reset` must be a non-zero int"),
        (dict(seq_len=0), r"`seq_len` must be >= 1"),
    ],
)
def test_bad_recurrent_hyperparameters_are_refused_by_name(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        RecurrentAlgorithm(CartPole, **{**SMALL, **kwargs})


@pytest.mark.slow
def test_compiled_recurrent_training_replays_exactly_enough_and_never_recompiles():
    policy, params, traj = rollout_of(CartPoleV1(), compile=True)
    batch = prepare_batch(
        traj, gamma=0.99, gae_lambda=0.95, normalize_advantages=True, memory=policy.memory
    )
    log_probs, _ = replay(policy, params, batch)
    assert torch.allclose(log_probs, batch.log_probs, atol=1e-5)
    algo = RecurrentAlgorithm(CartPoleV1, seed=0, **{**SMALL, "compile": True})
    algo.collect()
    algo.step()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(2):
            algo.collect()
            algo.step()


def test_cli_trains_and_evaluates_a_recurrent_policy(tmp_path, capsys):
    from rlstack.cli import main

    args = [
        "train",
        "--env",
        "CartPole",
        "--model",
        "gru",
        "--seq-len",
        "8",
        "--max-steps",
        "2",
        "--num-envs",
        "16",
        "--horizon",
        "16",
        "--no-compile",
        "--checkpoint-dir",
        str(tmp_path),
    ]
    assert main(args) == 0
    checkpoint = str(next(tmp_path.glob("*.pt")))
    algo = RecurrentAlgorithm.from_checkpoint(checkpoint)
    assert algo.policy.model.cell == "gru" and algo.config.seq_len == 8
    assert main(["eval", checkpoint, "--num-envs", "8"]) == 0
    assert "success/balanced" in capsys.readouterr().out
    assert main(["train", "--env", "CartPole", "--seq-len", "8", "--max-steps", "1"]) == 2
    assert "--seq-len is for a recurrent policy: add --model lstm or gru" in capsys.readouterr().err


def test_recurrent_policy_keeps_1x_name_and_refuses_a_feedforward_model():
    from rlstack import RecurrentPolicy
    from rlstack.policy.models import MLPModel

    env = CartPole()
    policy = RecurrentPolicy(
        RecurrentModel(env.observation_space, env.action_space, hidden_size=8), Categorical
    )
    assert isinstance(policy, Policy) and policy.recurrent
    h, c = policy.init_states(
        5
    )  # 1.x's name for the first hidden state: zeros, [n, layers, hidden]
    assert h.shape == c.shape == (5, 1, 8) and not h.any() and not c.any()
    with pytest.raises(TypeError, match="RecurrentPolicy needs a recurrent model"):
        RecurrentPolicy(MLPModel(env.observation_space, env.action_space), Categorical)
