"""PPO's mathematics, pure functions: ``gae``, ``ppo_loss``,
``make_ppo_loss`` and the batch an update trains on (``prepare_batch``,
``minibatch``).

Time-major shapes: ``T`` steps, ``N`` envs, ``B`` transitions in a flat batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optree
import torch

from ..core.config import AlgorithmConfig
from ..core.types import Batch, HParams, Params, Trajectory
from ..policy.memory import MemoryKind
from ..policy.policy import Policy

Metrics = dict[str, torch.Tensor]


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    *,
    gamma: float,
    gae_lambda: float,
    terminated: torch.Tensor | None = None,
    truncated: torch.Tensor | None = None,
    final_values: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized Advantage Estimation, with or without episode ends.

    ``A_t = delta_t + gamma lambda (1 - done_t) A_{t+1}`` with ``A_T = 0``
    and ``delta_t = r_t + gamma V'_t - V_t``, where the next value ``V'_t``
    is ``0`` after a termination (no bootstrapping from a terminal state),
    ``final_values[t]`` after a truncation (the value of the episode's true
    last observation, not of the auto-reset one that follows), and
    ``values[t + 1]`` otherwise. ``done_t = terminated_t or truncated_t``
    stops the advantage from flowing across an episode boundary. Without
    flags (infinite horizon) nothing ends and ``values[T]`` bootstraps the
    tail.

    Args:
        rewards: ``[T, N]`` float.
        values: ``[T + 1, N]`` float, same dtype; ``values[t]`` is the value
            of the observation the step-t action was taken in.
        gamma: discount in ``[0, 1]`` (a number or a 0-d tensor).
        gae_lambda: GAE lambda in ``[0, 1]`` (idem).
        terminated: ``[T, N]`` bool, step t ended its episode in a terminal
            state; ``None``: never.
        truncated: ``[T, N]`` bool, step t ended its episode by a time limit
            (or another cut that is not terminal); ``None``: never.
        final_values: ``[T, N]`` float, the value of step t's final
            observation; read where ``truncated`` (required with it).

    Returns:
        ``(advantages [T, N], returns [T, N])`` with
        ``returns = advantages + values[:T]``.

    Raises:
        ValueError: for mismatched shapes, or ``truncated`` without
            ``final_values``.

    Examples:
        >>> adv, ret = gae(torch.ones(2, 1), torch.zeros(3, 1), gamma=1.0, gae_lambda=1.0)
        >>> adv.squeeze(-1).tolist()
        [2.0, 1.0]
        >>> adv, _ = gae(torch.ones(2, 1), torch.ones(3, 1), gamma=1.0, gae_lambda=1.0,
        ...              terminated=torch.tensor([[True], [False]]))
        >>> adv.squeeze(-1).tolist()  # step 0 ends the episode: no value after it
        [0.0, 1.0]
    """
    if values.shape[0] != rewards.shape[0] + 1 or values.shape[1:] != rewards.shape[1:]:
        raise ValueError(
            "`values` must have shape [T + 1, ...] for `rewards` [T, ...] = "
            f"{list(rewards.shape)}, "
            f"got {list(values.shape)}."
        )
    for name, flag in (
        ("terminated", terminated),
        ("truncated", truncated),
        ("final_values", final_values),
    ):
        if flag is not None and flag.shape != rewards.shape:
            raise ValueError(
                f"`{name}` must have the shape of `rewards` {list(rewards.shape)}, got "
                f"{list(flag.shape)}."
            )
    if truncated is not None and final_values is None:
        raise ValueError(
            "`truncated` needs `final_values`: the values of the truncated steps' final "
            "observations."
        )
    next_values = values[1:]
    continues = torch.ones_like(rewards)
    if truncated is not None:
        next_values = torch.where(truncated, final_values, next_values)
        continues = continues * (~truncated).to(rewards.dtype)
    if terminated is not None:
        next_values = torch.where(terminated, torch.zeros_like(next_values), next_values)
        continues = continues * (~terminated).to(rewards.dtype)
    deltas = rewards + gamma * next_values - values[:-1]
    decay = (gamma * gae_lambda) * continues
    advantage = torch.zeros_like(deltas[0])
    reversed_advantages = []
    for t in range(rewards.shape[0] - 1, -1, -1):
        advantage = deltas[t] + decay[t] * advantage
        reversed_advantages.append(advantage)
    advantages = torch.stack(reversed_advantages[::-1])
    return advantages, advantages + values[:-1]


