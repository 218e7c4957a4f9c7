"""``rlstack.nn``, the import path rlstack 1.x code use: every public name of
:mod:`rlstack.policy.nn`, where the code lives.
"""

from .policy.nn import *  # noqa: F401,F403
