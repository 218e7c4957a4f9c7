"""Deployment: the deterministic actor alone, observation statistics folded
in, as ONNX (run by onnxruntime) and as a torch.export program, acting as
``predict`` does; memory as explicit inputs and outputs.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from rlstack import Algorithm, RecurrentAlgorithm
from rlstack.envs import CartPole, CartPoleV1, PendulumV1
from rlstack.integrations.deploy import deployed_actor, export_onnx, export_program

SMALL = dict(num_envs=16, horizon=8, compile=False, seed=0)


def _trained(env, **config):
    algo = (RecurrentAlgorithm if "seq_len" in config else Algorithm)(env, **{**SMALL, **config})
    for _ in range(2):
        algo.collect()
        algo.step()
    algo.collect()  # moves the observation statistics past the last update's
    return algo


def _onnx_session(path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    return ort.InferenceSession(path)


CASES = {
    "box, normalised": (PendulumV1, dict(normalize_obs=True, model_config={"hiddens": (16,)})),
    "box, squashed, log-std parameter": (
        PendulumV1,
        dict(
            model_config={"hiddens": (16,), "log_std_init": 0.0}, distribution_cls="SquashedNormal"
        ),
    ),
    "discrete": (CartPoleV1, dict(model_config={"hiddens": (16,)})),
}


def _config(config):
    if config.get("distribution_cls") == "SquashedNormal":
        from rlstack.policy.distributions import SquashedNormal

        config = {**config, "distribution_cls": SquashedNormal}
    return config


@pytest.mark.parametrize("name", list(CASES))
def test_onnx_and_torch_export_act_as_predict(tmp_path, name):
    env, config = CASES[name]
    algo = _trained(env, **_config(config))
    obs = torch.randn(7, *env().observation_space.shape) * 3
    expected = algo.predict(obs)
    program = torch.export.load(export_program(algo, tmp_path)).module()
    torch.testing.assert_close(program(obs)[0], expected, atol=1e-5, rtol=0)
    session = _onnx_session(export_onnx(algo, tmp_path))
    (actions,) = session.run(None, {"obs": obs.numpy()})
    np.testing.assert_allclose(actions, expected.numpy(), atol=1e-5, rtol=0)
    spec = json.loads((tmp_path / "actor.json").read_text())
    assert [i["name"] for i in spec["inputs"]] == ["obs"] and spec["outputs"][0]["shape"][0] == "B"
    assert spec["normalize_obs"] is config.get("normalize_obs", False)


def test_the_deployed_actor_of_an_asymmetric_policy_takes_only_the_actors_groups(tmp_path):
    from rsl_rl_envs import ProtocolPendulum

    from rlstack.integrations.rsl_rl_adapter import RslRlEnv

    algo = _trained(
        RslRlEnv(ProtocolPendulum(16, privileged=True)),
        normalize_obs=True,
        model_config={"hiddens": (16,), "obs_groups": {"actor": ["policy"]}},
    )
    obs = {"policy": torch.randn(5, 3), "critic": torch.randn(5, 5)}
    expected = algo.predict(obs)
    actor = deployed_actor(algo)
    assert actor.input_names() == ["obs.policy"]  # no critic input, no critic weights needed
    torch.testing.assert_close(actor(obs["policy"])[0], expected, atol=1e-5, rtol=0)
    session = _onnx_session(export_onnx(algo, tmp_path))
    assert [i.name for i in session.get_inputs()] == ["obs.policy"]
    np.testing.assert_allclose(
        session.run(None, {"obs.policy": obs["policy"].numpy()})[0],
        expected.numpy(),
        atol=1e-5,
        rtol=0,
    )


@pytest.mark.parametrize("kind", ["recurrent", "window"])
def test_memory_is_an_explicit_input_and_output_carried_as_the_algorithm_carries_it(tmp_path, kind):
    if kind == "recurrent":
        algo = _trained(CartPole, seq_len=4, model_config={"hidden_size": 8})
    else:
        algo = _trained(CartPole, model_config={"hiddens": (8,), "obs_window": 3})
    torch.manual_seed(2)
    steps = [torch.randn(6, 4) * 2 for _ in range(4)]
    act = algo.actor()
    expected = [torch.as_tensor(act(obs)) for obs in steps]
    actor = deployed_actor(algo)
    program = torch.export.load(export_program(algo, tmp_path)).module()
    session = _onnx_session(export_onnx(algo, tmp_path))
    names = [i.name for i in session.get_inputs()]
    assert (
        names[0] == "obs" and names[-1] == "starts" and len(names) == 2 + len(actor.memory_shapes)
    )
    memory = [
        torch.zeros(6, *s, dtype=d)
        for s, d in zip(actor.memory_shapes, actor.memory_dtypes, strict=True)
    ]
    onnx_memory = [m.numpy() for m in memory]
    for t, (obs, want) in enumerate(zip(steps, expected, strict=True)):
        starts = torch.full((6,), t == 0)
        action, *memory = program(obs, *memory, starts)
        torch.testing.assert_close(action, want)
        action, *onnx_memory = session.run(
            None, dict(zip(names, [obs.numpy(), *onnx_memory, starts.numpy()], strict=True))
        )
        np.testing.assert_array_equal(action, want.numpy())
    assert any(m.abs().sum() > 0 for m in memory)  # what was carried: the state of earlier steps
    for carried, onnx_carried in zip(memory, onnx_memory, strict=True):
        np.testing.assert_allclose(onnx_carried, carried.numpy(), atol=1e-5, rtol=0)


def test_a_population_is_deployed_member_by_member():
    algo = Algorithm(CartPoleV1, **SMALL, num_members=2, model_config={"hiddens": (8,)})
    with pytest.raises(ValueError, match=r"deploy algorithm.member\(k\)"):
        deployed_actor(algo)
    assert deployed_actor(algo.member(1)).input_names() == ["obs"]


def test_the_cli_exports_a_checkpoint_as_onnx_and_as_a_torch_program(tmp_path):
    pytest.importorskip("onnxscript")
    algo = _trained(PendulumV1, normalize_obs=True, model_config={"hiddens": (16,)})
    checkpoint = algo.save_checkpoint(tmp_path / "step.pt")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    for fmt, name in (("onnx", "actor.onnx"), ("torch", "actor.pt2")):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "rlstack",
                "export",
                checkpoint,
                str(tmp_path / fmt),
                "--format",
                fmt,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        assert (tmp_path / fmt / name).is_file() and (tmp_path / fmt / "actor.json").is_file()
        said = [line for line in result.stderr.splitlines() if " INFO mlflow." not in line]
        assert said == [], said  # no exporter chatter (torchvision's operators, deprecations)
    obs = torch.randn(3, 3)
    program = torch.export.load(str(tmp_path / "torch" / "actor.pt2")).module()
    torch.testing.assert_close(program(obs)[0], algo.predict(obs), atol=1e-5, rtol=0)


def test_onnx_without_its_extra_says_which_to_install(tmp_path, monkeypatch):
    algo = Algorithm(CartPoleV1, **SMALL, model_config={"hiddens": (8,)})
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'rlstack\[onnx\]'"):
        export_onnx(algo, tmp_path)
    assert not (tmp_path / "actor.onnx").exists()


def test_an_export_folder_holds_one_actor_and_refuses_anything_else(tmp_path):
    algo = Algorithm(CartPoleV1, **SMALL, model_config={"hiddens": (8,)})
    export_program(algo, tmp_path / "deploy")
    with pytest.raises(FileExistsError, match=r"`path` .*deploy' already holds actor.pt2"):
        export_program(algo, tmp_path / "deploy")  # a second export would replace the first
    other = Algorithm(PendulumV1, **SMALL, model_config={"hiddens": (8,)})
    with pytest.raises(
        FileExistsError, match=r"holds the actor.json of an actor with other inputs or outputs"
    ):
        export_onnx(other, tmp_path / "deploy")  # checked before the onnx extra is needed
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's file")
    with pytest.raises(FileExistsError, match=r"already holds notes.txt"):
        export_program(algo, tmp_path / "mine")
    assert sorted(p.name for p in (tmp_path / "deploy").iterdir()) == [
        "actor.json",
        "actor.pt2",
    ]  # no temp file left
