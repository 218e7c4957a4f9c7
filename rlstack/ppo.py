"""PPO's pure pieces: ``gae``, ``ppo_loss``, ``make_ppo_loss``, ``make_optimizer`` and ``make_update``.

Time-major shapes: ``T`` steps, ``N`` envs, ``B`` transitions in a flat batch.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import optree
import torch

from . import optim, random
from .config import AlgorithmConfig, RecurrentAlgorithmConfig
from .optim import Schedule
from .torch_optimizers import from_torch
from .memory import MemoryKind
from .policy import Policy
from .schedules import by_optimizer_steps, device_schedule
from .transforms import Staged
from .types import Batch, HParams, Params, Trajectory

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
            f"`values` must have shape [T + 1, ...] for `rewards` [T, ...] = {list(rewards.shape)}, "
            f"got {list(values.shape)}."
        )
    for name, flag in (("terminated", terminated), ("truncated", truncated), ("final_values", final_values)):
        if flag is not None and flag.shape != rewards.shape:
            raise ValueError(f"`{name}` must have the shape of `rewards` {list(rewards.shape)}, got {list(flag.shape)}.")
    if truncated is not None and final_values is None:
        raise ValueError("`truncated` needs `final_values`: the values of the truncated steps' final observations.")
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
) -> tuple[torch.Tensor, Metrics]:
    """The PPO objective on a minibatch, as a loss to minimise.

    With ratio ``r = exp(log_probs - old_log_probs)`` and advantages ``A``:

    * policy loss ``-mean(min(r A, clip(r, 1 - eps, 1 + eps) A))``; with a
      dual clip ``c``, the term is ``max(., c A)`` where ``A < 0``;
    * value loss ``0.5 mean((V - R)^2)``, or, with ``vf_clip_param = k``,
      ``0.5 mean(max((V - R)^2, (V_old + clip(V - V_old, -k, k) - R)^2))``
      (CleanRL / PPO2);
    * total ``policy + vf_coeff * vf - entropy_coeff * mean(entropy)``.

    Args:
        log_probs: ``[B]`` float, the current policy's log-probs.
        old_log_probs: ``[B]`` float, the behaviour policy's log-probs.
        advantages: ``[B]`` float, GAE advantages.
        values: ``[B]`` float, the current value predictions.
        old_values: ``[B]`` float, the behaviour-time value predictions.
        returns: ``[B]`` float, value targets.
        entropy: ``[B]`` float, the current policy's entropy.
        clip_param: see :class:`rlstack.config.AlgorithmConfig` (a number
            or a 0-d tensor).
        vf_clip_param: idem.
        dual_clip_param: idem.
        vf_coeff: idem.
        entropy_coeff: idem (a number or a 0-d tensor).

    Returns:
        ``(loss, metrics)``: 0-d loss, and detached 0-d metrics
        ``losses/policy``, ``losses/vf``, ``losses/entropy`` (mean entropy),
        ``losses/total``, ``monitors/kl_div`` (``mean((r - 1) - log r)``, the
        low-variance estimator of KL(old || new)) and
        ``monitors/clip_fraction`` (share of ``|r - 1| > clip_param``).
    """
    log_ratio = log_probs - old_log_probs
    ratio = torch.exp(log_ratio)
    surrogate = torch.minimum(advantages * ratio, advantages * ratio.clamp(1.0 - clip_param, 1.0 + clip_param))
    if dual_clip_param is not None:
        surrogate = torch.where(advantages < 0, torch.maximum(surrogate, dual_clip_param * advantages), surrogate)
    policy_loss = -surrogate.mean()

    value_error = (values - returns) ** 2
    if vf_clip_param is not None:
        clipped_values = old_values + (values - old_values).clamp(-vf_clip_param, vf_clip_param)
        value_error = torch.maximum(value_error, (clipped_values - returns) ** 2)
    vf_loss = 0.5 * value_error.mean()

    entropy_mean = entropy.mean()
    total = policy_loss + vf_coeff * vf_loss - entropy_coeff * entropy_mean
    with torch.no_grad():
        # Metrics are means accumulated in float64: the policy loss is a small difference of large
        # terms, and a compiled float32 reduction's rounding depends on the batch size.
        policy, vf, entropy64 = _mean64(-surrogate), 0.5 * _mean64(value_error), _mean64(entropy)
        metrics = {
            "losses/policy": policy.float(),
            "losses/vf": vf.float(),
            "losses/entropy": entropy64.float(),
            "losses/total": (policy + vf_coeff * vf - entropy_coeff * entropy64).float(),
            "monitors/kl_div": _mean64((ratio - 1.0) - log_ratio).float(),
            "monitors/clip_fraction": ((ratio - 1.0).abs() > clip_param).float().mean(),
        }
    return total, metrics


def _mean64(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` accumulated in float64 (0-d float64), for metrics only."""
    return x.detach().double().mean()


