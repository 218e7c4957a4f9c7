"""The command line's help texts, taken from the docstrings where each setting is
documented once (:class:`~rlstack.core.config.AlgorithmConfig`'s attributes).
"""

from __future__ import annotations

import re

from ..core.config import AlgorithmConfig


def field_help() -> dict[str, str]:
    """Each hyperparameter's one-line help, from AlgorithmConfig's docstring
    (where each is documented once).
    """
    text = (AlgorithmConfig.__doc__ or "").split("Attributes:", 1)[-1]
    entries: dict[str, str] = {}
    names: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        head, sep, rest = stripped.partition(": ")
        if sep and line.startswith(" " * 8) and not line.startswith(" " * 12):
            names = [n.strip() for n in head.split("/")]
            for name in names:
                entries[name] = rest
        elif stripped and names:
            for name in names:
                entries[name] += " " + stripped
    return {k: plain_text(v).replace("%", "%%") for k, v in entries.items()}


def plain_text(text: str) -> str:
    """A docstring's reST as terminal text: ``:class:`~a.B``` -> ``B``,
    ``:func:`a.b``` -> ``a.b``, double backquotes dropped.
    """
    text = re.sub(r":\w+:`~[\w.]*?(\w+)`", r"\1", text)
    text = re.sub(r":\w+:`([^`]+)`", r"\1", text)
    return text.replace("``", "")