def ppo_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    entropy: torch.Tensor,
    *,
    clip_param: float | torch.Tensor,
    vf_clip_param: float | None,
    dual_clip_param: float | None,
    vf_coeff: float,
    entropy_coeff: float | torch.Tensor,
    vf_clip_kind: str = "relative",
) -> tuple[torch.Tensor, Metrics]:
    """The PPO objective on a minibatch, as a loss to minimise.

    With ratio ``r = exp(log_probs - old_log_probs)`` and advantages ``A``:

    * policy loss ``-mean(min(r A, clip(r, 1 - eps, 1 + eps) A))``; with a
      dual clip ``c``, the term is ``max(., c A)`` where ``A < 0``;
    * value loss ``0.5 mean((V - R)^2)``, or, with ``vf_clip_param = k``,
      :func:`value_loss_terms` of ``vf_clip_kind``: ``"relative"``,
      ``0.5 mean(max((V - R)^2, (V_old + clip(V - V_old, -k, k) - R)^2))``
      (CleanRL / PPO2), or ``"absolute"``, ``mean(clip(smooth_l1(V - R),
      0, k))`` (rlstack 1.x);
    * total ``policy + vf_coeff * vf - entropy_coeff * mean(entropy)``.

    Args:
        log_probs: ``[B]`` float, the current policy's log-probs.
        old_log_probs: ``[B]`` float, the behaviour policy's log-probs.
        advantages: ``[B]`` float, GAE advantages.
        values: ``[B]`` float, the current value predictions.
        old_values: ``[B]`` float, the behaviour-time value predictions.
        returns: ``[B]`` float, value targets.
        entropy: ``[B]`` float, the current policy's entropy.
        clip_param: see :class:`rlstack.core.config.AlgorithmConfig` (a number
            or a 0-d tensor).
        vf_clip_param: idem.
        dual_clip_param: idem.
        vf_coeff: idem.
        entropy_coeff: idem (a number or a 0-d tensor).
        vf_clip_kind: idem.

    Returns:
        ``(loss, metrics)``: 0-d loss, and detached 0-d metrics
        ``losses/policy``, ``losses/vf``, ``losses/entropy`` (mean entropy),
        ``losses/total``, ``monitors/kl_div`` (``mean((r - 1) - log r)``, the
        low-variance estimator of KL(old || new)) and
        ``monitors/clip_fraction`` (share of ``|r - 1| > clip_param``).
    """
    log_ratio = log_probs - old_log_probs
    ratio = torch.exp(log_ratio)
    surrogate = torch.minimum(
        advantages * ratio, advantages * ratio.clamp(1.0 - clip_param, 1.0 + clip_param)
    )
    if dual_clip_param is not None:
        surrogate = torch.where(
            advantages < 0, torch.maximum(surrogate, dual_clip_param * advantages), surrogate
        )
    policy_loss = -surrogate.mean()

    value_terms = value_loss_terms(values, old_values, returns, vf_clip_param, vf_clip_kind)
    vf_loss = value_terms.mean()

    entropy_mean = entropy.mean()
    total = policy_loss + vf_coeff * vf_loss - entropy_coeff * entropy_mean
    with torch.no_grad():
        # Metrics are means accumulated in float64: the policy loss is a small difference of large
        # terms, and a compiled float32 reduction's rounding depends on the batch size.
        policy, vf, entropy64 = _mean64(-surrogate), _mean64(value_terms), _mean64(entropy)
        metrics = {
            "losses/policy": policy.float(),
            "losses/vf": vf.float(),
            "losses/entropy": entropy64.float(),
            "losses/total": (policy + vf_coeff * vf - entropy_coeff * entropy64).float(),
            "monitors/kl_div": _mean64((ratio - 1.0) - log_ratio).float(),
            "monitors/clip_fraction": ((ratio - 1.0).abs() > clip_param).float().mean(),
        }
    return total, metrics


def value_loss_terms(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    vf_clip_param: float | None,
    kind: str,
) -> torch.Tensor:
    """Each transition's value loss ``[B]`` (the value loss is their mean).

    ``0.5 (V - R)^2`` unclipped. With ``vf_clip_param = k``: ``"relative"``
    (CleanRL, PPO2) clips the prediction's change from the behaviour-time
    value, ``0.5 max((V - R)^2, (V_old + clip(V - V_old, -k, k) - R)^2)``;
    ``"absolute"`` (rlstack 1.x) clips the loss itself,
    ``clip(smooth_l1(V - R), 0, k)`` (Huber with threshold 1, which is
    ``0.5 (V - R)^2`` within 1 of the target), so transitions whose loss
    exceeds ``k`` give no gradient.

    Args:
        values: ``[B]`` float, the current value predictions.
        old_values: ``[B]`` float, the behaviour-time value predictions.
        returns: ``[B]`` float, value targets.
        vf_clip_param: ``k`` (>= 0) or None.
        kind: one of :data:`rlstack.core.config.VF_CLIP_KINDS`.
    """
    if vf_clip_param is None:
        return 0.5 * (values - returns) ** 2
    if kind == "absolute":
        return torch.nn.functional.smooth_l1_loss(values, returns, reduction="none").clamp(
            0.0, vf_clip_param
        )
    clipped_values = old_values + (values - old_values).clamp(-vf_clip_param, vf_clip_param)
    return 0.5 * torch.maximum((values - returns) ** 2, (clipped_values - returns) ** 2)


