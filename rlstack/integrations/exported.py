"""Reading an exported policy back: :class:`ExportedPolicy` (acting as
``predict`` did, with the memory and observation statistics it was exported with),
:func:`load_policy`, and the MLflow pyfunc model class that wraps it
(:class:`PolicyModel`, which ``pyfunc_model.py`` sets as the model).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optree
import torch

from ..core import random
from ..core.normalization import moments_from_tensors
from ..core.spaces import (
    as_batch,
    is_numpy,
    space_from_dict,
    to_numpy,
)
from ..policy.acting import act_in_env
from ..policy.policy import Policy
from . import checkpoint as ckpt
from .tracking import require_mlflow

mlflow = require_mlflow()  # the pyfunc model's base class: a missing MLflow is named

#: The files of an exported policy's artifacts.
PARAMS_FILE = "params.pt"
CONFIG_FILE = "policy.json"
MOMENTS_FILE = "obs_moments.pt"


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
