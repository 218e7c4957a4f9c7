"""``RecurrentAlgorithm`` and ``RecurrentTrainer``: rlstack 1.x's names for an
:class:`~rlstack.Algorithm` (a :class:`~rlstack.Trainer`) whose model
defaults to :class:`~rlstack.policy.models.RecurrentModel` (an LSTM). A
recurrent model is all it takes: any Algorithm given one trains a recurrent
policy with truncated backpropagation through time. The rollout carries the
model's hidden state (``carry.memory``, see
:class:`~rlstack.policy.memory.RecurrentMemory`), resets it where an env
starts over and every ``seqs_per_state_reset`` sequences, and stores it at
the start of every ``seq_len`` steps; the update replays the model over
shuffled minibatches of whole sequences from those stored states
(:meth:`Policy.replay <rlstack.policy.policy.Policy.replay>`), exactly as it acted.
"""

from __future__ import annotations

from typing import Any

from ..policy.models import RecurrentModel
from .algorithm import Algorithm
from .trainer import Trainer


class RecurrentAlgorithm(Algorithm):
    """An :class:`~rlstack.Algorithm` whose ``model_cls`` defaults to
    :class:`~rlstack.policy.models.RecurrentModel`; ``seq_len`` and
    ``seqs_per_state_reset`` default to rlstack 1.x's 4 and 8 (see
    :class:`~rlstack.core.config.AlgorithmConfig`). Nothing else differs.

    Examples:
        >>> from rlstack.envs import CartPole
        >>> algo = RecurrentAlgorithm(CartPole, num_envs=16, horizon=8, seq_len=4, compile=False,
        ...                           model_config={"hidden_size": 8})
        >>> "returns/mean" in algo.collect() and "losses/total" in algo.step()
        True
        >>> (algo.state.horizons, algo.state.seqs)
        (1, 2)
    """

    def __init__(self, env: Any, /, *, model_cls: type = RecurrentModel, **kwargs: Any) -> None:
        super().__init__(env, model_cls=model_cls, **kwargs)


class RecurrentTrainer(Trainer):
    """rlstack 1.x's name for a :class:`Trainer` whose ``model_cls`` defaults
    to :class:`~rlstack.policy.models.RecurrentModel` (see
    :class:`~rlstack.shell.recurrent.RecurrentAlgorithm`). Nothing else differs.
    """

    def __init__(self, env: Any, /, *, model_cls: type = RecurrentModel, **kwargs: Any) -> None:
        super().__init__(env, model_cls=model_cls, **kwargs)
