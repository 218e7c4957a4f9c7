import os
import random
import struct
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import torch._dynamo
from mlflow.tracking import MlflowClient
from trees import assert_trees_equal

from rlstack import Algorithm, Trainer
from rlstack.env import ContinuousDummyEnv, DiscreteDummyEnv
from rlstack.envs import CartPoleV1
from rlstack.integrations.atomic_files import atomic_save
from rlstack.integrations.checkpoint import CheckpointError, safe_load
from rlstack.integrations.export import load_policy
from rlstack.shell.functions import RunFunctions

SMALL = dict(
    num_envs=32,
    horizon=8,
    model_config={"hiddens": (16,)},
    sgd_minibatch_size=64,
    seed=3,
    lr_schedule=[(0, 1e-3), (2000, 1e-4)],
    lr_schedule_kind="interp",
    entropy_coeff=0.01,
)
KEYS = (
    "returns/mean",
    "losses/total",
    "losses/vf",
    "monitors/kl_div",
    "coefficients/lr",
    "env/steps",
)


def _series(trainer, steps):
    return [{k: trainer.step()[k] for k in KEYS} for _ in range(steps)]


@pytest.mark.parametrize(
    "compile", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["eager", "compiled"]
)
def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, compile):
    # Compiled too, without inductor's fallback_random: all randomness comes from keys.
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
    for offset in [0, 1, 100, len(blob) // 2, len(blob) - 1] + [
        rng.randrange(len(blob)) for _ in range(5)
    ]:
        cut = tmp_path / f"cut-{offset}.pt"
        cut.write_bytes(blob[:offset])
        with pytest.raises(
            CheckpointError, match="truncated or corrupted|not an rlstack checkpoint"
        ):
            Algorithm.from_checkpoint(cut)


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {PWNED}",))


PWNED = "/tmp/rlstack-test-pwned"


def test_tampered_pickle_is_refused_and_executes_nothing(tmp_path):
    Path(PWNED).unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    torch.save({"format": "rlstack-checkpoint", "version": 1, "params": _Payload()}, path)
    with pytest.raises(
        CheckpointError, match="holds objects other than tensors.*nothing was executed"
    ):
        Algorithm.from_checkpoint(path)
    assert not Path(PWNED).exists()
    with pytest.raises(FileNotFoundError, match="No checkpoint at"):
        safe_load(tmp_path / "missing.pt")


def test_a_checkpoint_of_the_previous_format_is_refused_naming_both_versions(tmp_path):
    path = Algorithm(DiscreteDummyEnv, compile=False, **SMALL).save_checkpoint(tmp_path / "c.pt")
    data = torch.load(path, weights_only=True)
    data["version"] = 3  # written before the optimizers became chains of transforms
    torch.save(data, path)
    with pytest.raises(
        CheckpointError,
        match=r"has format version 3; this rlstack reads versions \[6, 7\] \(older files",
    ):
        Algorithm.from_checkpoint(path)


def test_mismatched_checkpoint_names_what_differs(tmp_path):
    path = Algorithm(DiscreteDummyEnv, compile=False, **SMALL).save_checkpoint(tmp_path / "c.pt")
    data = torch.load(path, weights_only=True)
    data["settings"]["model_config"] = {"hiddens": (32,)}
    data["params"] = Algorithm(DiscreteDummyEnv, compile=False, **SMALL).params
    wider = Algorithm(
        DiscreteDummyEnv, compile=False, **{**SMALL, "model_config": {"hiddens": (32,)}}
    )
    with pytest.raises(
        CheckpointError,
        match=r"param 'actor.0.weight' has shape \[16, 1\], the model's has \[32, 1\]",
    ):
        wider.load_state_dict(torch.load(path, weights_only=True))
    other_env = Algorithm(ContinuousDummyEnv, compile=False, **SMALL)
    with pytest.raises(
        CheckpointError, match=r"action space is Discrete\(2, shape=\(1,\)\), the env's is Box"
    ):
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
    trainer.run(
        stop_conditions=[lambda s: s["algorithm/steps"] >= 5],
        checkpoint_every=1,
        checkpoint_dir=tmp_path,
        keep_checkpoints=2,
    )
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
    trainer.run(
        callbacks=[lambda s: seen.append(sorted(s)[0]) or "eval/returns/mean" in s],
        steps_per_eval=2,
    )
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
    action = policy.distribution_cls.mode(policy.apply(params, torch.as_tensor(obs))[0])
    np.testing.assert_array_equal(action.numpy(), trainer.algorithm.predict(obs))
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        trainer.export_policy(tmp_path / "model")


