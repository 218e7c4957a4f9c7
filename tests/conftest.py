import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path, monkeypatch):
    """Every test logs to its own throwaway MLflow store (artifacts included:
    the SQLite store puts them under ./mlruns of the working directory, so
    tests run in their temp dir) and leaves no run open. Where MLflow is not
    installed (the GPU machine), tests still run in their temp dir.
    """
    monkeypatch.chdir(tmp_path)
    try:
        import mlflow
    except ImportError:
        yield
        return
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()
    if (tmp_path / "mlflow.db").exists():
        mlflow.set_experiment(experiment_id="0")  # forget any experiment a test made active
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="session")
def _compile_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("compile-cache")


@pytest.fixture(autouse=True)
def _isolated_compile_cache(_compile_cache, monkeypatch):
    """Compiled pieces go to a folder of this test session's, never the user's cache."""
    monkeypatch.setenv("RLSTACK_COMPILE_CACHE", str(_compile_cache))


@pytest.fixture(autouse=True)
def _no_compiling_children_left():
    """Every compiling child a test's background compile forked is killed when it ends."""
    yield
    from rlstack.shell import compile_worker

    for pid in compile_worker.children():
        compile_worker.kill(pid)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
