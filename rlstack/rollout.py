"""``make_rollout``: the horizon loop, nothing PPO-specific."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import optree
import torch

from . import random, windows
from .envs import Env
from .normalization import NormState, normalize, scale, update_moments
from .policy import Policy, to_action_space
from .types import EpisodeTally, HParams, Params, RecurrentCarry, RolloutCarry, Trajectory, Transition, Tree


class Acted(NamedTuple):
    """What one step's ``act`` hands the env step: the next key and the env
    step's key, normalisation statistics, the observation the policy saw, its
    action (and the env's form of it), log-prob and value; for a recurrent
    policy its state after the step (``memory``), the hidden state entering
    the step and the ``[N]`` reset before it (all ``()`` otherwise); for a
    windowed policy its :class:`~rlstack.windows.WindowCarry` after the step
    (``memory``) and the ``[N]`` ages of the observation it saw."""

    key: torch.Tensor
    step_key: torch.Tensor
    norm: Any
    obs: Tree
    action: Tree
    log_prob: torch.Tensor
    value: torch.Tensor
    env_action: Tree
    memory: Any
    hidden: Any
    reset: Any
    age: Any


def make_rollout(
    env: Env,
    policy: Policy,
    horizon: int,
    *,
    deterministic: bool = False,
    compile: bool = False,
    normalize_obs: bool = False,
    normalize_rewards: bool = False,
    gamma: float = 0.99,
    update_normalization: bool = True,
    population: bool = False,
    seq_len: int = 1,
    seqs_per_state_reset: int = -1,
) -> Callable[..., tuple[RolloutCarry, Trajectory]]:
    """Build ``rollout(params, carry, hparams=None) -> (carry, traj)``.

    ``rollout`` runs ``horizon`` steps of ``body(params, carry) -> (carry,
    transition)`` (act, then step the env with the action mapped into its
    action space by :func:`~rlstack.policy.to_action_space`; ``traj.actions``
    keeps the distribution's own, which log-probs refer to), stacks the transitions
    time-major and appends the critic's value of the final observation as
    the bootstrap ``traj.values[T]``. Its randomness comes from
    ``carry.key``, split at every step (the returned carry holds the next
    key), so the same ``(params, carry)`` give the same outputs, eagerly,
    compiled and under ``vmap``. It never syncs with the host and does not
    touch ``params`` or ``carry``.

    Args:
        env: a pure :class:`~rlstack.envs.Env`.
        policy: the :class:`~rlstack.policy.Policy` that acts.
        horizon: ``T``, steps per rollout (> 0).
        deterministic: act with the distribution's mode (evaluation).
        compile: hand the step body and the bootstrap value to
            ``torch.compile`` (``fullgraph=True``); the time loop stays in
            Python so compile time does not grow with ``horizon``. Ignored
            for envs with ``compilable = False`` (1.x adapters).
        normalize_obs: the policy sees observations standardised by the
            running statistics in ``carry.norm.obs`` (a
            :class:`~rlstack.normalization.NormState`); ``traj.obs`` holds
            what it saw.
        normalize_rewards: ``traj.rewards`` are the env's rewards divided by
            the running std of the ``gamma``-discounted return
            (``carry.norm.reward``); ``traj.raw_rewards`` keeps the env's.
        gamma: discount of the return whose std scales rewards; a
            :class:`~rlstack.types.HParams` passed to ``rollout`` overrides
            it with its ``gamma`` (a number or a 0-d tensor).
        update_normalization: update the running statistics with this
            rollout's data (``False`` freezes them, for evaluation).
        seq_len: for a recurrent policy (:attr:`Policy.recurrent
            <rlstack.policy.Policy.recurrent>`; ``carry.memory`` a
            :class:`~rlstack.types.RecurrentCarry`): ``traj.hiddens`` keeps
            the hidden state at the start of every ``seq_len`` steps
            (counted by ``carry.memory.step``), for the update's replay.
        seqs_per_state_reset: for a recurrent policy, reset every env's
            hidden state at the start of every this many sequences;
            negative: never. It is also reset where ``carry.memory.starts``
            (a fresh env, an episode's end).

    A windowed policy (:attr:`Policy.obs_window
    <rlstack.policy.Policy.obs_window>` ``K > 1``; ``carry.memory`` a
    :class:`~rlstack.windows.WindowCarry`) acts on the window of its last
    ``K`` observations; ``traj.obs`` keeps one observation per step,
    ``traj.obs_history`` the ``K - 1`` before the first and ``traj.obs_ages``
    where episodes began (see :mod:`rlstack.windows`).
        population: ``params``, ``carry`` (and ``hparams``) have a leading
            member axis ``K`` and the step body is ``torch.func.vmap``-ed
            over it before it is compiled: one graph steps all members, each
            as ``rollout`` would alone. ``traj`` leaves are then
            ``[K, T, N, ...]``.

    Returns:
        ``rollout``; its ``traj`` is a :class:`~rlstack.types.Trajectory`
        with leaves ``[T, N, ...]`` (``values`` ``[T + 1, N]``) and its
        ``carry`` holds the env state and observation after the last step.

    Examples:
        >>> from rlstack.envs import DiscreteDummyEnv
        >>> from rlstack.models import MLPModel
        >>> from rlstack.distributions import Categorical
        >>> env = DiscreteDummyEnv()
        >>> policy = Policy(MLPModel(env.observation_space, env.action_space, hiddens=(8,)), Categorical)
        >>> from rlstack import random
        >>> rollout = make_rollout(env, policy, horizon=5)
        >>> reset_key, rollout_key = random.split(random.key(0))
        >>> carry, traj = rollout(policy.init_params(), RolloutCarry(*env.reset(reset_key, 3), rollout_key))
        >>> traj.rewards.shape, traj.values.shape
        (torch.Size([5, 3]), torch.Size([6, 3]))
    """
    if not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"`horizon` must be a positive int, got {horizon!r}.")

    def observe(norm: NormState, obs):
        if not normalize_obs:
            return norm, obs
        if update_normalization:
            norm = norm._replace(obs=update_moments(norm.obs, obs))
        return norm, normalize(norm.obs, obs)

    def scale_reward(norm: NormState, reward: torch.Tensor, discount: Any, done: torch.Tensor):
        if not normalize_rewards:
            return norm, reward
        returns = norm.returns * discount + reward
        moments = update_moments(norm.reward, returns) if update_normalization else norm.reward
        returns = torch.where(done, torch.zeros_like(returns), returns)  # a new episode starts a new discounted return
        return NormState(norm.obs, moments, returns), scale(moments, reward)

    recurrent, window_len = policy.recurrent, policy.obs_window
    windowed = window_len > 1
    if recurrent and (not isinstance(seq_len, int) or seq_len < 1 or horizon % seq_len):
        raise ValueError(f"`seq_len` must be a positive int dividing `horizon` {horizon}, got {seq_len!r}.")
    check_window(policy, horizon)

    def hidden_resets(memory: RecurrentCarry) -> torch.Tensor:
        """``[N]`` bool: where the hidden state restarts before the next step."""
        if seqs_per_state_reset < 0:
            return memory.starts
        scheduled = (memory.step % seq_len == 0) & ((memory.step // seq_len) % seqs_per_state_reset == 0)
        return memory.starts | scheduled

    def act(params: Params, carry: RolloutCarry) -> Acted:
        """Split the key, observe (normalising), act (a recurrent policy from its
        hidden state, reset where due); the env's action is mapped into its space."""
        key, act_key, step_key = random.split(carry.key, 3)
        norm, policy_obs = observe(carry.norm, carry.obs)
        memory, hidden_in, reset, age = (), (), (), ()
        if windowed:
            seen = windows.window(carry.memory, policy_obs, window_len)
            action, log_prob, value = policy.act(params, seen, act_key, deterministic=deterministic)
            memory, age = windows.advance(seen, carry.memory), carry.memory.ages
        elif recurrent:
            reset = hidden_resets(carry.memory)
            hidden_in = carry.memory.hidden
            action, log_prob, value, hidden = policy.act_recurrent(
                params, policy_obs, hidden_in, reset, act_key, deterministic=deterministic
            )
            memory = RecurrentCarry(hidden, torch.zeros_like(reset), carry.memory.step + 1)
        else:
            action, log_prob, value = policy.act(params, policy_obs, act_key, deterministic=deterministic)
        env_action = to_action_space(policy.distribution_cls, action, env.action_space)
        return Acted(key, step_key, norm, policy_obs, action, log_prob, value, env_action, memory, hidden_in, reset,
                     age)

    def value_of(params: Params, obs: Any, memory: Any) -> torch.Tensor:
        """The critic's value of ``obs``; a recurrent or windowed policy's from
        ``memory``, its state after the step."""
        if windowed:
            return policy.apply(params, windows.window(memory, obs, window_len))[1]
        if not recurrent:
            return policy.apply(params, obs)[1]
        return policy.apply_recurrent(params, obs, memory.hidden, torch.zeros_like(memory.starts))[1]

    def final_value(params: Params, norm: Any, env_state: Tree, memory: Any) -> Any:
        """The critic's value of each env's final observation of the step
        (before an auto-reset), ``()`` for an env whose episodes never end:
        its final values are the next step's values (see the assembly)."""
        final_obs = env.final_observation(env_state)
        if final_obs is None:
            return ()
        return value_of(params, normalize(norm.obs, final_obs) if normalize_obs else final_obs, memory)

    def body(params: Params, carry: RolloutCarry, discount: Any) -> tuple[RolloutCarry, Transition]:
        """Act, step the env; an ended episode is tallied and starts its
        successor's memory (initial hidden state, empty window) afresh."""
        acted = act(params, carry)
        env_state, obs, reward, terminated, truncated = env.step(carry.env_state, acted.env_action, acted.step_key)
        done = terminated | truncated
        ended_value = final_value(params, acted.norm, env_state, acted.memory)
        norm, learned_reward = scale_reward(acted.norm, reward, discount, done)
        tally, ended_return, ended_length = tally_episodes(carry.episode, reward, done)
        memory = acted.memory
        if recurrent:  # an episode that ended starts the next one from the initial hidden state
            memory = memory._replace(starts=done)
        if windowed:  # and the next observation's window from padding
            memory = windows.restart(memory, done)
        transition = Transition(acted.obs, acted.action, acted.log_prob, acted.value, learned_reward, reward,
                                terminated, truncated, ended_value, ended_return, ended_length, acted.hidden,
                                acted.reset, acted.age)
        return RolloutCarry(env_state, obs, acted.key, norm, tally, memory), transition

    def bootstrap_value(params: Params, carry: RolloutCarry) -> torch.Tensor:
        obs = normalize(carry.norm.obs, carry.obs) if normalize_obs else carry.obs
        if windowed:
            return policy.apply(params, windows.window(carry.memory, obs, window_len))[1]
        if recurrent:  # as the next step would see it: reset where due
            return policy.apply_recurrent(params, obs, carry.memory.hidden, hidden_resets(carry.memory))[1]
        return policy.apply(params, obs)[1]

    add_tally = with_episode_tally
    if population:  # one member's functions mapped over the leading member axis
        body, bootstrap_value, add_tally = _population_pieces(body, bootstrap_value, add_tally)
    if compile and getattr(env, "compilable", True):
        body = torch.compile(body, fullgraph=True)
        bootstrap_value = torch.compile(bootstrap_value, fullgraph=True)
    time_axis = 1 if population else 0

    def rollout(params: Params, carry: RolloutCarry, hparams: HParams | None = None) -> tuple[RolloutCarry, Trajectory]:
        random.check_key(carry.key, "carry.key")
        discount = gamma if hparams is None else hparams.gamma
        if population and not isinstance(discount, torch.Tensor):  # one value for every member
            discount = torch.full((carry.key.shape[0],), float(discount), device=carry.key.device)
        carry = add_tally(carry)
        carry = carry._replace(key=carry.key.contiguous())  # one layout in, whatever split made it
        obs_history = ()
        if windowed:  # the observations before this rollout's first, [K - 1, N, ...] (per member)
            obs_history = (torch.func.vmap(windows.history) if population else windows.history)(carry.memory)
        steps, hiddens = [], []
        for t in range(horizon):
            carry, transition = body(params, carry, discount)
            if population:  # the member keys are a strided view into the split: one layout in, no recompile
                carry = carry._replace(key=carry.key.contiguous())
            if recurrent:  # only each sequence's first hidden state is kept: the update replays from it
                if t % seq_len == 0:
                    hiddens.append(transition.hidden)
                transition = transition._replace(hidden=())
            steps.append(transition)
        stacked = optree.tree_map(lambda *xs: torch.stack(xs, time_axis), *steps)
        last_value = bootstrap_value(params, carry)
        values = torch.cat([stacked.value, last_value.unsqueeze(time_axis)], time_axis)
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
            final_values=stacked.final_value if optree.tree_leaves(stacked.final_value) else values.narrow(
                time_axis, 1, horizon),
            episode_returns=stacked.episode_return,
            episode_lengths=stacked.episode_length,
            hiddens=optree.tree_map(lambda *hs: torch.stack(hs, time_axis), *hiddens) if recurrent else (),
            resets=stacked.reset,
            obs_history=obs_history,
            obs_ages=stacked.age,
        )
        return carry, traj

    return rollout


def check_window(policy: Policy, horizon: int) -> None:
    """Refuse a window of observations the rollout cannot serve.

    Raises:
        ValueError: for a window longer than ``horizon`` (each trajectory
            would carry more history than steps), or on a recurrent model
            (whose hidden state is its memory).
    """
    size, name = policy.obs_window, type(policy.model).__name__
    if size > horizon:
        raise ValueError(f"model {name}.obs_window {size} must not exceed `horizon` {horizon}: a window is at most "
                         "one rollout long.")
    if size > 1 and policy.recurrent:
        raise ValueError(f"model {name} is recurrent and has obs_window {size}: a recurrent model's memory is its "
                         "hidden state; drop obs_window.")


def _population_pieces(body: Callable, bootstrap_value: Callable, add_tally: Callable) -> tuple[Callable, ...]:
    """The rollout's pieces ``vmap``-ed over a leading member axis, each
    under a function of its own: ``torch.compile`` keeps compiled code per
    Python function, and every ``vmap`` wrapper is the same function."""
    vmapped_body, vmapped_bootstrap, vmapped_tally = (torch.func.vmap(f) for f in (body, bootstrap_value, add_tally))

    def population_body(params, carry, discount):
        return vmapped_body(params, carry, discount)

    def population_bootstrap_value(params, carry):
        return vmapped_bootstrap(params, carry)

    def population_tally(carry):
        return vmapped_tally(carry)

    return population_body, population_bootstrap_value, population_tally


def reset_carry(
    env: Env, key: torch.Tensor, num_envs: int, *, config: Any = None, norm: Any = (), obs_window: int = 1
) -> RolloutCarry:
    """A carry of ``num_envs`` freshly reset envs: ``key`` is split into the
    reset's key and the next rollout's; ``norm`` goes in as given, the
    carry gets a zero :class:`~rlstack.types.EpisodeTally`, and for a
    windowed policy (``obs_window > 1``) every env's window starts empty
    (:func:`rlstack.windows.initial`)."""
    reset_key, rollout_key = random.split(key)
    state, obs = env.reset(reset_key, num_envs, config=config)
    memory = windows.initial(obs, obs_window) if obs_window > 1 else ()
    return with_episode_tally(RolloutCarry(state, obs, rollout_key, norm, memory=memory))


def with_episode_tally(carry: RolloutCarry) -> RolloutCarry:
    """``carry`` with a zero :class:`~rlstack.types.EpisodeTally` (``[N]``
    float32 returns, ``[N]`` int64 lengths) when it has none: a fresh carry,
    no episode in progress."""
    if isinstance(carry.episode, EpisodeTally):
        return carry
    n, device = _batch_size(carry.obs), carry.key.device
    return carry._replace(episode=EpisodeTally(
        torch.zeros(n, device=device), torch.zeros(n, dtype=torch.int64, device=device)
    ))


def tally_episodes(
    tally: EpisodeTally, reward: torch.Tensor, done: torch.Tensor
) -> tuple[EpisodeTally, torch.Tensor, torch.Tensor]:
    """Add one step's ``[N]`` env reward to each env's running episode.

    Returns:
        ``(tally, ended_return [N], ended_length [N])``: the running tally
        restarted where ``done``, and the undiscounted return and length
        (steps) of the episodes that ended (0 elsewhere).
    """
    returns, lengths = tally.returns + reward, tally.lengths + 1
    zero_return, zero_length = torch.zeros_like(returns), torch.zeros_like(lengths)
    ended_return, ended_length = torch.where(done, returns, zero_return), torch.where(done, lengths, zero_length)
    running = EpisodeTally(torch.where(done, zero_return, returns), torch.where(done, zero_length, lengths))
    return running, ended_return, ended_length


def _batch_size(obs) -> int:
    return optree.tree_leaves(obs)[0].shape[0]


def env_rewards(traj: Trajectory) -> torch.Tensor:
    """``[T, N]`` the env's own rewards (``raw_rewards``; ``rewards`` are
    the ones learned from, scaled when rewards are normalised)."""
    return traj.raw_rewards


def trajectory_stats(traj: Trajectory) -> dict[str, torch.Tensor]:
    """Summary of a rollout's env rewards as 0-d tensors (no sync).

    ``returns/*`` are over envs of the undiscounted reward summed over the
    horizon (``[N]``); ``rewards/*`` are over all ``T * N`` rewards; ``std``
    is the population std (no Bessel correction), so that the stats of
    equal groups combine exactly (:mod:`rlstack.stats`). The env's own
    rewards are used even when rewards are normalised. :func:`episode_stats`
    adds the episodes that ended (none where episodes never end).
    """
    return {**reward_stats(env_rewards(traj)), **episode_stats(traj)}


def reward_stats(rewards: torch.Tensor) -> dict[str, torch.Tensor]:
    """``returns/{min,max,mean,std}`` over envs of ``[T, N]`` rewards summed
    over time, and ``rewards/*`` over all of them, as 0-d float32 tensors
    (population stds; no sync)."""
    rewards = rewards.float()
    stats = {}
    for name, x in (("returns", rewards.sum(0)), ("rewards", rewards)):
        stats[f"{name}/min"] = x.min()
        stats[f"{name}/max"] = x.max()
        stats[f"{name}/mean"] = x.mean()
        stats[f"{name}/std"] = x.std(correction=0)
    return stats


def episode_stats(traj: Trajectory) -> dict[str, torch.Tensor]:
    """Statistics of the episodes that ended during a rollout, as
    0-d tensors (no sync): ``episodes/count``, ``episodes/return/mean``
    (undiscounted env rewards), ``episodes/length/mean`` (steps) and
    ``episodes/terminated`` (the share that ended in a terminal state). The
    means are 0 when no episode ended; the shell drops them then."""
    done = traj.terminated | traj.truncated
    count = done.sum().float()
    denominator = count.clamp(min=1.0)
    return {
        "episodes/count": count,
        "episodes/return/mean": traj.episode_returns.float().sum() / denominator,
        "episodes/length/mean": traj.episode_lengths.float().sum() / denominator,
        "episodes/terminated": traj.terminated.sum().float() / denominator,
    }
