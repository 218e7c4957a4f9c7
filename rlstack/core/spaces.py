"""Observation and action spaces: ``Discrete``, ``Box`` and dicts of them.

A space describes one env's value; batched values carry leading batch
dimensions (``[N, *space.shape]``). A ``dict[str, Space]`` is a composite
space whose values are ``dict[str, Tensor]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def _as_shape(shape: int | Sequence[int], name: str) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(shape)
    if not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(f"`{name}` must be a tuple of positive ints, got {shape!r}.")
    return shape


class Discrete:
    """Integers in ``{0, ..., n - 1}``, one per element of ``shape``.

    ``shape=()`` is a single categorical choice; ``shape=(k,)`` is a
    multi-discrete action of ``k`` independent choices among ``n``.

    Examples:
        >>> Discrete(3).sample((2,)).shape
        torch.Size([2])
        >>> Discrete(2, shape=(1,)).sample((4,)).dtype
        torch.int64
    """

    def __init__(self, n: int, shape: int | Sequence[int] = ()) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"`n` must be a positive int, got {n!r}.")
        self.n = n
        self.shape = _as_shape(shape, "shape") if shape != () else ()
        self.dtype = torch.int64

    def sample(
        self,
        batch_shape: Sequence[int] = (),
        device: Any = "cpu",
        *,
        key: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Uniform random values, ``[*batch_shape, *shape]`` int64, drawn from
        ``key`` (on its device) or, without one, torch's global generator.
        """
        if key is not None:
            from . import random

            return random.randint(key, (*batch_shape, *self.shape), 0, self.n)
        return torch.randint(0, self.n, (*batch_shape, *self.shape), device=device)

    def contains(self, x: Any) -> bool:
        """Whether ``x`` is a tensor of such values (any leading batch dims)."""
        return (
            isinstance(x, torch.Tensor)
            and x.dtype == self.dtype
            and tuple(x.shape[x.dim() - len(self.shape) :]) == self.shape
            and bool(((x >= 0) & (x < self.n)).all())
        )

    def __repr__(self) -> str:
        return f"Discrete({self.n}, shape={self.shape})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Discrete) and (self.n, self.shape) == (other.n, other.shape)


class Box:
    """Real vectors of ``shape`` within ``[low, high]`` (bounds may be infinite).

    Examples:
        >>> Box((3,), low=-1.0, high=1.0).sample((5,)).shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        shape: int | Sequence[int],
        low: float = -math.inf,
        high: float = math.inf,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.shape = _as_shape(shape, "shape")
        if not (isinstance(low, (int, float)) and isinstance(high, (int, float))) or not low < high:
            raise ValueError(f"Box needs numbers `low` < `high`, got low={low!r}, high={high!r}.")
        if not dtype.is_floating_point:
            raise ValueError(f"Box `dtype` must be a floating dtype, got {dtype}.")
        self.low = float(low)
        self.high = float(high)
        self.dtype = dtype

    @property
    def bounded(self) -> bool:
        """Whether both ``low`` and ``high`` are finite."""
        return math.isfinite(self.low) and math.isfinite(self.high)

    def sample(
        self,
        batch_shape: Sequence[int] = (),
        device: Any = "cpu",
        *,
        key: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Uniform within finite bounds, else standard normal clipped to the
        bounds; ``[*batch_shape, *shape]``, drawn from ``key`` (on its
        device) or, without one, torch's global generator.
        """
        size = (*batch_shape, *self.shape)
        if key is not None:
            from . import random

            if self.bounded:
                return random.uniform(key, size, low=self.low, high=self.high, dtype=self.dtype)
            return random.normal(key, size, dtype=self.dtype).clamp(self.low, self.high)
        if self.bounded:
            u = torch.rand(size, device=device, dtype=self.dtype)
            return self.low + (self.high - self.low) * u
        x = torch.randn(size, device=device, dtype=self.dtype)
        return x.clamp(self.low, self.high)

    def contains(self, x: Any) -> bool:
        """Whether ``x`` is a tensor of such values (any leading batch dims)."""
        return (
            isinstance(x, torch.Tensor)
            and x.dtype == self.dtype
            and tuple(x.shape[x.dim() - len(self.shape) :]) == self.shape
            and bool(((x >= self.low) & (x <= self.high)).all())
        )

    def __repr__(self) -> str:
        return f"Box(shape={self.shape}, low={self.low}, high={self.high}, dtype={self.dtype})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Box) and (self.shape, self.low, self.high, self.dtype) == (
            other.shape,
            other.low,
            other.high,
            other.dtype,
        )


Space = Discrete | Box | dict


def is_space(space: Any) -> bool:
    """Whether ``space`` is a ``Discrete``, a ``Box`` or a dict of spaces."""
    if isinstance(space, dict):
        return len(space) > 0 and all(isinstance(k, str) and is_space(v) for k, v in space.items())
    return isinstance(space, (Discrete, Box))


