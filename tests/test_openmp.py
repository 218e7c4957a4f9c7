"""OpenMP's wait policy: rlstack shortens libgomp's spin before torch loads
libgomp, and keeps a wait policy the user chose.
"""

import os
import subprocess
import sys

import pytest

from rlstack.integrations import openmp

# Records GOMP_SPINCOUNT at the moment `torch` is first imported (when torch loads libgomp, which
# reads it then), imports rlstack (or runs the `rlstack` command's module), prints the record.
WATCH_TORCH_IMPORT = """
import os, sys
seen = []
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("GOMP_SPINCOUNT", "unset"))
        return None
sys.meta_path.insert(0, Watch())
{body}
print("GOMP_SPINCOUNT when torch loaded:", seen[0])
"""


def _spin_count_when_torch_loaded(body: str, **env: str) -> str:
    environ = {
        name: value
        for name, value in os.environ.items()
        if name not in openmp.WAIT_POLICY_VARIABLES
    }
    result = subprocess.run(
        [sys.executable, "-c", WATCH_TORCH_IMPORT.format(body=body)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**environ, **env},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().rpartition(" ")[2]


@pytest.mark.parametrize(
    "body",
    [
        "import rlstack",
        "from rlstack.cli import main",  # the `rlstack` console script's import
        "import rlstack.envs",
    ],
)
def test_libgomp_sees_rlstack_spin_count_when_rlstack_is_imported_first(body):
    assert _spin_count_when_torch_loaded(body) == str(openmp.SPIN_COUNT)


def test_a_spin_count_the_user_set_is_kept():
    assert _spin_count_when_torch_loaded("import rlstack", GOMP_SPINCOUNT="12345") == "12345"


@pytest.mark.parametrize("policy", ["ACTIVE", "PASSIVE"])
def test_a_wait_policy_the_user_set_is_kept(policy):
    # libgomp derives the spin count from OMP_WAIT_POLICY where GOMP_SPINCOUNT is unset.
    assert _spin_count_when_torch_loaded("import rlstack", OMP_WAIT_POLICY=policy) == "unset"


def test_spin_briefly_sets_the_spin_count_only_where_no_policy_is_set():
    environ = {}
    assert openmp.spin_briefly(environ)
    assert environ == {"GOMP_SPINCOUNT": str(openmp.SPIN_COUNT)}
    environ = {"OMP_WAIT_POLICY": "active"}
    assert not openmp.spin_briefly(environ)
    assert environ == {"OMP_WAIT_POLICY": "active"}
