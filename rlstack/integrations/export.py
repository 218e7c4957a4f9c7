"""Ship a trained policy: an MLflow pyfunc model that rebuilds itself.

``export_policy(algorithm, path)`` writes an MLflow model directory::

    path/MLmodel, requirements.txt, ...   (MLflow's files)
    path/pyfunc_model.py          the pyfunc entry point, as code (MLflow's
                                  models-from-code: loading unpickles nothing)
    path/artifacts/params.pt      the policy's params, torch.save'd dict[str, Tensor]
    path/artifacts/obs_moments.pt the running observation statistics (mean,
                                  var, count) when trained with normalize_obs
    path/artifacts/policy.json    model and distribution classes, model_config,
                                  observation/action spaces, rlstack version
    path/code/rlstack/            rlstack's source, put on sys.path by MLflow

Every ``.pt`` file loads with ``torch.load(weights_only=True)`` after its
zip CRCs are verified. ``mlflow.pyfunc.load_model(path).predict({"obs":
array})`` returns exactly the actions ``Algorithm.predict`` returned when it
was exported (observation normalisation and the action space's bounds
included); ``params={"deterministic": False}`` samples instead and
``params={"outputs": "all"}`` returns a dict with ``actions``, ``log_probs``
and ``values``. Without MLflow, :class:`ExportedPolicy` does the same.

A policy with memory (a recurrent model, or a window of past observations)
keeps it inside the loaded model between calls: call ``predict`` with
successive observations of the same envs, as an env loop does, and pass
``params={"reset": True}`` with the first observations of new episodes
(:class:`ExportedPolicy` also takes per-env ``starts`` and exposes the
memory as :attr:`ExportedPolicy.memory`).

Loading imports only rlstack's own model and distribution classes by the
names in ``policy.json``; a user's class is passed by the caller
(``ExportedPolicy(path, model_cls=MyModel)``) or named as trusted
(``mlflow.pyfunc.load_model(path, model_config={"allow_classes":
["mypkg.models:MyModel"]})``), so an exported directory never makes rlstack
import a module it names.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import random
from ..core.normalization import RunningMoments, moments_to_tensors
from ..core.spaces import (
    Discrete,
    sample,
    space_to_dict,
)
from ..core.version import __version__
from . import checkpoint as ckpt

# The reading side, handed on so that rlstack.export has the whole export API.
from .exported import (
    CONFIG_FILE,
    MOMENTS_FILE,
    PARAMS_FILE,
    ExportedPolicy,
    PolicyModel,
    load_policy,
)
from .tracking import require_mlflow

mlflow = require_mlflow()  # before MLflow's own imports: a missing MLflow is named
from mlflow.models import ModelSignature  # noqa: E402
from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec  # noqa: E402

_ENTRY_POINT = Path(__file__).with_name("pyfunc_model.py")


def _tensor_spec(space: Any, name: str) -> list[TensorSpec]:
    if isinstance(space, dict):
        return [spec for key, sub in space.items() for spec in _tensor_spec(sub, key)]
    dtype = (
        np.int64
        if isinstance(space, Discrete)
        else np.dtype(str(space.dtype).removeprefix("torch."))
    )
    return [TensorSpec(np.dtype(dtype), (-1, *space.shape), name)]


def check_export_path(path: str | os.PathLike) -> None:
    """Raise ``FileExistsError`` if ``path`` exists and is not an empty
    folder (checked before training, so no work is wasted).
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(
            f"Export path {str(path)!r} exists and is not empty; choose a new directory."
        )


def lock_export_path(path: str | os.PathLike) -> ckpt.FolderLock:
    """Check ``path`` (:func:`check_export_path`) and lock it for this process
    until the export is written: the lock is a file beside the folder
    (``.<name>.rlstack.lock``), so the folder stays empty for MLflow.

    Raises:
        FileExistsError: if ``path`` exists and is not empty.
        ValueError: if another live run is to export there.
    """
    check_export_path(path)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"Export path {str(path)!r} is not writable: {e.strerror or e}.") from e
    lock = ckpt.FolderLock(path.parent / f".{path.name}.rlstack.lock", "--save", str(path))
    lock.take("an export")
    return lock


