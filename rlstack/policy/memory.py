"""What a policy remembers between steps: one seam, three kinds.

A :class:`~rlstack.policy.policy.Policy`'s memory kind is fixed when it is built
(:func:`memory_kind` reads the model): :class:`NoMemory` for a
feedforward model, :class:`WindowMemory` for one that sees its last ``K``
observations (``obs_window = K``, :mod:`rlstack.policy.windows`), and
:class:`RecurrentMemory` for one with a hidden state (``initial_hidden``).
Each kind says, as pure functions, everything the rest of rlstack needs:

* ``initial(obs)``: the memory of envs whose episodes begin at ``obs``
  (the one place a first memory is made);
* ``forward(apply, obs, memory, starts)``: the network's
  ``(dist_inputs, value, memory)`` on ``obs``, the memory started over
  where ``starts`` (``[N]`` bool, episodes beginning at ``obs``);
* ``step_record(memory, starts)`` and ``record(first, steps, seq_len)``:
  what a trajectory keeps so that the update sees exactly what the rollout
  acted on (``Trajectory.memory``);
* ``batch(traj, advantages, returns)``, ``rows(batch, idx)`` and
  ``replay(apply, batch)``: the update's rows and the network re-run on
  them, flattened to ``[B]`` transitions for the PPO loss.

``apply(inputs)`` is the model's ``functional_call`` with the params bound
(``Policy.apply`` for feedforward models).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import optree
import torch

from ..core.types import Batch, Tree
from . import windows

Apply = Callable[..., Any]


class NoRecord(NamedTuple):
    """A feedforward policy's trajectory record: nothing."""


class WindowRecord(NamedTuple):
    """A windowed policy's trajectory record.

    Attributes:
        history: the ``K - 1`` observations before the rollout's first,
            leaves ``[K - 1, N, ...]``.
        ages: ``[T, N]`` int64, steps since the episode of ``obs[t]`` began.
    """

    history: Tree
    ages: torch.Tensor


class RecurrentRecord(NamedTuple):
    """A recurrent policy's trajectory record (or, in a batch, per sequence).

    Attributes:
        hiddens: the hidden state at the start of each sequence of
            ``seq_len`` steps (before that step's reset), leaves
            ``[T / seq_len, N, ...]`` (a batch's ``[B, ...]``).
        resets: ``[T, N]`` bool, where the hidden state restarted before
            the step (a batch's ``[B, L]``).
    """

    hiddens: Tree
    resets: torch.Tensor


def _flat(x: torch.Tensor) -> torch.Tensor:
    """``[T, N, ...] -> [T * N, ...]``."""
    return x.reshape(-1, *x.shape[2:])


def _rows_of(
    traj: Any, advantages: torch.Tensor, returns: torch.Tensor, reshape: Callable, memory: Any
) -> Batch:
    """The :class:`~rlstack.core.types.Batch` of ``traj``'s ``[T, N, ...]`` fields
    (values without the bootstrap), each passed through ``reshape``.
    """
    return Batch(
        obs=optree.tree_map(reshape, traj.obs),
        actions=optree.tree_map(reshape, traj.actions),
        log_probs=reshape(traj.log_probs),
        values=reshape(traj.values[:-1]),
        advantages=reshape(advantages),
        returns=reshape(returns),
        memory=memory,
    )


