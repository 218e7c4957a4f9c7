"""Attention blocks over sequences and sets: masks, multi-head attention, pre-norm
self- and cross-attention blocks, their stack and the Perceiver layer (shapes and the
padding-mask convention: :mod:`rlstack.policy.nn`).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .layers import get_activation


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
