"""Recurrent models: the default LSTM/GRU, the recurrent contract and its checks, and resets of "
"the hidden state.
"""

import pytest
import torch
from torch import nn

from rlstack import Algorithm
from rlstack.core.spaces import Box, Discrete
from rlstack.envs import CartPole
from rlstack.policy.distributions import Categorical
from rlstack.policy.models import GRUCell, LSTMCell, RecurrentModel
from rlstack.policy.policy import Policy, check_recurrent_model

OBS = Box((4,))


def params_of(model):
    return {k: v.detach() for k, v in model.named_parameters()}


def test_the_written_out_cells_equal_torchs_cells():
    torch.manual_seed(0)
    ours, theirs = LSTMCell(3, 5), nn.LSTMCell(3, 5)
    gru, torch_gru = GRUCell(3, 5), nn.GRUCell(3, 5)
    with torch.no_grad():
        theirs.weight_ih.copy_(ours.input.weight), theirs.bias_ih.copy_(ours.input.bias)
        theirs.weight_hh.copy_(ours.recurrent.weight), theirs.bias_hh.zero_()
        torch_gru.weight_ih.copy_(gru.input.weight), torch_gru.bias_ih.copy_(gru.input.bias)
        torch_gru.weight_hh.copy_(gru.recurrent.weight), torch_gru.bias_hh.copy_(gru.recurrent.bias)
    x, h, c = torch.randn(4, 3), torch.randn(4, 5), torch.randn(4, 5)
    for got, want in zip(ours(x, (h, c)), theirs(x, (h, c)), strict=True):
        assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(gru(x, h), torch_gru(x, h), atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("action_space", [Discrete(2), Box((2,), low=-1.0, high=1.0)])
def test_default_recurrent_models_keep_the_contract(cell, action_space):
    model = RecurrentModel(OBS, action_space, hidden_size=8, num_layers=2, cell=cell, hiddens=(16,))
    check_recurrent_model(model, params_of(model), OBS)
    hidden = model.initial_hidden(5)
    dist_inputs, value, new_hidden = model(torch.randn(5, 4), hidden)
    assert value.shape == (5,)
    h = new_hidden[0] if cell == "lstm" else new_hidden
    assert h.shape == (5, 2, 8)


def test_a_reset_env_starts_from_the_initial_hidden_state_and_the_others_carry_on():
    torch.manual_seed(0)
    policy = Policy(RecurrentModel(OBS, Discrete(2), hidden_size=8), Categorical)
    params = params_of(policy.model)
    obs = torch.randn(3, 4)
    hidden = (torch.randn(3, 1, 8), torch.randn(3, 1, 8))
    reset = torch.tensor([False, True, False])
    _, value, (h, c) = policy.forward(params, obs, hidden, reset)
    _, fresh_value, (fresh_h, _) = policy.forward(
        params, obs, policy.initial_hidden(3), torch.zeros(3, dtype=torch.bool)
    )
    _, kept_value, (kept_h, _) = policy.forward(
        params, obs, hidden, torch.zeros(3, dtype=torch.bool)
    )
    assert torch.equal(h[1], fresh_h[1]) and torch.equal(value[1], fresh_value[1])
    assert torch.equal(h[[0, 2]], kept_h[[0, 2]]) and torch.equal(value[[0, 2]], kept_value[[0, 2]])


def test_a_recurrent_step_runs_under_vmap_and_compile():
    torch.manual_seed(0)
    policy = Policy(RecurrentModel(OBS, Discrete(2), hidden_size=8, cell="gru"), Categorical)
    params = params_of(policy.model)
    obs, hidden = torch.randn(6, 3, 4), torch.zeros(6, 3, 1, 8)
    resets = torch.rand(6, 3) < 0.3

    def unroll(params, obs, hidden, resets):
        values = []
        for t in range(obs.shape[0]):
            _, value, hidden = policy.forward(params, obs[t], hidden, resets[t])
            values.append(value)
        return torch.stack(values), hidden

    eager = unroll(params, obs, hidden[0], resets)
    compiled = torch.compile(unroll, fullgraph=True)(params, obs, hidden[0], resets)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(eager, compiled, strict=True))
    members = {k: torch.stack([v, v]) for k, v in params.items()}
    mapped = torch.func.vmap(unroll, in_dims=(0, None, None, None))(members, obs, hidden[0], resets)
    assert torch.allclose(mapped[0][1], eager[0], atol=1e-6)


class _WrongHidden(RecurrentModel):
    def forward(self, obs, hidden):
        dist_inputs, value, (h, c) = super().forward(obs, hidden)
        return dist_inputs, value, (h[:, :, :4], c)


class _TwoOutputs(RecurrentModel):
    def forward(self, obs, hidden):
        return super().forward(obs, hidden)[:2]


class _WrongBatch(RecurrentModel):
    def initial_hidden(self, batch_size):
        return torch.zeros(1, 8)


@pytest.mark.parametrize(
    "model_cls, error, message",
    [
        (_WrongHidden, ValueError, "_WrongHidden's hidden state does not match its initial_hidden"),
        (
            _TwoOutputs,
            TypeError,
            r"_TwoOutputs.forward\(obs, hidden\) must return \(dist_inputs, value, hidden\)",
        ),
        (
            _WrongBatch,
            ValueError,
            r"_WrongBatch.initial_hidden\(3\) must return tensors .* leading dimension 3",
        ),
    ],
)
def test_a_model_that_breaks_the_recurrent_contract_gets_a_clear_error(model_cls, error, message):
    model = model_cls(OBS, Discrete(2), hidden_size=8)
    with pytest.raises(error, match=message):
        check_recurrent_model(model, params_of(model), OBS)


def test_a_recurrent_model_makes_a_plain_algorithm_recurrent_and_sequence_settings_need_one():
    algo = Algorithm(CartPole, model_cls=RecurrentModel, num_envs=8, horizon=4, compile=False)
    assert algo.policy.recurrent and (algo.config.seq_len, algo.config.seqs_per_state_reset) == (
        4,
        8,
    )
    assert algo.collect() and algo.step()
    with pytest.raises(ValueError, match="`seq_len` is for a recurrent model .* MLPModel is not"):
        Algorithm(CartPole, num_envs=8, horizon=4, seq_len=4, compile=False)
