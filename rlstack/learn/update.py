"""PPO's update, a pure function: ``make_update`` (GAE, then epochs of
shuffled minibatch steps); its optimizer is :mod:`rlstack.learn.optimizer`'s,
its slicing of the batch :mod:`rlstack.learn.minibatches`'.

Time-major shapes: ``T`` steps, ``N`` envs, ``B`` transitions in a flat batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import optree
import torch

from ..core import optim, random
from ..core.config import AlgorithmConfig
from ..core.optim import Schedule
from ..core.types import Batch, HParams, Params, Trajectory
from ..policy.policy import Policy
from .advantages import make_epoch_batch
from .loss import LossFn, Metrics, config_hparams, make_ppo_loss, prepare_batch
from .minibatches import minibatch_plan
from .optimizer import _by_steps
from .transforms import Staged, contiguous, same_inputs_as_before, settled


def _mean_metrics(history: list[Metrics]) -> Metrics:
    """Each metric's mean over the optimizer steps (per member: ``[S, K] -> [K]``)."""
    return {k: torch.stack([m[k] for m in history]).mean(0) for k in history[0]}


#: Update pieces run eagerly even when compiled: cheap ones, and the key split and per-epoch
#: permutation, a few milliseconds eagerly, whose compiled Threefry cost Inductor seconds each.
EAGER_PIECES = frozenset({"global_norm", "epoch_batch", "epoch_keys", "shuffle"})


