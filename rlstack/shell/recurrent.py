"""``RecurrentAlgorithm``: PPO with a recurrent policy (rlstack 1.x's name and
hyperparameters), trained with truncated backpropagation through time.

The rollout carries the model's hidden state (``carry.memory``, see
:class:`~rlstack.policy.memory.RecurrentMemory`), resets it where an env starts
over and every ``seqs_per_state_reset`` sequences, and stores it at the
start of every ``seq_len`` steps; the update replays the model over
shuffled minibatches of whole sequences from those stored states
(:meth:`Policy.replay <rlstack.policy.policy.Policy.replay>`), exactly as it acted.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from ..core.config import RecurrentAlgorithmConfig
from ..policy.models import RecurrentModel
from .algorithm import Algorithm


class RecurrentAlgorithm(Algorithm):
    """:class:`~rlstack.Algorithm` for a recurrent model (default
    :class:`~rlstack.policy.models.RecurrentModel`, an LSTM) with
    :class:`~rlstack.core.config.RecurrentAlgorithmConfig`'s ``seq_len`` and
    ``seqs_per_state_reset`` (rlstack 1.x's defaults: 4 and 8). Arguments
    as :class:`~rlstack.Algorithm`'s; a user model keeps the recurrent
    contract (:func:`rlstack.policy.policy.check_recurrent_model`).

    Examples:
        >>> from rlstack.envs import CartPole
        >>> algo = RecurrentAlgorithm(CartPole, num_envs=16, horizon=8, seq_len=4, compile=False,
        ...                           model_config={"hidden_size": 8})
        >>> "returns/mean" in algo.collect() and "losses/total" in algo.step()
        True
        >>> (algo.state.horizons, algo.state.seqs)
        (1, 2)
    """

    _recurrent = True
    _config_cls = RecurrentAlgorithmConfig
    _default_model_cls = RecurrentModel

    @property
    def state(self) -> SimpleNamespace:
        """Rlstack 1.x's counters: ``horizons`` (rollouts collected), ``seqs``
        (sequences of ``seq_len`` steps collected per env) and ``buffered``
        (a rollout is waiting for :meth:`step`).
        """
        return SimpleNamespace(
            horizons=self.collects,
            seqs=self.collects * (self.config.horizon // self.config.seq_len),
            buffered=self.trajectory is not None,
        )

    def initial_hidden(self, batch_size: int) -> Any:
        """The model's initial hidden state for ``batch_size`` observations, on the Algorithm's "
        "device.
        """
        return self.policy.initial_hidden(batch_size, self.device)

    def predict(
        self,
        obs: Any,
        deterministic: bool = True,
        *,
        hidden: Any = None,
        starts: Any = None,
        memory: Any = None,
    ) -> tuple[Any, Any]:
        """Actions for a batch of observations, and the hidden state to pass
        with the next batch of the same envs.

        ``deterministic`` stays second, as in :meth:`Algorithm.predict
        <rlstack.Algorithm.predict>`; ``hidden`` is keyword-only.

        Args:
            obs: ``[B, *obs_shape]`` observations (tensor, NumPy array or dict).
            deterministic: the distribution's mode (default) or a sample
                (from the predict key stream).
            hidden: the hidden state this call returned last time for these
                envs; ``None``: episodes start now (the initial state).
            starts: ``[B]`` bool, envs whose episode begins at ``obs`` (their
                hidden state restarts from the initial one); ``None``: none.
            memory: :meth:`Algorithm.predict <rlstack.Algorithm.predict>`'s
                name for ``hidden`` (pass one of them).

        Returns:
            ``(actions, hidden)``: actions inside the env's action space (a
            NumPy array if ``obs`` was one), and the new hidden state.
        """
        if hidden is not None and memory is not None:
            raise ValueError("pass the hidden state as `hidden` or as `memory`, not both.")
        return self._predict_with_memory(
            obs, deterministic, memory if hidden is None else hidden, starts
        )
