"""OpenMP's idle threads on a CPU that other processes share.

torch runs its CPU kernels (eager and compiled alike) on an OpenMP thread
team: GNU libgomp in torch's Linux wheels. Between two parallel regions
an idle thread of the team spins for ``GOMP_SPINCOUNT`` iterations
(libgomp's default: 300,000, milliseconds of a core) before it sleeps.
On cores that other processes use too, the spinning thread holds a core
that the thread its team waits for needs, and every parallel region then
waits for a time slice of the scheduler: beside two busy processes on 2
cores, CartPole-v1's preset ran at a tenth of its quiet speed, several
times below its share of the cores (benchmarks/README.md, "Sharing the
CPU").

So rlstack shortens the spin to :data:`SPIN_COUNT`, unless the user chose
a wait policy (``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` set). libgomp
reads the variable once, when torch loads it: rlstack sets it when
imported (``rlstack/__init__.py`` does it before it imports torch), so it
holds for the ``rlstack`` command and for programs that import rlstack
before torch; a program that imports torch first sets ``GOMP_SPINCOUNT``
itself. Child processes inherit it.

rlstack does not follow the load with the intra-op thread count instead:
the numbers of a run depend on that count (a reduction split over more
threads adds in another order), and a run reproduces given its seed, its
settings and its thread count, whatever else the machine runs.

This module imports nothing but the standard library (it runs before
torch is imported).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

#: The iterations libgomp's idle threads spin before they sleep, where the
#: user set no wait policy (libgomp's own default: 300,000). Measured in
#: benchmarks/README.md, "Sharing the CPU".
SPIN_COUNT = 3000
#: The variables that choose libgomp's wait policy (the user's choice is kept).
WAIT_POLICY_VARIABLES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


def spin_briefly(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Set ``GOMP_SPINCOUNT`` to :data:`SPIN_COUNT` in ``environ`` (the
    process environment), unless one of :data:`WAIT_POLICY_VARIABLES` is
    set there.

    Returns:
        Whether it set the variable. It takes effect only where libgomp
        is loaded afterwards (torch imported after this call).
    """
    if any(name in environ for name in WAIT_POLICY_VARIABLES):
        return False
    environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    return True
