"""``Population``: ``K`` PPO runs trained in one process by ``torch.func.vmap``.

Every piece of state of an :class:`~rlstack.Algorithm` (params, optimizer
state, normalisation statistics, env carry, random key) is stacked along a
leading member axis ``K``; one vmapped (and compiled) rollout and one
vmapped update advance all members together. Members differ in their seed
and in the hyperparameters that enter as data (:data:`PER_MEMBER`: the
learning rate, and :class:`~rlstack.core.types.HParams`' gamma, GAE lambda,
clip parameter and entropy coefficient). Member ``k``'s random key is
derived from its seed exactly as a single run's, so it trains as
``Algorithm(seed=seeds[k], <its hyperparameters>)`` would alone (to float
rounding: batched matrix products round differently from single ones).

A population is ``Algorithm(env, num_members=K, ...)``: the same code as a
single run, over a :class:`~rlstack.learn.train_state.TrainState` stacked along
the member axis, with the member-level rollout and update mapped over it
(:func:`rlstack.learn.transforms.over_members`). A member that meets its stop
condition, or whose update turns non-finite, is frozen
(:class:`~rlstack.learn.train_state.MemberStatus`): the population keeps
stepping, but that member's state is selected unchanged, on device, at
every later collect and step. Any member can be taken out as an ordinary
:class:`~rlstack.Algorithm` (:meth:`Algorithm.member
<rlstack.Algorithm.member>`, its slice of the state), to checkpoint,
resume, evaluate or export.
"""

from __future__ import annotations

from typing import Any

from ..learn.train_state import select_members, stack, take
from .algorithm import Algorithm
from .members import PER_MEMBER, grid, member_configs

__all__ = ["PER_MEMBER", "Population", "grid", "member_configs", "select_members", "stack", "take"]


class Population(Algorithm):
    """rlstack's earlier name for ``Algorithm(env, num_members=K, ...)``:
    ``num_members`` runs stepped together by one vmapped rollout and update,
    with ``num_members`` required. Nothing else differs.

    Args:
        env: a pure env (class or instance); 1.x stateful and gymnasium
            envs keep state outside the graph and cannot be vmapped.
        num_members: ``K``.
        **kwargs: everything :class:`~rlstack.Algorithm` takes; the
            hyperparameters in :data:`PER_MEMBER` may be lists of ``K``
            values, ``optimizer_config['lr']`` too (or pass ``lr=``
            directly, as :func:`grid` returns it); ``seed`` as
            :func:`member_configs` reads it.

    ``collect()`` and ``step()`` return one stats dict per member;
    ``members`` (a :class:`~rlstack.learn.train_state.MemberStatus`) says
    which still train, why the others stopped and how many updates each took.

    Examples:
        >>> from rlstack.envs import CartPole
        >>> pop = Population(CartPole, num_members=2, entropy_coeff=[0.0, 0.01], num_envs=16,
        ...                  horizon=8, compile=False, model_config={"hiddens": (8,)})
        >>> len(pop.collect()), len(pop.step())
        (2, 2)
        >>> pop.member(1).config.entropy_coeff
        0.01
    """

    def __init__(self, env: Any, /, *, num_members: int, **kwargs: Any) -> None:
        super().__init__(env, num_members=num_members, **kwargs)