def prepare_batch(
    traj: Trajectory, *, gamma: float | torch.Tensor, gae_lambda: float | torch.Tensor, normalize_advantages: bool,
    memory: MemoryKind,
) -> Batch:
    """GAE on a trajectory (with its episode ends), then its rows for the
    update as the policy's memory kind lays them out
    (:meth:`~rlstack.memory.NoMemory.batch`): ``[T, N, ...]`` flattened to
    ``[B, ...]`` transitions, or a recurrent policy's ``B = (T / L) * N``
    whole sequences of ``L`` steps, ``[B, L, ...]``, each with the hidden
    state it started from.

    Advantages are standardised over the whole buffer when asked
    (``(A - mean) / (std + 1e-8)``); returns use the raw advantages.
    ``memory`` is the policy's memory kind (``policy.memory``).
    """
    advantages, returns = gae(
        traj.rewards, traj.values, gamma=gamma, gae_lambda=gae_lambda,
        terminated=traj.terminated, truncated=traj.truncated, final_values=traj.final_values,
    )
    if normalize_advantages:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    return memory.batch(traj, advantages, returns)


def minibatch(batch: Batch, idx: torch.Tensor, memory: MemoryKind) -> Batch:
    """Rows ``idx`` (``[B']`` int64) of a prepared batch, as the policy's
    memory kind gathers them (a windowed policy's windows ``[B', K, ...]``
    from the trajectory's one copy of its frames)."""
    return memory.rows(batch, idx)


CPU_CHUNK = 8192
RECURRENT_CPU_CHUNK = 4096
GPU_CHUNK = 1 << 20


