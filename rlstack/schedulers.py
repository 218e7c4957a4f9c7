"""``rlstack.schedulers``, the import path rlstack 1.x code use: every public name of
:mod:`rlstack.shell.schedulers`, where the code lives.
"""

from .shell.schedulers import *  # noqa: F401,F403
