"""``rlstack.export``, the import path the README use: every public name of
:mod:`rlstack.integrations.export`, where the code lives.
"""

from .integrations.export import *  # noqa: F401,F403
