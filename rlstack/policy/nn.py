"""Building blocks for custom models over windows, sequences and sets.

rlstack 1.x's ``rlstack.policy.nn`` blocks: :class:`MLP`, :class:`PositionalEmbedding`,
:class:`SelfAttention` and :class:`SelfAttentionStack`, :class:`CrossAttention`,
:class:`PerceiverLayer`, and masked reductions. Shapes: ``B`` batch, ``T``
(or ``K``) sequence or set length, ``Q`` queries (latents), ``E`` features.
A padding mask is ``[B, T]`` bool, ``True`` where an element is PADDING
(1.x's and ``torch.nn.MultiheadAttention``'s convention) and must not be
attended to or pooled.

Every block is an ordinary ``nn.Module`` built from ``nn.Linear``,
``nn.LayerNorm`` and attention written out in tensor ops, so it runs under
``torch.func.functional_call`` (as :class:`~rlstack.Policy` calls models), ``torch.func.vmap``
(populations) and ``torch.compile`` (``fullgraph=True``). Attention is pre-norm (LayerNorm before
attention and before the feedforward), with a residual connection after each.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Activation modules by name (the default models' ``activation_fn`` takes the same names).
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU, "elu": nn.ELU}


class SquaredReLU(nn.Module):
    """``relu(x) ** 2`` (So et al., 2021, Primer)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The module's forward pass (see the class docstring for shapes)."""
        return F.relu(x) ** 2


def get_activation(name: str) -> nn.Module:
    """An activation module by name: relu, gelu, tanh, silu, elu or squared_relu.

    Raises:
        ValueError: for another name.
    """
    if name == "squared_relu":
        return SquaredReLU()
    if name not in ACTIVATIONS:
        raise ValueError(
            f"`activation` must be one of {sorted([*ACTIVATIONS, 'squared_relu'])}, got {name!r}."
        )
    return ACTIVATIONS[name]()


class MLP(nn.Sequential):
    """Linear layers with an activation (and optional norm, dropout) between
    them; the last layer is linear. ``[..., input_dim] -> [..., hiddens[-1]]``.

    Args:
        input_dim: features in.
        hiddens: the layers' widths (at least one).
        activation: see :func:`get_activation`.
        norm_layer: ``nn.LayerNorm`` (or another ``norm(width)`` class)
            after each hidden linear layer; ``None``: none.
        bias: linear layers with biases.
        dropout: dropout probability after each hidden activation.
    """

    def __init__(
        self,
        input_dim: int,
        hiddens: Sequence[int],
        /,
        *,
        activation: str = "relu",
        norm_layer: type | None = None,
        bias: bool = True,
        dropout: float = 0.0,
    ) -> None:
        if not hiddens:
            raise ValueError("`hiddens` must name at least one layer width.")
        layers: list[nn.Module] = []
        width = input_dim
        for hidden in hiddens[:-1]:
            layers.append(nn.Linear(width, hidden, bias=bias))
            if norm_layer is not None:
                layers.append(norm_layer(hidden))
            layers.append(get_activation(activation))
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, hiddens[-1], bias=bias))
        super().__init__(*layers)


