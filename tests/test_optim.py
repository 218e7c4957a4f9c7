import pytest
import torch

from rlstack import optim


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
    opt, lr = optim.from_torch(torch_cls, config)
    state = opt.init(params)
    for _ in range(50):
        torch_opt.zero_grad()
        loss(reference).backward()
        torch_opt.step()
        grads = torch.func.grad(loss)(params)
        params, state = opt.step(grads, state, params, torch.tensor(lr))
        for k in params:
            torch.testing.assert_close(params[k], reference[k].detach(), rtol=1e-5, atol=1e-6)


def test_clip_by_global_norm_matches_torch():
    params, loss = _problem()
    reference = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    loss(reference).backward()
    norm_ref = torch.nn.utils.clip_grad_norm_(reference.values(), 0.1)
    clipped, norm = optim.clip_by_global_norm(torch.func.grad(loss)(params), 0.1)
    torch.testing.assert_close(norm, norm_ref)
    for k in params:
        torch.testing.assert_close(clipped[k], reference[k].grad)


def test_optimizer_step_is_pure():
    params, loss = _problem()
    before = {k: v.clone() for k, v in params.items()}
    opt = optim.adam()
    state = opt.init(params)
    opt.step(torch.func.grad(loss)(params), state, params, 1e-2)
    for k in params:
        assert torch.equal(params[k], before[k])
    assert state.count.item() == 0


@pytest.mark.parametrize(
    "cls, config, match",
    [
        (torch.optim.RMSprop, {}, "`optimizer_cls` 'RMSprop' is not supported"),
        (torch.optim.Adam, {"amsgrad": True}, r"`optimizer_config\['amsgrad'\]=True` is not supported"),
        (torch.optim.Adam, {"momentum": 0.9}, "key 'momentum' is not supported for Adam"),
        (torch.optim.SGD, {"lr": -1.0}, r"`optimizer_config\['lr'\]` must be a positive number"),
        (torch.optim.SGD, {"nesterov": True}, "Nesterov momentum requires momentum > 0"),
    ],
)
def test_unsupported_torch_optimizer_settings_raise(cls, config, match):
    with pytest.raises(ValueError, match=match):
        optim.from_torch(cls, config)