def default_chunk_size(minibatch_size: int, device: torch.device, seq_len: int = 1) -> int:
    """Rows per forward/backward pass when ``sgd_chunk_size`` is None.

    The largest divisor of the minibatch (``minibatch_size`` rows, each a
    transition, or a recurrent policy's sequence of ``seq_len`` of them) up
    to a per-device bound in transitions: :data:`CPU_CHUNK` on CPU
    (:data:`RECURRENT_CPU_CHUNK` for sequences, whose replay keeps every
    step's gates), so activations stay cache-sized (measured in
    benchmarks/README.md), and :data:`GPU_CHUNK` elsewhere, where large
    batches are fastest and the bound keeps a huge minibatch's activations
    (1 GiB per 256-wide float32 layer at 2**20 rows) from exhausting device
    memory.
    """
    if device.type == "cpu":
        bound = CPU_CHUNK if seq_len == 1 else RECURRENT_CPU_CHUNK
    else:
        bound = GPU_CHUNK
    bound = max(1, bound // seq_len)
    if minibatch_size <= bound:
        return minibatch_size
    return next(d for d in range(bound, 0, -1) if minibatch_size % d == 0)


def _mean_metrics(history: list[Metrics]) -> Metrics:
    """Each metric's mean over the optimizer steps (per member: ``[S, K] -> [K]``)."""
    return {k: torch.stack([m[k] for m in history]).mean(0) for k in history[0]}


def as_config(config: AlgorithmConfig | Mapping[str, Any]) -> AlgorithmConfig:
    """A config, or a dict of one's fields: a
    :class:`~rlstack.config.RecurrentAlgorithmConfig` when it names
    ``seq_len`` or ``seqs_per_state_reset``, else an :class:`AlgorithmConfig`."""
    if isinstance(config, AlgorithmConfig):
        return config
    if "seq_len" in config or "seqs_per_state_reset" in config:
        return RecurrentAlgorithmConfig.from_mapping(config)
    return AlgorithmConfig.from_mapping(config)


def steps_per_update(config: AlgorithmConfig) -> int:
    """Optimizer steps one update takes (when ``target_kl`` stops none):
    one per minibatch per epoch, or one per epoch with ``accumulate_grads``."""
    minibatches = config.num_envs * config.horizon // config.minibatch_size
    return config.num_sgd_iters * (1 if config.accumulate_grads else minibatches)


def _by_steps(config: AlgorithmConfig, schedule: Any, kind: str) -> Schedule:
    """A schedule of env transitions (rlstack 1.x's) as one of optimizer steps."""
    return by_optimizer_steps(
        device_schedule(schedule, kind), steps_per_update=steps_per_update(config),
        transitions_per_update=config.num_envs * config.horizon,
    )


def make_optimizer(
    config: AlgorithmConfig | Mapping[str, Any],
    optimizer_cls: type = torch.optim.Adam,
    optimizer_config: Mapping[str, Any] | None = None,
) -> optim.GradientTransformation:
    """PPO's optimizer for a config: ``apply_if_finite(chain(
    clip_by_global_norm(max_grad_norm), <torch.optim twin>))``, with the
    learning rate following ``lr_schedule`` (keyed on env transitions, see
    :func:`rlstack.schedules.by_optimizer_steps`) when the config has one,
    else ``optimizer_config['lr']``.

    Raises:
        ValueError: see :func:`rlstack.torch_optimizers.torch_optimizer_options`.
    """
    config = as_config(config)
    learning_rate = None
    if config.lr_schedule is not None:
        learning_rate = _by_steps(config, config.lr_schedule, config.lr_schedule_kind)
    base = from_torch(optimizer_cls, optimizer_config, learning_rate=learning_rate)
    return optim.apply_if_finite(optim.chain(optim.clip_by_global_norm(config.max_grad_norm), base))


def config_hparams(config: AlgorithmConfig | Mapping[str, Any], device: Any = None) -> HParams:
    """The config's :class:`~rlstack.types.HParams`: Python floats, or with
    a ``device`` 0-d float32 tensors on it (what :class:`~rlstack.Algorithm`
    passes, so a single run and a population member compute alike)."""
    config = AlgorithmConfig.from_mapping(config)
    values = HParams(config.gamma, config.gae_lambda, config.clip_param, config.entropy_coeff)
    if device is None:
        return values
    return HParams(*(torch.tensor(float(v), dtype=torch.float32, device=device) for v in values))


LossFn = Callable[[Params, Batch, HParams], tuple[torch.Tensor, Metrics]]


def make_ppo_loss(policy: Policy, config: AlgorithmConfig | Mapping[str, Any]) -> LossFn:
    """Build ``loss(params, minibatch, hparams) -> (loss, metrics)``: the
    policy re-run on a :class:`~rlstack.types.Batch`'s rows
    (:meth:`Policy.replay <rlstack.policy.Policy.replay>`: transitions, or
    a recurrent policy's whole sequences from their stored hidden states,
    truncated backpropagation through time over ``L`` steps; in bfloat16
    autocast with ``enable_amp``) and :func:`ppo_loss` on its ``B``
    transitions, with ``hparams.clip_param`` and ``hparams.entropy_coeff``
    (a :class:`~rlstack.types.HParams`: numbers or 0-d tensors) and the
    config's ``vf_clip_param``, ``dual_clip_param`` and ``vf_coeff``.
    ``make_update`` takes its gradient; wrap it to add a term of your own
    and pass the wrapper as ``make_update(..., loss=)``.

    Examples:
        >>> def with_l2(params, batch, hparams, base=None):  # doctest: +SKIP
        ...     loss, metrics = base(params, batch, hparams)
        ...     l2 = sum((p ** 2).sum() for p in params.values())
        ...     return loss + 1e-4 * l2, {**metrics, "losses/l2": l2.detach()}
    """
    config = as_config(config)
    dist = policy.distribution_cls

    def transitions(x: torch.Tensor) -> torch.Tensor:  # [B] or a recurrent batch's [B, L] -> [B * L]
        return x.reshape(-1)

    def loss(params: Params, batch: Batch, hparams: HParams) -> tuple[torch.Tensor, Metrics]:
        with torch.autocast(batch.advantages.device.type, dtype=torch.bfloat16, enabled=config.enable_amp):
            dist_inputs, values = policy.replay(params, batch)
        dist_inputs = optree.tree_map(lambda x: x.float(), dist_inputs)
        actions = optree.tree_map(lambda a: a.reshape(-1, *a.shape[batch.advantages.dim():]), batch.actions)
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
        )

    return loss


