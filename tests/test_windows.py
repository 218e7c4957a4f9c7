"""Observation-history windows: padding at episode starts, one buffer for rollout and update, "
"exact replay.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlstack import Algorithm, RecurrentAlgorithm, random
from rlstack.envs import CartPole, CartPoleV1
from rlstack.learn.carry import reset_carry
from rlstack.learn.loss import minibatch, prepare_batch
from rlstack.learn.rollout import make_rollout
from rlstack.learn.transforms import compiled
from rlstack.policy import windows
from rlstack.policy.distributions import Categorical
from rlstack.policy.models import MLPModel
from rlstack.policy.policy import Policy


def windowed_rollouts(env, *, size=4, horizon=24, num_envs=6, rollouts=2, compile=False):
    torch.manual_seed(0)
    policy = Policy(
        MLPModel(env.observation_space, env.action_space, hiddens=(16,), obs_window=size),
        Categorical,
    )
    params = {k: v.detach() for k, v in policy.model.named_parameters()}
    carry = reset_carry(random.key(0), env, num_envs, policy=policy)
    rollout = make_rollout(env, policy, horizon)
    rollout = compiled(rollout) if compile else rollout
    trajectories = []
    for _ in range(rollouts):
        carry, traj = rollout(params, carry)
        trajectories.append(traj)
    return policy, params, trajectories


def direct_windows(obs, done, t, size):
    """The window of step ``t`` built step by step: walk back through the
    observations until an episode boundary (``done`` before it) or the run's start.
    """
    n = obs.shape[1]
    inputs, mask = torch.zeros(n, size, obs.shape[-1]), torch.ones(n, size, dtype=torch.bool)
    for env in range(n):
        for j in range(size - 1, -1, -1):
            s = t - (size - 1 - j)
            if s < 0:
                break
            inputs[env, j], mask[env, j] = obs[s, env], False
            if s > 0 and done[s - 1, env]:  # obs[s] began its episode: nothing before it
                break
    return inputs, mask


def test_windows_are_padded_after_every_episode_start_as_built_directly():
    _, _, (first, second) = windowed_rollouts(CartPoleV1(), size=4)
    obs = torch.cat([first.obs, second.obs])
    done = torch.cat([first.terminated | first.truncated, second.terminated | second.truncated])
    assert done[:-1].sum() >= 3  # episodes end, some in each rollout
    got = windows.unfold(
        second.memory.history, second.obs, second.memory.ages
    )  # the 2nd rollout: history crosses over
    assert got.inputs.shape == (24, 6, 4, 4) and got.padding_mask.shape == (24, 6, 4)
    first_got = windows.unfold(first.memory.history, first.obs, first.memory.ages)
    for t in range(48):
        inputs, mask = direct_windows(obs, done, t, 4)
        window = first_got if t < 24 else got
        assert torch.equal(window.padding_mask[t % 24], mask), t
        assert torch.equal(window.inputs[t % 24], inputs), t
    assert first_got.padding_mask[0].all(dim=0).tolist() == [
        True,
        True,
        True,
        False,
    ]  # the run starts empty


@pytest.mark.parametrize("env", [CartPole(), CartPoleV1()], ids=["infinite", "episodic"])
def test_the_update_sees_the_windows_the_rollout_acted_on(env):
    policy, params, (_, traj) = windowed_rollouts(env, size=3)
    batch = prepare_batch(
        traj, gamma=0.99, gae_lambda=0.95, normalize_advantages=True, memory=policy.memory
    )
    idx = random.permutation(random.key(3), 24 * 6)
    rows = minibatch(batch, idx, policy.memory)
    assert isinstance(rows.obs, windows.ObsWindow) and rows.obs.inputs.shape == (144, 3, 4)
    dist_inputs, _ = policy.apply(params, rows.obs)
    # Equal to float32 rounding: the rollout's matmuls had 24 rows, these 144, and some CPUs'
    # kernels (AVX-512) round by batch size. A wrong window moves these near-uniform log-probs by
    # ~1e-4.
    torch.testing.assert_close(
        Categorical.log_prob(dist_inputs, rows.actions), rows.log_probs, rtol=0, atol=1e-6
    )


@settings(max_examples=25, deadline=None)
@given(
    size=st.integers(2, 5),
    steps=st.integers(5, 9),
    envs=st.integers(1, 4),
    seed=st.integers(0, 1000),
)
def test_gathered_minibatch_windows_equal_the_unfolded_view(size, steps, envs, seed):
    g = torch.Generator().manual_seed(seed)
    history, obs = (
        torch.randn(size - 1, envs, 2, generator=g),
        torch.randn(steps, envs, 2, generator=g),
    )
    ages = torch.randint(0, size + 2, (steps, envs), generator=g)
    everything = windows.unfold(history, obs, ages)
    idx = torch.randperm(steps * envs, generator=g)[: max(1, steps * envs // 2)]
    got = windows.gather(windows.frames(history, obs, ages), idx, size)
    assert torch.equal(got.inputs, everything.inputs.flatten(0, 1)[idx])
    assert torch.equal(got.padding_mask, everything.padding_mask.flatten(0, 1)[idx])
    # Padded positions hold zeros; the current observation is never padding.
    assert not got.padding_mask[:, -1].any()
    assert (got.inputs[got.padding_mask] == 0).all()


def test_a_windowed_mlp_trains_and_predicts_with_its_window():
    algo = Algorithm(
        CartPoleV1,
        num_envs=8,
        horizon=16,
        compile=False,
        seed=0,
        model_config={"hiddens": (16,), "obs_window": 4},
    )
    algo.collect()
    assert "losses/total" in algo.step()
    obs = torch.zeros(3, 4)
    actions, memory = algo.predict(obs)
    assert actions.shape == (3,) and memory.ages.tolist() == [1, 1, 1]
    _, memory = algo.predict(obs, memory=memory, starts=torch.tensor([True, False, False]))
    assert memory.ages.tolist() == [1, 2, 2]
    # The window the model saw: the policy's own predict path equals a direct call on the window.
    seen = windows.window(windows.initial(obs, 4), obs, 4)
    assert seen.padding_mask[0].tolist() == [True, True, True, False]
    expected = algo.policy.apply(algo.params, seen)[0].argmax(-1)
    assert torch.equal(algo.predict(obs)[0], expected)
    with pytest.raises(ValueError, match="`memory`"):
        Algorithm(
            CartPole, num_envs=8, horizon=16, compile=False, model_config={"hiddens": (8,)}
        ).predict(obs, memory=memory)


def test_a_window_longer_than_the_horizon_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"obs_window 9 must not exceed `horizon` 8"):
        Algorithm(
            CartPole,
            num_envs=4,
            horizon=8,
            compile=False,
            model_config={"hiddens": (8,), "obs_window": 9},
        )
    with pytest.raises(ValueError, match="`obs_window` must be a positive int"):
        Algorithm(
            CartPole,
            num_envs=4,
            horizon=8,
            compile=False,
            model_config={"hiddens": (8,), "obs_window": 0},
        )


def test_a_recurrent_model_with_a_window_is_refused():
    from rlstack.policy.models import RecurrentModel

    class WindowedLSTM(RecurrentModel):
        obs_window = 2

    with pytest.raises(ValueError, match="recurrent and has obs_window 2"):
        RecurrentAlgorithm(
            CartPole,
            num_envs=4,
            horizon=8,
            compile=False,
            model_cls=WindowedLSTM,
            model_config={"hidden_size": 8},
        )


@pytest.mark.slow
def test_compiled_windowed_training_equals_eager_without_graph_breaks_or_recompiles():
    import torch._dynamo

    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    kwargs = dict(
        num_envs=8,
        horizon=16,
        sgd_minibatch_size=64,
        seed=0,
        model_config={"hiddens": (16,), "obs_window": 4},
    )
    eager, compiled = (
        Algorithm(CartPoleV1, compile=False, **kwargs),
        Algorithm(CartPoleV1, compile=True, **kwargs),
    )
    for algo in (eager, compiled):
        algo.collect()
        algo.step()
    graphs = counters["stats"]["unique_graphs"]
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(2):
            for algo in (eager, compiled):
                algo.collect()
                algo.step()
    assert counters["stats"]["unique_graphs"] == graphs
    assert not counters["graph_break"], dict(counters["graph_break"])
    for name in eager.params:
        torch.testing.assert_close(compiled.params[name], eager.params[name], rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()


class AttendToHistory(torch.nn.Module):
    """docs/guides/custom.md's windowed model: self-attention over the last 8 observations."""

    obs_window = 8

    def __init__(self, observation_space, action_space, width=32):
        super().__init__()
        from rlstack import nn as rnn

        self.embed = rnn.MLP(observation_space.shape[0], [width])
        self.position = rnn.PositionalEmbedding(width, self.obs_window)
        self.attention = rnn.SelfAttentionStack(rnn.SelfAttention(width, num_heads=2), 2)
        self.actor, self.critic = (
            rnn.MLP(width, [width, action_space.n]),
            rnn.MLP(width, [width, 1]),
        )

    def forward(self, window):
        x = self.position(self.embed(window.inputs))
        current = self.attention(x, key_padding_mask=window.padding_mask)[:, -1]
        return self.actor(current), self.critic(current).squeeze(-1)


