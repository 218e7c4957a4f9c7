"""``rlstack.spaces``, the import path the notebooks use: every public name of
:mod:`rlstack.core.spaces`, where the code lives.
"""

from .core.spaces import *  # noqa: F401,F403