class PositionalEmbedding(nn.Module):
    """Adds the sinusoidal position code of Vaswani et al. (2017) to a
    sequence ``[B, T, E]`` (``T <= max_len``, ``E`` even).
    """

    def __init__(self, embed_dim: int, max_len: int, /, *, dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dim % 2:
            raise ValueError(f"`embed_dim` must be even for sine/cosine pairs, got {embed_dim}.")
        position = torch.arange(max_len).unsqueeze(1)
        frequency = torch.exp(torch.arange(0, embed_dim, 2) * (-math.log(10_000.0) / embed_dim))
        code = torch.zeros(max_len, embed_dim)
        code[:, 0::2] = torch.sin(position * frequency)
        code[:, 1::2] = torch.cos(position * frequency)
        self.register_buffer("code", code)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The module's forward pass (see the class docstring for shapes)."""
        return self.dropout(x + self.code[: x.shape[-2]])


def build_attention_mask(
    key_padding_mask: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    queries: int,
    keys: int,
) -> torch.Tensor | None:
    """The boolean mask ``[B, 1, Q, K]`` (or ``[Q, K]``), ``True`` where a
    query may attend to a key, from a padding mask ``[B, K]``
    (``True``: padding) and an attention mask ``[Q, K]`` (``True``: may
    NOT attend, as ``nn.MultiheadAttention``'s boolean ``attn_mask``).
    """
    allowed = None
    if key_padding_mask is not None:
        allowed = (~key_padding_mask)[:, None, None, :].expand(-1, 1, queries, keys)
    if attention_mask is not None:
        pairs = ~attention_mask
        allowed = pairs if allowed is None else allowed & pairs
    return allowed


class MultiheadAttention(nn.Module):
    """Multi-head attention of queries ``[B, Q, E]`` to keys/values
    ``[B, K, E]`` -> ``[B, Q, E]``. A query whose keys are all masked gets
    zeros (not NaN).
    """

    def __init__(self, embed_dim: int, num_heads: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(
                f"`embed_dim` {embed_dim} must be divisible by `num_heads` {num_heads}."
            )
        self.num_heads, self.dropout = num_heads, dropout
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(embed_dim, embed_dim) for _ in range(3))
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return x.reshape(batch, length, self.num_heads, width // self.num_heads).transpose(1, 2)

    def forward(
        self,
        q: torch.Tensor,
        kv: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The module's forward pass (see the class docstring for shapes)."""
        allowed = build_attention_mask(key_padding_mask, attention_mask, q.shape[1], kv.shape[1])
        any_key = None
        if allowed is not None:
            any_key = allowed.any(
                -1, keepdim=True
            )  # rows with no key: attend to all, then zero them
            allowed = allowed | ~any_key
        # Written out rather than F.scaled_dot_product_attention, whose CPU kernel has no vmap rule.
        query, key, value = (
            self._heads(self.q_proj(q)),
            self._heads(self.k_proj(kv)),
            self._heads(self.v_proj(kv)),
        )
        scores = query @ key.transpose(-2, -1) * (query.shape[-1] ** -0.5)  # [B, heads, Q, K]
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        weights = F.dropout(scores.softmax(-1), self.dropout, self.training)
        out = weights @ value
        if any_key is not None:
            out = out * any_key.to(out.dtype)
        out = out.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)
        return self.out_proj(out)


class _Block(nn.Module):
    """Pre-norm attention then feedforward, each with a residual connection."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        hidden_dim: int,
        activation: str,
        attention_dropout: float,
        hidden_dropout: float,
        cross: bool,
    ) -> None:
        super().__init__()
        self.q_norm = nn.LayerNorm(embed_dim)
        self.kv_norm = nn.LayerNorm(embed_dim) if cross else None
        self.attention = MultiheadAttention(embed_dim, num_heads, dropout=attention_dropout)
        self.feedforward = nn.Sequential(
            nn.LayerNorm(embed_dim),
            nn.Linear(embed_dim, hidden_dim),
            get_activation(activation),
            nn.Dropout(hidden_dropout),
            nn.Linear(hidden_dim, embed_dim),
        )

    def attend(
        self,
        q: torch.Tensor,
        kv: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        query = self.q_norm(q)
        keys = self.kv_norm(kv) if self.kv_norm is not None else query
        x = q + self.attention(query, keys, key_padding_mask, attention_mask)
        return x + self.feedforward(x)


class SelfAttention(_Block):
    """A transformer encoder layer over ``x`` ``[B, T, E]`` -> ``[B, T, E]``.

    Args:
        embed_dim: ``E``.
        num_heads: attention heads (dividing ``E``).
        hidden_dim: the feedforward's hidden width.
        activation: the feedforward's activation (:func:`get_activation`).
        attention_dropout: dropout probability of the attention weights.
        hidden_dropout: dropout probability in the feedforward.
    """

    def __init__(
        self,
        embed_dim: int,
        /,
        num_heads: int = 2,
        hidden_dim: int = 128,
        activation: str = "relu",
        attention_dropout: float = 0.0,
        hidden_dropout: float = 0.0,
    ) -> None:
        super().__init__(
            embed_dim,
            num_heads,
            hidden_dim,
            activation,
            attention_dropout,
            hidden_dropout,
            cross=False,
        )

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``key_padding_mask`` ``[B, T]`` (``True``: padding); ``attention_mask``
        ``[T, T]`` (``True``: may not attend, e.g. a causal mask).
        """
        return self.attend(x, x, key_padding_mask, attention_mask)


class SelfAttentionStack(nn.Module):
    """``num_layers`` :class:`SelfAttention` layers in sequence (copies of
    ``layer``; with ``share_parameters`` the same layer applied again).
    """

    def __init__(
        self, layer: SelfAttention, num_layers: int, /, *, share_parameters: bool = False
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"`num_layers` must be >= 1, got {num_layers}.")
        self.layers = nn.ModuleList(
            [layer] if share_parameters else [copy.deepcopy(layer) for _ in range(num_layers)]
        )
        self.num_layers = num_layers

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The module's forward pass (see the class docstring for shapes)."""
        for i in range(self.num_layers):
            x = self.layers[i % len(self.layers)](x, key_padding_mask, attention_mask)
        return x


class CrossAttention(_Block):
    """Queries ``q`` ``[B, Q, E]`` attend to keys ``kv`` ``[B, K, E]``
    (a set or a sequence), then a feedforward: ``-> [B, Q, E]``. Arguments
    as :class:`SelfAttention`.
    """

    def __init__(
        self,
        embed_dim: int,
        /,
        num_heads: int = 2,
        hidden_dim: int = 128,
        activation: str = "relu",
        attention_dropout: float = 0.0,
        hidden_dropout: float = 0.0,
    ) -> None:
        super().__init__(
            embed_dim,
            num_heads,
            hidden_dim,
            activation,
            attention_dropout,
            hidden_dropout,
            cross=True,
        )

    def forward(
        self,
        q: torch.Tensor,
        kv: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``key_padding_mask`` ``[B, K]`` (``True``: padding); ``attention_mask``
        ``[Q, K]`` (``True``: may not attend).
        """
        return self.attend(q, kv, key_padding_mask, attention_mask)


class PerceiverLayer(nn.Module):
    """A Perceiver layer (Jaegle et al., 2021): ``num_latents`` learned latents
    cross-attend to the inputs ``[B, K, E]``, then ``num_layers`` of
    self-attention over the latents: ``-> [B, num_latents, E]``, whatever
    ``K`` (sets of any size, padded elements ignored).
    """

    def __init__(
        self,
        embed_dim: int,
        num_latents: int,
        /,
        num_heads: int = 2,
        hidden_dim: int = 128,
        activation: str = "relu",
        num_layers: int = 1,
        attention_dropout: float = 0.0,
        hidden_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, embed_dim) * 0.02)
        options = dict(
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            activation=activation,
            attention_dropout=attention_dropout,
            hidden_dropout=hidden_dropout,
        )
        self.cross_attention = CrossAttention(embed_dim, **options)
        self.self_attention = SelfAttentionStack(SelfAttention(embed_dim, **options), num_layers)

    def forward(
        self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The module's forward pass (see the class docstring for shapes)."""
        latents = self.latents.unsqueeze(0).expand(x.shape[0], -1, -1)
        return self.self_attention(self.cross_attention(latents, x, key_padding_mask))


def masked_avg(x: torch.Tensor, padding_mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Mean of ``x`` ``[B, T, ...]`` over ``dim`` ignoring padding
    (``padding_mask`` ``[B, T]``, ``True``: padding); 0 where all is padding.
    """
    keep = (~padding_mask).to(x.dtype)
    while keep.dim() < x.dim():
        keep = keep.unsqueeze(-1)
    return (x * keep).sum(dim) / keep.sum(dim).clamp(min=1.0)


def masked_max(x: torch.Tensor, padding_mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Maximum of ``x`` ``[B, T, ...]`` over ``dim`` ignoring padding; 0
    where all is padding.
    """
    pad = padding_mask
    while pad.dim() < x.dim():
        pad = pad.unsqueeze(-1)
    filled = x.masked_fill(pad, torch.finfo(x.dtype).min)
    return torch.where(pad.all(dim), torch.zeros_like(filled.amax(dim)), filled.amax(dim))


__all__ = [
    "ACTIVATIONS",
    "MLP",
    "CrossAttention",
    "MultiheadAttention",
    "PerceiverLayer",
    "PositionalEmbedding",
    "SelfAttention",
    "SelfAttentionStack",
    "SquaredReLU",
    "build_attention_mask",
    "get_activation",
    "masked_avg",
    "masked_max",
]