def test_the_guides_attention_model_over_a_window_trains_and_replays_exactly():
    algo = Algorithm(
        CartPoleV1, num_envs=8, horizon=16, compile=False, seed=0, model_cls=AttendToHistory
    )
    algo.collect()
    traj = algo.trajectory
    batch = prepare_batch(
        traj, gamma=0.99, gae_lambda=0.95, normalize_advantages=False, memory=algo.policy.memory
    )
    rows = minibatch(batch, torch.arange(128), algo.policy.memory)
    dist_inputs, _ = algo.policy.apply(algo.params, rows.obs)
    torch.testing.assert_close(
        Categorical.log_prob(dist_inputs, rows.actions), rows.log_probs, rtol=0, atol=1e-5
    )
    assert torch.isfinite(torch.tensor(list(algo.step().values()))).all()


def test_cli_trains_exports_and_evaluates_a_windowed_policy(tmp_path, capsys):
    from rlstack.cli import main

    args = [
        "train",
        "--env",
        "CartPole",
        "--obs-window",
        "3",
        "--max-steps",
        "2",
        "--num-envs",
        "16",
        "--horizon",
        "16",
        "--no-compile",
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
        "--save",
        str(tmp_path / "model"),
    ]
    assert main(args) == 0
    checkpoint = str(next((tmp_path / "ckpt").glob("*.pt")))
    assert Algorithm.from_checkpoint(checkpoint).policy.obs_window == 3
    for source in (checkpoint, str(tmp_path / "model")):
        capsys.readouterr()
        assert main(["eval", source, "--num-envs", "8"]) == 0
        assert "success/balanced" in capsys.readouterr().out
    assert (
        main(
            [
                "train",
                "--env",
                "CartPole",
                "--model",
                "lstm",
                "--obs-window",
                "3",
                "--max-steps",
                "1",
            ]
        )
        == 2
    )
    assert "--obs-window is for the MLP" in capsys.readouterr().err