def make_update(
    policy: Policy,
    optimizer: optim.GradientTransformation,
    config: AlgorithmConfig | Mapping[str, Any],
    *,
    entropy_coeff: float | Schedule | None = None,
    loss: LossFn | None = None,
    reduce_grads: Callable[[Params, Metrics], tuple[Params, Metrics]] | None = None,
) -> Staged:
    """Build ``update(params, opt_state, traj, key, hparams=None) -> (params, opt_state, metrics)``.

    ``update`` computes GAE, standardises advantages, then runs
    ``num_sgd_iters`` epochs over ``sgd_minibatch_size`` minibatches (a fresh
    on-device permutation per epoch drawn from ``key`` when
    ``shuffle_minibatches``; same inputs, same outputs). Each optimizer step
    takes the gradient of :func:`ppo_loss` on one minibatch (or, with
    ``accumulate_grads``, the mean gradient of an epoch's minibatches),
    computed in chunks of ``sgd_chunk_size`` transitions whose gradients are
    averaged, and hands it to ``optimizer``: clipping, the learning rate and
    skipping non-finite steps are the optimizer's (see
    :func:`make_optimizer`). With ``target_kl``, once a step's approximate
    KL exceeds it, that and every later step of the update are masked out
    (computed, then params and optimizer state kept as they were). No host
    synchronisation happens inside.

    Args:
        policy: the :class:`~rlstack.policy.Policy` whose params are trained.
        optimizer: a :class:`~rlstack.optim.GradientTransformation`, e.g.
            ``make_optimizer(config)`` or ``optim.chain(
            optim.clip_by_global_norm(0.5), optim.adam(3e-4))``.
        config: an :class:`~rlstack.config.AlgorithmConfig` or a dict of its
            fields (others take rlstack 1.x's defaults); ``max_grad_norm``
            and ``lr_schedule`` are read by :func:`make_optimizer`, not here.
        entropy_coeff: the entropy bonus weight, a number or a schedule of
            the optimizer's step count (:func:`rlstack.optim.step_count`);
            default: the config's ``entropy_coeff_schedule`` (keyed on env
            transitions) if any, else ``hparams.entropy_coeff``.
        loss: ``loss(params, minibatch, hparams) -> (loss, metrics)`` to
            differentiate; default :func:`make_ppo_loss` ``(policy,
            config)``. Its metrics (0-d tensors) are averaged and returned
            with the others.
        reduce_grads: ``reduce_grads(grads, metrics) -> (grads, metrics)``
            applied to every optimizer step's gradient (and the metrics its
            target-KL decision reads) before the step, outside the compiled
            pieces: data-parallel training averages them across processes
            here (:func:`rlstack.distributed.all_reduce_mean`).

    The returned ``update`` is a :class:`~rlstack.transforms.Staged`
    function of one run: :func:`~rlstack.transforms.over_members` maps its
    pieces over a leading member axis (params ``[K, ...]``, trajectory
    ``[K, T, N, ...]``, keys ``[K, 2]``, hparams ``[K]``; member ``k`` as
    ``update`` would alone), :func:`~rlstack.transforms.compiled` compiles
    the minibatch gradient, the optimizer step and GAE; the epoch and
    minibatch loops stay in Python, so compile time does not grow with
    their count. It takes ``params`` (dict), ``opt_state``
    (``optimizer.init(params)``), a :class:`~rlstack.types.Trajectory` with
    ``T * N`` transitions, a ``[2]`` int64 random ``key``
    (:mod:`rlstack.random`; may be ``None`` without ``shuffle_minibatches``)
    and optionally :class:`~rlstack.types.HParams` (default: the config's,
    :func:`config_hparams`). ``metrics`` are 0-d tensors averaged over
    optimizer steps: the keys of :func:`ppo_loss` plus
    ``monitors/grad_norm`` (of the gradient handed to the optimizer),
    ``monitors/param_norm`` (after the update) and ``monitors/sgd_steps``
    (optimizer steps applied; fewer than planned when ``target_kl`` stopped
    the update).
    """
    recurrent = policy.recurrent  # its rows are whole sequences of seq_len transitions
    config = (RecurrentAlgorithmConfig if recurrent else AlgorithmConfig).from_mapping(config)
    loss_fn = loss if loss is not None else make_ppo_loss(policy, config)
    if entropy_coeff is None and config.entropy_coeff_schedule is not None:
        entropy_coeff = _by_steps(config, config.entropy_coeff_schedule, config.entropy_coeff_schedule_kind)
    default_hparams = config_hparams(config)
    memory = policy.memory

    def with_entropy(hparams: HParams, opt_state: Any) -> HParams:
        """``hparams`` with the entropy weight of this optimizer step."""
        if entropy_coeff is None:
            return hparams
        weight = entropy_coeff(optim.step_count(opt_state)) if callable(entropy_coeff) else entropy_coeff
        return hparams._replace(entropy_coeff=weight)

    def minibatch_grads(
        params: Params, opt_state: Any, batch: Batch, idx: torch.Tensor, hparams: HParams
    ) -> tuple[Params, Metrics]:
        """Gradient and metrics of the loss on the transitions ``batch[idx]``."""
        rows = memory.rows(batch, idx)
        return torch.func.grad(loss_fn, has_aux=True)(params, rows, with_entropy(hparams, opt_state))

    def optimizer_step(
        params: Params, opt_state: Any, grads: Params, active: torch.Tensor, kl: torch.Tensor
    ) -> tuple[Params, Any, torch.Tensor, torch.Tensor]:
        """One optimizer step, kept only while ``active`` and the KL is within
        ``target_kl``; returns params, state, the gradient norm and ``active``."""
        if config.target_kl is not None:
            active = active & (kl <= config.target_kl)
        updates, new_state = optimizer.update(grads, opt_state, params)
        new_params = optim.apply_updates(params, updates)
        if config.target_kl is not None:
            new_params = optim.tree_select(active, new_params, params)
            new_state = optim.tree_select(active, new_state, opt_state)
        return new_params, new_state, optim.global_norm(grads), active

    def sgd_step(
        params: Params, opt_state: Any, batch: Batch, idx: torch.Tensor, active: torch.Tensor, hparams: HParams
    ) -> tuple[Params, Any, Metrics, torch.Tensor]:
        """Gradient on ``batch[idx]`` and the optimizer step, in one graph."""
        grads, metrics = minibatch_grads(params, opt_state, batch, idx, hparams)
        params, opt_state, grad_norm, active = optimizer_step(params, opt_state, grads, active, metrics["monitors/kl_div"])
        return params, opt_state, {**metrics, "monitors/grad_norm": grad_norm}, active

    def add_grads(total: tuple[Params, Metrics], new: tuple[Params, Metrics]) -> tuple[Params, Metrics]:
        """Sum of two (gradient, metrics) pairs, leaf by leaf."""
        return optree.tree_map(torch.add, total, new)

    def prepare(traj: Trajectory, hparams: HParams) -> Batch:
        return prepare_batch(
            traj, gamma=hparams.gamma, gae_lambda=hparams.gae_lambda, normalize_advantages=config.normalize_advantages,
            memory=memory,
        )

    def epoch_keys(key: torch.Tensor) -> torch.Tensor:
        return random.split(key, config.num_sgd_iters)

    def shuffle(key: torch.Tensor, size: int) -> torch.Tensor:
        return random.permutation(key, size)

    def take_step(pieces: Mapping[str, Callable], params: Params, opt_state: Any, batch: Batch,
                  group: list[torch.Tensor], active: torch.Tensor, hparams: HParams):
        """One optimizer step on the mean gradient of the index slices in
        ``group`` (the same mathematics as one pass over their union, in
        smaller pieces), reduced across processes by ``reduce_grads``."""
        if len(group) == 1 and reduce_grads is None:
            return pieces["sgd_step"](params, opt_state, batch, group[0], active, hparams)
        total = pieces["grads"](params, opt_state, batch, group[0], hparams)
        for idx in group[1:]:
            total = add_grads(total, pieces["grads"](params, opt_state, batch, idx, hparams))
        grads, metrics = optree.tree_map(lambda x: x / len(group), total)
        if reduce_grads is not None:
            grads, metrics = reduce_grads(grads, metrics)
        params, opt_state, grad_norm, active = pieces["optimizer_step"](
            params, opt_state, grads, active, metrics["monitors/kl_div"])
        return params, opt_state, {**metrics, "monitors/grad_norm": grad_norm}, active

    def loop(pieces: Mapping[str, Callable], member_axes: int, params: Params, opt_state: Any, traj: Trajectory,
             key: torch.Tensor | None, hparams: HParams | None = None) -> tuple[Params, Any, Metrics]:
        """Epochs of minibatch steps over the pieces; members are the first ``member_axes`` axes."""
        device = traj.rewards.device
        hparams = default_hparams if hparams is None else hparams
        if member_axes and not isinstance(hparams.gamma, torch.Tensor):  # one value for every member
            hparams = HParams(*(torch.full(traj.rewards.shape[:member_axes], float(v), device=device)
                                for v in hparams))
        if config.shuffle_minibatches:
            random.check_key(key, "key")
            keys = pieces["epoch_keys"](key)  # [num_sgd_iters, 2] per member
        batch = pieces["prepare"](traj, hparams)
        member_shape = tuple(batch.advantages.shape[:member_axes])  # () or (K,)
        size = batch.advantages.shape[member_axes]  # transitions, or a recurrent policy's sequences
        num_slices, per_step, chunk = minibatch_plan(config, size, device, config.seq_len if recurrent else 1)
        active = torch.ones(member_shape, dtype=torch.bool, device=device)
        applied = torch.zeros(member_shape, device=device)
        history: list[Metrics] = []
        for epoch in range(config.num_sgd_iters):
            if config.shuffle_minibatches:
                order = pieces["shuffle"](keys[..., epoch, :].contiguous(), size)
            else:
                order = torch.arange(size, device=device).expand(*member_shape, size)
            slices = [order[..., i * chunk : (i + 1) * chunk] for i in range(num_slices)]
            for start in range(0, num_slices, per_step):
                params, opt_state, metrics, active = take_step(pieces, params, opt_state, batch,
                                                               slices[start : start + per_step], active, hparams)
                history.append(metrics)
                applied = applied + active.float()
        metrics = _mean_metrics(history)
        metrics["monitors/param_norm"] = pieces["global_norm"](params)
        metrics["monitors/sgd_steps"] = applied
        return params, opt_state, metrics

    pieces = {"grads": minibatch_grads, "optimizer_step": optimizer_step, "sgd_step": sgd_step, "prepare": prepare,
              "epoch_keys": epoch_keys, "shuffle": shuffle, "global_norm": optim.global_norm}
    return Staged(pieces, loop, compile=frozenset(pieces) - {"global_norm"}, in_dims={"shuffle": (0, None)})


