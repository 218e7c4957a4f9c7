"""Exported policies: they act exactly as the trained Algorithm, inside the
action space, load no code they name, and export with no warnings.
"""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from rlstack import Algorithm, SquashedNormal
from rlstack.cli import load_env
from rlstack.envs import BUILTIN_ENVS
from rlstack.integrations.checkpoint import CheckpointError
from rlstack.integrations.export import ExportedPolicy, export_policy, load_policy
from rlstack.policy.models import MLPModel
from rlstack.shell.presets import PRESETS

SMALL = dict(num_envs=64, horizon=8, sgd_minibatch_size=256, compile=False)


#: The env a preset not named after one is trained on here.
PRESET_ENVS = {"continuous": "ContinuousDummyEnv"}  # unbounded observations, as MuJoCo's


def _trained(name, **overrides):
    """A preset's Algorithm (its normalisation, distribution and model), at a small size, after 2
    updates.
    """
    env = PRESET_ENVS.get(name, name)
    small = (
        {**SMALL, "num_envs": 8, "sgd_minibatch_size": 64}
        if env.startswith("gymnasium:")
        else SMALL
    )
    algo = Algorithm(load_env(env), **{**PRESETS[name], **small, **overrides})
    for _ in range(2):
        algo.collect()
        algo.step()
    return algo


def _observations(algo, scale):
    torch.manual_seed(1)
    return (torch.randn(256, *algo.env.observation_space.shape) * scale).numpy()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_exported_model_acts_exactly_like_predict_for_every_preset(tmp_path, name):
    # Regression: exports dropped the running observation statistics that predict normalises with.
    algo = _trained(name)
    path = export_policy(algo, tmp_path / "model")
    obs = _observations(algo, 3.0)
    expected = algo.predict(obs)
    np.testing.assert_array_equal(mlflow.pyfunc.load_model(path).predict({"obs": obs}), expected)
    np.testing.assert_array_equal(ExportedPolicy(path).predict(obs), expected)
    if PRESETS[name].get("normalize_obs"):
        # The statistics matter: the raw network disagrees with predict.
        policy, params, _ = load_policy(path)
        raw = policy.distribution_cls.mode(policy.apply(params, torch.as_tensor(obs))[0]).numpy()
        assert not np.array_equal(raw, expected)


@pytest.mark.parametrize(
    "name,distribution_cls",
    [(n, None) for n in sorted(PRESETS)]
    + [("Pendulum", SquashedNormal), ("ContinuousDummyEnv", SquashedNormal)],
)
def test_every_emitted_action_lies_in_the_action_space(tmp_path, name, distribution_cls):
    extra = {"distribution_cls": distribution_cls} if distribution_cls else {}
    algo = _trained(name, **extra)
    # Push the policy's outputs far out: huge observations and a shifted mean head.
    for key in algo.params:
        if key.endswith("bias"):
            algo.params[key] = algo.params[key] + 5.0
    space = algo.env.action_space
    obs = _observations(algo, 1e3)
    model = mlflow.pyfunc.load_model(export_policy(algo, tmp_path / "model"))
    for deterministic in (True, False):
        for actions in (
            algo.predict(obs, deterministic=deterministic),
            model.predict({"obs": obs}, params={"deterministic": deterministic}),
        ):
            assert space.contains(torch.as_tensor(actions)), (actions.min(), actions.max())
    # The rollout hands the env mapped actions too.
    seen = []
    step = algo.env.step
    algo.env.step = lambda key, state, action: seen.append(action) or step(key, state, action)
    algo.functions.rollouts.clear()
    algo.collect()
    assert seen and all(space.contains(a) for a in seen)


def test_squashed_normal_spans_the_whole_action_range():
    # Regression: SquashedNormal capped Pendulum's torque at +-1 of its [-2, 2].
    algo = _trained("Pendulum", distribution_cls=SquashedNormal)
    for sign in (1.0, -1.0):
        bias = algo.params["actor_head.bias"]  # (mean, log_std) of the one torque
        algo.params["actor_head.bias"] = torch.stack([torch.tensor(50.0 * sign), bias[1]])
        actions = algo.predict(np.zeros((4, 3), np.float32))
        np.testing.assert_allclose(actions, 2.0 * sign, rtol=1e-5)


