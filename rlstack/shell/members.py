"""How a population's arguments split per member: which hyperparameters
may differ (:data:`PER_MEMBER`), :func:`grid` of them, and
:func:`member_configs`, which validates them once at the shell boundary.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..core.config import AlgorithmConfig
from ..core.torch_optimizers import torch_optimizer_options

#: Hyperparameters that may take one value per member (lists of length K).
PER_MEMBER = ("lr", "gamma", "gae_lambda", "clip_param", "entropy_coeff")


def grid(**values: Sequence[Any]) -> dict[str, list[Any]]:
    """Every combination of the given values, as per-member lists (the
    first name varies slowest), for ``Trainer(env, num_members=len(...),
    **grid(...))``.

    Examples:
        >>> grid(lr=[1e-3, 3e-4], entropy_coeff=[0.0, 0.01])
        {'lr': [0.001, 0.001, 0.0003, 0.0003], 'entropy_coeff': [0.0, 0.01, 0.0, 0.01]}
    """
    for name, options in values.items():
        if name not in PER_MEMBER:
            raise ValueError(
                f"grid: `{name}` cannot differ across members; per-member hyperparameters are "
                f"{PER_MEMBER}."
            )
        if isinstance(options, (str, bytes)) or not isinstance(options, Sequence) or not options:
            raise ValueError(f"grid: `{name}` must be a non-empty list of values, got {options!r}.")
    combinations = list(itertools.product(*values.values()))
    return {name: [combo[i] for combo in combinations] for i, name in enumerate(values)}


def _per_member(name: str, value: Any, num_members: int) -> list[Any]:
    """``value`` as a list of ``num_members`` values (one value is repeated;
    a schedule, itself a list, is one value).
    """
    if isinstance(value, (list, tuple)) and not name.endswith("_schedule"):
        if name not in PER_MEMBER:
            raise ValueError(
                f"`{name}` cannot differ across members (it is static: shapes, schedules or graph "
                "structure); "
                f"per-member hyperparameters are {PER_MEMBER}, got a list {list(value)!r}."
            )
        if len(value) != num_members:
            raise ValueError(
                f"`{name}` has {len(value)} values for num_members={num_members}: give one or "
                f"{num_members}."
            )
        return list(value)
    return [value] * num_members


def member_configs(
    num_members: Any,
    hparams: Mapping[str, Any],
    optimizer_cls: type,
    optimizer_config: Mapping[str, Any] | None,
    seed: Any,
) -> tuple[list[AlgorithmConfig], list[float], list[int]]:
    """Validate a population's arguments and split them per member.

    Args:
        num_members: ``K`` (an int >= 1).
        hparams: PPO hyperparameters; those in :data:`PER_MEMBER` may be
            lists of ``K`` values (``lr`` stands for
            ``optimizer_config['lr']``).
        optimizer_cls: as for :class:`~rlstack.Algorithm`.
        optimizer_config: as for :class:`~rlstack.Algorithm`;
            ``optimizer_config['lr']`` may be a list of ``K`` values.
        seed: an int (member ``k`` gets ``seed + k``), a list of ``K``
            distinct ints, or ``None`` (drawn once from torch's generator).

    Returns:
        ``(configs, learning_rates, seeds)``, one of each per member.

    Raises:
        ValueError, TypeError: naming the argument, and the member for a
            per-member value that is out of range.
    """
    if not isinstance(num_members, int) or isinstance(num_members, bool) or num_members < 1:
        raise ValueError(f"`num_members` must be an int >= 1, got {num_members!r}.")
    hparams = dict(hparams)
    if "lr" in hparams:  # `lr=` (what grid() returns) is optimizer_config['lr']
        if "lr" in (optimizer_config or {}):
            raise ValueError(
                "Give the learning rate once: `lr=` or `optimizer_config['lr']`, not both."
            )
        optimizer_config = {**(optimizer_config or {}), "lr": hparams.pop("lr")}
    lists = {name: _per_member(name, value, num_members) for name, value in hparams.items()}
    configs = []
    for k in range(num_members):
        try:
            configs.append(
                AlgorithmConfig.from_mapping({name: values[k] for name, values in lists.items()})
            )
        except (TypeError, ValueError) as e:
            raise type(e)(f"member {k}: {e}") from None
    optimizer_config = dict(optimizer_config or {})
    lrs = _per_member("lr", optimizer_config.get("lr", 1e-3), num_members)
    for k, lr in enumerate(lrs):
        try:
            torch_optimizer_options(optimizer_cls, {**optimizer_config, "lr": lr})
        except (TypeError, ValueError) as e:
            raise type(e)(f"member {k}: {e}") from None
    if len(set(map(float, lrs))) > 1 and configs[0].lr_schedule is not None:
        raise ValueError(
            "per-member `lr` values and an `lr_schedule` exclude each other: the schedule sets the "
            "rate."
        )
    entropies = {c.entropy_coeff for c in configs}
    if len(entropies) > 1 and configs[0].entropy_coeff_schedule is not None:
        raise ValueError(
            "per-member `entropy_coeff` values and an `entropy_coeff_schedule` exclude each other: "
            "the schedule sets it."
        )
    if seed is None:
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    if isinstance(seed, int) and not isinstance(seed, bool):
        seeds = [seed + k for k in range(num_members)]
    elif isinstance(seed, (list, tuple)) and len(seed) == num_members:
        seeds = list(seed)
    else:
        raise ValueError(
            f"`seed` must be an int, None or a list of {num_members} ints (one per member), got "
            f"{seed!r}."
        )
    for k, s in enumerate(seeds):
        if not isinstance(s, int) or isinstance(s, bool) or s < 0:
            raise ValueError(f"`seed` of member {k} must be a non-negative int, got {s!r}.")
    if len(set(seeds)) != num_members:
        raise ValueError(f"`seed` must give each member its own seed, got {seeds}.")
    return configs, [float(lr) for lr in lrs], seeds


def hparams_by_member(configs: Sequence[AlgorithmConfig]) -> dict[str, Any]:
    """The shared config, with a list of per-member values for each
    hyperparameter of :data:`PER_MEMBER` that differs between members (as a
    population's checkpoint and MLflow params hold them).
    """
    hparams = configs[0].to_dict()
    for name in PER_MEMBER[1:]:
        values = [getattr(c, name) for c in configs]
        hparams[name] = values if len(set(values)) > 1 else values[0]
    return hparams
