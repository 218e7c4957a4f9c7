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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optree
import torch

from ..core import random
from ..core.normalization import RunningMoments, moments_from_tensors, moments_to_tensors
from ..core.spaces import (
    Discrete,
    as_batch,
    is_numpy,
    sample,
    space_from_dict,
    space_to_dict,
    to_numpy,
)
from ..core.version import __version__
from ..policy.policy import Policy, act_in_env
from . import checkpoint as ckpt
from .tracking import require_mlflow

mlflow = require_mlflow()  # before MLflow's own imports: a missing MLflow is named
from mlflow.models import ModelSignature  # noqa: E402
from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec  # noqa: E402

PARAMS_FILE, CONFIG_FILE, MOMENTS_FILE = "params.pt", "policy.json", "obs_moments.pt"
_ENTRY_POINT = Path(__file__).with_name("pyfunc_model.py")


def _artifacts_dir(directory: str | os.PathLike) -> Path:
    directory = Path(directory)
    return directory / "artifacts" if (directory / "artifacts").is_dir() else directory


def _load_tensors(path: Path) -> Any:
    ckpt.verify_archive(path, "exported file")
    tensors = torch.load(path, map_location="cpu", weights_only=True)
    ckpt.check_finite(tensors, path, "exported file", prefix=path.stem)
    return tensors


def _resolve_class(name: str, what: str, given: type | None, allow: Sequence[str]) -> Any:
    """``given`` if passed, else the class named ``name``: rlstack's own, or
    one the caller listed in ``allow``.
    """
    if given is not None:
        return given
    if name in allow:
        return ckpt.import_qualified(name)
    try:
        return ckpt.resolve(name, what)
    except ckpt.CheckpointError:
        raise ckpt.CheckpointError(
            f"The exported policy names {what} {name!r}, which is not part of rlstack; pass "
            f"`{what}=` (or list "
            f"it in `allow_classes`) to load it: an export never imports code by itself."
        ) from None


class ExportedPolicy:
    """A policy loaded from an exported directory (or its ``artifacts/``).

    Attributes:
        policy, params: the :class:`~rlstack.policy.policy.Policy` and its params.
        config: the contents of ``policy.json``.
        observation_space, action_space: the spaces it was trained on.
        obs_moments: running observation statistics, or ``()``.

    Args:
        directory: the exported model directory.
        model_cls: a user's own model class (rlstack's are found by name).
        distribution_cls: a user's own distribution class (idem).
        allow_classes: ``"module:Class"`` names that may be imported besides
            rlstack's.
        device: where params and computation live.

    Raises:
        FileNotFoundError: if the directory holds no exported policy.
        CheckpointError: for a corrupted file or a class outside rlstack.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        model_cls: type | None = None,
        distribution_cls: type | None = None,
        allow_classes: Sequence[str] = (),
        device: Any = "cpu",
    ) -> None:
        folder = _artifacts_dir(directory)
        if not (folder / CONFIG_FILE).is_file():
            raise FileNotFoundError(
                f"No exported rlstack policy at {str(directory)!r} (no {CONFIG_FILE})."
            )
        config = json.loads((folder / CONFIG_FILE).read_text())
        self.config, self.device = config, torch.device(device)
        self.observation_space = space_from_dict(config["observation_space"])
        self.action_space = space_from_dict(config["action_space"])
        model_cls = _resolve_class(config["model_cls"], "model_cls", model_cls, allow_classes)
        distribution_cls = _resolve_class(
            config["distribution_cls"], "distribution_cls", distribution_cls, allow_classes
        )
        model = model_cls(self.observation_space, self.action_space, **config["model_config"]).to(
            self.device
        )
        self.policy = Policy(model, distribution_cls)
        self.params = {k: v.to(self.device) for k, v in _load_tensors(folder / PARAMS_FILE).items()}
        self.obs_moments: Any = ()
        self._sample_calls = 0
        #: A policy with memory (recurrent, or a window of observations): what the last call left
        # for the
        #: next one (``None``: episodes begin at the next call). See :meth:`act` and :meth:`reset`.
        self.memory: Any = None
        if config.get("normalize_obs"):
            tensors = {
                k: v.to(self.device) for k, v in _load_tensors(folder / MOMENTS_FILE).items()
            }
            keys = (
                list(self.observation_space) if isinstance(self.observation_space, dict) else None
            )
            self.obs_moments = moments_from_tensors(tensors, keys)

    def act(
        self,
        obs: Any,
        deterministic: bool = True,
        *,
        key: torch.Tensor | None = None,
        starts: Any = None,
    ) -> tuple[Any, Any, Any]:
        """``(action, log_prob, value)`` for a batch of raw observations, as
        :func:`rlstack.policy.policy.act_in_env`
        computes them (NumPy in, NumPy out). Samples (``deterministic=False``)
        are drawn from ``key``, or else from this object's own stream
        (``rlstack.core.random.key(0)`` folded with a call count).

        A policy with memory (a recurrent model's hidden state, a window of
        observations) keeps it here between calls, in :attr:`memory`: call
        with successive observations of the same envs; ``starts`` (``[B]``
        bool) marks envs whose episode begins at ``obs``; :meth:`reset`
        begins every env's episode at the next call. Save and restore
        :attr:`memory` to interleave several groups of envs.

        Raises:
            ValueError: if ``obs`` does not fit the observation space, or its
                batch differs from the one the memory holds.
        """
        obs_t = as_batch(self.observation_space, obs, self.device)
        batch = optree.tree_leaves(obs_t)[0].shape[0]
        if self.memory is not None:
            held = optree.tree_leaves(self.memory)[0].shape[0]
            if held != batch:
                raise ValueError(
                    f"`obs` has a batch of {batch} envs, the policy's memory is of {held}: call "
                    "reset() (or pyfunc params {'reset': True}) to begin new episodes."
                )
        if starts is not None:
            starts = torch.as_tensor(np.asarray(starts), dtype=torch.bool, device=self.device)
        if not deterministic and key is None:
            key = random.fold_in(random.key(0, self.device), self._sample_calls)
            self._sample_calls += 1
        *out, memory = act_in_env(
            self.policy,
            self.params,
            obs_t,
            self.memory,
            starts,
            self.action_space,
            obs_moments=self.obs_moments,
            deterministic=deterministic,
            key=key,
        )
        if self.policy.has_memory:
            self.memory = memory
        return tuple(to_numpy(x) for x in out) if is_numpy(obs) else tuple(out)

    def reset(self) -> None:
        """Begin every env's episode at the next call (a policy with memory forgets it)."""
        self.memory = None

    def predict(self, obs: Any, deterministic: bool = True, *, starts: Any = None) -> Any:
        """Actions for a batch of raw observations, exactly as
        :meth:`Algorithm.predict <rlstack.Algorithm.predict>` computed them
        (a policy's memory, if any, kept between calls: see :meth:`act`).
        """
        return self.act(obs, deterministic, starts=starts)[0]


