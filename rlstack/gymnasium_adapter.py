"""``rlstack.gymnasium_adapter``, the import path the README use: every public name of
:mod:`rlstack.integrations.gymnasium_adapter`, where the code lives.
"""

from .integrations.gymnasium_adapter import *  # noqa: F401,F403
