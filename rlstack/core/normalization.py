"""Running normalisation of observations and rewards, as pure functions.

Statistics are data (:class:`NormState`, carried in
:class:`~rlstack.core.types.RolloutCarry`), so they are updated by the rollout,
frozen at evaluation, checkpointed and vmapped like every other state.
Observations are standardised with running mean and variance; rewards are
divided by the running standard deviation of the discounted return, as
Stable-Baselines3's ``VecNormalize`` and gymnasium's ``NormalizeReward`` do.
Both are clipped to ``[-clip, clip]`` (10). A dict observation (of Boxes:
rsl_rl's observation groups) has one :class:`RunningMoments` per key, each
group standardised on its own.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import optree
import torch

from .types import Tree

EPS = 1e-8
CLIP = 10.0


class RunningMoments(NamedTuple):
    """Mean and variance of a stream of ``[B, *shape]`` batches.

    Attributes:
        mean: ``[*shape]`` float32.
        var: ``[*shape]`` float32 (population variance).
        count: 0-d float32 samples seen (starts at 1e-4, as in SB3).
    """

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor


class NormState(NamedTuple):
    """Normalisation statistics; a field is ``()`` when that normalisation is off.

    Attributes:
        obs: :class:`RunningMoments` of observations (a dict of them, one
            per key, for a dict observation).
        reward: :class:`RunningMoments` of the discounted return.
        returns: ``[N]`` running discounted return of each env (reset to 0
            when the envs are reset).
    """

    obs: Any = ()
    reward: Any = ()
    returns: Any = ()


def init_moments(shape: tuple[int, ...], device: Any = "cpu") -> RunningMoments:
    """Zero statistics of observations of ``shape`` (count 0): the first update sets them."""
    return RunningMoments(
        torch.zeros(shape, device=device),
        torch.ones(shape, device=device),
        torch.tensor(1e-4, device=device),
    )


def update_moments(moments: Any, x: Any) -> Any:
    """Fold a batch ``x`` ``[B, *shape]`` into the moments (Chan et al.'s
    parallel update); exact for any split of the stream into batches. A
    dict of moments folds the dict ``x``'s values key by key.
    """
    if isinstance(moments, dict):
        return {k: update_moments(m, x[k]) for k, m in moments.items()}
    batch_mean = x.mean(0)
    batch_var = x.var(0, unbiased=False)
    batch_count = torch.tensor(float(x.shape[0]), device=x.device)
    delta = batch_mean - moments.mean
    total = moments.count + batch_count
    mean = moments.mean + delta * batch_count / total
    m2 = (
        moments.var * moments.count
        + batch_var * batch_count
        + delta**2 * moments.count * batch_count / total
    )
    return RunningMoments(mean, m2 / total, total)


def normalize(moments: Any, x: Any, clip: float = CLIP) -> Any:
    """``clip((x - mean) / sqrt(var + 1e-8), -clip, clip)``; a dict of
    moments standardises the dict ``x``'s values key by key.
    """
    if isinstance(moments, dict):
        return {k: normalize(m, x[k], clip) for k, m in moments.items()}
    return scale(moments, x - moments.mean, clip)


def scale(moments: RunningMoments, x: torch.Tensor, clip: float = CLIP) -> torch.Tensor:
    """``clip(x / sqrt(var + 1e-8), -clip, clip)``: scaled, not centred (rewards)."""
    return (x / torch.sqrt(moments.var + EPS)).clamp(-clip, clip)


def init_norm_state(
    observation_shape: Any,
    num_envs: int,
    *,
    normalize_obs: bool,
    normalize_rewards: bool,
    device: Any = "cpu",
) -> NormState:
    """Fresh statistics for the normalisations that are on;
    ``observation_shape`` is a tuple, or a dict of them for a dict observation.
    """

    def obs_moments(shape: Any) -> Any:
        return (
            {k: obs_moments(v) for k, v in shape.items()}
            if isinstance(shape, dict)
            else init_moments(shape, device)
        )

    return NormState(
        obs=obs_moments(observation_shape) if normalize_obs else (),
        reward=init_moments((), device) if normalize_rewards else (),
        returns=torch.zeros(num_envs, device=device) if normalize_rewards else (),
    )


def moments_to_tensors(moments: Any) -> dict[str, torch.Tensor]:
    """Observation statistics as a flat ``{name: tensor}`` dict (``mean``,
    ``var``, ``count``; ``<key>/mean``, ... for a dict observation's), as exports store them.
    """
    if isinstance(moments, dict):
        return {
            f"{k}/{name}": v
            for k, m in moments.items()
            for name, v in moments_to_tensors(m).items()
        }
    return dict(moments._asdict())


def moments_from_tensors(tensors: dict[str, torch.Tensor], keys: Any = None) -> Any:
    """The inverse of :func:`moments_to_tensors`; ``keys``: a dict
    observation's keys (``None``: a Box's single statistics).
    """
    if keys is None:
        return RunningMoments(**tensors)
    return {
        k: RunningMoments(**{f: tensors[f"{k}/{f}"] for f in RunningMoments._fields}) for k in keys
    }


def reset_returns(norm: NormState) -> NormState:
    """Zero the running discounted returns (when all envs are reset)."""
    return norm._replace(returns=optree.tree_map(torch.zeros_like, norm.returns))


def observe(
    norm: NormState, obs: Tree, *, normalize_obs: bool, update: bool
) -> tuple[NormState, Tree]:
    """What the policy sees of ``obs`` ``[N, ...]``: standardised by the
    running statistics (updated with ``obs`` first when ``update``) with
    ``normalize_obs``, else as it is.
    """
    if not normalize_obs:
        return norm, obs
    if update:
        norm = norm._replace(obs=update_moments(norm.obs, obs))
    return norm, normalize(norm.obs, obs)


def scale_reward(
    norm: NormState,
    reward: torch.Tensor,
    discount: Any,
    done: torch.Tensor,
    *,
    normalize_rewards: bool,
    update: bool,
) -> tuple[NormState, torch.Tensor]:
    """The reward ``[N]`` the update learns from: with ``normalize_rewards``,
    divided by the running std of the discounted return (whose statistics
    ``update`` moves; an episode's end starts a new return), else as it is.
    """
    if not normalize_rewards:
        return norm, reward
    returns = norm.returns * discount + reward
    moments = update_moments(norm.reward, returns) if update else norm.reward
    returns = torch.where(
        done, torch.zeros_like(returns), returns
    )  # a new episode starts a new discounted return
    return NormState(norm.obs, moments, returns), scale(moments, reward)
