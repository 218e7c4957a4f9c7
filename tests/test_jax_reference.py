"""rlstack's GAE and PPO loss against independent references written in JAX
(``jax.lax.scan`` and ``jax.numpy``), on generated inputs.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

jax = pytest.importorskip("jax")
jnp = jax.numpy

from rlstack.functional import gae, ppo_loss  # noqa: E402


def jax_gae(rewards, values, terminated, truncated, final_values, gamma, lam):
    """GAE as a reverse ``lax.scan`` over time: no bootstrap after a
    termination, the final observation's value after a truncation, and no
    advantage flowing across either.
    """

    def step(next_advantage, t):
        reward, value, next_value, term, trunc, final = t
        bootstrap = jnp.where(term, 0.0, jnp.where(trunc, final, next_value))
        delta = reward + gamma * bootstrap - value
        advantage = delta + gamma * lam * (1.0 - (term | trunc)) * next_advantage
        return advantage, advantage

    xs = (rewards, values[:-1], values[1:], terminated, truncated, final_values)
    _, advantages = jax.lax.scan(step, jnp.zeros_like(rewards[0]), xs, reverse=True)
    return advantages, advantages + values[:-1]


@settings(deadline=None, max_examples=40)
@given(
    T=st.integers(1, 12),
    N=st.integers(1, 5),
    gamma=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 1.0),
    p_end=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**31 - 1),
)
def test_gae_with_episode_ends_matches_a_jax_scan(T, N, gamma, lam, p_end, seed):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(T, N)).astype(np.float32)
    values = rng.normal(size=(T + 1, N)).astype(np.float32)
    final_values = rng.normal(size=(T, N)).astype(np.float32)
    ends = rng.random((T, N)) < p_end
    terminated = ends & (rng.random((T, N)) < 0.5)
    truncated = ends & ~terminated
    adv, ret = gae(
        torch.from_numpy(rewards),
        torch.from_numpy(values),
        gamma=gamma,
        gae_lambda=lam,
        terminated=torch.from_numpy(terminated),
        truncated=torch.from_numpy(truncated),
        final_values=torch.from_numpy(final_values),
    )
    ref_adv, ref_ret = jax_gae(rewards, values, terminated, truncated, final_values, gamma, lam)
    np.testing.assert_allclose(adv.numpy(), np.asarray(ref_adv), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret.numpy(), np.asarray(ref_ret), rtol=1e-5, atol=1e-5)


def jax_ppo_loss(
    log_probs,
    old_log_probs,
    advantages,
    values,
    old_values,
    returns,
    entropy,
    clip,
    vf_clip,
    vf_coeff,
    entropy_coeff,
):
    """The clipped surrogate, the clipped value loss and the entropy bonus (CleanRL / PPO2)."""
    ratio = jnp.exp(log_probs - old_log_probs)
    policy = -jnp.mean(
        jnp.minimum(ratio * advantages, jnp.clip(ratio, 1 - clip, 1 + clip) * advantages)
    )
    clipped = old_values + jnp.clip(values - old_values, -vf_clip, vf_clip)
    vf = 0.5 * jnp.mean(jnp.maximum((values - returns) ** 2, (clipped - returns) ** 2))
    return policy + vf_coeff * vf - entropy_coeff * jnp.mean(entropy)


@settings(deadline=None, max_examples=40)
@given(
    B=st.integers(1, 64),
    clip=st.floats(0.05, 0.5),
    vf_clip=st.floats(0.1, 10.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_the_ppo_loss_and_its_gradient_match_jax(B, clip, vf_clip, seed):
    rng = np.random.default_rng(seed)
    arrays = [rng.normal(size=B).astype(np.float32) * s for s in (0.3, 1, 1, 1, 1, 1, 1)]
    arrays[1] = (
        arrays[0] + rng.normal(size=B).astype(np.float32) * 0.3
    )  # old log-probs near the new
    kwargs = dict(vf_coeff=0.5, entropy_coeff=0.01)
    tensors = [torch.from_numpy(a) for a in arrays]
    log_probs = tensors[0].clone().requires_grad_(True)
    loss, _ = ppo_loss(
        log_probs,
        *tensors[1:],
        clip_param=clip,
        vf_clip_param=vf_clip,
        dual_clip_param=None,
        **kwargs,
    )
    loss.backward()
    reference = jax.value_and_grad(jax_ppo_loss)(
        *[jnp.asarray(a) for a in arrays], clip, vf_clip, **kwargs
    )
    np.testing.assert_allclose(loss.item(), float(reference[0]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        log_probs.grad.numpy(), np.asarray(reference[1]), rtol=1e-4, atol=1e-6
    )
