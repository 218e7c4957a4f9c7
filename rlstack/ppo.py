"""PPO's pure pieces: ``gae``, ``ppo_loss``, ``make_ppo_loss``, ``make_optimizer`` and ``make_update``.

Time-major shapes: ``T`` steps, ``N`` envs, ``B`` transitions in a flat batch.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import optree
import torch

from . import optim, random, windows
from .config import AlgorithmConfig, RecurrentAlgorithmConfig
from .optim import Schedule
from .torch_optimizers import from_torch
from .policy import Policy
from .schedules import by_optimizer_steps, device_schedule
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
    traj: Trajectory, *, gamma: float | torch.Tensor, gae_lambda: float | torch.Tensor, normalize_advantages: bool
) -> Batch:
    """GAE on a trajectory (with its episode ends), then flatten
    ``[T, N, ...]`` to ``[B, ...]``; a recurrent policy's trajectory
    (``traj.resets`` a tensor) becomes ``B = (T / L) * N`` whole sequences of
    ``L = T / len(traj.hiddens)`` steps, ``[B, L, ...]``, each with the
    hidden state it started from (see :func:`sequences`).

    Advantages are standardised over the whole buffer when asked
    (``(A - mean) / (std + 1e-8)``); returns use the raw advantages.
    """
    advantages, returns = gae(
        traj.rewards, traj.values, gamma=gamma, gae_lambda=gae_lambda,
        terminated=traj.terminated, truncated=traj.truncated, final_values=traj.final_values,
    )
    if normalize_advantages:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

    if isinstance(traj.resets, torch.Tensor):
        return sequences(traj, advantages, returns)

    batch = _reshaped(traj, advantages, returns, lambda x: x.reshape(-1, *x.shape[2:]))
    if isinstance(traj.obs_ages, torch.Tensor):  # a windowed policy: windows are gathered per minibatch
        batch = batch._replace(obs=windows.frames(traj.obs_history, traj.obs, traj.obs_ages))
    return batch


def minibatch(batch: Batch, idx: torch.Tensor, obs_window: int = 1) -> Batch:
    """Rows ``idx`` (``[B']`` int64) of a prepared batch; for a windowed
    policy (``obs_window = K > 1``, ``batch.obs`` an
    :class:`~rlstack.windows.ObsFrames`) their observation windows
    ``[B', K, ...]`` are gathered from the trajectory's one copy."""
    if isinstance(batch.obs, windows.ObsFrames):
        rows = optree.tree_map(lambda x: x[idx], batch._replace(obs=()))
        return rows._replace(obs=windows.gather(batch.obs, idx, obs_window))
    return optree.tree_map(lambda x: x[idx], batch)


def _reshaped(traj: Trajectory, advantages: torch.Tensor, returns: torch.Tensor, reshape: Callable, **extra: Any) -> Batch:
    """The :class:`~rlstack.types.Batch` of ``traj``'s ``[T, N, ...]`` fields
    (values without the bootstrap), each passed through ``reshape``."""
    return Batch(
        obs=optree.tree_map(reshape, traj.obs),
        actions=optree.tree_map(reshape, traj.actions),
        log_probs=reshape(traj.log_probs),
        values=reshape(traj.values[:-1]),
        advantages=reshape(advantages),
        returns=reshape(returns),
        **extra,
    )


def sequences(traj: Trajectory, advantages: torch.Tensor, returns: torch.Tensor) -> Batch:
    """A recurrent trajectory as a :class:`~rlstack.types.Batch` of whole
    sequences: every ``[T, N, ...]`` field becomes ``[S * N, L, ...]``
    (sequence ``s`` of env ``n`` at row ``s * N + n``, ``S = T / L``), and
    ``traj.hiddens`` ``[S, N, ...]`` becomes ``[S * N, ...]``."""
    num_seqs = optree.tree_leaves(traj.hiddens)[0].shape[0]

    def by_sequence(x: torch.Tensor) -> torch.Tensor:
        steps, envs = x.shape[:2]
        length = steps // num_seqs
        x = x.reshape(num_seqs, length, envs, *x.shape[2:]).transpose(1, 2)
        return x.reshape(num_seqs * envs, length, *x.shape[3:])

    return _reshaped(
        traj, advantages, returns, by_sequence,
        hiddens=optree.tree_map(lambda h: h.reshape(-1, *h.shape[2:]), traj.hiddens), resets=by_sequence(traj.resets),
    )


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
    policy applied to a :class:`~rlstack.types.Batch` of ``[B, ...]``
    transitions (in bfloat16 autocast with ``enable_amp``) and
    :func:`ppo_loss` on its outputs, with ``hparams.clip_param`` and
    ``hparams.entropy_coeff`` (a :class:`~rlstack.types.HParams`: numbers
    or 0-d tensors) and the config's ``vf_clip_param``, ``dual_clip_param``
    and ``vf_coeff``. ``make_update`` takes its gradient; wrap it to add a
    term of your own and pass the wrapper as ``make_update(..., loss=)``.

    Examples:
        >>> def with_l2(params, batch, hparams, base=None):  # doctest: +SKIP
        ...     loss, metrics = base(params, batch, hparams)
        ...     l2 = sum((p ** 2).sum() for p in params.values())
        ...     return loss + 1e-4 * l2, {**metrics, "losses/l2": l2.detach()}
    """
    config = AlgorithmConfig.from_mapping(config)
    dist = policy.distribution_cls

    def loss(params: Params, batch: Batch, hparams: HParams) -> tuple[torch.Tensor, Metrics]:
        with torch.autocast(batch.advantages.device.type, dtype=torch.bfloat16, enabled=config.enable_amp):
            dist_inputs, values = policy.apply(params, batch.obs)
        dist_inputs = optree.tree_map(lambda x: x.float(), dist_inputs)
        return ppo_loss(
            dist.log_prob(dist_inputs, batch.actions),
            batch.log_probs,
            batch.advantages,
            values.float(),
            batch.values,
            batch.returns,
            dist.entropy(dist_inputs),
            clip_param=hparams.clip_param,
            vf_clip_param=config.vf_clip_param,
            dual_clip_param=config.dual_clip_param,
            vf_coeff=config.vf_coeff,
            entropy_coeff=hparams.entropy_coeff,
        )

    return loss


def _population_pieces(
    minibatch_grads: Callable, optimizer_step: Callable, sgd_step: Callable, prepare: Callable, epoch_keys: Callable,
    shuffle: Callable, global_norm: Callable,
) -> tuple[Callable, ...]:
    """``make_update``'s pieces ``vmap``-ed over a leading member axis, each
    under a function of its own: ``torch.compile`` keeps compiled code per
    Python function, and every ``vmap`` wrapper is the same function."""
    vmap = torch.func.vmap
    grads_v, step_v, sgd_step_v, prepare_v, keys_v, norm_v = (
        vmap(f) for f in (minibatch_grads, optimizer_step, sgd_step, prepare, epoch_keys, global_norm)
    )
    shuffle_v = vmap(shuffle, in_dims=(0, None))

    def population_grads(params, opt_state, batch, idx, hparams):
        return grads_v(params, opt_state, batch, idx, hparams)

    def population_optimizer_step(params, opt_state, grads, active, kl):
        return step_v(params, opt_state, grads, active, kl)

    def population_sgd_step(params, opt_state, batch, idx, active, hparams):
        return sgd_step_v(params, opt_state, batch, idx, active, hparams)

    def population_prepare(traj, hparams):
        return prepare_v(traj, hparams)

    def population_epoch_keys(key):
        return keys_v(key)

    def population_shuffle(keys, size):
        return shuffle_v(keys, size)

    return (population_grads, population_optimizer_step, population_sgd_step, population_prepare,
            population_epoch_keys, population_shuffle, norm_v)


def replay(
    policy: Policy, params: Params, batch: Batch, *, enable_amp: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run a recurrent policy over a batch of whole sequences ``[B, L, ...]``
    from each one's stored hidden state, resetting it where
    ``batch.resets``, as the rollout did.

    Returns:
        ``(log_probs, values, entropy)``, each ``[B, L]`` float32: of
        ``batch.actions`` under ``params`` (equal to ``batch.log_probs`` for
        the params that acted).
    """
    dist = policy.distribution_cls
    hidden, log_probs, values, entropies = batch.hiddens, [], [], []
    for t in range(batch.resets.shape[1]):
        obs = optree.tree_map(lambda x: x[:, t], batch.obs)
        with torch.autocast(batch.advantages.device.type, dtype=torch.bfloat16, enabled=enable_amp):
            dist_inputs, value, hidden = policy.apply_recurrent(params, obs, hidden, batch.resets[:, t])
        dist_inputs = optree.tree_map(lambda x: x.float(), dist_inputs)
        log_probs.append(dist.log_prob(dist_inputs, optree.tree_map(lambda x: x[:, t], batch.actions)))
        values.append(value.float())
        entropies.append(dist.entropy(dist_inputs))
    return torch.stack(log_probs, 1), torch.stack(values, 1), torch.stack(entropies, 1)


def make_recurrent_ppo_loss(policy: Policy, config: AlgorithmConfig | Mapping[str, Any]) -> LossFn:
    """:func:`make_ppo_loss` for a recurrent policy on a batch of whole
    sequences ``[B, L, ...]``: the model is replayed over each sequence from
    its stored hidden state, reset where ``batch.resets``, exactly as it
    acted in the rollout (truncated backpropagation through time over
    ``L`` steps), then :func:`ppo_loss` on the ``B * L`` steps."""
    config = RecurrentAlgorithmConfig.from_mapping(config)

    def loss(params: Params, batch: Batch, hparams: HParams) -> tuple[torch.Tensor, Metrics]:
        log_probs, values, entropy = replay(policy, params, batch, enable_amp=config.enable_amp)

        def steps(x: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B * L]
            return x.reshape(-1)

        return ppo_loss(
            steps(log_probs), steps(batch.log_probs), steps(batch.advantages),
            steps(values), steps(batch.values), steps(batch.returns), steps(entropy),
            clip_param=hparams.clip_param, vf_clip_param=config.vf_clip_param,
            dual_clip_param=config.dual_clip_param, vf_coeff=config.vf_coeff, entropy_coeff=hparams.entropy_coeff,
        )

    return loss


def make_update(
    policy: Policy,
    optimizer: optim.GradientTransformation,
    config: AlgorithmConfig | Mapping[str, Any],
    *,
    entropy_coeff: float | Schedule | None = None,
    loss: LossFn | None = None,
    compile: bool = False,
    population: bool = False,
    reduce_grads: Callable[[Params, Metrics], tuple[Params, Metrics]] | None = None,
) -> Callable[..., tuple[Params, Any, Metrics]]:
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
        compile: hand the minibatch gradient, the optimizer step (and GAE)
            to ``torch.compile``; the epoch and minibatch loops stay in
            Python, so compile time does not grow with their count.
        population: every argument of ``update`` has a leading member axis
            ``K`` (params ``[K, ...]``, trajectory ``[K, T, N, ...]``, keys
            ``[K, 2]``, hparams ``[K]``) and each piece is
            ``torch.func.vmap``-ed over it before it is compiled: one graph
            trains all members, member ``k`` as ``update`` would alone.
        reduce_grads: ``reduce_grads(grads, metrics) -> (grads, metrics)``
            applied to every optimizer step's gradient (and the metrics its
            target-KL decision reads) before the step, outside the compiled
            pieces: data-parallel training averages them across processes
            here (:func:`rlstack.distributed.all_reduce_mean`).

    The returned ``update`` takes ``params`` (dict), ``opt_state``
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
    recurrent = policy.recurrent
    if recurrent:
        config = RecurrentAlgorithmConfig.from_mapping(config)
        loss_fn = loss if loss is not None else make_recurrent_ppo_loss(policy, config)
    else:
        config = AlgorithmConfig.from_mapping(config)
        loss_fn = loss if loss is not None else make_ppo_loss(policy, config)
    if entropy_coeff is None and config.entropy_coeff_schedule is not None:
        entropy_coeff = _by_steps(config, config.entropy_coeff_schedule, config.entropy_coeff_schedule_kind)
    default_hparams = config_hparams(config)
    obs_window = policy.obs_window

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
        rows = minibatch(batch, idx, obs_window)
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
            traj, gamma=hparams.gamma, gae_lambda=hparams.gae_lambda, normalize_advantages=config.normalize_advantages
        )

    def epoch_keys(key: torch.Tensor) -> torch.Tensor:
        return random.split(key, config.num_sgd_iters)

    def shuffle(key: torch.Tensor, size: int) -> torch.Tensor:
        return random.permutation(key, size)

    # What `update` calls: each member-level piece, mapped over the member axis for a
    # population, then compiled.
    pieces = (minibatch_grads, optimizer_step, sgd_step, prepare, epoch_keys, shuffle, optim.global_norm)
    if population:
        pieces = _population_pieces(*pieces)
    if compile:
        pieces = tuple(torch.compile(f, fullgraph=True) for f in pieces[:6]) + pieces[6:]
    grads_fn, step_fn, sgd_step_fn, prepare_fn, epoch_keys_fn, shuffle_fn, global_norm_fn = pieces

    def update(
        params: Params, opt_state: Any, traj: Trajectory, key: torch.Tensor | None, hparams: HParams | None = None
    ) -> tuple[Params, Any, Metrics]:
        device = traj.rewards.device
        hparams = default_hparams if hparams is None else hparams
        if population and not isinstance(hparams.gamma, torch.Tensor):  # one value for every member
            members = traj.rewards.shape[0]
            hparams = HParams(*(torch.full((members,), float(v), device=device) for v in hparams))
        if config.shuffle_minibatches:
            random.check_key(key, "key")
            keys = epoch_keys_fn(key)  # [num_sgd_iters, 2], or [K, num_sgd_iters, 2]
        batch = prepare_fn(traj, hparams)
        lead = 1 if population else 0  # the member axis comes first
        size = batch.advantages.shape[lead]  # transitions, or a recurrent policy's sequences
        steps_per_row = config.seq_len if recurrent else 1
        mb_size = (config.sgd_minibatch_size or size * steps_per_row) // steps_per_row
        if size % mb_size:
            raise ValueError(f"`sgd_minibatch_size` {mb_size * steps_per_row} must divide the "
                             f"{size * steps_per_row} transitions of `traj`.")
        if config.sgd_chunk_size:
            chunk = config.sgd_chunk_size // steps_per_row
        else:
            chunk = default_chunk_size(mb_size, device, steps_per_row)
        if mb_size % chunk:
            raise ValueError(f"`sgd_chunk_size` {chunk * steps_per_row} must divide the minibatch size "
                             f"{mb_size * steps_per_row}.")
        num_minibatches, num_chunks = size // mb_size, mb_size // chunk
        member_shape = tuple(batch.advantages.shape[:lead])  # () or (K,)
        active = torch.ones(member_shape, dtype=torch.bool, device=device)
        applied = torch.zeros(member_shape, device=device)
        history: list[Metrics] = []
        for epoch in range(config.num_sgd_iters):
            if config.shuffle_minibatches:
                order = shuffle_fn(keys[..., epoch, :].contiguous(), size)
            else:
                order = torch.arange(size, device=device).expand(*member_shape, size)
            # Index slices of `chunk` transitions, grouped by optimizer step: one step per
            # minibatch, or per epoch with accumulate_grads.
            chunks = [order[..., i * chunk : (i + 1) * chunk] for i in range(num_minibatches * num_chunks)]
            per_step = len(chunks) if config.accumulate_grads else num_chunks
            for start in range(0, len(chunks), per_step):
                group = chunks[start : start + per_step]
                if len(group) == 1 and reduce_grads is None:
                    params, opt_state, metrics, active = sgd_step_fn(params, opt_state, batch, group[0], active, hparams)
                else:
                    # The mean gradient over the group's slices: the same mathematics as one
                    # pass over their union, in smaller pieces.
                    total = grads_fn(params, opt_state, batch, group[0], hparams)
                    for idx in group[1:]:
                        total = add_grads(total, grads_fn(params, opt_state, batch, idx, hparams))
                    grads, metrics = optree.tree_map(lambda x: x / len(group), total)
                    if reduce_grads is not None:
                        grads, metrics = reduce_grads(grads, metrics)
                    params, opt_state, grad_norm, active = step_fn(
                        params, opt_state, grads, active, metrics["monitors/kl_div"]
                    )
                    metrics["monitors/grad_norm"] = grad_norm
                history.append(metrics)
                applied = applied + active.float()
        metrics = _mean_metrics(history)
        metrics["monitors/param_norm"] = global_norm_fn(params)
        metrics["monitors/sgd_steps"] = applied
        return params, opt_state, metrics

    return update
