"""Deployment: a trained policy's deterministic actor as one self-contained
program, ONNX or ``torch.export``, for a robot or a simulator's runtime.

:class:`DeployedActor` is the actor alone (for :class:`~rlstack.policy.models.MLPModel`
the critic and the observation groups only it reads are left out), with
the observation statistics of ``normalize_obs`` folded in: raw
observations in, the actions the trained agent takes
(:meth:`Algorithm.predict <rlstack.Algorithm.predict>`'s) out. Its inputs are the
observation (one tensor per key the actor reads, for a dict observation,
in the space's order); a policy with memory (recurrent, or a window of
observations) also takes its memory as explicit tensors and a ``starts``
``[B]`` bool input (``True`` where an episode begins: the memory starts over
there, whatever is passed), and returns the next memory after the action.
Every input and output has a leading batch dimension of any size.

>>> from rlstack.integrations.deploy import export_onnx, export_program   # doctest: +SKIP
>>> export_onnx(algo, "deploy/")       # deploy/actor.onnx and deploy/actor.json   # doctest: +SKIP
>>> export_program(algo, "deploy/")    # deploy/actor.pt2 (torch.export) and deploy/actor.json  #
doctest: +SKIP

and ``rlstack export CHECKPOINT DIR --format onnx|torch``: a folder new or
empty, or holding the other format of the same actor. ``actor.json``
names the inputs and outputs in order, with their shapes and dtypes
(``B`` the batch), and the initial memory (zeros). ONNX needs the ``onnx``
extra (``pip install 'rlstack[onnx]'``: onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optree
import torch
from torch import nn

from ..core.normalization import RunningMoments, normalize
from ..core.spaces import Box, Discrete
from ..policy.acting import to_action_space
from ..policy.policy import Policy
from . import atomic_files

EXTRA_HINT = (
    "ONNX export needs the onnx extra: pip install 'rlstack[onnx]' (onnx, onnxscript, onnxruntime)."
)
ONNX_FILE, PROGRAM_FILE, SPEC_FILE = "actor.onnx", "actor.pt2", "actor.json"


def _actor_keys(policy: Policy, observation_space: Any) -> list[str] | None:
    """The keys of a dict observation the deployed actor reads (None: a Box)."""
    if not isinstance(observation_space, dict):
        return None
    groups = getattr(policy.model, "obs_groups", None)
    return list(groups["actor"]) if groups and groups.get("actor") else list(observation_space)


class DeployedActor(nn.Module):
    """The deterministic actor of ``policy`` with ``params``, as an ordinary module.

    ``forward(*obs, *memory, starts)``: ``obs`` the observation tensors
    ``[B, ...]`` (see :attr:`input_keys`), then, for a policy with memory,
    its leaves ``[B, ...]`` (:attr:`memory_shapes`) and ``starts`` ``[B]``
    bool; returns the action ``[B, ...]`` (in the action space), then the
    next memory's leaves.

    Args:
        policy: the trained policy.
        params: its parameters.
        observation_space: the env's.
        action_space: the env's (a ``Box`` or ``Discrete`` one).
        obs_moments: training's observation statistics (``()``: none).

    Raises:
        ValueError: for a dict action space.
    """

    def __init__(
        self,
        policy: Policy,
        params: dict,
        observation_space: Any,
        action_space: Any,
        obs_moments: Any = (),
    ) -> None:
        super().__init__()
        if not isinstance(action_space, (Box, Discrete)):
            raise ValueError(
                f"A deployed actor acts in a Box or Discrete action space, got {action_space!r}."
            )
        self.policy, self.action_space = policy, action_space
        self.model = policy.module(params).eval().requires_grad_(False)
        #: The observation keys the actor reads, its inputs in order (None: one Box observation).
        self.input_keys = _actor_keys(policy, observation_space)
        keys = self.input_keys if self.input_keys is not None else [None]
        self.observation_shapes = {
            k: tuple((observation_space[k] if k is not None else observation_space).shape)
            for k in keys
        }
        self.moments = None
        if isinstance(obs_moments, (RunningMoments, dict)):
            kept = (
                {k: obs_moments[k] for k in keys} if isinstance(obs_moments, dict) else obs_moments
            )
            self.moments = optree.tree_map(lambda x: x.detach().clone(), kept)
        example = self._example_obs(1, torch.device("cpu"))
        first_memory = policy.initial_memory(example) if policy.has_memory else ()
        self._memory_spec = optree.tree_structure(first_memory)
        #: The memory's leaves, ``[B, ...]`` each (their shapes after the batch), in input order.
        self.memory_shapes = [tuple(x.shape[1:]) for x in optree.tree_leaves(first_memory)]
        self.memory_dtypes = [x.dtype for x in optree.tree_leaves(first_memory)]
        self.eval()  # inference only

    def _example_obs(self, batch: int, device: torch.device) -> Any:
        if self.input_keys is None:
            return torch.zeros(batch, *self.observation_shapes[None], device=device)
        return {
            k: torch.zeros(batch, *shape, device=device)
            for k, shape in self.observation_shapes.items()
        }

    def _apply(self, *inputs: Any) -> Any:
        """The model as the memory kinds call it, actor only where the model has one apart."""
        if not self.policy.recurrent and callable(getattr(self.model, "forward_actor", None)):
            return self.model.forward_actor(*inputs), None
        return self.model(*inputs)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The deterministic action (and next memory) for a batch of raw observations."""
        count = len(self.observation_shapes)
        obs_leaves, rest = inputs[:count], inputs[count:]
        obs = (
            obs_leaves[0]
            if self.input_keys is None
            else dict(zip(self.input_keys, obs_leaves, strict=True))
        )
        if self.moments is not None:
            obs = normalize(self.moments, obs)
        if self.policy.has_memory:
            memory = optree.tree_unflatten(self._memory_spec, list(rest[:-1]))
            starts = rest[-1]
        else:
            memory, starts = (
                (),
                torch.zeros(obs_leaves[0].shape[0], dtype=torch.bool, device=obs_leaves[0].device),
            )
        dist_inputs, _, memory = self.policy.memory.forward(self._apply, obs, memory, starts)
        action = to_action_space(
            self.policy.distribution_cls,
            self.policy.distribution_cls.mode(dist_inputs),
            self.action_space,
        )
        return (action, *optree.tree_leaves(memory))

    def example_inputs(self, batch: int = 2) -> tuple[torch.Tensor, ...]:
        """Zeros for every input (memory zeros, ``starts`` all True)."""
        device = next(self.model.parameters()).device
        obs = self._example_obs(batch, device)
        leaves = [obs] if self.input_keys is None else list(obs.values())
        if self.policy.has_memory:
            leaves += [
                torch.zeros(batch, *s, dtype=d, device=device)
                for s, d in zip(self.memory_shapes, self.memory_dtypes, strict=True)
            ]
            leaves.append(torch.ones(batch, dtype=torch.bool, device=device))
        return tuple(leaves)

    def input_names(self) -> list[str]:
        """The exported program's input names, in order."""
        obs = ["obs"] if self.input_keys is None else [f"obs.{k}" for k in self.input_keys]
        memory = [f"memory.{i}" for i in range(len(self.memory_shapes))]
        return obs + (memory + ["starts"] if self.policy.has_memory else [])

    def output_names(self) -> list[str]:
        """The exported program's output names, in order."""
        return ["actions"] + [f"next_memory.{i}" for i in range(len(self.memory_shapes))]

    def spec(self) -> dict[str, Any]:
        """What ``actor.json`` records: the inputs and outputs, in order, with shapes and dtypes."""
        example = self.example_inputs(1)
        with torch.no_grad():
            outputs = self(*example)

        def describe(names: list[str], xs: tuple) -> list[dict[str, Any]]:
            return [
                {
                    "name": n,
                    "shape": ["B", *x.shape[1:]],
                    "dtype": str(x.dtype).removeprefix("torch."),
                }
                for n, x in zip(names, xs, strict=True)
            ]

        return {
            "inputs": describe(self.input_names(), example),
            "outputs": describe(self.output_names(), outputs),
            "normalize_obs": self.moments is not None,
            "memory": "none"
            if not self.policy.has_memory
            else ("recurrent" if self.policy.recurrent else f"obs_window={self.policy.obs_window}"),
            "initial_memory": "zeros, with starts True at an episode's first step",
        }


