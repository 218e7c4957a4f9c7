"""``AlgorithmConfig``: every static PPO hyperparameter, validated once.

Names and defaults are rlstack 1.x's. Each hyperparameter is documented here
and only here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from .checks import check_int, check_number
from .schedules import check_schedule

#: ``vf_clip_kind``: how ``vf_clip_param`` clips the value loss.
VF_CLIP_KINDS = ("relative", "absolute")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AlgorithmConfig:
    """PPO hyperparameters (frozen; validated in ``__post_init__``).

    Attributes:
        num_envs: parallel envs ``N`` simulated per rollout.
        horizon: steps ``T`` per rollout; one update uses ``N * T`` transitions.
        horizons_per_env_reset: rollouts between env resets (every env is
            reset together). A negative value resets only before the first.
        gamma: discount factor in ``[0, 1]``.
        gae_lambda: GAE's lambda in ``[0, 1]``.
        clip_param: PPO's ratio clip ``epsilon`` (>= 0).
        vf_clip_param: clip of the value loss (>= 0), as ``vf_clip_kind``
            says; ``None`` disables.
        vf_clip_kind: ``"relative"`` (default; CleanRL, PPO2): the value
            prediction's change from its behaviour-time value is clipped to
            ``vf_clip_param``; ``"absolute"`` (rlstack 1.x): each
            transition's (Huber) value loss is clipped to ``vf_clip_param``.
            See :func:`rlstack.learn.loss.value_loss_terms`.
        dual_clip_param: dual-clip constant ``c > 1`` bounding the loss for
            negative advantages (Ye et al., 2020); ``None`` disables.
        vf_coeff: weight of the value loss (>= 0).
        entropy_coeff: weight of the entropy bonus (>= 0), unless scheduled.
        entropy_coeff_schedule / entropy_coeff_schedule_kind: optional
            schedule of ``entropy_coeff`` over env transitions (see
            :mod:`rlstack.core.schedules`).
        lr_schedule / lr_schedule_kind: optional schedule of the learning
            rate over env transitions; the optimizer's ``lr`` otherwise.
        sgd_minibatch_size: transitions per SGD minibatch; must divide
            ``num_envs * horizon``. ``None``: the whole buffer.
        sgd_chunk_size: transitions per forward/backward pass; a minibatch
            is processed in chunks of this size whose gradients are averaged
            before its one optimizer step (the same update up to float
            rounding, with cache-sized activations). Must divide the
            minibatch size. ``None``: automatic, see
            :func:`rlstack.learn.minibatches.default_chunk_size` (8192 on CPU, 4096 for
            a recurrent policy's sequences, up to 2**20 elsewhere).
        num_sgd_iters: epochs over the buffer per update.
        shuffle_minibatches: draw a fresh permutation of the buffer per epoch.
        max_grad_norm: clip the global gradient norm to this (> 0).
        accumulate_grads: take one optimizer step per epoch, on the mean
            gradient of its minibatches (the optimizer accumulates them:
            ``optim.accumulate_gradients``, see ``make_optimizer``).
        enable_amp: bfloat16 autocast for the model's forward/backward in
            the update (CPU and CUDA); losses and optimizer stay float32.
        normalize_advantages: standardise advantages, ``(A - mean) / (std +
            1e-8)``, over the whole buffer (rlstack 1.x, rsl_rl's default).
        normalize_advantages_per_minibatch: standardise them within each
            minibatch instead, every epoch (CleanRL, SB3; rsl_rl's
            ``normalize_advantage_per_mini_batch``); needs
            ``normalize_advantages``.
        normalize_obs: standardise observations with running statistics
            updated by the rollout (see :mod:`rlstack.core.normalization`).
        normalize_rewards: divide rewards by the running std of the
            discounted return.
        target_kl: stop an update's remaining SGD steps once a minibatch's
            approximate KL (before its step) exceeds this (> 0); ``None``
            never stops. Done by masking on device: no host sync.
        desired_kl: rsl_rl's adaptive learning rate (its ``schedule =
            "adaptive"``): before each optimizer step the rate is divided by
            1.5 where the minibatch's approximate KL (before the step, the
            same as ``target_kl`` reads) exceeds ``2 * desired_kl``, and
            multiplied by 1.5 where it is positive and below ``desired_kl /
            2``, within ``[1e-5, 1e-2]`` (see
            :func:`rlstack.core.optim.adapt_learning_rate`); it starts at the
            optimizer's ``lr`` and lives in the optimizer state (checkpointed,
            one per member, logged as ``coefficients/lr``). ``None`` (default):
            off. Not with ``lr_schedule``.
        seq_len: for a recurrent model only: truncated backpropagation
            through time over sequences of this many steps (the update
            replays the model over each from the hidden state stored at its
            start). Must divide ``horizon``; ``sgd_minibatch_size`` and
            ``sgd_chunk_size`` (in transitions) must be multiples of it.
            ``None``: 4 (rlstack 1.x's) for a recurrent model, 1 otherwise
            (see :func:`for_model`).
        seqs_per_state_reset: for a recurrent model only: every this many
            sequences (counted over the whole run) every env's hidden state
            starts over from the model's initial one; negative: never
            (besides env resets and episode ends). ``None``: 8 (rlstack
            1.x's) for a recurrent model, -1 otherwise.
    """

    num_envs: int = 8192
    horizon: int = 32
    horizons_per_env_reset: int = 1
    gamma: float = 0.95
    gae_lambda: float = 0.95
    clip_param: float = 0.2
    vf_clip_param: float | None = 5.0
    vf_clip_kind: str = "relative"
    dual_clip_param: float | None = None
    vf_coeff: float = 1.0
    entropy_coeff: float = 0.0
    entropy_coeff_schedule: Sequence[tuple[int, float]] | None = None
    entropy_coeff_schedule_kind: str = "step"
    lr_schedule: Sequence[tuple[int, float]] | None = None
    lr_schedule_kind: str = "step"
    sgd_minibatch_size: int | None = None
    sgd_chunk_size: int | None = None
    num_sgd_iters: int = 4
    shuffle_minibatches: bool = True
    max_grad_norm: float = 5.0
    accumulate_grads: bool = False
    enable_amp: bool = False
    normalize_advantages: bool = True
    normalize_advantages_per_minibatch: bool = False
    normalize_obs: bool = False
    normalize_rewards: bool = False
    target_kl: float | None = None
    desired_kl: float | None = None
    seq_len: int | None = None
    seqs_per_state_reset: int | None = None

    def __post_init__(self) -> None:
        _check_sizes(self)
        _check_coefficients(self)
        _check_minibatches(self)
        _check_flags(self)
        _check_sequences(self)
        check_schedule("lr_schedule", self.lr_schedule, self.lr_schedule_kind, min_value=0.0)
        check_schedule(
            "entropy_coeff_schedule", self.entropy_coeff_schedule, self.entropy_coeff_schedule_kind
        )

    @property
    def minibatch_size(self) -> int:
        """Transitions per minibatch (the whole buffer when not set)."""
        return self.sgd_minibatch_size or self.num_envs * self.horizon

    @classmethod
    def from_mapping(cls, hparams: Mapping[str, Any]) -> AlgorithmConfig:
        """Build (and validate) a config from a dict of its fields.

        Raises:
            TypeError: for a key that is not a hyperparameter.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(hparams) - known)
        if unknown:
            raise TypeError(f"Unknown hyperparameters {unknown}; expected some of {sorted(known)}.")
        return cls(**hparams)

    def to_dict(self) -> dict[str, Any]:
        """Every field by name (what MLflow params and checkpoints record)."""
        return dataclasses.asdict(self)


def _check_sizes(config: AlgorithmConfig) -> None:
    """The counts: envs, horizon, epochs and the env reset cadence."""
    for name in ("num_envs", "horizon", "num_sgd_iters"):
        check_int(name, getattr(config, name), minimum=1)
    check_int("horizons_per_env_reset", config.horizons_per_env_reset)
    if config.horizons_per_env_reset == 0:
        raise ValueError(
            "`horizons_per_env_reset` must be a non-zero int (negative: reset only once), got 0."
        )


def _check_coefficients(config: AlgorithmConfig) -> None:
    """Discounts, clips, loss weights, the gradient norm and the KL targets."""
    for name in ("gamma", "gae_lambda"):
        value = getattr(config, name)
        check_number(name, value)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"`{name}` must be in [0, 1], got {value!r}.")
    for name in ("clip_param", "vf_coeff", "entropy_coeff"):
        check_number(name, getattr(config, name), minimum=0.0)
    if config.vf_clip_param is not None:
        check_number("vf_clip_param", config.vf_clip_param, minimum=0.0)
    if config.vf_clip_kind not in VF_CLIP_KINDS:
        raise ValueError(
            f"`vf_clip_kind` must be one of {list(VF_CLIP_KINDS)}, got {config.vf_clip_kind!r}."
        )
    if config.dual_clip_param is not None:
        check_number("dual_clip_param", config.dual_clip_param)
        if not config.dual_clip_param > 1.0:
            raise ValueError(
                f"`dual_clip_param` must be > 1 (or None), got {config.dual_clip_param!r}."
            )
    check_number("max_grad_norm", config.max_grad_norm)
    if not config.max_grad_norm > 0:
        raise ValueError(f"`max_grad_norm` must be > 0, got {config.max_grad_norm!r}.")
    for name in ("target_kl", "desired_kl"):
        value = getattr(config, name)
        if value is not None:
            check_number(name, value)
            if not value > 0:
                raise ValueError(f"`{name}` must be > 0 (or None), got {value!r}.")
    if config.desired_kl is not None and config.lr_schedule is not None:
        raise ValueError(
            f"`desired_kl` {config.desired_kl} adapts the learning rate, `lr_schedule` sets it: "
            "give one of them (or None)."
        )


