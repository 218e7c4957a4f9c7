"""``rlstack.transforms``, the import path the README and the notebooks use: every public name of
:mod:`rlstack.learn.transforms`, where the code lives.
"""

from .learn.transforms import *  # noqa: F401,F403