def export_policy(algorithm: Any, path: str | os.PathLike) -> str:
    """Write ``algorithm``'s current policy to ``path`` as an MLflow model.

    The model declares a signature (``obs`` ``[-1, *obs_shape]`` in,
    ``actions`` out, params ``deterministic`` and ``outputs``) and pip
    requirements (torch, numpy, optree; rlstack itself travels as code).

    Raises:
        FileExistsError: if ``path`` exists and is not empty.
    """
    check_export_path(path)
    path = Path(path)
    env = algorithm.env
    moments = algorithm.obs_moments
    config = _policy_config(algorithm)
    signature = _signature(env)
    example = sample(
        env.observation_space, (2,), key=random.key(0)
    )  # never torch's global generator
    input_example = (
        {k: v.numpy() for k, v in example.items()}
        if isinstance(example, dict)
        else {"obs": example.numpy()}
    )
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {"params": Path(tmp) / PARAMS_FILE, "config": Path(tmp) / CONFIG_FILE}
        torch.save({k: v.detach().cpu() for k, v in algorithm.params.items()}, artifacts["params"])
        if config["normalize_obs"]:
            artifacts["obs_moments"] = Path(tmp) / MOMENTS_FILE
            torch.save(
                {k: v.detach().cpu() for k, v in moments_to_tensors(moments).items()},
                artifacts["obs_moments"],
            )
        artifacts["config"].write_text(json.dumps(config, indent=2, default=list))
        mlflow.pyfunc.save_model(
            path=str(path),
            python_model=str(_ENTRY_POINT),
            artifacts={k: str(v) for k, v in artifacts.items()},
            signature=signature,
            input_example=input_example,
            code_paths=[str(Path(__file__).resolve().parents[1])],  # the rlstack package
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                f"numpy>={np.__version__.split('.')[0]}",
                "optree>=0.13",
            ],
            metadata={"rlstack_version": __version__, "env": config["env"]},
            # Declared so that load_model(path, model_config={"allow_classes": [...]}) is accepted.
            model_config={"allow_classes": []},
        )
    return str(path)


__all__ = ["ExportedPolicy", "PolicyModel", "check_export_path", "export_policy", "load_policy"]


def _policy_config(algorithm: Any) -> dict[str, Any]:
    """What ``policy.json`` says of an exported policy: its classes, spaces,
    env and memory, and whether observation statistics travel with it.
    """
    env = algorithm.env
    moments = algorithm.obs_moments
    return {
        "rlstack_version": __version__,
        "model_cls": ckpt.qualified_name(type(algorithm.policy.model)),
        "model_config": algorithm.build_config["model_config"],
        "distribution_cls": ckpt.qualified_name(algorithm.policy.distribution_cls),
        "observation_space": space_to_dict(env.observation_space),
        "action_space": space_to_dict(env.action_space),
        "normalize_obs": isinstance(moments, (RunningMoments, dict)),
        "env": algorithm.build_config["env"],
        "env_config": algorithm.env_config,
        "memory": "recurrent"
        if algorithm.policy.recurrent
        else (
            f"obs_window={algorithm.policy.obs_window}" if algorithm.policy.obs_window > 1 else None
        ),
    }


def _signature(env: Any) -> ModelSignature:
    """The model's signature: ``obs`` in, ``actions`` out, and its params."""
    inputs = Schema(_tensor_spec(env.observation_space, "obs"))
    outputs = Schema(_tensor_spec(env.action_space, "actions"))
    signature = ModelSignature(
        inputs=inputs,
        outputs=outputs,
        params=ParamSchema(
            [
                ParamSpec("deterministic", "boolean", True),
                ParamSpec("outputs", "string", "actions"),
                ParamSpec("reset", "boolean", False),
            ]
        ),
    )
    return signature