def _check_minibatches(config: AlgorithmConfig) -> None:
    """The minibatch divides the buffer and the chunk divides the minibatch."""
    buffer = config.num_envs * config.horizon
    if config.sgd_minibatch_size is not None:
        check_int("sgd_minibatch_size", config.sgd_minibatch_size, minimum=1)
        if config.sgd_minibatch_size > buffer or buffer % config.sgd_minibatch_size:
            raise ValueError(
                f"`sgd_minibatch_size` must divide num_envs * horizon = {config.num_envs} * "
                f"{config.horizon} = {buffer} and be at most that, got "
                f"{config.sgd_minibatch_size}."
            )
    if config.sgd_chunk_size is not None:
        check_int("sgd_chunk_size", config.sgd_chunk_size, minimum=1)
        if config.minibatch_size % config.sgd_chunk_size:
            raise ValueError(
                f"`sgd_chunk_size` must divide the minibatch size {config.minibatch_size}, got "
                f"{config.sgd_chunk_size}."
            )


#: The config's on/off switches.
FLAGS = (
    "shuffle_minibatches",
    "accumulate_grads",
    "enable_amp",
    "normalize_advantages",
    "normalize_advantages_per_minibatch",
    "normalize_obs",
    "normalize_rewards",
)


def _check_flags(config: AlgorithmConfig) -> None:
    """Every switch is a bool; per-minibatch advantages need advantages standardised."""
    for name in FLAGS:
        if not isinstance(getattr(config, name), bool):
            raise TypeError(f"`{name}` must be a bool, got {getattr(config, name)!r}.")
    if config.normalize_advantages_per_minibatch and not config.normalize_advantages:
        raise ValueError(
            "`normalize_advantages_per_minibatch` needs `normalize_advantages=True`, got False."
        )


