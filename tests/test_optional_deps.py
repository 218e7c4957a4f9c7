"""rlstack without MLflow: ``import rlstack`` and ``Algorithm`` work, and what
needs MLflow (Trainer, export, plots) says which package is missing before any
work starts. The GPU machine (issue 26) has torch, numpy and optree only.
"""

import subprocess
import sys
import textwrap

import pytest

# Runs in a fresh interpreter where `import mlflow` (and any mlflow.* import) fails.
WITHOUT_MLFLOW = textwrap.dedent(
    """
    import sys
    sys.modules["mlflow"] = None
    import torch
    import rlstack
    from rlstack.envs import CartPole
    algo = rlstack.Algorithm(
        CartPole, num_envs=8, horizon=4, compile=False, model_config={"hiddens": (8,)}
    )
    algo.collect()
    stats = algo.step()
    assert torch.isfinite(torch.tensor(stats["losses/total"])), stats
    assert "mlflow" not in [m for m in sys.modules if sys.modules[m] is not None]
    WHAT
    """
)


def _run(what: str) -> subprocess.CompletedProcess:
    code = WITHOUT_MLFLOW.replace("WHAT", what)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_algorithm_trains_without_mlflow():
    result = _run("print('ok')")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


@pytest.mark.parametrize(
    "what",
    [
        "rlstack.Trainer(CartPole, num_envs=8, horizon=4, compile=False)",
        "rlstack.Trainer.from_checkpoint('no-such-file.pt')",
        "import rlstack.integrations.export",
        "import rlstack.integrations.plotting; "
        "rlstack.integrations.plotting.plot_learning_curve('some-run', 'curve.png')",
    ],
)
def test_what_needs_mlflow_names_the_missing_package(what):
    result = _run(what)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: ") and "pip install 'mlflow" in last, result.stderr