def minibatch_plan(config: AlgorithmConfig, size: int, device: torch.device, steps_per_row: int) -> tuple[int, ...]:
    """How an update slices ``size`` rows (transitions, or sequences of
    ``steps_per_row``): ``(slices per epoch, slices per optimizer step,
    rows per slice)``; a slice is ``sgd_chunk_size`` rows (default
    :func:`default_chunk_size`), an optimizer step a minibatch (an epoch with
    ``accumulate_grads``).

    Raises:
        ValueError: if the minibatch does not divide the rows, or the chunk the minibatch.
    """
    mb_size = (config.sgd_minibatch_size or size * steps_per_row) // steps_per_row
    if size % mb_size:
        raise ValueError(f"`sgd_minibatch_size` {mb_size * steps_per_row} must divide the "
                         f"{size * steps_per_row} transitions of `traj`.")
    chunk = config.sgd_chunk_size // steps_per_row if config.sgd_chunk_size else default_chunk_size(
        mb_size, device, steps_per_row)
    if mb_size % chunk:
        raise ValueError(f"`sgd_chunk_size` {chunk * steps_per_row} must divide the minibatch size "
                         f"{mb_size * steps_per_row}.")
    num_slices = (size // mb_size) * (mb_size // chunk)
    return num_slices, num_slices if config.accumulate_grads else mb_size // chunk, chunk
