import pytest
import torch

from rlstack import optim
from rlstack.core import torch_optimizers


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    params = {"w": torch.randn(5, 3, generator=g), "b": torch.randn(3, generator=g)}
    x, y = torch.randn(32, 5, generator=g), torch.randn(32, 3, generator=g)

    def loss(p):
        return ((x @ p["w"] + p["b"] - y) ** 2).mean()

    return params, loss


@pytest.mark.parametrize(
    "torch_cls, config",
    [
        (torch.optim.Adam, {"lr": 1e-2}),
        (torch.optim.Adam, {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
        (torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.05}),
        (torch.optim.SGD, {"lr": 0.05}),
        (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}),
        (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "dampening": 0.3}),
        (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ],
)
def test_pure_optimizers_match_torch_optim_step_for_step(torch_cls, config):
    params, loss = _problem()
    reference = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    torch_opt = torch_cls(reference.values(), **config)
    opt = torch_optimizers.from_torch(torch_cls, config)
    state = opt.init(params)
    for _ in range(50):
        torch_opt.zero_grad()
        loss(reference).backward()
        torch_opt.step()
        grads = torch.func.grad(loss)(params)
        updates, state = opt.update(grads, state, params)
        params = optim.apply_updates(params, updates)
        for k in params:
            torch.testing.assert_close(params[k], reference[k].detach(), rtol=1e-5, atol=1e-6)


def test_clip_by_global_norm_matches_torch():
    params, loss = _problem()
    reference = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    loss(reference).backward()
    norm_ref = torch.nn.utils.clip_grad_norm_(reference.values(), 0.1)
    clip = optim.clip_by_global_norm(0.1)
    clipped, state = clip.update(torch.func.grad(loss)(params), clip.init(params), params)
    torch.testing.assert_close(state.grad_norm, norm_ref)
    for k in params:
        torch.testing.assert_close(clipped[k], reference[k].grad)


def test_optimizer_step_is_pure():
    params, loss = _problem()
    before = {k: v.clone() for k, v in params.items()}
    opt = optim.adam(1e-2)
    state = opt.init(params)
    opt.update(torch.func.grad(loss)(params), state, params)
    for k in params:
        assert torch.equal(params[k], before[k])
    assert optim.step_count(state).item() == 0


@pytest.mark.parametrize(
    "cls, config, match",
    [
        (torch.optim.RMSprop, {}, "`optimizer_cls` 'RMSprop' is not supported"),
        (
            torch.optim.Adam,
            {"amsgrad": True},
            r"`optimizer_config\['amsgrad'\]=True` is not supported",
        ),
        (torch.optim.Adam, {"momentum": 0.9}, "key 'momentum' is not supported for Adam"),
        (torch.optim.SGD, {"lr": -1.0}, r"`optimizer_config\['lr'\]` must be a positive number"),
        (torch.optim.SGD, {"nesterov": True}, "Nesterov momentum requires momentum > 0"),
    ],
)
def test_unsupported_torch_optimizer_config_raises(cls, config, match):
    with pytest.raises(ValueError, match=match):
        torch_optimizers.from_torch(cls, config)


def _grads(params, loss):
    return torch.func.grad(loss)(params)


def test_chain_feeds_each_transform_the_previous_updates():
    params, loss = _problem()
    chained = optim.chain(optim.clip_by_global_norm(0.1), optim.sgd(0.5))
    clip, sgd = optim.clip_by_global_norm(0.1), optim.sgd(0.5)
    grads = _grads(params, loss)
    updates, state = chained.update(grads, chained.init(params), params)
    clipped, clip_state = clip.update(grads, clip.init(params), params)
    expected, _ = sgd.update(clipped, sgd.init(params), params)
    for k in params:
        assert torch.equal(updates[k], expected[k])
    assert (
        torch.equal(state[0].grad_norm, clip_state.grad_norm)
        and optim.step_count(state[1]).item() == 1
    )