def deployed_actor(algorithm: Any) -> DeployedActor:
    """An Algorithm's (a single run's) deterministic actor, on the CPU.

    Raises:
        ValueError: for a population (export a member: ``algorithm.member(k)``).
    """
    if getattr(algorithm, "num_members", None) is not None:
        raise ValueError("A population has one policy per member: deploy algorithm.member(k).")
    params = {k: v.detach().cpu() for k, v in algorithm.params.items()}
    moments = optree.tree_map(lambda x: x.detach().cpu(), algorithm.obs_moments)
    return DeployedActor(
        algorithm.policy,
        params,
        algorithm.env.observation_space,
        algorithm.env.action_space,
        moments,
    )


def _dynamic_shapes(actor: DeployedActor) -> tuple[tuple[dict[int, Any], ...]]:
    """Every input's first dimension is the batch, of any size (``forward``'s one ``*inputs``
    argument).
    """
    batch = torch.export.Dim("batch", min=1)
    return (tuple({0: batch} for _ in actor.example_inputs()),)


def _folder(path: str | os.PathLike, actor: DeployedActor, program_file: str) -> Path:
    """The folder to write ``program_file`` and ``actor.json`` into, checked
    before anything is traced: new, empty, or holding only the other
    format of an actor with the same inputs and outputs.

    Raises:
        FileExistsError: naming ``path`` and what it already holds.
    """
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(
            f"`path` {str(directory)!r} must be a folder (for {program_file} and {SPEC_FILE})."
        )
    present = {p.name for p in directory.iterdir()} if directory.exists() else set()
    refused = sorted(present - {ONNX_FILE, PROGRAM_FILE, SPEC_FILE} | present & {program_file})
    if refused:
        raise FileExistsError(
            f"`path` {str(directory)!r} already holds {', '.join(refused)}: export into a new or "
            f"empty folder (or one holding only the other format of the same actor)."
        )
    if SPEC_FILE in present and json.loads((directory / SPEC_FILE).read_text()) != _spec_json(
        actor
    ):
        raise FileExistsError(
            f"`path` {str(directory)!r} holds the {SPEC_FILE} of an actor with other inputs or "
            f"outputs: export into a new or empty folder."
        )
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _spec_json(actor: DeployedActor) -> Any:
    """``actor.spec()`` as ``actor.json`` holds it (lists for tuples)."""
    return json.loads(json.dumps(actor.spec()))