def sample(
    space: Space,
    batch_shape: Sequence[int] = (),
    device: Any = "cpu",
    *,
    key: torch.Tensor | None = None,
) -> Any:
    """Sample a value (or a dict of values) of ``space``; see ``Box.sample``."""
    if isinstance(space, dict):
        if key is None:
            return {k: sample(v, batch_shape, device) for k, v in space.items()}
        from . import random

        return {
            k: sample(v, batch_shape, device, key=random.fold_in(key, i))
            for i, (k, v) in enumerate(space.items())
        }
    return space.sample(batch_shape, device, key=key)


def describe_mismatch(
    space: Space, x: Any, batch_shape: Sequence[int], box_bounds: bool = True
) -> str | None:
    """Why ``x`` is not a batch ``[*batch_shape, ...]`` of ``space`` values,
    or ``None`` if it is. Used for error messages. ``box_bounds=False``
    skips the range check of ``Box`` values (continuous actions may be
    sampled outside the bounds; envs clip them).
    """
    batch_shape = tuple(batch_shape)
    if isinstance(space, dict):
        if not isinstance(x, dict) or set(x) != set(space):
            got = sorted(x) if isinstance(x, dict) else type(x).__name__
            return f"expected a dict with keys {sorted(space)}, got {got}"
        for k, sub in space.items():
            why = describe_mismatch(sub, x[k], batch_shape, box_bounds)
            if why:
                return f"[{k!r}]: {why}"
        return None
    if not isinstance(x, torch.Tensor):
        return f"expected a tensor, got {type(x).__name__}"
    expected = (*batch_shape, *space.shape)
    if tuple(x.shape) != expected:
        return f"expected shape {list(expected)}, got {list(x.shape)}"
    if x.dtype != space.dtype:
        return f"expected dtype {space.dtype}, got {x.dtype}"
    if (box_bounds or isinstance(space, Discrete)) and not space.contains(x):
        return f"values outside {space}"
    return None


def is_numpy(x: Any) -> bool:
    """Whether ``x`` is a NumPy array or a dict holding one."""
    return isinstance(x, np.ndarray) or (
        isinstance(x, dict) and any(isinstance(v, np.ndarray) for v in x.values())
    )


def to_numpy(x: Any) -> Any:
    """A tensor (or dict of tensors) as NumPy array(s) on the host."""
    return {k: v.cpu().numpy() for k, v in x.items()} if isinstance(x, dict) else x.cpu().numpy()


def as_batch(space: Space, x: Any, device: Any = "cpu") -> Any:
    """A batch ``[B, *space.shape]`` of ``space`` values (tensors, NumPy
    arrays or nested lists; a dict of them for a dict space) as tensors of
    the space's dtype on ``device``.

    Raises:
        ValueError: naming the space and what does not fit.
    """

    def to_tensor(value: Any, sub: Any) -> torch.Tensor:
        value = value if isinstance(value, torch.Tensor) else np.asarray(value)
        return torch.as_tensor(value, device=device).to(sub.dtype)

    if isinstance(space, dict):
        if not isinstance(x, dict):
            raise ValueError(
                f"`obs` must be a dict with keys {sorted(space)}, got {type(x).__name__}."
            )
        batch_t = {k: to_tensor(x[k], sub) for k, sub in space.items() if k in x}
        batch = next(iter(batch_t.values())).shape[:1] if batch_t else ()
    else:
        batch_t = to_tensor(x, space)
        batch = batch_t.shape[:1]
    why = (
        describe_mismatch(space, batch_t, batch)
        if len(batch) == 1
        else "expected a leading batch dimension"
    )
    if why:
        raise ValueError(f"`obs` does not fit observation_space {space!r}: {why}.")
    return batch_t


def space_to_dict(space: Space) -> dict[str, Any]:
    """A JSON-ready description of a space (inverse: :func:`space_from_dict`)."""
    if isinstance(space, dict):
        return {"type": "Dict", "spaces": {k: space_to_dict(v) for k, v in space.items()}}
    if isinstance(space, Discrete):
        return {"type": "Discrete", "n": space.n, "shape": list(space.shape)}
    return {
        "type": "Box",
        "shape": list(space.shape),
        "low": space.low,
        "high": space.high,
        "dtype": str(space.dtype).removeprefix("torch."),
    }


def space_from_dict(data: dict[str, Any]) -> Space:
    """Rebuild a space from :func:`space_to_dict`'s output.

    Raises:
        ValueError: for an unknown space type.
    """
    kind = data.get("type")
    if kind == "Dict":
        return {k: space_from_dict(v) for k, v in data["spaces"].items()}
    if kind == "Discrete":
        return Discrete(data["n"], shape=tuple(data["shape"]))
    if kind == "Box":
        return Box(
            tuple(data["shape"]),
            low=data["low"],
            high=data["high"],
            dtype=getattr(torch, data["dtype"]),
        )
    raise ValueError(f"Unknown space type {kind!r}; expected 'Box', 'Discrete' or 'Dict'.")