def make_update(
    policy: Policy,
    optimizer: optim.GradientTransformation,
    config: AlgorithmConfig,
    *,
    entropy_coeff: float | Schedule | None = None,
    loss: LossFn | None = None,
    reduce_grads: Callable[[Params, Metrics], tuple[Params, Metrics]] | None = None,
) -> Staged:
    """Build ``update(key, params, opt_state, traj, hparams=None) -> (params, opt_state, metrics)``.

    ``update`` computes GAE, standardises advantages (over the buffer, or
    per minibatch: ``normalize_advantages_per_minibatch``), then runs
    ``num_sgd_iters`` epochs over ``sgd_minibatch_size`` minibatches (a fresh
    on-device permutation per epoch drawn from ``key`` when
    ``shuffle_minibatches``; same inputs, same outputs). Each optimizer step
    takes the gradient of :func:`ppo_loss` on one minibatch, computed in
    chunks of ``sgd_chunk_size`` transitions whose gradients are averaged,
    and hands it to ``optimizer``: clipping, the learning rate, skipping
    non-finite steps and, with ``accumulate_grads``, accumulating an
    epoch's minibatches into one step are the optimizer's (see
    :func:`make_optimizer`). With ``target_kl``, once a minibatch's
    approximate KL exceeds it, that and every later optimizer call of the
    update are masked out (computed, then params and optimizer state kept
    as they were; with ``accumulate_grads`` the epoch's step is then never
    taken). No host synchronisation happens inside.

    Args:
        policy: the :class:`~rlstack.policy.policy.Policy` whose params are trained.
        optimizer: a :class:`~rlstack.core.optim.GradientTransformation`, e.g.
            ``make_optimizer(config)`` or ``optim.chain(
            optim.clip_by_global_norm(0.5), optim.adam(3e-4))``; with
            ``accumulate_grads``, one that accumulates
            (``optim.accumulate_gradients(inner, every_k=<minibatches per
            epoch>)``, as ``make_optimizer`` builds it).
        config: the :class:`~rlstack.core.config.AlgorithmConfig` (a recurrent
            policy's with its ``seq_len``); ``max_grad_norm`` and
            ``lr_schedule`` are read by :func:`make_optimizer`, not here.
        entropy_coeff: the entropy bonus weight, a number or a schedule of
            the optimizer's step count (:func:`rlstack.core.optim.step_count`);
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
            here (:func:`rlstack.integrations.distributed.all_reduce_mean`).

    The returned ``update`` is a :class:`~rlstack.learn.transforms.Staged`
    function of one run: :func:`~rlstack.learn.transforms.over_members` maps its
    pieces over a leading member axis (params ``[K, ...]``, trajectory
    ``[K, T, N, ...]``, keys ``[K, 2]``, hparams ``[K]``; member ``k`` as
    ``update`` would alone), :func:`~rlstack.learn.transforms.compiled` compiles
    the minibatch gradient, the optimizer step and GAE; the epoch and
    minibatch loops stay in Python, so compile time does not grow with
    their count. It takes ``params`` (dict), ``opt_state``
    (``optimizer.init(params)``), a :class:`~rlstack.core.types.Trajectory` with
    ``T * N`` transitions, a ``[2]`` int64 random ``key``
    (:mod:`rlstack.core.random`; may be ``None`` without ``shuffle_minibatches``)
    and optionally :class:`~rlstack.core.types.HParams` (default: the config's,
    :func:`config_hparams`). ``metrics`` are 0-d tensors averaged over
    optimizer steps: the keys of :func:`ppo_loss` plus
    ``monitors/grad_norm`` (of each minibatch gradient handed to the optimizer),
    ``monitors/param_norm`` (after the update) and ``monitors/sgd_steps``
    (optimizer steps applied; fewer than planned when ``target_kl`` stopped
    the update); with ``desired_kl``, ``coefficients/lr``, the adapted rate
    the next step starts from.
    """
    recurrent = policy.recurrent  # its rows are whole sequences of seq_len transitions
    if recurrent and config.seq_len is None:
        raise ValueError(
            "`seq_len` must be set in the config of a recurrent policy's update "
            "(RecurrentAlgorithmConfig has rlstack 1.x's 4)."
        )
    loss_fn = loss if loss is not None else make_ppo_loss(policy, config)
    if entropy_coeff is None and config.entropy_coeff_schedule is not None:
        entropy_coeff = _by_steps(
            config, config.entropy_coeff_schedule, config.entropy_coeff_schedule_kind
        )
    default_hparams = config_hparams(config)
    memory = policy.memory

    def with_entropy(hparams: HParams, opt_state: Any) -> HParams:
        """``hparams`` with the entropy weight of this optimizer step."""
        if entropy_coeff is None:
            return hparams
        weight = (
            entropy_coeff(optim.step_count(opt_state)) if callable(entropy_coeff) else entropy_coeff
        )
        return hparams._replace(entropy_coeff=weight)

    def minibatch_grads(
        params: Params, opt_state: Any, batch: Batch, idx: torch.Tensor, hparams: HParams
    ) -> tuple[Params, Metrics]:
        """Gradient and metrics of the loss on the transitions ``batch[idx]``."""
        rows = memory.rows(batch, idx)
        return torch.func.grad(loss_fn, has_aux=True)(
            params, rows, with_entropy(hparams, opt_state)
        )

    def optimizer_step(
        params: Params, opt_state: Any, grads: Params, active: torch.Tensor, kl: torch.Tensor
    ) -> tuple[Params, Any, torch.Tensor, torch.Tensor]:
        """One optimizer step (at the rate ``desired_kl`` adapts), kept only while ``active`` and
        the KL is within ``target_kl``; returns params, state, the gradient norm and ``active``.
        """
        opt_state = adapted_rate(opt_state, kl, config.desired_kl)
        if config.target_kl is not None:
            active = active & (kl <= config.target_kl)
        updates, new_state = optimizer.update(grads, opt_state, params)
        new_params = optim.apply_updates(params, updates)
        if config.target_kl is not None:
            new_params = optim.tree_select(active, new_params, params)
            new_state = optim.tree_select(active, new_state, opt_state)
        return new_params, new_state, optim.global_norm(grads), active

    def sgd_step(
        params: Params,
        opt_state: Any,
        batch: Batch,
        idx: torch.Tensor,
        active: torch.Tensor,
        hparams: HParams,
    ) -> tuple[Params, Any, Metrics, torch.Tensor]:
        """Gradient on ``batch[idx]`` and the optimizer step, in one graph."""
        grads, metrics = minibatch_grads(params, opt_state, batch, idx, hparams)
        params, opt_state, grad_norm, active = optimizer_step(
            params, opt_state, grads, active, metrics["monitors/kl_div"]
        )
        return params, opt_state, {**metrics, "monitors/grad_norm": grad_norm}, active

    def prepare(traj: Trajectory, hparams: HParams) -> Batch:
        over_buffer = config.normalize_advantages and not config.normalize_advantages_per_minibatch
        return prepare_batch(
            traj,
            gamma=hparams.gamma,
            gae_lambda=hparams.gae_lambda,
            normalize_advantages=over_buffer,
            memory=memory,
        )

    def epoch_keys(key: torch.Tensor) -> torch.Tensor:
        return random.split(key, config.num_sgd_iters)

    pieces = {
        "grads": minibatch_grads,
        "optimizer_step": optimizer_step,
        "sgd_step": sgd_step,
        "prepare": prepare,
        "epoch_keys": epoch_keys,
        "shuffle": random.permutation,
        "global_norm": optim.global_norm,
    }
    if (
        config.normalize_advantages_per_minibatch
    ):  # a piece only where it does something (vmapped, it costs)
        pieces["epoch_batch"] = make_epoch_batch(config, recurrent)
    loop = functools.partial(
        run_epochs, plan=UpdatePlan(config, default_hparams, recurrent, reduce_grads)
    )
    return Staged(
        pieces, loop, compile=frozenset(pieces) - EAGER_PIECES, in_dims={"shuffle": (0, None)}
    )


def adapted_rate(opt_state: Any, kl: torch.Tensor, desired_kl: float | None) -> Any:
    """rsl_rl's adaptive schedule: the optimizer state with this step's rate
    adapted to the KL before it (:func:`rlstack.core.optim.adapt_learning_rate`);
    as it is without a ``desired_kl``.
    """
    return (
        opt_state
        if desired_kl is None
        else optim.adapt_learning_rate(opt_state, kl, desired_kl=desired_kl)
    )


class UpdatePlan(NamedTuple):
    """What :func:`run_epochs` needs of :func:`make_update`'s arguments."""

    config: AlgorithmConfig
    default_hparams: HParams
    recurrent: bool
    reduce_grads: Callable[[Params, Metrics], tuple[Params, Metrics]] | None