def test_resuming_an_older_checkpoint_never_prunes_newer_ones_and_reported_paths_exist(tmp_path):
    # Regression: pruning by file name deleted the newest checkpoints of the folder at once.
    first = Trainer(DiscreteDummyEnv, compile=False, **SMALL)
    first.run(
        stop_conditions=[lambda s: s["algorithm/steps"] >= 4],
        checkpoint_every=1,
        checkpoint_dir=tmp_path / "a",
        keep_checkpoints=5,
    )
    first.close()
    before = sorted(p.name for p in (tmp_path / "a").glob("*.pt"))
    assert before == [f"step-{i:08d}.pt" for i in range(1, 5)]
    resumed = Trainer.from_checkpoint(tmp_path / "a" / "step-00000002.pt")
    with pytest.raises(
        ValueError,
        match=r"holds checkpoints newer than this run's step 2 \(step-00000003.pt, "
        r"step-00000004.pt\), which this run would overwrite",
    ):
        resumed.run(checkpoint_every=1, checkpoint_dir=tmp_path / "a", keep_checkpoints=1)
    assert sorted(p.name for p in (tmp_path / "a").glob("*.pt")) == before  # nothing touched
    assert resumed.state["algorithm/steps"] == 2  # refused before any step
    # Into a folder of its own it prunes only what it wrote; the path it reports exists.
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "step-00000001.pt").write_bytes(b"another run's file")
    resumed.run(
        stop_conditions=[lambda s: s["algorithm/steps"] >= 5],
        checkpoint_every=1,
        checkpoint_dir=tmp_path / "b",
        keep_checkpoints=1,
    )
    path = resumed.checkpoint_to(tmp_path / "b", keep=1)
    assert Path(path).is_file()
    assert sorted(p.name for p in (tmp_path / "b").glob("*.pt")) == [
        "step-00000001.pt",
        "step-00000005.pt",
    ]
    resumed.close()


def test_a_resumed_run_prunes_the_checkpoints_it_wrote_before(tmp_path):
    first = Trainer(DiscreteDummyEnv, compile=False, **SMALL)
    first.run(
        stop_conditions=[lambda s: s["algorithm/steps"] >= 2],
        checkpoint_every=1,
        checkpoint_dir=tmp_path,
        keep_checkpoints=2,
    )
    first.close()
    resumed = Trainer.from_checkpoint(tmp_path / "step-00000002.pt")
    resumed.run(
        stop_conditions=[lambda s: s["algorithm/steps"] >= 4],
        checkpoint_every=1,
        checkpoint_dir=tmp_path,
        keep_checkpoints=2,
    )
    resumed.close()
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["step-00000003.pt", "step-00000004.pt"]


