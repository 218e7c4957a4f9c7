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

from collections.abc import Mapping
from typing import Any

import torch

from ..core.types import Trajectory
from ..integrations import checkpoint as ckpt
from ..integrations import distributed
from ..learn.train_state import take
from ..policy.memory import NoRecord, RecurrentRecord, WindowRecord

#: An :class:`~rlstack.shell.algorithm.Algorithm` (this module reads its public
#: attributes and never imports it: the Algorithm imports this module).
Algorithm = Any

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


#: How a checkpoint names an env made by an rsl_rl factory: this prefix and ``module:function``.
RSL_RL_PREFIX = "rsl_rl:"


def env_class_name(env: Any) -> str:
    """How a checkpoint names the env: ``gymnasium:ID`` for a gymnasium id,
    ``rsl_rl:module:function`` for an rsl_rl factory
    (:class:`~rlstack.integrations.rsl_rl_adapter.rsl_rl_env`; its bare name
    where it cannot be imported by name), else the ``module:Class`` of the
    env (class).
    """
    name = getattr(env, "__name__", "")
    if not isinstance(env, type) and name.startswith("gymnasium:"):
        return name
    if not isinstance(env, type) and hasattr(env, "import_spec"):
        return RSL_RL_PREFIX + (env.import_spec or name)
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
    data["settings"]["num_members"] = None  # a single run's
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
            "num_members": algo.num_members,
            "compile": algo.compile,
            "compile_switches": dict(algo.build_args.compile_switches),
            "compile_record": algo.compile_switches,
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
    _check_params(algo, data)
    params = {k: v.to(algo.device) for k, v in data["params"].items()}
    opt_state = ckpt.rebuild(algo.opt_state, data["opt_state"], "optimizer state", algo.device)
    own = data
    ranks = data.get("ranks")
    if ranks is not None and algo.world_size > 1:
        if len(ranks) != algo.world_size:
            raise ckpt.CheckpointError(
                f"The checkpoint was written by {len(ranks)} ranks; resume it with as many "
                f"processes, not {algo.world_size} (or in one process, which continues from "
                "rank 0's envs)."
            )
        own = dict(ranks[algo.rank])
        if own["carry"] is None:  # this rank had not collected: the stored carry
            own["carry"] = data["carry"]
    algo.train_state = algo.train_state._replace(
        params=params,
        opt_state=opt_state,
        carry=_carry(algo, own["carry"]),
        trajectory=_trajectory(algo, own["trajectory"]),
        key=ckpt.rebuild(algo.key, [own["key"]], "random key", algo.device),
    )
    counters = data["counters"]
    algo.collects = counters["horizons"]
    algo.steps = counters["steps"]
    algo.env_steps = counters["env_steps"]
    population = data.get("population")
    if population is not None:
        algo.members.restore(population["stopped"], population["member_steps"])
    else:
        algo.members.restore([None], [algo.steps])


def _check_params(algo: Algorithm, data: Mapping[str, Any]) -> None:
    """Refuse a checkpoint whose spaces or parameter names and shapes differ from ``algo``'s."""
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


def _carry(algo: Algorithm, leaves: list[torch.Tensor] | None) -> Any:
    """The stored env carry in the structure of a fresh one (``None`` when none was stored)."""
    if leaves is None:
        return None
    template = algo.fresh_carry(algo.root_key, algo.env, None)  # its values are replaced
    return ckpt.rebuild(template, leaves, "env carry", algo.device)


def _trajectory(algo: Algorithm, stored: Any) -> Trajectory | None:
    """The stored trajectory not yet trained on, checked against ``algo``'s shapes."""
    if not isinstance(stored, dict):
        return None
    trajectory = decode_tree(stored, algo.device, "trajectory")
    want = [algo.config.horizon, algo.config.num_envs]
    if algo.num_members is not None:
        want = [algo.num_members] + want
    if not isinstance(trajectory, Trajectory) or list(trajectory.rewards.shape) != want:
        raise ckpt.CheckpointError(f"Checkpoint trajectory is not a {want} Trajectory.")
    return trajectory
