"""``make_rollout``: the horizon loop, nothing PPO-specific."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import optree
import torch

from ..core import random
from ..core.normalization import normalize, observe, scale_reward
from ..core.types import HParams, Params, RolloutCarry, Trajectory, Transition, Tree
from ..envs import Env
from ..policy.acting import to_action_space
from ..policy.policy import Policy
from .carry import with_carry_defaults
from .stats import tally_episodes
from .steps import Acted, fused_steps, split_steps
from .transforms import Staged, contiguous

__all__ = [
    "check_lengths",
    "check_window",
    "final_value",
    "make_rollout",
    "run_horizon",
    "scheduled_starts",
]


def make_rollout(
    env: Env,
    policy: Policy,
    horizon: int,
    *,
    deterministic: bool = False,
    normalize_obs: bool = False,
    normalize_rewards: bool = False,
    gamma: float = 0.99,
    update_normalization: bool = True,
    seq_len: int = 1,
    seqs_per_state_reset: int = -1,
) -> Staged:
    """Build ``rollout(params, carry, hparams=None) -> (carry, traj)``.

    ``rollout`` runs ``horizon`` steps of its ``step`` piece
    ``step(params, carry, discount) -> (carry, transition)`` (act, then step the env with the action
    mapped into its action space by :func:`~rlstack.policy.policy.to_action_space`; ``traj.actions``
    keeps the distribution's own, which log-probs refer to), stacks the transitions
    time-major and appends the critic's value of the final observation as
    the bootstrap ``traj.values[T]``. Its randomness comes from
    ``carry.key``, split at every step (the returned carry holds the next
    key), so the same ``(params, carry)`` give the same outputs, eagerly,
    compiled and under ``vmap``. It never syncs with the host and does not
    touch ``params`` or ``carry``.

    Args:
        env: a pure :class:`~rlstack.envs.Env`.
        policy: the :class:`~rlstack.policy.policy.Policy` that acts.
        horizon: ``T``, steps per rollout (> 0).
        deterministic: act with the distribution's mode (evaluation).
        normalize_obs: the policy sees observations standardised by the
            running statistics in ``carry.norm.obs`` (a
            :class:`~rlstack.core.normalization.NormState`); ``traj.obs`` holds
            what it saw.
        normalize_rewards: ``traj.rewards`` are the env's rewards divided by
            the running std of the ``gamma``-discounted return
            (``carry.norm.reward``); ``traj.raw_rewards`` keeps the env's.
        gamma: discount of the return whose std scales rewards; a
            :class:`~rlstack.core.types.HParams` passed to ``rollout`` overrides
            it with its ``gamma`` (a number or a 0-d tensor).
        update_normalization: update the running statistics with this
            rollout's data (``False`` freezes them, for evaluation).
        seq_len: for a recurrent policy (:attr:`Policy.recurrent
            <rlstack.policy.policy.Policy.recurrent>`): ``traj.memory.hiddens``
            keeps the hidden state at the start of every ``seq_len`` steps
            (counted by ``carry.step``), for the update's replay.
        seqs_per_state_reset: start every env's memory over at the start of
            every this many sequences (rlstack 1.x's recurrent state
            resets); negative: never. It also starts over where
            ``carry.starts`` (a fresh env, an episode's end).

    The policy acts through :meth:`Policy.step
    <rlstack.policy.policy.Policy.step>` with its memory (``carry.memory``,
    started over where ``carry.starts``), whatever its kind
    (:mod:`rlstack.policy.memory`); ``traj.memory`` is the kind's record of what
    the update needs (a windowed policy's ``traj.obs`` keeps one
    observation per step, its record the ``K - 1`` before the first).

    Returns:
        ``rollout``, a :class:`~rlstack.learn.transforms.Staged` function of one
        run: :func:`~rlstack.learn.transforms.over_members` maps its pieces over a
        leading member axis (``params``, ``carry``, ``hparams`` and ``traj``
        leaves then ``[K, ...]``), :func:`~rlstack.learn.transforms.compiled`
        compiles the step and the bootstrap value; for an env with
        ``compilable = False`` (gymnasium, the 1.x adapters) the step is
        ``act``, the eager ``env_step`` and ``learn_then_act``, compiled
        around the env (:func:`split_steps`); the time loop
        stays in Python so compile time does not grow with ``horizon``. Its
        ``traj`` is a :class:`~rlstack.core.types.Trajectory` with leaves ``[T,
        N, ...]`` (``values`` ``[T + 1, N]``) and its ``carry`` holds the env
        state and observation after the last step.

    Examples:
        >>> from rlstack.envs import DiscreteDummyEnv
        >>> from rlstack.policy.models import MLPModel
        >>> from rlstack.policy.distributions import Categorical
        >>> env = DiscreteDummyEnv()
        >>> policy = Policy(MLPModel(env.observation_space, env.action_space, hiddens=(8,)),
        Categorical)
        >>> from rlstack import random
        >>> rollout = make_rollout(env, policy, horizon=5)
        >>> reset_key, rollout_key = random.split(random.key(0))
        >>> carry, traj = rollout(policy.init_params(), RolloutCarry(*env.reset(reset_key, 3),
        rollout_key))
        >>> traj.rewards.shape, traj.values.shape
        (torch.Size([5, 3]), torch.Size([6, 3]))
    """
    check_lengths(policy, horizon, seq_len)
    memory_kind = policy.memory
    memory_starts = functools.partial(
        scheduled_starts, seq_len=seq_len, seqs_per_state_reset=seqs_per_state_reset
    )

    def act(params: Params, carry: RolloutCarry) -> Acted:
        """Before the env: split the key, observe, act with the memory."""
        key, act_key, step_key = random.split(carry.key, 3)
        norm, policy_obs = observe(
            carry.norm, carry.obs, normalize_obs=normalize_obs, update=update_normalization
        )
        starts = memory_starts(carry)
        action, log_prob, value, memory = policy.step(
            act_key, params, policy_obs, carry.memory, starts, deterministic=deterministic
        )
        env_action = to_action_space(policy.distribution_cls, action, env.action_space)
        return Acted(
            key, step_key, norm, policy_obs, starts, action, log_prob, value, memory, env_action
        )

    def learn(
        params: Params, carry: RolloutCarry, discount: Any, acted: Acted, stepped: tuple
    ) -> tuple[RolloutCarry, Transition]:
        """After the env: an ended episode is tallied (its final observation
        valued) and its successor's memory starts over at the next step.
        """
        env_state, obs, reward, terminated, truncated = stepped
        done = terminated | truncated
        ended_value = final_value(
            env,
            policy,
            normalize_obs,
            params,
            acted.norm,
            env_state,
            acted.memory,
            torch.zeros_like(done),
        )
        norm, learned_reward = scale_reward(
            acted.norm,
            reward,
            discount,
            done,
            normalize_rewards=normalize_rewards,
            update=update_normalization,
        )
        tally, ended_return, ended_length = tally_episodes(carry.episode, reward, done)
        transition = Transition(
            acted.policy_obs,
            acted.action,
            acted.log_prob,
            acted.value,
            learned_reward,
            reward,
            terminated,
            truncated,
            ended_value,
            ended_return,
            ended_length,
            memory_kind.step_record(carry.memory, acted.starts),
        )
        return RolloutCarry(
            env_state, obs, acted.key, norm, tally, acted.memory, done, carry.step + 1
        ), transition

    def body(params: Params, carry: RolloutCarry, discount: Any) -> tuple[RolloutCarry, Transition]:
        """Act, step the env with the action mapped into its space, learn."""
        acted = act(params, carry)
        return learn(
            params,
            carry,
            discount,
            acted,
            env.step(acted.step_key, carry.env_state, acted.env_action),
        )

    def learn_then_act(
        params: Params, carry: RolloutCarry, discount: Any, acted: Acted, stepped: tuple
    ) -> tuple[RolloutCarry, Transition, Acted]:
        """``learn``, then ``act`` on its carry: one call between two eager env steps."""
        carry, transition = learn(params, carry, discount, acted, stepped)
        return carry, transition, act(params, carry)

    def bootstrap_value(params: Params, carry: RolloutCarry) -> torch.Tensor:
        """The critic's value of the carry's observation, as the next step would see it."""
        obs = normalize(carry.norm.obs, carry.obs) if normalize_obs else carry.obs
        return policy.value(params, obs, carry.memory, memory_starts(carry))

    def record(first: Any, steps: list, length: int) -> Any:
        return memory_kind.record(first, steps, length)

    pieces = {
        "defaults": with_carry_defaults(policy),
        "bootstrap_value": bootstrap_value,
        "record": record,
    }
    if getattr(env, "compilable", True):  # one step piece, the env inside
        pieces["step"], steps = body, fused_steps
    else:  # compiled around an env that runs eagerly (gymnasium, 1.x adapters)
        pieces.update(act=act, env_step=env.step, learn_then_act=learn_then_act)
        steps = split_steps
    loop = functools.partial(
        run_horizon, horizon=horizon, gamma=gamma, seq_len=seq_len, steps=steps
    )
    return Staged(
        pieces,
        loop,
        compile=frozenset(pieces) & {"step", "act", "learn_then_act", "bootstrap_value"},
        in_dims={"record": (0, 0, None)},
    )


def check_lengths(policy: Policy, horizon: int, seq_len: int) -> None:
    """Refuse a ``horizon``, ``seq_len`` or observation window the rollout cannot run.

    Raises:
        ValueError: naming the argument and what it must be.
    """
    if not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"`horizon` must be a positive int, got {horizon!r}.")
    if not isinstance(seq_len, int) or seq_len < 1 or horizon % seq_len:
        raise ValueError(
            f"`seq_len` must be a positive int dividing `horizon` {horizon}, got {seq_len!r}."
        )
    check_window(policy, horizon)


def scheduled_starts(
    carry: RolloutCarry, *, seq_len: int, seqs_per_state_reset: int
) -> torch.Tensor:
    """``[N]`` bool: where the memory starts over before the next step (an
    episode's start, and every ``seqs_per_state_reset`` sequences of
    ``seq_len`` steps counted by ``carry.step``; negative: never).
    """
    if seqs_per_state_reset < 0:
        return carry.starts
    scheduled = (carry.step % seq_len == 0) & ((carry.step // seq_len) % seqs_per_state_reset == 0)
    return carry.starts | scheduled


def final_value(
    env: Env,
    policy: Policy,
    normalize_obs: bool,
    params: Params,
    norm: Any,
    env_state: Tree,
    memory: Any,
    no_starts: torch.Tensor,
) -> Any:
    """The critic's value of each env's final observation of the step
    (before an auto-reset), seen as the policy saw observations, with the
    memory after the step (``no_starts``: ``[N]`` False); ``()`` for an env whose episodes never
    end: its final values are the next step's values (see the assembly).
    """
    final_obs = env.final_observation(env_state)
    if final_obs is None:
        return ()
    seen = normalize(norm.obs, final_obs) if normalize_obs else final_obs
    return policy.value(params, seen, memory, no_starts)


def run_horizon(
    pieces: Mapping[str, Callable],
    member_axes: int,
    params: Params,
    carry: RolloutCarry,
    hparams: HParams | None = None,
    *,
    horizon: int,
    gamma: float,
    seq_len: int,
    steps: Callable = fused_steps,
) -> tuple[RolloutCarry, Trajectory]:
    """The Python driver of :func:`make_rollout`: ``horizon`` steps from
    ``carry`` (after ``defaults``) as ``steps`` takes them
    (:func:`fused_steps`, or :func:`split_steps` around an eager env), the transitions
    stacked along time (axis ``member_axes``: 0, or 1 under a member axis),
    the ``bootstrap_value`` appended to the values and the memory
    ``record`` made for ``seq_len`` steps. The discount is ``hparams.gamma``,
    else ``gamma``.
    """
    random.check_key(carry.key, "carry.key")
    discount = gamma if hparams is None else hparams.gamma
    if member_axes and not isinstance(discount, torch.Tensor):  # one value for every member
        discount = torch.full(
            carry.key.shape[:member_axes], float(discount), device=carry.key.device
        )
    carry = contiguous(pieces["defaults"](carry))
    first_memory, transitions = carry.memory, []
    stepping = steps(pieces, params, carry, discount, horizon)
    for carry, transition in stepping:  # noqa: B007 (the last carry is the rollout's)
        transitions.append(transition)
    stacked = optree.tree_map(
        lambda *xs: torch.stack(xs, member_axes), *[s._replace(memory=()) for s in transitions]
    )
    last_value = pieces["bootstrap_value"](params, carry)
    values = torch.cat([stacked.value, last_value.unsqueeze(member_axes)], member_axes)
    traj = Trajectory(
        obs=stacked.obs,
        actions=stacked.action,
        log_probs=stacked.log_prob,
        values=values,
        rewards=stacked.reward,
        raw_rewards=stacked.raw_reward,
        terminated=stacked.terminated,
        truncated=stacked.truncated,
        # Where episodes never end, each step's final observation is the next one.
        final_values=stacked.final_value
        if optree.tree_leaves(stacked.final_value)
        else values.narrow(member_axes, 1, horizon),
        episode_returns=stacked.episode_return,
        episode_lengths=stacked.episode_length,
        memory=pieces["record"](first_memory, [s.memory for s in transitions], seq_len),
    )
    return carry, traj


def check_window(policy: Policy, horizon: int) -> None:
    """Refuse a window of observations the rollout cannot serve.

    Raises:
        ValueError: for a window longer than ``horizon`` (each trajectory
            would carry more history than steps).
    """
    size, name = policy.obs_window, type(policy.model).__name__
    if size > horizon:
        raise ValueError(
            f"model {name}.obs_window {size} must not exceed `horizon` {horizon}: a window is at "
            "most "
            "one rollout long."
        )