def _check_sequences(config: AlgorithmConfig) -> None:
    """A given ``seq_len`` divides the horizon and the minibatch and chunk sizes;
    a given ``seqs_per_state_reset`` is a non-zero int.
    """
    if config.seqs_per_state_reset is not None:
        check_int("seqs_per_state_reset", config.seqs_per_state_reset)
        if config.seqs_per_state_reset == 0:
            raise ValueError(
                "`seqs_per_state_reset` must be a non-zero int (negative: never), got 0."
            )
    if config.seq_len is None:
        return
    check_int("seq_len", config.seq_len, minimum=1)
    if config.horizon % config.seq_len:
        raise ValueError(
            f"`seq_len` {config.seq_len} must divide `horizon` {config.horizon}: a rollout is "
            "whole sequences."
        )
    for name in ("sgd_minibatch_size", "sgd_chunk_size"):
        value = getattr(config, name)
        if value is not None and value % config.seq_len:
            raise ValueError(
                f"`{name}` {value} must be a multiple of `seq_len` {config.seq_len}: "
                "minibatches are whole sequences."
            )


def for_model(config: AlgorithmConfig, *, recurrent: bool, model_name: str) -> AlgorithmConfig:
    """``config`` with its sequence settings decided by the model: a recurrent
    model's ``seq_len`` and ``seqs_per_state_reset`` (rlstack 1.x's 4 and 8
    where not given); for any other model, one step per row and no scheduled
    resets (1 and -1), which is all it can take.

    Raises:
        ValueError: for sequence settings given to a model that is not recurrent.
    """
    if recurrent:
        return dataclasses.replace(
            config,
            seq_len=config.seq_len if config.seq_len is not None else 4,
            seqs_per_state_reset=config.seqs_per_state_reset
            if config.seqs_per_state_reset is not None
            else 8,
        )
    for name, neutral in (("seq_len", 1), ("seqs_per_state_reset", -1)):
        if getattr(config, name) not in (None, neutral):
            raise ValueError(
                f"`{name}` is for a recurrent model (one with `initial_hidden`); {model_name} is "
                f"not recurrent, got {name}={getattr(config, name)!r}."
            )
    return dataclasses.replace(config, seq_len=1, seqs_per_state_reset=-1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecurrentAlgorithmConfig(AlgorithmConfig):
    """rlstack 1.x's name for :class:`AlgorithmConfig` with its recurrent
    defaults: ``seq_len`` 4 and ``seqs_per_state_reset`` 8 (documented there).
    """

    seq_len: int | None = 4
    seqs_per_state_reset: int | None = 8