def _mean64(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` accumulated in float64 (0-d float64), for metrics only."""
    return x.detach().double().mean()


def prepare_batch(
    traj: Trajectory,
    *,
    gamma: float | torch.Tensor,
    gae_lambda: float | torch.Tensor,
    normalize_advantages: bool,
    memory: MemoryKind,
) -> Batch:
    """GAE on a trajectory (with its episode ends), then its rows for the
    update as the policy's memory kind lays them out
    (:meth:`~rlstack.policy.memory.NoMemory.batch`): ``[T, N, ...]`` flattened to
    ``[B, ...]`` transitions, or a recurrent policy's ``B = (T / L) * N``
    whole sequences of ``L`` steps, ``[B, L, ...]``, each with the hidden
    state it started from.

    Advantages are standardised over the whole buffer when asked
    (``(A - mean) / (std + 1e-8)``); returns use the raw advantages.
    ``memory`` is the policy's memory kind (``policy.memory``).
    """
    advantages, returns = gae(
        traj.rewards,
        traj.values,
        gamma=gamma,
        gae_lambda=gae_lambda,
        terminated=traj.terminated,
        truncated=traj.truncated,
        final_values=traj.final_values,
    )
    if normalize_advantages:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    return memory.batch(traj, advantages, returns)


def minibatch(batch: Batch, idx: torch.Tensor, memory: MemoryKind) -> Batch:
    """Rows ``idx`` (``[B']`` int64) of a prepared batch, as the policy's
    memory kind gathers them (a windowed policy's windows ``[B', K, ...]``
    from the trajectory's one copy of its frames).
    """
    return memory.rows(batch, idx)


def config_hparams(config: AlgorithmConfig, device: Any = None) -> HParams:
    """The config's :class:`~rlstack.core.types.HParams`: Python floats, or with
    a ``device`` 0-d float32 tensors on it (what :class:`~rlstack.Algorithm`
    passes, so a single run and a population member compute alike).
    """
    values = HParams(config.gamma, config.gae_lambda, config.clip_param, config.entropy_coeff)
    if device is None:
        return values
    return HParams(*(torch.tensor(float(v), dtype=torch.float32, device=device) for v in values))


LossFn = Callable[[Params, Batch, HParams], tuple[torch.Tensor, Metrics]]


def make_ppo_loss(policy: Policy, config: AlgorithmConfig) -> LossFn:
    """Build ``loss(params, minibatch, hparams) -> (loss, metrics)``: the
    policy re-run on a :class:`~rlstack.core.types.Batch`'s rows
    (:meth:`Policy.replay <rlstack.policy.policy.Policy.replay>`: transitions, or
    a recurrent policy's whole sequences from their stored hidden states,
    truncated backpropagation through time over ``L`` steps; in bfloat16
    autocast with ``enable_amp``) and :func:`ppo_loss` on its ``B``
    transitions, with ``hparams.clip_param`` and ``hparams.entropy_coeff``
    (a :class:`~rlstack.core.types.HParams`: numbers or 0-d tensors) and the
    config's ``vf_clip_param``, ``vf_clip_kind``, ``dual_clip_param`` and ``vf_coeff``.
    ``make_update`` takes its gradient; wrap it to add a term of your own
    and pass the wrapper as ``make_update(..., loss=)``.

    Examples:
        >>> def with_l2(params, batch, hparams, base=None):  # doctest: +SKIP
        ...     loss, metrics = base(params, batch, hparams)
        ...     l2 = sum((p ** 2).sum() for p in params.values())
        ...     return loss + 1e-4 * l2, {**metrics, "losses/l2": l2.detach()}
    """
    dist = policy.distribution_cls

    def transitions(
        x: torch.Tensor,
    ) -> torch.Tensor:  # [B] or a recurrent batch's [B, L] -> [B * L]
        return x.reshape(-1)

    def loss(params: Params, batch: Batch, hparams: HParams) -> tuple[torch.Tensor, Metrics]:
        with torch.autocast(
            batch.advantages.device.type, dtype=torch.bfloat16, enabled=config.enable_amp
        ):
            dist_inputs, values = policy.replay(params, batch)
        dist_inputs = optree.tree_map(lambda x: x.float(), dist_inputs)
        actions = optree.tree_map(
            lambda a: a.reshape(-1, *a.shape[batch.advantages.dim() :]), batch.actions
        )
        return ppo_loss(
            dist.log_prob(dist_inputs, actions),
            transitions(batch.log_probs),
            transitions(batch.advantages),
            values.float(),
            transitions(batch.values),
            transitions(batch.returns),
            dist.entropy(dist_inputs),
            clip_param=hparams.clip_param,
            vf_clip_param=config.vf_clip_param,
            dual_clip_param=config.dual_clip_param,
            vf_coeff=config.vf_coeff,
            entropy_coeff=hparams.entropy_coeff,
            vf_clip_kind=config.vf_clip_kind,
        )

    return loss