class NoMemory(NamedTuple):
    """A feedforward policy: acts on the current observation alone."""

    def initial(self, obs: Tree) -> tuple:
        """See :class:`rlstack.policy.memory.MemoryKind`'s ``initial``."""
        return ()

    def forward(
        self, apply: Apply, obs: Tree, memory: tuple, starts: torch.Tensor
    ) -> tuple[Any, torch.Tensor, tuple]:
        """See :class:`rlstack.policy.memory.MemoryKind`'s ``forward``."""
        dist_inputs, value = apply(obs)
        return dist_inputs, value, ()

    def step_record(self, memory: tuple, starts: torch.Tensor) -> tuple:
        """See :class:`rlstack.policy.memory.MemoryKind`'s ``step_record``."""
        return ()

    def record(self, first: tuple, steps: list, seq_len: int) -> NoRecord:
        """See :class:`rlstack.policy.memory.MemoryKind`'s ``record``."""
        return NoRecord()

    def batch(self, traj: Any, advantages: torch.Tensor, returns: torch.Tensor) -> Batch:
        """Transitions flattened to ``[T * N, ...]``."""
        return _rows_of(traj, advantages, returns, _flat, NoRecord())

    def rows(self, batch: Batch, idx: torch.Tensor) -> Batch:
        """See :class:`rlstack.policy.memory.MemoryKind`'s ``rows``."""
        return optree.tree_map(lambda x: x[idx], batch)

    def replay(self, apply: Apply, batch: Batch) -> tuple[Any, torch.Tensor]:
        """See :class:`rlstack.policy.memory.MemoryKind`'s ``replay``."""
        return apply(batch.obs)


class WindowMemory(NamedTuple):
    """A feedforward model that sees its last ``size`` observations (see
    :mod:`rlstack.policy.windows`); memory: a :class:`~rlstack.policy.windows.WindowCarry`.
    """

    size: int

    def initial(self, obs: Tree) -> windows.WindowCarry:
        """See :class:`rlstack.policy.memory.MemoryKind`'s ``initial``."""
        return windows.initial(obs, self.size)

    def forward(self, apply: Apply, obs: Tree, memory: windows.WindowCarry, starts: torch.Tensor):
        """See :class:`rlstack.policy.memory.MemoryKind`'s ``forward``."""
        memory = windows.restart(memory, starts)
        seen = windows.window(memory, obs, self.size)
        dist_inputs, value = apply(seen)
        return dist_inputs, value, windows.advance(seen, memory)

    def step_record(self, memory: windows.WindowCarry, starts: torch.Tensor) -> torch.Tensor:
        """``[N]`` the age of the observation acted on."""
        return windows.restart(memory, starts).ages

    def record(self, first: windows.WindowCarry, steps: list, seq_len: int) -> WindowRecord:
        """See :class:`rlstack.policy.memory.MemoryKind`'s ``record``."""
        return WindowRecord(windows.history(first), torch.stack(steps))

    def batch(self, traj: Any, advantages: torch.Tensor, returns: torch.Tensor) -> Batch:
        """Transitions flattened, ``obs`` the trajectory's one copy of its
        frames (:class:`~rlstack.policy.windows.ObsFrames`) to gather windows from.
        """
        rows = _rows_of(traj, advantages, returns, _flat, NoRecord())
        return rows._replace(obs=windows.frames(traj.memory.history, traj.obs, traj.memory.ages))

    def rows(self, batch: Batch, idx: torch.Tensor) -> Batch:
        """Rows ``idx``, their windows ``[B', K, ...]`` gathered from the frames."""
        rows = optree.tree_map(lambda x: x[idx], batch._replace(obs=()))
        return rows._replace(obs=windows.gather(batch.obs, idx, self.size))

    def replay(self, apply: Apply, batch: Batch) -> tuple[Any, torch.Tensor]:
        """See :class:`rlstack.policy.memory.MemoryKind`'s ``replay``."""
        return apply(batch.obs)


