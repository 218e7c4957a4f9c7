"""Dense blocks: activations by name, :class:`MLP`, the positional embedding of a
sequence, and masked reductions over a sequence or set.
"""

from __future__ import annotations

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