def test_a_checkpoint_dir_in_use_by_a_live_run_is_refused_before_training(tmp_path):
    one = Trainer(DiscreteDummyEnv, compile=False, **SMALL)
    one.run(stop_conditions=[lambda s: True], checkpoint_dir=tmp_path)
    two = Trainer(DiscreteDummyEnv, compile=False, **SMALL)
    with pytest.raises(
        ValueError,
        match=rf"is in use by MLflow run {one.run_id} \(pid \d+\); give this run its own",
    ):
        two.run(stop_conditions=[lambda s: True], checkpoint_dir=tmp_path)
    assert two.state["algorithm/steps"] == 0
    one.close()  # releases the folder
    two.run(
        stop_conditions=[lambda s: True], checkpoint_every=1, checkpoint_dir=tmp_path / "elsewhere"
    )
    two.close()
    # A lock held by a process that died is free again (flock is released by the OS).
    import subprocess
    import sys

    code = (
        f"import fcntl; f = open({str(tmp_path / 'c' / '.rlstack.lock')!r}, 'a+'); "
        "fcntl.flock(f, fcntl.LOCK_EX); f.write('run x'); f.flush()"
    )
    (tmp_path / "c").mkdir()
    subprocess.run([sys.executable, "-c", code], check=True)
    three = Trainer(DiscreteDummyEnv, compile=False, **SMALL)
    three.run(stop_conditions=[lambda s: True], checkpoint_every=1, checkpoint_dir=tmp_path / "c")
    three.close()
    # A folder whose run ended holds its checkpoints and no lock file.
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["step-00000001.pt"]


def test_a_lock_removed_by_its_closing_holder_is_taken_anew_not_on_the_removed_file(tmp_path):
    from rlstack.integrations.folder_lock import FolderLock

    path = tmp_path / ".rlstack.lock"
    first = FolderLock(path, "checkpoint_dir", str(tmp_path))
    first.take("run a")
    stale = open(path, "a+")  # noqa: SIM115 - a second opener that has not locked yet
    first.close()
    assert not path.exists()
    # The second opener's file is gone: the lock it would take keeps no one out, so the next
    # lock is on a new file at the path, which keeps a third out.
    second = FolderLock(path, "checkpoint_dir", str(tmp_path))
    second.take("run b")
    with pytest.raises(ValueError, match=r"is in use by run b \(pid \d+\)"):
        FolderLock(path, "checkpoint_dir", str(tmp_path))
    stale.close()
    second.close()


def test_an_unwritable_checkpoint_dir_fails_before_the_first_step(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    trainer = Trainer(DiscreteDummyEnv, compile=False, **SMALL)
    with pytest.raises(ValueError, match="`checkpoint_dir` .* is not writable"):
        trainer.run(stop_conditions=[lambda s: True], checkpoint_dir=tmp_path / "file" / "sub")
    assert trainer.state["algorithm/steps"] == 0
    trainer.close()


def test_non_finite_step_keeps_the_last_good_params_saves_no_nan_state_and_marks_the_run_failed(
    tmp_path,
):
    # The optimizer state turns NaN after step 2: step 3 fails, its update is discarded, and the
    # state before it (the NaN moments) is not saved: resumed, it would fail again (issue 22).
    trainer = Trainer(DiscreteDummyEnv, compile=False, **SMALL)
    good = {}

    def poison(stats):
        if stats["algorithm/steps"] == 2:
            good.update({k: v.clone() for k, v in trainer.algorithm.params.items()})
            name = next(iter(trainer.algorithm.params))
            state = trainer.algorithm.opt_state  # apply_if_finite(chain(clip, adam))
            clip, (moments, rate) = (
                state.inner
            )  # adam = chain(scale_by_adam, scale_by_learning_rate)
            moments = moments._replace(
                mu={
                    **moments.mu,
                    name: torch.full_like(trainer.algorithm.params[name], float("nan")),
                }
            )
            trainer.algorithm.opt_state = state._replace(inner=(clip, (moments, rate)))

    with pytest.raises(
        FloatingPointError,
        match=r"^Non-finite .* at step 3 .* params kept from step 2\. The state "
        r"before it is not finite either: no checkpoint written\.$",
    ):
        trainer.run(callbacks=[poison], checkpoint_dir=tmp_path)
    assert trainer.algorithm.steps == 2 and not list(tmp_path.glob("step-*.pt"))
    for k, v in good.items():
        assert torch.equal(trainer.algorithm.params[k], v)
    trainer = None  # the last reference (the callback's too): collected, the run ends FAILED
    import gc

    gc.collect()
    run = MlflowClient().search_runs(["0"])[0]
    assert run.info.status == "FAILED"


def test_a_checkpoint_with_altered_tensor_bytes_fails_naming_the_file(tmp_path):
    # Regression: flipped bytes inside a tensor loaded silently as NaN weights.
    algo = Algorithm(DiscreteDummyEnv, compile=False, **SMALL)
    path = Path(algo.save_checkpoint(tmp_path / "c.pt"))
    blob = bytearray(path.read_bytes())
    import zipfile

    with zipfile.ZipFile(path) as archive:
        record = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size >= 64)
    name_len, extra_len = struct.unpack(
        "<HH", blob[record.header_offset + 26 : record.header_offset + 30]
    )
    offset = (
        record.header_offset + 30 + name_len + extra_len
    )  # the record's data, after its local header
    blob[offset + 8 : offset + 12] = b"\x00\x00\xc0\x7f"  # a float32 NaN
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(blob))
    with pytest.raises(
        CheckpointError, match=rf"Checkpoint '{bad}' is corrupted: record .* CRC-32"
    ):
        Algorithm.from_checkpoint(bad)


