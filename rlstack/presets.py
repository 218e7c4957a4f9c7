"""``rlstack.presets``, the import path the README and the CLI's users use: every public name of
:mod:`rlstack.shell.presets`, where the code lives.
"""

from .shell.presets import *  # noqa: F401,F403
