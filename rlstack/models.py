"""``rlstack.models``, the import path rlstack 1.x code and the README use: every public name of
:mod:`rlstack.policy.models`, where the code lives.
"""

from .policy.models import *  # noqa: F401,F403
