import os
import pickle
import random
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import torch._dynamo
import torch._inductor.config
from mlflow.tracking import MlflowClient

from rlstack import Algorithm, Trainer
from rlstack.checkpoint import CheckpointError, atomic_save, safe_load
from rlstack.env import ContinuousDummyEnv, DiscreteDummyEnv
from rlstack.export import load_policy

SMALL = dict(num_envs=32, horizon=8, model_config={"hiddens": (16,)}, sgd_minibatch_size=64, seed=3,
             lr_schedule=[(0, 1e-3), (2000, 1e-4)], lr_schedule_kind="interp", entropy_coeff=0.01)
KEYS = ("returns/mean", "losses/total", "losses/vf", "monitors/kl_div", "coefficients/lr", "env/steps")


def _series(trainer, steps):
    return [{k: trainer.step()[k] for k in KEYS} for _ in range(steps)]


@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["eager", "compiled"])
def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, compile):
    with torch._inductor.config.patch(fallback_random=True):
        torch._dynamo.reset()
        uninterrupted = Trainer(DiscreteDummyEnv, compile=compile, **SMALL)
        expected = _series(uninterrupted, 6)[3:]
        uninterrupted.close()

        first = Trainer(DiscreteDummyEnv, compile=compile, **SMALL)
        _series(first, 3)
        path = first.save_checkpoint(tmp_path / "ckpt.pt")
        first.close()
        resumed = Trainer.from_checkpoint(path)
        assert resumed.run_id == first.run_id  # logging continues in the same MLflow run
        assert _series(resumed, 3) == expected
        resumed.close()


def test_resume_mid_iteration_after_collect(tmp_path):
    a = Algorithm(ContinuousDummyEnv, compile=False, **SMALL)
    a.collect()
    a.step()
    a.collect()
    path = a.save_checkpoint(tmp_path / "c.pt")
    expected = a.step()["losses/total"]
    b = Algorithm.from_checkpoint(path)
    assert b.step()["losses/total"] == expected


