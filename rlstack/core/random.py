"""Random numbers as data: counter-based keys in plain torch ops.

A key is an ``int64`` tensor of shape ``[2]`` holding two 32-bit words. Every
random number is a pure function of a key and a position, computed with the
Threefry-2x32 block cipher (20 rounds; Salmon et al., 2011, the generator
behind ``jax.random``) from additions, rotations and xors of 32-bit words
kept in ``int64`` tensors. So the same key gives the same numbers eagerly,
under ``torch.compile``, under ``torch.func.vmap`` (one key per member),
inside a CUDA graph and on any device, with no ``torch.Generator``, no
graph break and no host sync. Integers, uniforms and permutations are
bit-exact everywhere; ``normal`` (Box-Muller: ``log``, ``cos``) agrees to
float32 rounding (about 1e-6 relative) across devices and compilers.

Use a key once: derive fresh keys with :func:`split` or :func:`fold_in`
before each draw, as JAX code does.

Examples:
    >>> k = key(0)
    >>> k_env, k_act = split(k)
    >>> uniform(k_env, (3,)).shape
    torch.Size([3])
    >>> bool((uniform(k_act, (4,)) == uniform(k_act, (4,))).all())
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

MASK = 0xFFFFFFFF
_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
_PARITY = 0x1BD11BDA


def key(seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """A key ``[2]`` int64 from a Python integer seed in ``[0, 2**64)``.

    Raises:
        ValueError: for anything but such an integer.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64:
        raise ValueError(f"`seed` must be an int in [0, 2**64), got {seed!r}.")
    return torch.tensor([(seed >> 32) & MASK, seed & MASK], dtype=torch.int64, device=device)


def check_key(k: torch.Tensor, name: str = "key") -> None:
    """Raise ``ValueError`` naming ``name`` unless ``k`` is a ``[..., 2]``
    int64 tensor of 32-bit words (a key, or a batch of keys).
    """
    if not isinstance(k, torch.Tensor) or k.dtype != torch.int64 or k.dim() < 1 or k.shape[-1] != 2:
        got = f"{k.dtype} {list(k.shape)}" if isinstance(k, torch.Tensor) else type(k).__name__
        raise ValueError(
            f"`{name}` must be an int64 tensor of shape [2] from rlstack.core.random.key(seed), "
            f"got {got}."
        )


def _rotl(x: torch.Tensor, r: int) -> torch.Tensor:
    return ((x << r) | (x >> (32 - r))) & MASK


def threefry2x32(
    k: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Threefry-2x32-20 block cipher: encrypt counter words ``(x0, x1)``
    (int64 tensors of 32-bit values, any equal shape) under key ``k`` ``[2]``.

    Returns:
        Two int64 tensors of 32-bit words, shaped like ``x0``.
    """
    k0, k1 = k[..., 0], k[..., 1]
    schedule = (k0, k1, k0 ^ k1 ^ _PARITY)
    y0, y1 = (x0 + k0) & MASK, (x1 + k1) & MASK
    for i in range(20):
        y0 = (y0 + y1) & MASK
        y1 = _rotl(y1, _ROTATIONS[i % 8]) ^ y0
        if i % 4 == 3:
            j = (i + 1) // 4
            y0 = (y0 + schedule[j % 3]) & MASK
            y1 = (y1 + schedule[(j + 1) % 3] + j) & MASK
    return y0, y1


def bits(k: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``[*shape]`` int64 random 32-bit words (values in ``[0, 2**32)``)."""
    n = math.prod(shape)
    half = (n + 1) // 2
    counter = torch.arange(half, dtype=torch.int64, device=k.device)
    y0, y1 = threefry2x32(k, counter, counter + half)
    return torch.cat([y0, y1], dim=-1)[..., :n].reshape(*k.shape[:-1], *shape)


def split(k: torch.Tensor, num: int = 2) -> torch.Tensor:
    """New keys ``[num, 2]`` derived from ``k`` (two of them unpack as ``a, b``)."""
    return bits(k, (num, 2))


def fold_in(k: torch.Tensor, data: int | torch.Tensor) -> torch.Tensor:
    """A new key ``[2]`` from ``k`` and an integer (a step count, a member
    index): different data give independent keys.

    Args:
        k: the key ``[2]`` (int64).
        data: a Python int or a 0-d integer tensor in ``[0, 2**63)``.
    """
    data = torch.as_tensor(data, dtype=torch.int64, device=k.device)
    y0, y1 = threefry2x32(k, data & MASK, (data >> 32) & MASK)
    return torch.stack([y0, y1], dim=-1)


def uniform(
    k: torch.Tensor,
    shape: Sequence[int],
    *,
    low: float = 0.0,
    high: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``[*shape]`` uniform in ``[low, high)``: 24 random bits (float32) or
    two words' 53 (float64) scaled exactly, then shifted.
    """
    if dtype == torch.float64:
        words = bits(k, (2, *shape))
        u = ((words[0] >> 6) * 2**27 + (words[1] >> 5)).to(torch.float64) * 2.0**-53  # 26 + 27 bits
    else:
        u = (bits(k, shape) >> 8).to(torch.float32).to(dtype) * 2.0**-24
    return low + (high - low) * u


def normal(
    k: torch.Tensor, shape: Sequence[int], *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``[*shape]`` standard normal (Box-Muller over two uniform streams)."""
    words = bits(k, (2, *shape)) >> 8
    u1 = (words[0].to(torch.float32) + 0.5) * 2.0**-24  # in (0, 1): log is finite
    u2 = words[1].to(torch.float32) * 2.0**-24
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)).to(dtype)


def randint(k: torch.Tensor, shape: Sequence[int], low: int, high: int) -> torch.Tensor:
    """``[*shape]`` int64 in ``[low, high)`` (multiply-shift of 32-bit words;
    bias at most ``(high - low) / 2**32``).

    Raises:
        ValueError: unless ``0 < high - low <= 2**31``.
    """
    span = high - low
    if not 0 < span <= 2**31:
        raise ValueError(f"randint needs 0 < high - low <= 2**31, got low={low}, high={high}.")
    return low + ((bits(k, shape) * span) >> 32)


def gumbel(
    k: torch.Tensor, shape: Sequence[int], *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``[*shape]`` standard Gumbel noise, ``-log(-log(u))`` with ``u`` in (0, 1)."""
    u = ((bits(k, shape) >> 8).to(torch.float32) + 0.5) * 2.0**-24
    return (-torch.log(-torch.log(u))).to(dtype)


def categorical(k: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Samples ``[*batch]`` int64 from unnormalised ``logits`` ``[*batch, n]``
    (the Gumbel-max trick).
    """
    return torch.argmax(logits + gumbel(k, logits.shape, dtype=logits.dtype), dim=-1)


def permutation(k: torch.Tensor, n: int) -> torch.Tensor:
    """A uniformly random permutation of ``range(n)``, int64 ``[n]``: a
    stable sort of 31-bit random keys (ties, about ``n**2 / 2**32`` of them,
    keep index order, so the result is deterministic).
    """
    sort_keys = (bits(k, (n,)) >> 1).to(torch.int32)
    return torch.argsort(sort_keys, dim=-1, stable=True)


__all__ = [
    "MASK",
    "bits",
    "categorical",
    "check_key",
    "fold_in",
    "gumbel",
    "key",
    "normal",
    "permutation",
    "randint",
    "split",
    "threefry2x32",
    "uniform",
]
