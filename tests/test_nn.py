"""rlstack.policy.nn blocks: masks do what they say, attention matches torch's, and every block runs
under functional_call, vmap and torch.compile.
"""

import math

import optree
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call

from rlstack import nn as rnn


def padding(lengths, total):
    return torch.arange(total)[None, :] >= torch.tensor(lengths)[:, None]  # True: padding


def test_mlp_shapes_and_bad_widths():
    mlp = rnn.MLP(
        5, [16, 16, 3], activation="squared_relu", norm_layer=torch.nn.LayerNorm, dropout=0.1
    )
    assert mlp(torch.randn(4, 7, 5)).shape == (4, 7, 3)
    with pytest.raises(ValueError, match="`hiddens` must name at least one layer width"):
        rnn.MLP(5, [])
    with pytest.raises(ValueError, match="`activation` must be one of"):
        rnn.MLP(5, [4, 4], activation="swishy")


def test_multihead_attention_equals_torchs_with_the_same_weights_and_padding():
    torch.manual_seed(0)
    ours = rnn.MultiheadAttention(8, 2)
    theirs = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    with torch.no_grad():
        theirs.in_proj_weight.copy_(
            torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight])
        )
        theirs.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        theirs.out_proj.weight.copy_(ours.out_proj.weight)
        theirs.out_proj.bias.copy_(ours.out_proj.bias)
    q, kv = torch.randn(3, 4, 8), torch.randn(3, 6, 8)
    mask = padding([6, 2, 5], 6)
    causal = torch.ones(4, 6, dtype=torch.bool).triu(1)
    expected, _ = theirs(q, kv, kv, key_padding_mask=mask, attn_mask=causal, need_weights=False)
    assert torch.allclose(ours(q, kv, mask, causal), expected, atol=1e-6)


def test_a_query_with_every_key_padded_gets_zeros_not_nan():
    attention = rnn.MultiheadAttention(4, 1)
    out = attention(torch.randn(2, 3, 4), torch.randn(2, 5, 4), padding([0, 5], 5))
    assert torch.isfinite(out).all() and torch.equal(
        out[0], attention.out_proj.bias.expand(3, 4).detach()
    )


@given(st.lists(st.integers(1, 6), min_size=1, max_size=4))
@settings(max_examples=15, deadline=None)
def test_padded_elements_change_nothing_that_is_not_padding(lengths):
    torch.manual_seed(1)
    blocks = [rnn.SelfAttention(8), rnn.PerceiverLayer(8, 3, num_layers=2)]
    x = torch.randn(len(lengths), 6, 8)
    mask = padding(lengths, 6)
    garbage = torch.where(mask[..., None], torch.randn_like(x) * 100, x)
    self_attention, perceiver = blocks
    keep = ~mask
    assert torch.allclose(
        self_attention(x, mask)[keep], self_attention(garbage, mask)[keep], atol=1e-5
    )
    assert torch.allclose(perceiver(x, mask), perceiver(garbage, mask), atol=1e-5)
    cross = rnn.CrossAttention(8)
    q = torch.randn(len(lengths), 2, 8)
    assert torch.allclose(cross(q, x, mask), cross(q, garbage, mask), atol=1e-5)


def test_a_causal_mask_keeps_the_past_from_seeing_the_future():
    layer = rnn.SelfAttentionStack(rnn.SelfAttention(8, num_heads=4), 2)
    x = torch.randn(2, 5, 8)
    later = x.clone()
    later[:, 3:] = torch.randn(2, 2, 8)
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    assert torch.allclose(
        layer(x, attention_mask=causal)[:, :3],
        layer(later, attention_mask=causal)[:, :3],
        atol=1e-6,
    )
    assert not torch.allclose(layer(x)[:, :3], layer(later)[:, :3])


def test_a_perceiver_ignores_the_order_of_a_set():
    perceiver = rnn.PerceiverLayer(8, 4)
    x = torch.randn(2, 7, 8)
    assert torch.allclose(perceiver(x), perceiver(x[:, torch.randperm(7)]), atol=1e-5)
    assert perceiver(torch.randn(2, 11, 8)).shape == (2, 4, 8)


def test_positional_embedding_adds_the_sine_cosine_code():
    embedding = rnn.PositionalEmbedding(6, 10)
    out = embedding(torch.zeros(1, 4, 6))
    t, i = 3, 2  # position 3, pair 1 (features 2 and 3)
    angle = t / 10_000 ** (i / 6)
    assert out[0, t, i].item() == pytest.approx(math.sin(angle), abs=1e-6)
    assert out[0, t, i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    with pytest.raises(ValueError, match="`embed_dim` must be even"):
        rnn.PositionalEmbedding(5, 10)


@given(st.lists(st.integers(0, 5), min_size=1, max_size=4))
@settings(max_examples=20, deadline=None)
def test_masked_reductions_equal_a_direct_loop(lengths):
    x = torch.randn(len(lengths), 5, 3)
    mask = padding(lengths, 5)
    avg, top = rnn.masked_avg(x, mask), rnn.masked_max(x, mask)
    for b, n in enumerate(lengths):
        want_avg = x[b, :n].mean(0) if n else torch.zeros(3)
        want_max = x[b, :n].amax(0) if n else torch.zeros(3)
        assert torch.allclose(avg[b], want_avg, atol=1e-6) and torch.allclose(top[b], want_max)


class SetModel(torch.nn.Module):
    """A model over a padded set, as a user would write one."""

    def __init__(self):
        super().__init__()
        self.embed = rnn.MLP(3, [8])
        self.perceiver = rnn.PerceiverLayer(8, 2)
        self.head = rnn.MLP(8, [8, 1])

    def forward(self, x, mask):
        return self.head(
            rnn.masked_avg(
                self.perceiver(self.embed(x), mask), torch.zeros(x.shape[0], 2, dtype=torch.bool)
            )
        )


def test_blocks_run_under_functional_call_vmap_and_compile():
    torch.manual_seed(0)
    model = SetModel()
    params = {k: v.detach() for k, v in model.named_parameters()}
    x, mask = torch.randn(4, 5, 3), padding([5, 3, 1, 4], 5)
    eager = functional_call(model, params, (x, mask))
    members = optree.tree_map(lambda p: torch.stack([p, p * 0.5]), params)
    mapped = torch.func.vmap(lambda p: functional_call(model, p, (x, mask)))(members)
    assert torch.allclose(mapped[0], eager, atol=1e-5)
    assert torch.allclose(
        mapped[1],
        functional_call(model, {k: v * 0.5 for k, v in params.items()}, (x, mask)),
        atol=1e-5,
    )
    compiled = torch.compile(lambda p, x, m: functional_call(model, p, (x, m)), fullgraph=True)
    assert torch.allclose(compiled(params, x, mask), eager, atol=1e-5)
    grads = torch.func.grad(lambda p: functional_call(model, p, (x, mask)).sum())(params)
    assert all(torch.isfinite(g).all() for g in grads.values())