def test_checkpoint_loads_with_weights_only_and_is_written_atomically(tmp_path):
    algo = Algorithm(DiscreteDummyEnv, compile=False, **SMALL)
    path = tmp_path / "c.pt"
    algo.save_checkpoint(path)
    data = torch.load(path, weights_only=True)
    assert set(data["params"]) == set(algo.params)
    # A crash mid-write leaves the previous checkpoint intact and no temp file behind.
    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save({"format": "x", "bad": Boom()}, path)
    assert torch.load(path, weights_only=True)["counters"] == data["counters"]
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_truncated_checkpoints_fail_with_a_clear_error(tmp_path):
    algo = Algorithm(DiscreteDummyEnv, compile=False, **SMALL)
    blob = Path(algo.save_checkpoint(tmp_path / "c.pt")).read_bytes()
    rng = random.Random(0)
    for offset in [0, 1, 100, len(blob) // 2, len(blob) - 1] + [rng.randrange(len(blob)) for _ in range(5)]:
        cut = tmp_path / f"cut-{offset}.pt"
        cut.write_bytes(blob[:offset])
        with pytest.raises(CheckpointError, match="truncated or corrupted|not an rlstack checkpoint"):
            Algorithm.from_checkpoint(cut)


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {PWNED}",))


PWNED = "/tmp/rlstack-test-pwned"


def test_tampered_pickle_is_refused_and_executes_nothing(tmp_path):
    Path(PWNED).unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    torch.save({"format": "rlstack-checkpoint", "version": 1, "params": _Payload()}, path)
    with pytest.raises(CheckpointError, match="holds objects other than tensors.*nothing was executed"):
        Algorithm.from_checkpoint(path)
    assert not Path(PWNED).exists()
    with pytest.raises(FileNotFoundError, match="No checkpoint at"):
        safe_load(tmp_path / "missing.pt")


def test_mismatched_checkpoint_names_what_differs(tmp_path):
    path = Algorithm(DiscreteDummyEnv, compile=False, **SMALL).save_checkpoint(tmp_path / "c.pt")
    data = torch.load(path, weights_only=True)
    data["settings"]["model_config"] = {"hiddens": (32,)}
    data["params"] = Algorithm(DiscreteDummyEnv, compile=False, **SMALL).params
    wider = Algorithm(DiscreteDummyEnv, compile=False, **{**SMALL, "model_config": {"hiddens": (32,)}})
    with pytest.raises(CheckpointError, match=r"param 'actor.0.weight' has shape \[16, 1\], the model's has \[32, 1\]"):
        wider.load_state_dict(torch.load(path, weights_only=True))
    other_env = Algorithm(ContinuousDummyEnv, compile=False, **SMALL)
    with pytest.raises(CheckpointError, match=r"action space is Discrete\(2, shape=\(1,\)\), the env's is Box"):
        other_env.load_state_dict(torch.load(path, weights_only=True))


def test_user_classes_must_be_passed_not_imported_from_the_checkpoint(tmp_path):
    class MyEnv(DiscreteDummyEnv):
        pass

    path = Algorithm(MyEnv, compile=False, **SMALL).save_checkpoint(tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="not part of rlstack: pass `env=`"):
        Algorithm.from_checkpoint(path)
    assert Algorithm.from_checkpoint(path, MyEnv).steps == 0


def test_run_checkpoints_every_k_steps_keeps_the_newest_and_logs_artifacts(tmp_path):
    trainer = Trainer(DiscreteDummyEnv, compile=False, **SMALL)
    trainer.run(stop_conditions=[lambda s: s["algorithm/steps"] >= 5], checkpoint_every=1,
                checkpoint_dir=tmp_path, keep_checkpoints=2)
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["step-00000004.pt", "step-00000005.pt"]
    artifacts = [a.path for a in MlflowClient().list_artifacts(trainer.run_id, "checkpoints")]
    assert len(artifacts) == 5
    trainer.close()


def test_keyboard_interrupt_writes_the_last_completed_step(tmp_path):
    trainer = Trainer(DiscreteDummyEnv, compile=False, **SMALL)

    def interrupt(stats):
        if stats["algorithm/steps"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer.run(callbacks=[interrupt], checkpoint_dir=tmp_path)
    assert Algorithm.from_checkpoint(tmp_path / "step-00000002.pt").steps == 2
    trainer.close("KILLED")
    assert MlflowClient().get_run(trainer.run_id).info.status == "KILLED"


def test_callbacks_see_step_and_eval_stats_and_can_stop():
    trainer = Trainer(DiscreteDummyEnv, compile=False, **SMALL)
    seen = []
    trainer.run(callbacks=[lambda s: seen.append(sorted(s)[0]) or "eval/returns/mean" in s], steps_per_eval=2)
    assert trainer.state["algorithm/steps"] == 2 and seen[-1].startswith("eval/")
    trainer.close()


@pytest.mark.parametrize("env_cls", [DiscreteDummyEnv, ContinuousDummyEnv])
def test_exported_pyfunc_model_acts_like_the_trained_policy(tmp_path, env_cls):
    trainer = Trainer(env_cls, compile=False, **SMALL)
    trainer.step()
    path = trainer.export_policy(tmp_path / "model")
    trainer.close()
    model = mlflow.pyfunc.load_model(path)
    obs = np.linspace(-5, 5, 21, dtype=np.float32).reshape(21, 1)
    np.testing.assert_array_equal(model.predict({"obs": obs}), trainer.algorithm.predict(obs))
    everything = model.predict({"obs": obs}, params={"outputs": "all"})
    assert everything["log_probs"].shape == (21,) and everything["values"].shape == (21,)
    requirements = (Path(path) / "requirements.txt").read_text()
    assert "torch==" in requirements and "numpy" in requirements
    # The plain route: params (weights_only) + config rebuild the policy without MLflow.
    policy, params, config = load_policy(path)
    action, _, _ = policy.act(params, torch.as_tensor(obs), deterministic=True)
    np.testing.assert_array_equal(action.numpy(), trainer.algorithm.predict(obs))
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        trainer.export_policy(tmp_path / "model")
