"""How a flag's text becomes a value: argparse ``type`` functions (a bool,
a number or one per population member, ``PIECE=N`` pairs, ``none`` for an
optional hyperparameter) and the marker of a hyperparameter turned off.
"""

from __future__ import annotations

import argparse
from typing import Any


class _Disabled:
    """What ``--vf-clip-param none`` parses to, until the flags are merged
    (argparse's own None means "not given").
    """

    def __repr__(self) -> str:
        return "None"


DISABLED = _Disabled()


def none_or(kind: type) -> Any:
    """An argparse ``type`` for ``X | None`` options: a ``kind``, or ``none``."""

    def parse(text: str) -> Any:
        return DISABLED if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__  # argparse's "invalid float value" message
    return parse


def float_or_list(text: str) -> float | list[float]:
    """``"3e-4"`` -> 3e-4; ``"1e-3,3e-4"`` -> [1e-3, 3e-4] (one value per population member)."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or comma-separated numbers such as 1e-3,3e-4, got {text!r}"
        ) from None
    return values[0] if len(values) == 1 else values


def parse_bool(text: str) -> bool:
    """``true``/``false`` (``1``/``0``, ``yes``/``no``, ``on``/``off``)."""
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_switches(text: str) -> dict[str, int]:
    """``rollout/step=3,update/sgd_step=4`` -> ``{"rollout/step": 3, "update/sgd_step": 4}``."""
    switches = {}
    for item in text.split(","):
        piece, _, steps = item.partition("=")
        if not piece or not steps.strip().isdigit():
            raise argparse.ArgumentTypeError(
                "expected PIECE=UPDATES pairs such as rollout/step=3,update/sgd_step=4, "
                f"got {text!r}"
            )
        switches[piece.strip()] = int(steps)
    return switches