def take_step(
    pieces: Mapping[str, Callable],
    params: Params,
    opt_state: Any,
    batch: Batch,
    group: list[torch.Tensor],
    active: torch.Tensor,
    hparams: HParams,
    reduce_grads: Any,
):
    """One optimizer step on the mean gradient of the index slices in
    ``group`` (the same mathematics as one pass over their union, in
    smaller pieces), reduced across processes by ``reduce_grads``.
    """
    if len(group) == 1 and reduce_grads is None:
        return pieces["sgd_step"](params, opt_state, batch, group[0], active, hparams)
    total = pieces["grads"](params, opt_state, batch, group[0], hparams)
    for idx in group[1:]:
        total = optree.tree_map(
            torch.add, total, pieces["grads"](params, opt_state, batch, idx, hparams)
        )
    grads, metrics = optree.tree_map(lambda x: x / len(group), total)
    if reduce_grads is not None:
        grads, metrics = reduce_grads(grads, metrics)
    params, opt_state, grad_norm, active = pieces["optimizer_step"](
        params, opt_state, grads, active, metrics["monitors/kl_div"]
    )
    return params, opt_state, {**metrics, "monitors/grad_norm": grad_norm}, active


def _per_member(hparams: HParams, traj: Trajectory, member_axes: int) -> HParams:
    """``hparams`` as ``[K]`` tensors under a member axis where they are one
    value for every member (numbers); as they are otherwise.
    """
    if not member_axes or isinstance(hparams.gamma, torch.Tensor):
        return hparams
    shape, device = traj.rewards.shape[:member_axes], traj.rewards.device
    return HParams(*(torch.full(shape, float(v), device=device) for v in hparams))


def run_epochs(
    pieces: Mapping[str, Callable],
    member_axes: int,
    key: torch.Tensor | None,
    params: Params,
    opt_state: Any,
    traj: Trajectory,
    hparams: HParams | None = None,
    *,
    plan: UpdatePlan,
) -> tuple[Params, Any, Metrics]:
    """The Python driver of :func:`make_update`: GAE (the ``prepare``
    piece), then ``num_sgd_iters`` epochs of optimizer steps over shuffled
    slices of the batch; members are the first ``member_axes`` axes.
    """
    config, recurrent = plan.config, plan.recurrent
    if config.accumulate_grads and not isinstance(opt_state, optim.AccumulateState):
        raise ValueError(
            "`accumulate_grads` needs an optimizer that accumulates the minibatches of an epoch: "
            "optim.accumulate_gradients(optimizer, every_k=<minibatches per epoch>), as "
            "make_optimizer(config) builds it."
        )
    device = traj.rewards.device
    hparams = _per_member(plan.default_hparams if hparams is None else hparams, traj, member_axes)
    if config.shuffle_minibatches:
        random.check_key(key, "key")
        keys = pieces["epoch_keys"](key)  # [num_sgd_iters, 2] per member
    batch = pieces["prepare"](traj, hparams)
    member_shape = tuple(batch.advantages.shape[:member_axes])  # () or (K,)
    size = batch.advantages.shape[member_axes]  # transitions, or a recurrent policy's sequences
    num_slices, per_step, chunk = minibatch_plan(
        config, size, device, config.seq_len if recurrent else 1
    )
    # Optimizer calls per step applied.
    calls_per_step = num_slices // per_step if config.accumulate_grads else 1
    active = torch.ones(member_shape, dtype=torch.bool, device=device)
    applied = torch.zeros(member_shape, device=device)
    history: list[Metrics] = []
    params, opt_state, active = contiguous((params, opt_state, active))  # one layout throughout
    stable = False
    for epoch in range(config.num_sgd_iters):
        if config.shuffle_minibatches:
            order = pieces["shuffle"](keys[..., epoch, :].contiguous(), size)
        else:
            order = torch.arange(size, device=device).expand(*member_shape, size)
        slices = [order[..., i * chunk : (i + 1) * chunk] for i in range(num_slices)]
        epoch_batch = pieces["epoch_batch"](batch, order) if "epoch_batch" in pieces else batch
        for call, start in enumerate(range(0, num_slices, per_step)):
            with same_inputs_as_before(epoch > 0 or call > 0):
                params, opt_state, metrics, active = take_step(
                    pieces,
                    params,
                    opt_state,
                    epoch_batch,
                    slices[start : start + per_step],
                    active,
                    hparams,
                    plan.reduce_grads,
                )
            if not stable:
                (params, opt_state, active), stable = settled((params, opt_state, active))
            history.append(metrics)
            if (call + 1) % calls_per_step == 0:
                applied = applied + active.float()
    metrics = _mean_metrics(history)
    metrics["monitors/param_norm"] = pieces["global_norm"](params)
    metrics["monitors/sgd_steps"] = applied
    if config.desired_kl is not None:  # the rate adapted on device: the next update's
        metrics["coefficients/lr"] = optim.learning_rate(opt_state)
    return params, opt_state, metrics
