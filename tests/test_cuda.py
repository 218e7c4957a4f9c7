"""The CUDA path: compile, bf16 AMP, TF32 and CUDA graphs.

Tests marked ``cuda`` need a GPU and skip cleanly without one (CI has none);
the others check, on any machine, the errors and settings around them.
"""

import pytest
import torch

from rlstack import Algorithm
from rlstack.envs import CartPole, DiscreteDummyEnv
from rlstack.learn.cuda_graphs import CudaGraphed
from rlstack.shell import loading

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
SMALL = dict(num_envs=256, horizon=8, model_config={"hiddens": (32, 32)}, seed=0)


# --------------------------------------------------------------- any machine
def test_cuda_graphs_need_a_cuda_device():
    with pytest.raises(
        ValueError, match=r"`cuda_graphs=True` needs a CUDA device, got device='cpu'"
    ):
        Algorithm(DiscreteDummyEnv, cuda_graphs=True, compile=False, **SMALL)


@pytest.mark.parametrize("name", ["cuda_graphs", "allow_tf32"])
def test_cuda_switches_must_be_bools(name):
    with pytest.raises(TypeError, match=rf"`{name}` must be a bool, got 'yes'"):
        Algorithm(DiscreteDummyEnv, compile=False, **{name: "yes"}, **SMALL)


def test_cuda_graphed_rejects_non_cuda_arguments_before_running_anything():
    calls = []
    graphed = CudaGraphed(lambda x: calls.append(x) or x)
    with pytest.raises(ValueError, match="must be CUDA tensors; leaf 0 is on cpu"):
        graphed(torch.zeros(3))
    with pytest.raises(TypeError, match="pytrees of tensors; leaf 0 is int"):
        graphed(4)
    assert calls == []
    with pytest.raises(ValueError, match="`warmup` must be an int >= 1, got 0"):
        CudaGraphed(lambda x: x, warmup=0)


def test_allow_tf32_leaves_cpu_runs_and_the_global_precision_alone(monkeypatch):
    # TF32 does not exist on CPU: the setting must never be touched there (a CUDA test checks it is
    # set there).
    calls = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", lambda value: calls.append(value))
    algo = Algorithm(DiscreteDummyEnv, compile=False, allow_tf32=True, **SMALL)
    algo.collect()
    algo.step()
    algo.evaluate()
    assert calls == []


def test_a_cuda_graphs_checkpoint_resumes_on_cpu_without_them(tmp_path):
    algo = Algorithm(DiscreteDummyEnv, compile=False, **SMALL)
    algo.collect()
    data = algo.state_dict()
    assert data["settings"]["cuda_graphs"] is False and data["settings"]["allow_tf32"] is False
    data["settings"].update(
        cuda_graphs=True, allow_tf32=True, device="cuda"
    )  # as written on a GPU machine
    resumed = loading.restore(Algorithm, data, None, device="cpu", compile=False)
    assert resumed.cuda_graphs is False and resumed.allow_tf32 is True
    resumed.step()


# ----------------------------------------------------------------- GPU only
def _pair(**kwargs):
    """Two Algorithms built from the same seed (so the same initial params),
    without and with CUDA graphs.
    """
    plain = Algorithm(DiscreteDummyEnv, device="cuda", **SMALL, **kwargs)
    graphed = Algorithm(DiscreteDummyEnv, device="cuda", cuda_graphs=True, **SMALL, **kwargs)
    for name in plain.params:
        torch.testing.assert_close(graphed.params[name], plain.params[name], rtol=0, atol=0)
    return plain, graphed


@cuda
@pytest.mark.parametrize("compile", [False, True])
def test_compiled_and_amp_iterations_run_on_cuda(compile):
    for amp in (False, True):
        algo = Algorithm(DiscreteDummyEnv, device="cuda", compile=compile, enable_amp=amp, **SMALL)
        for _ in range(2):
            assert "returns/mean" in algo.collect()
            stats = algo.step()
        assert all(v.is_cuda for v in algo.params.values())
        assert stats["monitors/sgd_steps"] == SMALL.get("num_sgd_iters", 4)


@cuda
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_graphs_give_the_same_updates_as_plain_cuda(compile):
    # Deterministic acting and no shuffling: no random numbers, so the two
    # runs must agree; four iterations cover warm-up (2), capture and replay.
    plain, graphed = _pair(compile=compile, shuffle_minibatches=False)
    for i in range(4):
        a, b = plain.collect(deterministic=True), graphed.collect(deterministic=True)
        assert a["returns/mean"] == pytest.approx(b["returns/mean"], rel=1e-5), i
        a, b = plain.step(), graphed.step()
        assert a["losses/total"] == pytest.approx(b["losses/total"], rel=1e-4, abs=1e-6), i
    assert graphed.functions.update.captured and graphed.functions.rollout(True).captured
    for name in plain.params:
        torch.testing.assert_close(graphed.params[name], plain.params[name], rtol=1e-4, atol=1e-6)


@cuda
def test_cuda_graph_replays_draw_fresh_random_numbers():
    algo = Algorithm(DiscreteDummyEnv, device="cuda", cuda_graphs=True, compile=False, **SMALL)
    actions = []
    for _ in range(5):
        algo.collect()
        actions.append(algo.trajectory.actions.clone())
        algo.step()
    assert algo.functions.rollout(False).captured
    # Replays 3 and 4 (captured graph) sample new actions, with both choices present.
    assert not torch.equal(actions[3], actions[4])
    assert 0.0 < actions[4].float().mean().item() < 1.0


@cuda
def test_cuda_graphs_with_a_compiled_body_do_not_recompile():
    algo = Algorithm(CartPole, device="cuda", cuda_graphs=True, compile=True, **SMALL)
    algo.collect()
    algo.step()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(4):
            algo.collect()
            algo.step()


@cuda
def test_cuda_graphed_rejects_a_new_shape_after_capture():
    graphed = CudaGraphed(lambda x: x * 2, warmup=1)
    x = torch.ones(4, device="cuda")
    graphed(x)
    torch.testing.assert_close(graphed(x + 1), torch.full((4,), 4.0, device="cuda"))
    with pytest.raises(ValueError, match=r"leaf 0 .* CUDA graphs replay fixed shapes"):
        graphed(torch.ones(5, device="cuda"))


@cuda
def test_allow_tf32_sets_tf32_inside_and_restores_it():
    before = torch.get_float32_matmul_precision()
    algo = Algorithm(DiscreteDummyEnv, device="cuda", compile=False, allow_tf32=True, **SMALL)
    with algo.matmul_precision():
        assert torch.get_float32_matmul_precision() == "high"
    algo.collect()
    algo.step()
    assert torch.get_float32_matmul_precision() == before


@cuda
def test_compile_defaults_to_compiled_on_cuda():
    assert Algorithm(DiscreteDummyEnv, device="cuda", **SMALL).compile is True
