"""The loop of :meth:`Trainer.run <rlstack.Trainer.run>`: step, evaluate and
checkpoint when due, stop when a condition or callback says so, and end
the MLflow run with the status the loop ended with. It drives a Trainer
through its public methods (this module does not import it).
"""

from __future__ import annotations

import copy
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..integrations import distributed
from .conditions import Condition

Stats = dict[str, float]
#: A Trainer (see :class:`~rlstack.shell.trainer.Trainer`).
Trainer = Any
#: ``Trainer.run``'s default ``checkpoint_every_s``: at most this much training (in seconds) is
#: lost to a hard kill.
CHECKPOINT_EVERY_S = 300.0
#: The clock of timed checkpoints (a test replaces it).
clock = time.monotonic


class RunSchedule:
    """When a run evaluates and checkpoints, and how it stops: the arguments
    of :meth:`Trainer.run <rlstack.Trainer.run>`, validated before it is made.

    Attributes:
        conditions: the stop conditions (``stop_conditions``; see
            :mod:`rlstack.shell.conditions`); checked after every step on its
            stats (merged with eval stats on eval steps).
        steps_per_eval: run :meth:`Trainer.eval <rlstack.Trainer.eval>` every this many steps.
        env_config: reset config for training envs.
        eval_env_config: reset config for evaluation envs (default
            ``env_config``).
        checkpoint_every: write a checkpoint every this many steps.
        checkpoint_dir: where checkpoints go (``step-<N>.pt``); each is
            also logged to the MLflow run under ``checkpoints/``.
        keep_checkpoints: how many of this run's newest checkpoint files
            to keep in ``checkpoint_dir``.
        member_stop: for a population: ``"each"`` member is checked on
            its own stats with its own copy of the conditions and frozen
            once one holds, until every member has; ``"any"`` member
            meeting one ends the run; or the conditions see the
            ``"mean"`` over members. Callbacks always see the mean.
        checkpoint_every_s: with a ``checkpoint_dir``, also write one
            once this many seconds have passed since the last (default
            :data:`rlstack.shell.trainer.CHECKPOINT_EVERY_S`), so a hard kill loses at most
            that much training; ``None`` or 0 turns it off.
    """

    def __init__(
        self,
        *,
        conditions: list[Condition],
        member_stop: str,
        steps_per_eval: int | None,
        checkpoint_every: int | None,
        checkpoint_every_s: float | None,
        checkpoint_dir: str | os.PathLike | None,
        keep_checkpoints: int,
        env_config: Mapping[str, Any] | None,
        eval_env_config: Mapping[str, Any] | None,
    ) -> None:
        self.conditions = conditions
        self.member_stop = member_stop
        self.steps_per_eval = steps_per_eval
        self.checkpoint_every = checkpoint_every
        self.checkpoint_every_s = checkpoint_every_s or None
        self.checkpoint_dir = checkpoint_dir
        self.keep_checkpoints = keep_checkpoints
        self.env_config = env_config
        self.eval_env_config = eval_env_config
        self.last_checkpoint = clock()

    def member_conditions(self, count: int) -> list[list[Condition]] | None:
        """Each member's own copy of the conditions (a single run: the ones
        given); ``None`` when they see the combined stats (``"mean"``).
        """
        if self.member_stop == "mean":
            return None
        if count == 1:
            return [self.conditions]
        return [copy.deepcopy(self.conditions) for _ in range(count)]

    def eval_due(self, steps: int) -> bool:
        """Whether an evaluation follows step ``steps``."""
        return bool(self.steps_per_eval) and steps % self.steps_per_eval == 0

    def checkpoint_due(self, steps: int) -> bool:
        """Whether a checkpoint follows step ``steps``: every ``checkpoint_every``
        steps, or ``checkpoint_every_s`` seconds after the last (decided on
        every rank together).
        """
        timed = self.checkpoint_every_s is not None
        due = timed and clock() - self.last_checkpoint >= self.checkpoint_every_s
        if timed and distributed.world_size() > 1:
            due = distributed.any_rank(due)  # every rank saves together
        return due or bool(self.checkpoint_every and steps % self.checkpoint_every == 0)