class RecurrentMemory(NamedTuple):
    """A model with a hidden state: ``forward(obs, hidden) -> (dist_inputs,
    value, hidden)``; memory: the hidden state, leaves ``[N, ...]``.
    ``initial_hidden(batch_size)`` is the model's first state.
    """

    initial_hidden: Callable[[int, Any], Tree]

    def initial(self, obs: Tree) -> Tree:
        """See :class:`rlstack.policy.memory.MemoryKind`'s ``initial``."""
        first = optree.tree_leaves(obs)[0]
        return self.initial_hidden(first.shape[0], first.device)

    def restart(self, hidden: Tree, starts: torch.Tensor) -> Tree:
        """``hidden`` with the initial state where ``starts``."""
        initial = self.initial_hidden(1, starts.device)
        return optree.tree_map(
            lambda h, h0: torch.where(
                starts.reshape(-1, *([1] * (h.dim() - 1))), h0.to(h.dtype), h
            ),
            hidden,
            initial,
        )

    def forward(self, apply: Apply, obs: Tree, memory: Tree, starts: torch.Tensor):
        """See :class:`rlstack.policy.memory.MemoryKind`'s ``forward``."""
        return apply(obs, self.restart(memory, starts))

    def step_record(self, memory: Tree, starts: torch.Tensor) -> tuple[Tree, torch.Tensor]:
        """The hidden state entering the step (before its reset) and the reset."""
        return memory, starts

    def record(self, first: Tree, steps: list, seq_len: int) -> RecurrentRecord:
        """Only each sequence's first hidden state is kept: the update replays from it."""
        hiddens = [hidden for t, (hidden, _) in enumerate(steps) if t % seq_len == 0]
        return RecurrentRecord(
            optree.tree_map(lambda *hs: torch.stack(hs), *hiddens),
            torch.stack([reset for _, reset in steps]),
        )

    def batch(self, traj: Any, advantages: torch.Tensor, returns: torch.Tensor) -> Batch:
        """Whole sequences: every ``[T, N, ...]`` field becomes ``[S * N, L,
        ...]`` (sequence ``s`` of env ``n`` at row ``s * N + n``, ``S = T /
        L``), the record's hiddens ``[S * N, ...]`` and resets ``[S * N, L]``.
        """
        hiddens = traj.memory.hiddens
        num_seqs = optree.tree_leaves(hiddens)[0].shape[0]

        def by_sequence(x: torch.Tensor) -> torch.Tensor:
            steps, envs = x.shape[:2]
            length = steps // num_seqs
            x = x.reshape(num_seqs, length, envs, *x.shape[2:]).transpose(1, 2)
            return x.reshape(num_seqs * envs, length, *x.shape[3:])

        record = RecurrentRecord(optree.tree_map(_flat, hiddens), by_sequence(traj.memory.resets))
        return _rows_of(traj, advantages, returns, by_sequence, record)

    def rows(self, batch: Batch, idx: torch.Tensor) -> Batch:
        """See :class:`rlstack.policy.memory.MemoryKind`'s ``rows``."""
        return optree.tree_map(lambda x: x[idx], batch)

    def replay(self, apply: Apply, batch: Batch) -> tuple[Any, torch.Tensor]:
        """The model run over each sequence ``[B, L, ...]`` from its stored
        hidden state, reset where the rollout reset it; outputs flattened to
        ``[B * L, ...]``, the order of ``batch``'s flattened fields.
        """
        hidden, outputs = batch.memory.hiddens, []
        for t in range(batch.memory.resets.shape[1]):
            obs = optree.tree_map(lambda x, t=t: x[:, t], batch.obs)
            dist_inputs, value, hidden = self.forward(apply, obs, hidden, batch.memory.resets[:, t])
            outputs.append((dist_inputs, value))
        return optree.tree_map(lambda *xs: torch.stack(xs, 1).flatten(0, 1), *outputs)


MemoryKind = NoMemory | WindowMemory | RecurrentMemory


def memory_kind(model: Any, initial_hidden: Callable[[int, Any], Tree]) -> MemoryKind:
    """The memory kind of ``model``: recurrent if it has ``initial_hidden``,
    a window if its ``obs_window`` is above 1, else none.

    Raises:
        ValueError: for an ``obs_window`` that is not a positive int, or one
            above 1 on a recurrent model.
    """
    size = windows.window_size(model)
    if callable(getattr(model, "initial_hidden", None)):
        if size > 1:
            raise ValueError(
                f"model {type(model).__name__} is recurrent and has obs_window {size}: a recurrent "
                "model's memory is its hidden state; drop obs_window."
            )
        return RecurrentMemory(initial_hidden)
    return WindowMemory(size) if size > 1 else NoMemory()
