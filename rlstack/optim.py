"""``rlstack.optim``, the import path the README use: every public name of
:mod:`rlstack.core.optim`, where the code lives.
"""

from .core.optim import *  # noqa: F401,F403