def test_stale_temp_files_of_a_killed_write_are_removed_by_the_next_write(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".step-00000001.pt.{dead.stdout.strip()}.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    live = (
        tmp_path / f".step-00000001.pt.{os.getpid()}.def456.tmp"
    )  # this process is alive: not stale
    live.write_bytes(b"being written")
    atomic_save({"x": torch.ones(1)}, tmp_path / "step-00000002.pt")
    assert not stale.exists() and live.exists()


def test_restoring_a_collected_trajectory_runs_no_rollout(tmp_path, monkeypatch):
    """The trajectory's structure is stored with it: loading builds nothing by rolling out."""
    a = Algorithm(ContinuousDummyEnv, compile=False, **SMALL)
    a.collect()
    path = a.save_checkpoint(tmp_path / "c.pt")

    def no_rollout(*args, **kwargs):
        raise AssertionError("a rollout was built while loading a checkpoint")

    monkeypatch.setattr(RunFunctions, "rollout", no_rollout)
    b = Algorithm.from_checkpoint(path)
    monkeypatch.undo()
    assert_trees_equal(b.trajectory, a.trajectory)  # structure, dtypes and values
    assert b.step()["losses/total"] == a.step()["losses/total"]


@pytest.mark.parametrize(
    "env", [DiscreteDummyEnv, CartPoleV1], ids=["infinite-horizon", "episodic"]
)
def test_a_checkpoint_restores_every_piece_of_train_state_bit_for_bit(tmp_path, env):
    a = Algorithm(env, compile=False, **{**SMALL, "normalize_obs": True})
    a.collect()
    a.step()
    a.collect()
    b = Algorithm.from_checkpoint(a.save_checkpoint(tmp_path / "c.pt"))
    for name in ("params", "opt_state", "carry", "trajectory", "key"):
        assert_trees_equal(getattr(b, name), getattr(a, name))
    assert (b.collects, b.steps, b.env_steps) == (a.collects, a.steps, a.env_steps)


def _nan_rewritten(path, target, key):
    """The file at ``path`` with tensor ``key`` of ``torch.load(path)`` rewritten as
    NaN, saved (a valid archive with valid CRCs) to ``target``.
    """
    data = torch.load(path, weights_only=True)
    tree = data.get("params", data)
    tree[key] = torch.full_like(tree[key], float("nan"))
    torch.save(data, target)
    return target