def test_accumulated_gradients_step_once_every_k_calls_on_their_mean():
    """K calls on equal batches = one step on their union (optax's MultiSteps)."""
    g = torch.Generator().manual_seed(1)
    params = {"w": torch.randn(5, 3, generator=g)}
    xs, ys = torch.randn(4, 8, 5, generator=g), torch.randn(4, 8, 3, generator=g)

    def loss(p, x, y):
        return ((x @ p["w"] - y) ** 2).mean()

    acc = optim.accumulate_gradients(optim.adam(1e-2), every_k=4)
    state = acc.init(params)
    for i in range(4):
        updates, state = acc.update(torch.func.grad(loss)(params, xs[i], ys[i]), state, params)
        if i < 3:
            assert (
                torch.equal(updates["w"], torch.zeros_like(params["w"]))
                and optim.step_count(state.inner).item() == 0
            )
    adam = optim.adam(1e-2)
    union = torch.func.grad(loss)(params, xs.reshape(32, 5), ys.reshape(32, 3))
    expected, _ = adam.update(union, adam.init(params), params)
    torch.testing.assert_close(updates["w"], expected["w"], rtol=1e-5, atol=1e-8)
    assert optim.step_count(state.inner).item() == 1 and state.mini_step.item() == 0


def test_apply_if_finite_skips_non_finite_steps_and_counts_them_on_device():
    params, loss = _problem()
    opt = optim.apply_if_finite(optim.adam(1e-2))
    state = opt.init(params)
    bad = {k: torch.full_like(v, float("nan")) for k, v in params.items()}
    for expected_in_a_row in (1, 2):
        updates, state = opt.update(bad, state, params)
        assert all(torch.equal(u, torch.zeros_like(u)) for u in updates.values())
        assert (
            state.notfinite_count.item() == expected_in_a_row
            and optim.step_count(state.inner).item() == 0
        )
    assert all(torch.equal(m, torch.zeros_like(m)) for m in state.inner[0].mu.values())
    updates, state = opt.update(_grads(params, loss), state, params)
    assert (
        state.notfinite_count.item() == 0
        and state.total_notfinite.item() == 2
        and optim.step_count(state.inner).item() == 1
    )
    assert all(torch.isfinite(u).all() and u.abs().sum() > 0 for u in updates.values())


def test_the_learning_rate_is_a_tensor_in_the_state_and_changing_it_never_recompiles():
    params, loss = _problem()
    opt = optim.adam(1e-2)
    step = torch.compile(opt.update, fullgraph=True)
    state = opt.init(params)
    step(_grads(params, loss), state, params)  # compiles once
    with torch._dynamo.config.patch(error_on_recompile=True):
        for lr in (1e-3, 3e-4):
            new = optim.set_learning_rate(state, torch.tensor(lr))
            updates, after = step(_grads(params, loss), new, params)
            eager, _ = opt.update(_grads(params, loss), new, params)
            torch.testing.assert_close(updates["w"], eager["w"])
            assert optim.learning_rate(after).item() == pytest.approx(lr)


def test_a_scheduled_learning_rate_is_evaluated_from_the_step_count():
    params, loss = _problem()
    rates = [1e-2, 5e-3, 1e-3]
    scheduled = optim.sgd(lambda count: torch.tensor(rates)[count.long().clamp(max=2)])
    state, p_sched = scheduled.init(params), dict(params)
    p_manual = dict(params)
    for lr in rates:
        updates, state = scheduled.update(_grads(p_sched, loss), state, p_sched)
        p_sched = optim.apply_updates(p_sched, updates)
        manual, _ = optim.sgd(lr).update(
            _grads(p_manual, loss), optim.sgd(lr).init(p_manual), p_manual
        )
        p_manual = optim.apply_updates(p_manual, manual)
        assert optim.learning_rate(state).item() == pytest.approx(lr)
    for k in params:
        torch.testing.assert_close(p_sched[k], p_manual[k])


