"""``rlstack.distributions``, the import path rlstack 1.x code and the README use: every public name
of :mod:`rlstack.policy.distributions`, where the code lives.
"""

from .policy.distributions import *  # noqa: F401,F403