def test_a_checkpoint_or_export_with_nan_weights_is_refused_naming_file_and_tensor(tmp_path):
    from rlstack.cli import main
    from rlstack.integrations.export import ExportedPolicy, export_policy

    algo = Algorithm(
        CartPoleV1, num_envs=8, horizon=4, compile=False, model_config={"hiddens": (8,)}
    )
    name = next(iter(algo.params))
    bad = _nan_rewritten(algo.save_checkpoint(tmp_path / "good.pt"), tmp_path / "bad.pt", name)
    with pytest.raises(
        CheckpointError,
        match=rf"Refused to load checkpoint .*bad.pt.*: params/{name} holds \d+ non-finite",
    ):
        Algorithm.from_checkpoint(bad)
    assert main(["eval", str(bad), "--num-envs", "4"]) == 2
    model = Path(export_policy(algo, tmp_path / "model"))
    params_file = next(model.rglob("params.pt"))
    _nan_rewritten(params_file, params_file, name)
    with pytest.raises(
        CheckpointError, match=rf"Refused to load exported file .*params.pt.*: params/{name} holds"
    ):
        ExportedPolicy(model)


def test_a_non_finite_stop_checkpoints_only_a_finite_state(tmp_path):
    trainer = Trainer(
        CartPoleV1, num_envs=8, horizon=4, compile=False, model_config={"hiddens": (8,)}
    )
    trainer.step()
    with pytest.raises(FloatingPointError, match="Last good step saved to") as finite:
        trainer.algorithm.collect()
        trainer.algorithm.trajectory = trainer.algorithm.trajectory._replace(
            rewards=torch.full_like(trainer.algorithm.trajectory.rewards, float("nan"))
        )
        trainer.run(checkpoint_dir=tmp_path / "a", stop_conditions=[lambda s: False])
    saved = Path(str(finite.value).rpartition("saved to ")[2].rstrip("."))
    assert Algorithm.from_checkpoint(saved).state_is_finite()

    for p in trainer.algorithm.params.values():
        p.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="not finite either: no checkpoint written"):
        trainer.run(checkpoint_dir=tmp_path / "b", stop_conditions=[lambda s: False])
    assert not list((tmp_path / "b").glob("*.pt"))
    trainer.close()


def test_checkpoints_and_exports_get_the_umasks_permissions(tmp_path):
    algo = Algorithm(DiscreteDummyEnv, num_envs=8, horizon=4, sgd_minibatch_size=32, compile=False)
    algo.save_checkpoint(tmp_path / "ckpt.pt")
    trainer = Trainer(DiscreteDummyEnv, num_envs=8, horizon=4, sgd_minibatch_size=32, compile=False)
    trainer.export_policy(tmp_path / "model")
    trainer.close()
    umask = os.umask(0o022)
    os.umask(umask)
    written = [tmp_path / "ckpt.pt", *(p for p in (tmp_path / "model").rglob("*") if p.is_file())]
    assert len(written) > 1
    assert {p.name: p.stat().st_mode & 0o777 for p in written} == {
        p.name: 0o666 & ~umask for p in written
    }


def test_a_full_disk_is_one_line_naming_the_folder_and_the_bytes_and_writes_nothing(
    tmp_path, monkeypatch
):
    import errno
    import shutil

    algo = Algorithm(DiscreteDummyEnv, num_envs=8, horizon=4, sgd_minibatch_size=32, compile=False)
    earlier = algo.save_checkpoint(tmp_path / "step-1.pt")
    before = Path(earlier).read_bytes()

    def full_disk(obj, path):  # what torch's zip writer raises when the disk fills up
        Path(path).write_bytes(b"PK" * 100)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage._replace(free=4096))
    with pytest.raises(OSError) as raised:
        algo.save_checkpoint(tmp_path / "step-2.pt")
    message = str(raised.value)
    assert "\n" not in message and raised.value.errno == errno.ENOSPC
    assert f"No space left in {tmp_path} for step-2.pt: it needs about" in message
    assert "bytes and 4,096 are free" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-1.pt"]  # no temp file left
    assert Path(earlier).read_bytes() == before
