"""The command line: ``rlstack train | eval | export | plot``.

:mod:`rlstack.cli.arguments` parses arguments, :mod:`rlstack.cli.config`
assembles ``train``'s configuration (preset, TOML file, flags);
:mod:`rlstack.cli.commands` runs
the commands (printing and exit codes only: the work is done by Trainer,
Algorithm, rlstack.integrations.export and rlstack.integrations.plotting).
"""

from ..integrations.env_names import load_env
from .arguments import build_parser
from .commands import evaluate, export, main, plot, train
from .config import read_toml, train_config
from .progress import Progress, StopRequest

__all__ = [
    "build_parser",
    "load_env",
    "read_toml",
    "train_config",
    "Progress",
    "StopRequest",
    "main",
    "train",
    "evaluate",
    "export",
    "plot",
]
