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

from .attention import (
    CrossAttention,
    MultiheadAttention,
    PerceiverLayer,
    SelfAttention,
    SelfAttentionStack,
    build_attention_mask,
)
from .layers import (
    ACTIVATIONS,
    MLP,
    PositionalEmbedding,
    SquaredReLU,
    get_activation,
    masked_avg,
    masked_max,
)

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
