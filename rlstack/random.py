"""``rlstack.random``, the import path the README use: every public name of
:mod:`rlstack.core.random`, where the code lives.
"""

from .core.random import *  # noqa: F401,F403