def run(trainer: Trainer, schedule: RunSchedule, callbacks: Sequence[Callable]) -> Stats:
    """Step ``trainer`` until a stop condition or a callback says so; see
    :meth:`Trainer.run <rlstack.Trainer.run>` for what happens on Ctrl-C and
    on a non-finite step. Returns the last step's stats.
    """
    members = trainer.algorithm.members
    members.unfreeze_all()  # conditions stop members for one run only
    member_conditions = schedule.member_conditions(len(members.stopped))
    directory, keep = schedule.checkpoint_dir, schedule.keep_checkpoints
    try:
        while True:
            stats, stop = _step(trainer, schedule, callbacks)
            stop.append(_conditions_met(trainer, stats, schedule, member_conditions))
            if schedule.checkpoint_due(trainer.state["algorithm/steps"]):
                trainer.checkpoint_to(directory, keep)
                schedule.last_checkpoint = clock()
            if distributed.world_size() > 1:  # every rank stops at the same step
                stop = [distributed.any_rank(any(stop))]
            if any(stop):
                trainer.run_log.status["status"] = "FINISHED"
                return stats
    except KeyboardInterrupt:
        trainer.run_log.status["status"] = "KILLED"
        if directory is not None:
            path = trainer.checkpoint_to(directory, keep)
            print(f"\nrlstack: interrupted; last completed step saved to {path}", flush=True)
        raise
    except FloatingPointError as e:
        trainer.run_log.status["status"] = "FAILED"
        if directory is not None:
            raise _save_last_good_step(trainer, e, directory, keep) from e
        raise
    except BaseException:
        trainer.run_log.status["status"] = "FAILED"
        raise
    finally:
        members.unfreeze_all()  # the next run starts with every member that can train
        # A failure of the tracking store never hides the error that ended the run.
        trainer.run_log.flush(quiet=sys.exc_info()[0] is not None)


def _step(
    trainer: Trainer, schedule: RunSchedule, callbacks: Sequence[Callable]
) -> tuple[Stats, list[bool]]:
    """One step, and an evaluation when due: the merged stats, and what each
    callback said about stopping.
    """
    stats = trainer.step(env_config=schedule.env_config)
    stop = [bool(callback(stats)) for callback in callbacks]
    if schedule.eval_due(trainer.state["algorithm/steps"]):
        eval_stats = trainer.eval(env_config=schedule.eval_env_config)
        stop += [bool(callback(eval_stats)) for callback in callbacks]
        stats.update(eval_stats)
    return stats, stop


def _save_last_good_step(
    trainer: Trainer, error: FloatingPointError, directory: Any, keep: int
) -> FloatingPointError:
    """Checkpoint the last good step after ``error`` (the rollout that failed
    is dropped); the error to raise, saying where it went.
    """
    trainer.algorithm.trajectory = None
    if not trainer.algorithm.state_is_finite():
        return FloatingPointError(
            f"{error} The state before it is not finite either: no checkpoint written."
        )
    return FloatingPointError(
        f"{error} Last good step saved to {trainer.checkpoint_to(directory, keep)}."
    )


def _conditions_met(
    trainer: Trainer,
    stats: Stats,
    schedule: RunSchedule,
    member_conditions: list[list[Condition]] | None,
) -> bool:
    """Whether the run stops: the conditions on the combined ``stats``
    (``"mean"``), else each training member's on its own stats, which freezes
    it (``"each"``) or ends the run (``"any"``).
    """
    if member_conditions is None:  # every condition sees every step
        return any([condition(stats) for condition in schedule.conditions])
    members = trainer.algorithm.members
    for k, conditions in enumerate(member_conditions):
        if members.stopped[k] is not None or not conditions:
            continue
        if any([condition(trainer.member_stats[k]) for condition in conditions]):
            if schedule.member_stop == "any":
                return True
            members.freeze(k, "stop condition")
    return not any(members.training())
