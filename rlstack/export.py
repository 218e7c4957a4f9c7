"""Ship a trained policy: an MLflow pyfunc model that rebuilds itself.

``export_policy(algorithm, path)`` writes an MLflow model directory::

    path/MLmodel, python_model.pkl, requirements.txt, ...   (MLflow's files)
    path/artifacts/params.pt     the policy's params, torch.save'd dict[str, Tensor]
                                 (loads with torch.load(weights_only=True))
    path/artifacts/policy.json   model and distribution classes, model_config,
                                 observation/action spaces, rlstack version
    path/code/rlstack/           rlstack's source, put on sys.path by MLflow

``mlflow.pyfunc.load_model(path).predict({"obs": array})`` returns actions;
``params={"deterministic": False}`` samples instead and
``params={"outputs": "all"}`` returns a dict with ``actions``, ``log_probs``
and ``values``. Without MLflow, :func:`load_policy` rebuilds
``(policy, params)`` from the two artifacts in a few lines.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import optree
import torch
from mlflow.models import ModelSignature
from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

from . import checkpoint as ckpt
from .policy import Policy
from .spaces import Discrete, sample, space_from_dict, space_to_dict

PARAMS_FILE, CONFIG_FILE = "params.pt", "policy.json"


def load_policy(directory: str | os.PathLike, device: Any = "cpu") -> tuple[Policy, dict[str, torch.Tensor], dict[str, Any]]:
    """Rebuild ``(policy, params, config)`` from an exported directory (or
    its ``artifacts/`` folder) without MLflow.

    Examples:
        >>> policy, params, config = load_policy("exported/")  # doctest: +SKIP
        >>> action, log_prob, value = policy.act(params, obs, deterministic=True)  # doctest: +SKIP
    """
    directory = Path(directory)
    if (directory / "artifacts").is_dir():
        directory = directory / "artifacts"
    config = json.loads((directory / CONFIG_FILE).read_text())
    params = torch.load(directory / PARAMS_FILE, map_location=device, weights_only=True)
    observation_space = space_from_dict(config["observation_space"])
    action_space = space_from_dict(config["action_space"])
    model = ckpt.import_qualified(config["model_cls"])(observation_space, action_space, **config["model_config"]).to(device)
    policy = Policy(model, ckpt.import_qualified(config["distribution_cls"]))
    return policy, params, config


def _tensor_spec(space: Any, name: str) -> list[TensorSpec]:
    if isinstance(space, dict):
        return [spec for key, sub in space.items() for spec in _tensor_spec(sub, key)]
    dtype = np.int64 if isinstance(space, Discrete) else np.dtype(str(space.dtype).removeprefix("torch."))
    return [TensorSpec(np.dtype(dtype), (-1, *space.shape), name)]


class PolicyModel(mlflow.pyfunc.PythonModel):
    """The pyfunc wrapper; holds nothing until ``load_context``."""

    def load_context(self, context: Any) -> None:
        self.policy, self.params, self.config = load_policy(Path(context.artifacts["config"]).parent)
        self.observation_space = space_from_dict(self.config["observation_space"])

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would validate against them
        params = params or {}
        deterministic = bool(params.get("deterministic", True))
        space = self.observation_space
        if isinstance(space, dict):
            obs = {k: torch.as_tensor(np.asarray(model_input[k])).to(s.dtype) for k, s in space.items()}
        else:
            data = model_input["obs"] if isinstance(model_input, dict) else model_input
            obs = torch.as_tensor(np.asarray(data)).to(space.dtype)
        with torch.no_grad():
            action, log_prob, value = self.policy.act(self.params, obs, deterministic)
        action = optree.tree_map(lambda x: x.numpy(), action)
        if params.get("outputs", "actions") == "all":
            return {"actions": action, "log_probs": log_prob.numpy(), "values": value.numpy()}
        return action


def export_policy(algorithm: Any, path: str | os.PathLike) -> str:
    """Write ``algorithm``'s current policy to ``path`` as an MLflow model.

    The model declares a signature (``obs`` ``[-1, *obs_shape]`` in,
    ``actions`` out, params ``deterministic`` and ``outputs``) and pip
    requirements (torch, numpy, optree; rlstack itself travels as code).

    Raises:
        FileExistsError: if ``path`` exists and is not empty.
    """
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"Export path {str(path)!r} exists and is not empty; choose a new directory.")
    import rlstack

    env = algorithm.env
    config = {
        "rlstack_version": rlstack.__version__,
        "model_cls": ckpt.qualified_name(type(algorithm.policy.model)),
        "model_config": algorithm.settings["model_config"],
        "distribution_cls": ckpt.qualified_name(algorithm.policy.distribution_cls),
        "observation_space": space_to_dict(env.observation_space),
        "action_space": space_to_dict(env.action_space),
        "env": algorithm.settings["env"],
    }
    inputs = Schema(_tensor_spec(env.observation_space, "obs"))
    outputs = Schema(_tensor_spec(env.action_space, "actions"))
    signature = ModelSignature(
        inputs=inputs, outputs=outputs,
        params=ParamSchema([ParamSpec("deterministic", "boolean", True), ParamSpec("outputs", "string", "actions")]),
    )
    example = sample(env.observation_space, (2,))
    input_example = {k: v.numpy() for k, v in example.items()} if isinstance(example, dict) else {"obs": example.numpy()}
    with tempfile.TemporaryDirectory() as tmp:
        params_path, config_path = Path(tmp) / PARAMS_FILE, Path(tmp) / CONFIG_FILE
        torch.save({k: v.detach().cpu() for k, v in algorithm.params.items()}, params_path)
        config_path.write_text(json.dumps(config, indent=2, default=list))
        mlflow.pyfunc.save_model(
            path=str(path),
            python_model=PolicyModel(),
            artifacts={"params": str(params_path), "config": str(config_path)},
            signature=signature,
            input_example=input_example,
            code_paths=[str(Path(rlstack.__file__).parent)],
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                f"numpy>={np.__version__.split('.')[0]}",
                "optree>=0.13",
            ],
            metadata={"rlstack_version": rlstack.__version__, "env": config["env"]},
        )
    return str(path)


__all__ = ["export_policy", "load_policy", "PolicyModel"]
