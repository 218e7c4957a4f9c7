"""``rlstack.conditions``, the import path rlstack 1.x code use: every public name of
:mod:`rlstack.shell.conditions`, where the code lives.
"""

from .shell.conditions import *  # noqa: F401,F403