def test_export_prints_no_warnings_and_loading_unpickles_no_code(tmp_path):
    code = (
        "from rlstack import Algorithm; from rlstack.envs import Pendulum; from "
        "rlstack.integrations.export import export_policy\n"
        "a = Algorithm(Pendulum, num_envs=16, horizon=4, compile=False, normalize_obs=True)\n"
        f"export_policy(a, {str(tmp_path / 'model')!r})\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "WARNING" not in out.stderr and "Warning" not in out.stderr, out.stderr
    files = {p.name for p in (tmp_path / "model").rglob("*")}
    assert "pyfunc_model.py" in files and not any(f.endswith((".pkl", ".pickle")) for f in files), (
        files
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        mlflow.pyfunc.load_model(str(tmp_path / "model")).predict(
            {"obs": np.zeros((2, 3), np.float32)}
        )
    assert not caught, [str(w.message) for w in caught]


class _UserModel(MLPModel):
    pass


def test_an_export_never_imports_a_module_it_names(tmp_path):
    # Regression: policy.json's model_cls was imported, running any module's code.
    algo = Algorithm(BUILTIN_ENVS["DiscreteDummyEnv"], model_cls=_UserModel, **SMALL)
    path = Path(export_policy(algo, tmp_path / "model"))
    config_path = path / "artifacts" / "policy.json"
    config = json.loads(config_path.read_text())
    assert config["model_cls"] == "tests.test_export:_UserModel" or config["model_cls"].endswith(
        ":_UserModel"
    )
    with pytest.raises(
        CheckpointError,
        match=r"names model_cls .*_UserModel', which is not part of rlstack; pass `model_cls=`",
    ):
        ExportedPolicy(path)
    obs = np.zeros((3, 1), np.float32)
    np.testing.assert_array_equal(
        ExportedPolicy(path, model_cls=_UserModel).predict(obs), algo.predict(obs)
    )
    loaded = mlflow.pyfunc.load_model(
        str(path), model_config={"allow_classes": [config["model_cls"]]}
    )
    np.testing.assert_array_equal(loaded.predict({"obs": obs}), algo.predict(obs))
    # A tampered name is refused before anything is imported.
    pwned = tmp_path / "pwned"
    (tmp_path / "evil_module.py").write_text(f"open({str(pwned)!r}, 'w').close()\nclass M: pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        config_path.write_text(json.dumps({**config, "model_cls": "evil_module:M"}))
        with pytest.raises(CheckpointError, match="'evil_module:M', which is not part of rlstack"):
            load_policy(path)
        with pytest.raises(Exception, match="not part of rlstack"):
            mlflow.pyfunc.load_model(str(path)).predict({"obs": obs})
        assert not pwned.exists()
    finally:
        sys.path.remove(str(tmp_path))


def test_an_export_naming_classes_by_their_paths_before_the_layer_folders_still_loads(tmp_path):
    algo = Algorithm(BUILTIN_ENVS["DiscreteDummyEnv"], **SMALL)
    path = Path(export_policy(algo, tmp_path / "model"))
    config_path = path / "artifacts" / "policy.json"
    config = json.loads(config_path.read_text())
    assert config["model_cls"] == "rlstack.policy.models:MLPModel"
    config_path.write_text(
        json.dumps(
            {
                **config,
                "model_cls": "rlstack.models:MLPModel",
                "distribution_cls": "rlstack.distributions:Categorical",
            }
        )
    )
    obs = np.linspace(-1, 1, 6, dtype=np.float32).reshape(6, 1)
    np.testing.assert_array_equal(ExportedPolicy(path).predict(obs), algo.predict(obs))


def test_a_corrupted_export_fails_naming_the_file(tmp_path):
    algo = Algorithm(BUILTIN_ENVS["DiscreteDummyEnv"], **SMALL)
    path = Path(export_policy(algo, tmp_path / "model"))
    params = path / "artifacts" / "params.pt"
    params.write_bytes(params.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="params.pt' is truncated or corrupted"):
        ExportedPolicy(path)


def test_the_policy_module_is_a_skeleton_and_module_gives_the_trained_network():
    # Regression: algo.policy.model kept its initial weights while training updated algo.params.
    algo = _trained("DiscreteDummyEnv")
    obs = torch.linspace(-3, 3, 7).reshape(7, 1)
    with pytest.raises(RuntimeError, match=r"weightless skeleton: .*`policy.module\(params\)`"):
        algo.policy.model(obs)
    assert all(p.is_meta for p in algo.policy.model.parameters())  # no second copy of the weights
    module = algo.policy.module(algo.params)
    for got, want in zip(module(obs), algo.policy.apply(algo.params, obs), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    with torch.no_grad():
        next(module.parameters()).add_(1.0)
    assert not torch.equal(
        next(module.parameters()), algo.params[next(iter(algo.params))]
    )  # a copy


@pytest.mark.parametrize("kind", ["recurrent", "window"])
def test_an_exported_policy_with_memory_carries_it_between_calls_as_the_algorithm_does(
    tmp_path, kind
):
    from rlstack import RecurrentAlgorithm
    from rlstack.envs import CartPole

    if kind == "recurrent":
        algo = RecurrentAlgorithm(
            CartPole,
            num_envs=16,
            horizon=8,
            seq_len=4,
            compile=False,
            seed=0,
            model_config={"hidden_size": 8},
        )
    else:
        algo = Algorithm(
            CartPole,
            num_envs=16,
            horizon=8,
            compile=False,
            seed=0,
            model_config={"hiddens": (8,), "obs_window": 3},
        )
    algo.collect()
    algo.step()
    path = export_policy(algo, tmp_path / "model")
    assert json.loads((Path(path) / "artifacts" / "policy.json").read_text())["memory"] == (
        "recurrent" if kind == "recurrent" else "obs_window=3"
    )
    torch.manual_seed(2)
    steps = [(torch.randn(6, 4) * 2).numpy() for _ in range(4)]
    act = algo.actor()
    expected = [act(obs) for obs in steps]
    pyfunc, exported = mlflow.pyfunc.load_model(path), ExportedPolicy(path)
    for obs, want in zip(steps, expected, strict=True):
        np.testing.assert_array_equal(pyfunc.predict({"obs": obs}), want)
        np.testing.assert_array_equal(exported.predict(obs), want)
    # The memory matters: a fresh start on the last observations acts as a first call does.
    np.testing.assert_array_equal(
        pyfunc.predict({"obs": steps[0]}, params={"reset": True}), expected[0]
    )
    exported.reset()
    np.testing.assert_array_equal(exported.predict(steps[0]), expected[0])
    # Per-env starts: env 0 begins again, the others go on.
    _, memory = algo.predict(steps[0], memory=None)
    want, _ = algo.predict(steps[1], memory=memory, starts=np.array([True] + [False] * 5))
    np.testing.assert_array_equal(
        exported.predict(steps[1], starts=np.array([True] + [False] * 5)), want
    )
    with pytest.raises(ValueError, match="batch of 2 envs, the policy's memory is of 6"):
        exported.predict(steps[0][:2])