def _write(
    actor: DeployedActor, directory: Path, program_file: str, write: Callable[[str], None]
) -> str:
    """The program (``write(temp path)``) and ``actor.json``, each written atomically; the
    program's path.
    """
    target = atomic_files.atomic_write(directory / program_file, write)
    text = json.dumps(actor.spec(), indent=2)
    atomic_files.atomic_write(directory / SPEC_FILE, lambda tmp: Path(tmp).write_text(text))
    return str(target)


def export_program(algorithm: Any, path: str | os.PathLike) -> str:
    """Write the deterministic actor as a ``torch.export`` program
    (``<path>/actor.pt2``, loaded by ``torch.export.load(...).module()``)
    and its ``actor.json``; returns the program's path.

    Raises:
        FileExistsError: for a ``path`` that holds an ``actor.pt2``, files
            of its own, or another actor's ``actor.json``.
    """
    actor = deployed_actor(algorithm)
    directory = _folder(path, actor, PROGRAM_FILE)
    program = torch.export.export(
        actor, actor.example_inputs(), dynamic_shapes=_dynamic_shapes(actor)
    )
    return _write(actor, directory, PROGRAM_FILE, lambda tmp: _save_program(program, tmp))


def _save_program(program: Any, path: str) -> None:
    """``torch.export.save`` to ``path`` through a file object (the temp file's
    name does not end in ``.pt2``, which torch warns of for a path).
    """
    with open(path, "wb") as f:
        torch.export.save(program, f)


#: The logger torch's ONNX exporter tells of each torchvision operator it skips through.
ONNX_REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Logger ``name`` says only errors while this lasts."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def export_onnx(algorithm: Any, path: str | os.PathLike) -> str:
    """Write the deterministic actor as ONNX (``<path>/actor.onnx``, run by
    onnxruntime or any ONNX runtime) and its ``actor.json``; returns the
    model's path.

    Raises:
        ImportError: naming the extra, without onnx and onnxscript.
        FileExistsError: for a ``path`` that holds an ``actor.onnx``, files
            of its own, or another actor's ``actor.json``.
    """
    actor = deployed_actor(algorithm)
    directory = _folder(path, actor, ONNX_FILE)
    try:
        import onnx  # noqa: F401  (what torch.onnx.export needs)
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError(EXTRA_HINT) from e
    with warnings.catch_warnings(), _quiet_logger(ONNX_REGISTRATION_LOGGER):
        # Every input shares the one batch dimension, which torch's exporter remarks on; it also
        # warns of torchvision's operators (not installed) and of its own deprecated internals.
        warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used")
        warnings.filterwarnings("ignore", category=FutureWarning, module="copyreg")
        program = torch.onnx.export(
            actor,
            actor.example_inputs(),
            input_names=actor.input_names(),
            output_names=actor.output_names(),
            dynamic_shapes=_dynamic_shapes(actor),
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return _write(actor, directory, ONNX_FILE, program.save)


__all__ = ["DeployedActor", "deployed_actor", "export_onnx", "export_program"]
