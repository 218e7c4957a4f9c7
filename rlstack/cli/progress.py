"""What ``rlstack train`` shows and hears while it runs: the progress line
(:class:`Progress`) and the stop requests of Ctrl-C and SIGTERM
(:class:`StopRequest`).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any


class Progress:
    """A live status line: rewritten in place on a terminal; on a pipe or
    file, one line every ``every`` steps and the last. Shows env steps/s over
    the last step, the mean return of the episodes that ended (on episodic
    envs, with the step they ended at where none ended in the last rollout;
    ``returns/mean``, the return per rollout, otherwise) and, with a
    step limit, the ETA. The
    first step's time includes compilation, so the ETA is estimated from
    the later steps (none is shown until there is one).
    """

    def __init__(
        self,
        stream: Any = None,
        every: int = 10,
        max_steps: int | None = None,
        start_env_steps: int = 0,
    ) -> None:
        self.stream, self.every, self.max_steps = stream or sys.stdout, every, max_steps
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        # The first rate includes compilation: it is wall clock since the start.
        self.last_time, self.last_env_steps, self.rate = time.perf_counter(), start_env_steps, 0.0
        self.step_times: list[float] = []
        self.last_stats: dict[str, float] | None = None
        self.printed = 0  # the last step written as a line
        self.algorithm: Any = None  # the Algorithm, whose compiled pieces are reported
        self.reported: set[str] = set()  # the compiled pieces reported so far
        self.episode_return: float | None = (
            None  # the latest mean over finished episodes, once there is one
        )
        self.episode_step = 0  # the step whose rollout ended those episodes
        self.qualifier = ""  # what the shown return is, where it is not the env's plain score

    def start(self, trainer: Any, max_steps: int | None) -> None:
        """Count from ``trainer``'s state (a resumed run's env steps) towards
        ``max_steps`` updates, and report its compiled pieces as they switch.
        """
        self.max_steps = max_steps
        self.last_env_steps = trainer.state["env/steps"]
        self.last_time = time.perf_counter()
        self.algorithm = trainer.algorithm
        self.qualifier = return_qualifier(trainer.algorithm)

    def __call__(self, stats: dict[str, float]) -> bool:
        """Print the progress line of a step's ``stats`` (not of eval stats); never stops."""
        if "algorithm/steps" not in stats:  # eval stats
            return False
        now = time.perf_counter()
        if stats["env/steps"] > self.last_env_steps:
            self.rate = (stats["env/steps"] - self.last_env_steps) / max(now - self.last_time, 1e-9)
            if self.last_stats is not None:  # not the first step, which compiles
                self.step_times.append(now - self.last_time)
        self.last_time, self.last_env_steps, self.last_stats = now, stats["env/steps"], stats
        steps = int(stats["algorithm/steps"])
        if EPISODE_RETURN in stats:
            self.episode_return, self.episode_step = stats[EPISODE_RETURN], steps
        self._report_switches()
        if self.tty:
            self._write("\r" + self.line(stats))
        elif steps == 1 or steps % self.every == 0:
            self._write(self.line(stats) + "\n")
            self.printed = steps
        return False

    def _report_switches(self) -> None:
        """One line for the pieces that switched to their compiled forms since the last."""
        switched = getattr(self.algorithm, "compile_switches", {})
        new = {name: at for name, at in switched.items() if name not in self.reported}
        if not new:
            return
        self.reported.update(new)
        pieces = ", ".join(f"{name} at update {at}" for name, at in sorted(new.items()))
        self._write(("\r" if self.tty else "") + f"rlstack: compiled {pieces}\n")

    def _write(self, text: str) -> None:
        """Write and flush; a stream that closed (a pipe whose reader left) stops the progress
        lines, never the training.
        """
        if self.stream is None:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.stream = None

    def line(self, stats: dict[str, float]) -> str:
        """The progress line of one step's ``stats``."""
        steps = int(stats["algorithm/steps"])
        # Episodic envs: the return of whole episodes; infinite-horizon ones: the return per
        # rollout.
        shown = (
            (f"episode return{self.qualifier}", self.episode_return)
            if self.episode_return is not None
            else (f"returns/mean{self.qualifier}", stats["returns/mean"])
        )
        text = (
            f"step {steps:>5} | env steps {int(stats['env/steps']):>11,} | "
            f"{self.rate:>10,.0f} steps/s | {shown[0]} {shown[1]:>10.3f}"
        )
        if self.episode_return is not None and self.episode_step != steps:
            # No episode ended in this rollout (envs whose episodes end in lockstep): say when
            # the shown ones did.
            text += f" (ended at step {self.episode_step})"
        if self.max_steps and self.step_times:
            recent = self.step_times[-10:]
            eta = max(self.max_steps - steps, 0) * sum(recent) / len(recent)
            text += f" | ETA {int(eta) // 60:d}:{int(eta) % 60:02d}"
        return text

    def close(self) -> None:
        """Print the last step's line if it was held back."""
        if self.last_stats is None:
            return
        if self.tty:
            self._write("\n")
        elif int(self.last_stats["algorithm/steps"]) != self.printed:
            self._write(self.line(self.last_stats) + "\n")


def return_qualifier(algorithm: Any) -> str:
    """What the progress line's return is, where it is not one run's score on
    the env's own reward: ``" (speed reward)"`` for an env trained on
    another reward than its score's (MountainCar-v0's preset), ``" (mean of
    8 members)"`` for a population; ``""`` otherwise.
    """
    parts = []
    reward = dict(getattr(algorithm, "env_config", None) or {}).get("reward")
    if reward not in (None, "gymnasium"):
        parts.append(f"{reward} reward")
    members = getattr(algorithm, "num_members", None)
    if members:
        parts.append(f"mean of {members} members")
    return f" ({', '.join(parts)})" if parts else ""


#: The stat the progress line shows for episodic envs (the mean return of the episodes that ended).
EPISODE_RETURN = "episodes/return/mean"


class StopRequest:
    """Ctrl-C (SIGINT) and SIGTERM handler for ``train``: the first signal
    asks training to stop after the step in progress (so no checkpoint or
    MLflow write is cut in half); a second one stops at once
    (``KeyboardInterrupt``).

    Only the process that installed it owns the run: a process forked from
    it (a worker of gymnasium's async vector env) inherits the handler but
    not the run, so there SIGINT is ignored (the main process closes its
    workers) and SIGTERM ends the worker quietly, as it would have without
    rlstack.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._owner_pid = os.getpid()

    def __call__(self, signum: int, frame: Any) -> None:
        """The handler: a first signal stops the run after this step, a second one interrupts."""
        if os.getpid() != self._owner_pid:
            _leave_to_the_owner(signum)
            return
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        print(
            f"\nrlstack: {signal.Signals(signum).name}: stopping after this step (again to stop "
            "now)",
            file=sys.stderr,
            flush=True,
        )

    def requested(self, stats: dict[str, float]) -> bool:
        """A :data:`~rlstack.shell.trainer.Callback`: True once a stop was asked for."""
        return self.signal is not None

    def exit_code(self) -> int:
        """The shell's exit code for the signal that stopped the run (``128 + signum``)."""
        return 128 + int(self.signal or signal.SIGINT)


def _leave_to_the_owner(signum: int) -> None:
    """In a forked worker: ignore SIGINT from here on, end at once on SIGTERM."""
    if signum == signal.SIGTERM:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    else:
        signal.signal(signum, signal.SIG_IGN)
