"""``rlstack.types``, the import path the notebooks use: every public name of
:mod:`rlstack.core.types`, where the code lives.
"""

from .core.types import *  # noqa: F401,F403