def load_policy(
    directory: str | os.PathLike,
    device: Any = "cpu",
    *,
    model_cls: type | None = None,
    distribution_cls: type | None = None,
) -> tuple[Policy, dict[str, torch.Tensor], dict[str, Any]]:
    """``(policy, params, config)`` from an exported directory, without MLflow.

    ``policy.apply(params, obs)`` is the raw network: for the actions the
    trained agent takes (observation normalisation and action bounds
    applied), use :class:`ExportedPolicy` and its ``predict``.

    Examples:
        >>> policy, params, config = load_policy("exported/")  # doctest: +SKIP
    """
    exported = ExportedPolicy(
        directory, model_cls=model_cls, distribution_cls=distribution_cls, device=device
    )
    return exported.policy, exported.params, exported.config


def _tensor_spec(space: Any, name: str) -> list[TensorSpec]:
    if isinstance(space, dict):
        return [spec for key, sub in space.items() for spec in _tensor_spec(sub, key)]
    dtype = (
        np.int64
        if isinstance(space, Discrete)
        else np.dtype(str(space.dtype).removeprefix("torch."))
    )
    return [TensorSpec(np.dtype(dtype), (-1, *space.shape), name)]


class PolicyModel(mlflow.pyfunc.PythonModel):
    """The pyfunc wrapper (built by ``pyfunc_model.py``); holds nothing
    until ``load_context``.
    """

    def load_context(self, context: Any) -> None:
        """MLflow's hook: load the exported policy from the model's artifacts."""
        allow = list((context.model_config or {}).get("allow_classes", ()))
        self.exported = ExportedPolicy(
            Path(context.artifacts["config"]).parent, allow_classes=allow
        )

    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> Any:
        """Actions for ``{"obs": array}`` (or a dict of arrays for a dict
        observation space); see the module docstring for ``params``.
        """
        params = params or {}
        deterministic = bool(params.get("deterministic", True))
        exported = self.exported
        if params.get("reset", False):
            exported.reset()
        if isinstance(exported.observation_space, dict):
            obs = {k: np.asarray(model_input[k]) for k in exported.observation_space}
        else:
            obs = np.asarray(model_input["obs"] if isinstance(model_input, dict) else model_input)
        if params.get("outputs", "actions") != "all":
            return exported.predict(obs, deterministic)
        action, log_prob, value = exported.act(obs, deterministic)
        return {"actions": action, "log_probs": log_prob, "values": value}


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
    config = {
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
