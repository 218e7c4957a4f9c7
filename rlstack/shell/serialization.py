"""An :class:`~rlstack.shell.algorithm.Algorithm`'s state as a checkpoint, and
the one path back from a checkpoint to an Algorithm (used by
``Algorithm.from_checkpoint`` and ``Trainer.from_checkpoint``).

The state is tensors and plain containers only (see
:mod:`rlstack.integrations.checkpoint`). Params are a name -> tensor dict; optimizer
state and env carry are flat lists of leaves, rebuilt against the
structures a freshly built Algorithm has anyway (``optimizer.init`` and an
env reset), which also detects mismatches. A trajectory collected but not
yet trained on is stored with its structure spelled out
(:func:`encode_tree`), so restoring it runs no rollout.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from ..core.device import resolve_device
from ..core.torch_optimizers import TORCH_OPTIMIZERS_BY_NAME
from ..core.types import Trajectory
from ..envs import make_env
from ..integrations import checkpoint as ckpt
from ..integrations import distributed
from ..learn.train_state import take
from ..policy.memory import NoRecord, RecurrentRecord, WindowRecord

if TYPE_CHECKING:
    from .algorithm import Algorithm

# NamedTuple records a checkpoint may name (only the stored trajectory is
# encoded by structure); nothing else is ever built from one.
_RECORDS = {cls.__name__: cls for cls in (Trajectory, NoRecord, WindowRecord, RecurrentRecord)}


def encode_tree(tree: Any) -> Any:
    """A pytree of tensors as plain containers that spell out its structure:
    a record (``Trajectory``, its memory record) becomes ``{"record": name, "fields": {...}}``,
    a tuple ``{"tuple": [...]}``, a dict ``{"dict": {...}}``; tensors go to
    the CPU. Loads with ``torch.load(weights_only=True)``.
    """
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu()
    if tree is None:
        return None
    if type(tree).__name__ in _RECORDS and isinstance(tree, tuple):
        return {
            "record": type(tree).__name__,
            "fields": {f: encode_tree(v) for f, v in zip(tree._fields, tree, strict=True)},
        }
    if isinstance(tree, tuple):
        return {"tuple": [encode_tree(v) for v in tree]}
    if isinstance(tree, dict):
        return {"dict": {str(k): encode_tree(v) for k, v in tree.items()}}
    raise TypeError(f"Cannot store a {type(tree).__name__} in a checkpoint tree.")


def decode_tree(data: Any, device: torch.device, name: str) -> Any:
    """Inverse of :func:`encode_tree`, tensors moved to ``device``.

    Raises:
        CheckpointError: for a node that :func:`encode_tree` does not write.
    """
    if isinstance(data, torch.Tensor):
        return data.to(device)
    if data is None:
        return None
    if (
        isinstance(data, dict)
        and data.keys() == {"record", "fields"}
        and data["record"] in _RECORDS
    ):
        cls = _RECORDS[data["record"]]
        unknown = set(data["fields"]) - set(cls._fields)
        if unknown:
            raise ckpt.CheckpointError(
                f"Checkpoint {name} has fields {sorted(unknown)} that {cls.__name__} lacks."
            )
        return cls(**{f: decode_tree(v, device, name) for f, v in data["fields"].items()})
    if isinstance(data, dict) and data.keys() == {"tuple"}:
        return tuple(decode_tree(v, device, name) for v in data["tuple"])
    if isinstance(data, dict) and data.keys() == {"dict"}:
        return {k: decode_tree(v, device, name) for k, v in data["dict"].items()}
    raise ckpt.CheckpointError(
        f"Checkpoint {name} holds a node rlstack does not write: {type(data).__name__}."
    )


def env_class_name(env: Any) -> str:
    """How a checkpoint names the env: ``gymnasium:ID`` for a gymnasium id,
    else the ``module:Class`` of the env (class).
    """
    name = getattr(env, "__name__", "")
    if not isinstance(env, type) and name.startswith("gymnasium:"):
        return name
    return ckpt.qualified_name(env if isinstance(env, type) else type(env))


def spaces_of(env: Any) -> dict[str, str]:
    """The env's observation and action spaces as text (a checkpoint's record of them)."""
    return {"observation": repr(env.observation_space), "action": repr(env.action_space)}


def state_dict(algo: Algorithm) -> dict[str, Any]:
    """The whole train state of ``algo`` as tensors and plain containers:
    its :class:`~rlstack.learn.train_state.TrainState` (params, optimizer state,
    env carry, a trajectory not yet trained on, key), counters and every
    setting needed to rebuild it; a population's also says which members
    failed and how many steps each took.
    """
    data = _header(
        algo,
        algo.train_state,
        algo.hparams_by_member(),
        algo.build_config["seed"],
        algo.build_config["optimizer_config"],
    )
    data["counters"] = {"horizons": algo.collects, "steps": algo.steps, "env_steps": algo.env_steps}
    if algo.num_members is not None:
        # A stop condition stops a member for one Trainer.run only; a non-finite update for good.
        failed = [
            why if algo.members.failed(k) else None for k, why in enumerate(algo.members.stopped)
        ]
        data["population"] = {
            "num_members": algo.num_members,
            "member_steps": list(algo.members.steps),
            "stopped": failed,
        }
    return data | _rank_states(algo)


def member_state_dict(algo: Algorithm, k: int) -> dict[str, Any]:
    """Member ``k``'s slice of :func:`state_dict`, in a single run's format
    (its seed, hyperparameters and counters: a member that was stopped for
    a while took fewer steps).
    """
    count = algo.num_members or 1
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < count:
        raise ValueError(f"`k` must be a member index in [0, {count}), got {k!r}.")
    state = algo.train_state if algo.num_members is None else take(algo.train_state, k)
    steps, pending = (
        algo.members.steps[k],
        state.trajectory is not None and algo.members.stopped[k] is None,
    )
    if not pending:
        state = state._replace(trajectory=None)
    data = _header(
        algo,
        state,
        algo.member_config[k].to_dict(),
        algo.seeds[k],
        {**algo.build_config["optimizer_config"], "lr": algo.member_lrs[k]},
    )
    collects = steps + int(pending) if algo.num_members is not None else algo.collects
    env_steps = (
        collects * algo.config.num_envs * algo.config.horizon
        if algo.num_members is not None
        else algo.env_steps
    )
    data["counters"] = {
        "horizons": collects,
        "steps": steps if algo.num_members is not None else algo.steps,
        "env_steps": env_steps,
    }
    return data


def _header(
    algo: Algorithm, state: Any, hparams: dict[str, Any], seed: Any, optimizer_config: Any
) -> dict[str, Any]:
    """A checkpoint's settings and ``state``'s tensors (on the CPU)."""
    return {
        "format": ckpt.FORMAT,
        "version": ckpt.VERSION,
        "classes": dict(algo.classes),
        "settings": {
            "env_config": algo.env_config,
            "model_config": algo.build_config["model_config"],
            "optimizer_cls": algo.build_config["optimizer_cls"],
            "optimizer_config": optimizer_config,
            "seed": seed,
            "compile": algo.compile,
            "cuda_graphs": algo.cuda_graphs,
            "allow_tf32": algo.allow_tf32,
            "device": str(algo.device),
        },
        "hparams": hparams,
        "spaces": spaces_of(algo.env),
        "params": {k: v.detach().cpu() for k, v in state.params.items()},
        "opt_state": [t.cpu() for t in ckpt.leaves(state.opt_state)],
        # A stateful env (1.x, gymnasium) keeps its state inside itself: it is reset on resume.
        "carry": [t.cpu() for t in ckpt.leaves(state.carry)]
        if state.carry is not None and algo.env.compilable
        else None,
        "trajectory": encode_tree(state.trajectory) if state.trajectory is not None else None,
        "key": state.key.cpu(),
    }


def _rank_states(algo: Algorithm) -> dict[str, Any]:
    """Under torch.distributed, every rank's own env carry, trajectory and
    key (gathered on rank 0: a collective, every rank calls it), so each
    rank resumes exactly; nothing in a single process.
    """
    if algo.world_size == 1:
        return {}
    own = {
        "carry": [t.cpu() for t in ckpt.leaves(algo.carry)] if algo.carry is not None else None,
        "trajectory": encode_tree(algo.trajectory) if algo.trajectory is not None else None,
        "key": algo.key.cpu(),
    }
    return {"ranks": distributed.gather_objects(own)}


def load_state_dict(algo: Algorithm, data: Mapping[str, Any]) -> None:
    """Restore :func:`state_dict` into an identically configured ``algo``.

    Raises:
        CheckpointError: naming what differs (spaces, parameter names or
            shapes, optimizer, env or trajectory structure).
    """
    for key, here in spaces_of(algo.env).items():
        if data["spaces"][key] != here:
            raise ckpt.CheckpointError(
                f"Checkpoint {key} space is {data['spaces'][key]}, the env's is {here}."
            )
    stored = data["params"]
    if set(stored) != set(algo.params):
        raise ckpt.CheckpointError(
            "Checkpoint params differ from the model's: only in checkpoint "
            f"{sorted(set(stored) - set(algo.params))}, "
            f"only in model {sorted(set(algo.params) - set(stored))}."
        )
    for name, value in stored.items():
        if value.shape != algo.params[name].shape:
            raise ckpt.CheckpointError(
                f"Checkpoint param {name!r} has shape {list(value.shape)}, the model's has "
                f"{list(algo.params[name].shape)}."
            )
    params = {k: v.to(algo.device) for k, v in stored.items()}
    opt_state = ckpt.rebuild(algo.opt_state, data["opt_state"], "optimizer state", algo.device)
    carry = None
    if data["carry"] is not None:
        template = algo.fresh_carry(algo.root_key, algo.env, None)  # its values are replaced
        carry = ckpt.rebuild(template, data["carry"], "env carry", algo.device)
    trajectory = None
    if isinstance(data["trajectory"], dict):
        trajectory = decode_tree(data["trajectory"], algo.device, "trajectory")
        want = [algo.config.horizon, algo.config.num_envs]
        if algo.num_members is not None:
            want = [algo.num_members] + want
        if not isinstance(trajectory, Trajectory) or list(trajectory.rewards.shape) != want:
            raise ckpt.CheckpointError(f"Checkpoint trajectory is not a {want} Trajectory.")
    counters = data["counters"]
    key = data["key"]
    ranks = data.get("ranks")
    if ranks is not None and algo.world_size > 1:
        if len(ranks) != algo.world_size:
            raise ckpt.CheckpointError(
                f"The checkpoint was written by {len(ranks)} ranks; resume it with as many "
                "processes, not "
                f"{algo.world_size} (or in one process, which continues from rank 0's envs)."
            )
        own = ranks[algo.rank]
        key = own["key"]
        if own["carry"] is not None:
            carry = ckpt.rebuild(
                carry if carry is not None else algo.fresh_carry(algo.root_key, algo.env, None),
                own["carry"],
                "env carry",
                algo.device,
            )
        trajectory = (
            decode_tree(own["trajectory"], algo.device, "trajectory") if own["trajectory"] else None
        )
    algo.params, algo.opt_state, algo.carry, algo.trajectory = params, opt_state, carry, trajectory
    algo.collects, algo.steps, algo.env_steps = (
        counters["horizons"],
        counters["steps"],
        counters["env_steps"],
    )
    algo.key = ckpt.rebuild(algo.key, [key], "random key", algo.device)
    population = data.get("population")
    if population is not None:
        algo.members.restore(population["stopped"], population["member_steps"])
    else:
        algo.members.restore([None], [algo.steps])


def _check_spaces(data: Mapping[str, Any], env: Any, device: torch.device) -> None:
    """Refuse, before building a model, an env whose spaces differ from the
    checkpoint's (e.g. a CartPole checkpoint resumed with ``env=Pendulum``).
    """
    config = data["hparams"]
    built = make_env(
        env,
        num_envs=config["num_envs"],
        horizon=config["horizon"],
        config=data["settings"]["env_config"],
        device=device,
    )
    name = getattr(env, "__name__", type(env).__name__)
    for key, here in spaces_of(built).items():
        if data["spaces"][key] != here:
            raise ckpt.CheckpointError(
                f"The checkpoint's {key} space is {data['spaces'][key]}, env {name}'s is {here}: "
                "pass the env it was trained on."
            )


def algorithm_from_state_dict(
    cls: type,
    data: Mapping[str, Any],
    env: Any = None,
    *,
    model_cls: type | None = None,
    distribution_cls: type | None = None,
    device: Any = None,
    compile: bool | None = None,
) -> Algorithm:
    """Build a ``cls`` (an :class:`Algorithm` class) from a loaded checkpoint
    and restore its state; see :meth:`Algorithm.from_checkpoint`.
    """
    classes, settings = data["classes"], data["settings"]
    population = data.get("population")
    if (population is not None) != bool(cls._population):
        raise ckpt.CheckpointError(
            "The checkpoint holds a population of "
            f"{population['num_members']} members: load it with Population.from_checkpoint (or "
            "Trainer.from_checkpoint)."
            if population is not None
            else "The checkpoint holds a single run, not a population: load it with "
            "Algorithm.from_checkpoint."
        )
    members = {"num_members": population["num_members"]} if population is not None else {}
    if ("seq_len" in data["hparams"]) != bool(cls._recurrent):
        raise ckpt.CheckpointError(
            "The checkpoint holds a recurrent policy: load it with "
            "RecurrentAlgorithm.from_checkpoint "
            "(or Trainer.from_checkpoint)."
            if "seq_len" in data["hparams"]
            else "The checkpoint holds a feedforward policy: load it with "
            "Algorithm.from_checkpoint."
        )
    device = resolve_device(device if device is not None else settings["device"])
    if env is None and classes["env"].startswith("gymnasium:"):
        from ..integrations.gymnasium_adapter import gymnasium_env

        env = gymnasium_env(classes["env"].partition(":")[2])
    env = env if env is not None else ckpt.resolve(classes["env"], "env")
    _check_spaces(data, env, device)
    algo = cls(
        env,
        env_config=settings["env_config"],
        model_cls=model_cls or ckpt.resolve(classes["model_cls"], "model_cls"),
        model_config=settings["model_config"],
        distribution_cls=distribution_cls
        or ckpt.resolve(classes["distribution_cls"], "distribution_cls"),
        optimizer_cls=TORCH_OPTIMIZERS_BY_NAME[settings["optimizer_cls"]],
        optimizer_config=settings["optimizer_config"],
        device=device,
        seed=settings["seed"],
        compile=settings["compile"] if compile is None else compile,
        # CUDA graphs only where the checkpoint is resumed on a GPU.
        cuda_graphs=settings.get("cuda_graphs", False) and device.type == "cuda",
        allow_tf32=settings.get("allow_tf32", False),
        **members,
        **data["hparams"],
    )
    algo.load_state_dict(data)
    return algo


class Checkpointing:
    """:class:`~rlstack.shell.algorithm.Algorithm`'s checkpoint methods (it uses
    the Algorithm's public attributes only).
    """

    def state_dict(self: Algorithm) -> dict[str, Any]:
        """The whole train state as tensors and plain containers: see :func:`state_dict`."""
        return state_dict(self)

    def load_state_dict(self: Algorithm, data: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` into this (identically configured) Algorithm.

        Raises:
            CheckpointError: naming what differs (spaces, parameter names or
                shapes, optimizer, env or trajectory structure).
        """
        load_state_dict(self, data)

    def save_checkpoint(self: Algorithm, path: str | os.PathLike) -> str:
        """Write :meth:`state_dict` to ``path`` atomically; returns the path."""
        return str(ckpt.atomic_save(self.state_dict(), path))

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        env: Any = None,
        *,
        model_cls: type | None = None,
        distribution_cls: type | None = None,
        device: Any = None,
        compile: bool | None = None,
    ) -> Algorithm:
        """Rebuild an Algorithm from a checkpoint and restore its state.

        Built-in envs, models and distributions are found by name; a user's
        own ``env``, ``model_cls`` or ``distribution_cls`` must be passed
        (a checkpoint never imports code by itself). ``device`` and
        ``compile`` default to the checkpoint's.

        Raises:
            FileNotFoundError, CheckpointError: see
                :func:`rlstack.integrations.checkpoint.safe_load` and :meth:`load_state_dict`.
        """
        return cls._from_state_dict(
            ckpt.safe_load(path),
            env,
            model_cls=model_cls,
            distribution_cls=distribution_cls,
            device=device,
            compile=compile,
        )

    @classmethod
    def _from_state_dict(
        cls, data: Mapping[str, Any], env: Any = None, **options: Any
    ) -> Algorithm:
        """:meth:`from_checkpoint` on a loaded checkpoint (``Trainer.from_checkpoint`` shares "
        "it).
        """
        return algorithm_from_state_dict(cls, data, env, **options)