def test_step_count_finds_the_optimizers_count_and_names_its_absence():
    params, _ = _problem()
    opt = optim.apply_if_finite(optim.chain(optim.clip_by_global_norm(1.0), optim.adamw(1e-3)))
    assert optim.step_count(opt.init(params)).item() == 0
    with pytest.raises(ValueError, match="no step `count`"):
        optim.step_count(optim.clip_by_global_norm(1.0).init(params))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: optim.adam(-1.0), r"`learning_rate` must be a number > 0"),
        (lambda: optim.clip_by_global_norm(0.0), r"`max_norm` must be a number > 0"),
        (
            lambda: optim.accumulate_gradients(optim.sgd(), every_k=0),
            r"`every_k` must be a positive int",
        ),
    ],
)
def test_bad_transform_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_set_learning_rate_reaches_nested_states_and_the_next_step_uses_it():
    params = {"w": torch.ones(3)}
    grads = {"w": torch.full((3,), 0.5)}
    optimizer = optim.apply_if_finite(optim.chain(optim.clip_by_global_norm(10.0), optim.sgd(1.0)))
    state = optim.set_learning_rate(optimizer.init(params), torch.tensor(0.1))
    assert float(optim.learning_rate(state)) == pytest.approx(0.1)
    updates, _ = optimizer.update(grads, state, params)
    assert torch.allclose(updates["w"], torch.full((3,), -0.05))


def test_scale_by_adam_then_the_learning_rate_is_adams_formula_in_float64():
    """Optax's decomposition: scale_by_adam gives mu_hat / (sqrt(nu_hat) + eps),
    scale_by_learning_rate multiplies by -lr (a float64 loop as reference).
    """
    import numpy as np

    b1, b2, eps, lr = 0.8, 0.99, 1e-6, 3e-3
    params, loss = _problem(1)
    opt = optim.chain(optim.scale_by_adam(b1, b2, eps), optim.scale_by_learning_rate(lr))
    state = opt.init(params)
    mu = {k: np.zeros(v.shape) for k, v in params.items()}
    nu = {k: np.zeros(v.shape) for k, v in params.items()}
    for t in range(1, 6):
        grads = _grads(params, loss)
        updates, state = opt.update(grads, state, params)
        for k, g in grads.items():
            g = g.double().numpy()
            mu[k] = b1 * mu[k] + (1 - b1) * g
            nu[k] = b2 * nu[k] + (1 - b2) * g * g
            expected = -lr * (mu[k] / (1 - b1**t)) / (np.sqrt(nu[k] / (1 - b2**t)) + eps)
            np.testing.assert_allclose(updates[k].numpy(), expected, rtol=1e-4, atol=1e-9)
        params = optim.apply_updates(params, updates)
    assert optim.step_count(state).item() == 5 and optim.learning_rate(
        state
    ).item() == pytest.approx(lr)


def test_adamw_decays_after_the_adam_direction_and_adam_before_it():
    """AdamW: -lr * (adam_direction + wd * p); Adam's L2: adam_direction of (g + wd * p)."""
    params, loss = _problem(2)
    grads = _grads(params, loss)
    direction, _ = optim.scale_by_adam().update(grads, optim.scale_by_adam().init(params), params)
    decoupled, _ = optim.adamw(1e-2, weight_decay=0.1).update(
        grads, optim.adamw(1e-2).init(params), params
    )
    penalised = {k: g + 0.1 * params[k] for k, g in grads.items()}
    l2_direction, _ = optim.scale_by_adam().update(
        penalised, optim.scale_by_adam().init(params), params
    )
    coupled, _ = optim.adam(1e-2, weight_decay=0.1).update(
        grads, optim.adam(1e-2, weight_decay=0.1).init(params), params
    )
    for k in params:
        torch.testing.assert_close(decoupled[k], -1e-2 * (direction[k] + 0.1 * params[k]))
        torch.testing.assert_close(coupled[k], -1e-2 * l2_direction[k])
