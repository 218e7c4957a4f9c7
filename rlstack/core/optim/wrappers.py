"""Transforms around another (:func:`accumulate_gradients`,
:func:`apply_if_finite`), selecting a step on device (:func:`tree_select`),
and reading or changing a chain's state (:func:`step_count`,
:func:`learning_rate`, :func:`set_learning_rate`); see :mod:`rlstack.core.optim`.
"""

from __future__ import annotations

from typing import Any

import optree
import torch

from ..types import Params
from .base import AccumulateState, ApplyIfFiniteState, GradientTransformation, _scalar, _zeros_like


def tree_select(condition: torch.Tensor, new: Any, old: Any) -> Any:
    """Leafwise ``torch.where(condition, new, old)`` over two trees of one
    structure: ``new`` where the 0-d bool ``condition`` holds, else ``old``
    (how a step is kept or discarded on device, without a host sync).
    """
    return optree.tree_map(lambda n, o: torch.where(condition, n, o), new, old)


def accumulate_gradients(inner: GradientTransformation, every_k: int) -> GradientTransformation:
    """Sum gradients over ``every_k`` calls and let ``inner`` take one step on
    their mean on the ``every_k``-th call (optax's ``MultiSteps``); the other
    calls return zero updates. With equal-sized batches the step equals one
    step on the union of the batches.
    """
    if not isinstance(every_k, int) or isinstance(every_k, bool) or every_k < 1:
        raise ValueError(f"`every_k` must be a positive int, got {every_k!r}.")

    def init(params: Params) -> AccumulateState:
        return AccumulateState(
            _scalar(0, params, torch.int64), _zeros_like(params), inner.init(params)
        )

    def update(
        grads: Params, state: AccumulateState, params: Params
    ) -> tuple[Params, AccumulateState]:
        grad_sum = optree.tree_map(torch.add, state.grad_sum, grads)
        emit = state.mini_step + 1 >= every_k
        mean = optree.tree_map(lambda g: g / every_k, grad_sum)
        updates, inner_state = inner.update(mean, state.inner, params)
        updates = optree.tree_map(lambda u: torch.where(emit, u, torch.zeros_like(u)), updates)
        return updates, AccumulateState(
            torch.where(emit, torch.zeros_like(state.mini_step), state.mini_step + 1),
            optree.tree_map(lambda g: torch.where(emit, torch.zeros_like(g), g), grad_sum),
            tree_select(emit, inner_state, state.inner),
        )

    return GradientTransformation(init, update)


def apply_if_finite(inner: GradientTransformation) -> GradientTransformation:
    """Skip ``inner``'s step when any gradient is NaN or infinite (optax's
    ``apply_if_finite``): zero updates, ``inner``'s state kept, and the skip
    counted on device (``notfinite_count`` consecutive, ``total_notfinite``
    in all), so a bad minibatch never reaches the params.
    """

    def init(params: Params) -> ApplyIfFiniteState:
        zero = _scalar(0, params, torch.int64)
        return ApplyIfFiniteState(zero, zero.clone(), inner.init(params))

    def update(
        grads: Params, state: ApplyIfFiniteState, params: Params
    ) -> tuple[Params, ApplyIfFiniteState]:
        finite = torch.stack([torch.isfinite(g).all() for g in optree.tree_leaves(grads)]).all()
        updates, inner_state = inner.update(grads, state.inner, params)
        updates = optree.tree_map(lambda u: torch.where(finite, u, torch.zeros_like(u)), updates)
        skipped = (~finite).long()
        return updates, ApplyIfFiniteState(
            torch.where(finite, torch.zeros_like(state.notfinite_count), state.notfinite_count + 1),
            state.total_notfinite + skipped,
            tree_select(finite, inner_state, state.inner),
        )

    return GradientTransformation(init, update)


def step_count(state: Any) -> torch.Tensor:
    """The 0-d float32 ``count`` of the first state in ``state`` that has one
    (depth first): the number of steps the optimizer has applied.

    Raises:
        ValueError: if no state in the tree counts steps.
    """
    found = _first_field(state, "count")
    if found is None:
        raise ValueError(
            "The optimizer state has no step `count`: include adam, adamw or sgd in the optimizer."
        )
    return found


def set_learning_rate(state: Any, learning_rate: torch.Tensor) -> Any:
    """``state`` with every ``learning_rate`` field (of :func:`adam`,
    :func:`sgd`, ..., at any depth) replaced by ``learning_rate`` (a 0-d
    float32 tensor): a new rate for the next steps, without rebuilding or
    recompiling anything. A schedule-driven transform ignores the field.
    """
    if hasattr(state, "_fields"):
        children = [set_learning_rate(child, learning_rate) for child in state]
        state = type(state)(*children)
        if "learning_rate" in state._fields:
            state = state._replace(learning_rate=learning_rate.to(state.learning_rate))
        return state
    if isinstance(state, (tuple, list)):
        return type(state)(set_learning_rate(child, learning_rate) for child in state)
    return state


#: rsl_rl's adaptive schedule: the factor a step's rate changes by, and its bounds.
KL_LR_FACTOR, KL_LR_BOUNDS = 1.5, (1e-5, 1e-2)


def adapt_learning_rate(
    state: Any,
    kl: torch.Tensor,
    *,
    desired_kl: float,
    factor: float = KL_LR_FACTOR,
    bounds: tuple[float, float] = KL_LR_BOUNDS,
) -> Any:
    """``state`` with its learning rate adapted to ``kl`` (0-d, the KL of
    the policy before the step to the behaviour policy), rsl_rl's adaptive
    schedule: divided by ``factor`` where ``kl > 2 * desired_kl``
    (floored at ``bounds[0]``), multiplied by it where ``0 < kl <
    desired_kl / 2`` (capped at ``bounds[1]``), else unchanged. On device,
    no host sync; under ``vmap`` each member adapts its own rate.

    Raises:
        ValueError: if no state in the tree holds a learning rate (see :func:`learning_rate`).
    """
    lr = learning_rate(state)
    low, high = bounds
    lowered = torch.clamp(lr / factor, min=low)
    raised = torch.clamp(lr * factor, max=high)
    new = torch.where(
        kl > 2.0 * desired_kl,
        lowered,
        torch.where((kl < desired_kl / 2.0) & (kl > 0.0), raised, lr),
    )
    return set_learning_rate(state, new.to(lr.dtype))


def learning_rate(state: Any) -> torch.Tensor:
    """The 0-d float32 ``learning_rate`` of the first state in ``state`` that
    has one (depth first): the rate of the next step, or the last step's
    when scheduled.

    Raises:
        ValueError: if no state in the tree holds a learning rate.
    """
    found = _first_field(state, "learning_rate")
    if found is None:
        raise ValueError(
            "The optimizer state has no `learning_rate`: include scale_by_learning_rate (adam, "
            "adamw, "
            "sgd) in the optimizer."
        )
    return found


def _first_field(state: Any, name: str) -> Any:
    """The field ``name`` of the first NamedTuple in ``state`` (depth first) that has one, else
    None.
    """
    if hasattr(state, "_fields") and name in state._fields:
        return getattr(state, name)
    if isinstance(state, (tuple, list)):
        for child in state:
            found = _first_field(child, name)
            if found is not None:
                return found
    return None
