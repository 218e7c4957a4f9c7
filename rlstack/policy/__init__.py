"""The policy layer: models, layers (``nn``), distributions, memory kinds, observation windows and
:class:`~rlstack.policy.policy.Policy`, whose public names ``rlstack.policy`` also hands on (the
import path of the README and the notebooks).
"""

from .policy import *  # noqa: F401,F403
