"""Videos of a policy (rlstack.integrations.video): deterministic episodes on one env,
drawn by the built-in envs without OpenGL or rendered by gymnasium, decoded back here.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from rlstack import Algorithm, Trainer
from rlstack.cli import main
from rlstack.envs import CartPoleV1, MountainCarV0, PendulumV1
from rlstack.envs.drawing import HEIGHT, WIDTH
from rlstack.integrations.video import record_video

imageio = pytest.importorskip("imageio.v2")  # the test extra installs it

SMALL = dict(num_envs=16, horizon=8, model_config={"hiddens": (8,)}, compile=False)


def frames_of(path: Path) -> np.ndarray:
    """Every frame of a written video, decoded: ``[T, H, W, 3]`` uint8."""
    return np.stack(list(imageio.get_reader(path).iter_data()))


@pytest.mark.parametrize("env", [CartPoleV1, PendulumV1, MountainCarV0])
def test_a_video_holds_one_frame_per_step_of_the_episode_at_the_drawn_size(tmp_path, env):
    algo = Algorithm(env, seed=0, **SMALL)
    recorded = record_video(tmp_path / "episode.mp4", env, algo.actor())
    frames = frames_of(tmp_path / "episode.mp4")
    # One frame per step until the episode ends (CartPole-v1 falls within 500 steps untrained;
    # Pendulum-v1 and MountainCar-v0 run to their 200-step limit).
    assert frames.shape == (recorded["frames"], HEIGHT, WIDTH, 3)
    if env is not CartPoleV1:
        assert recorded["frames"] == 200
    assert 8 <= recorded["frames"] <= 500
    assert frames.std(axis=0).max() > 0  # the picture moves


def test_the_same_policy_and_seed_give_the_same_episode_and_a_gif_works(tmp_path):
    algo = Algorithm(CartPoleV1, seed=0, **SMALL)
    first = record_video(tmp_path / "a.gif", CartPoleV1, algo.actor(), episodes=2)
    again = record_video(tmp_path / "b.gif", CartPoleV1, algo.actor(), episodes=2)
    assert first["returns"] == again["returns"] and first["frames"] == again["frames"]
    assert frames_of(tmp_path / "a.gif").shape[0] == first["frames"]


def test_trainer_eval_logs_the_video_to_its_run(tmp_path):
    with Trainer(PendulumV1, seed=0, **SMALL) as trainer:
        trainer.step()
        trainer.eval(video=tmp_path / "eval.mp4")
    artifacts = [a.path for a in MlflowClient().list_artifacts(trainer.run_id, "videos")]
    assert artifacts == ["videos/eval.mp4"]
    assert frames_of(tmp_path / "eval.mp4").shape == (200, HEIGHT, WIDTH, 3)


def test_rlstack_eval_records_a_checkpoints_policy(tmp_path, capsys):
    args = ["--env", "Pendulum-v1", "--num-envs", "16", "--horizon", "8", "--hiddens", "8"]
    assert main(["train", *args, "--max-steps", "1", "--checkpoint-dir", "ck"]) == 0
    checkpoint = next(Path("ck").glob("step-*.pt"))
    assert main(["eval", str(checkpoint), "--num-envs", "4", "--video", "run.mp4"]) == 0
    out = capsys.readouterr().out
    assert "rlstack: video of 200 frames written to run.mp4" in out
    assert "under videos/" in out
    assert frames_of(Path("run.mp4")).shape == (200, HEIGHT, WIDTH, 3)


def test_without_imageio_the_message_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio", None)
    monkeypatch.setitem(sys.modules, "imageio.v2", None)
    algo = Algorithm(CartPoleV1, **SMALL)
    with pytest.raises(ImportError, match=r"pip install 'rlstack\[video\]'"):
        record_video(tmp_path / "x.mp4", CartPoleV1, algo.actor())


def test_an_env_that_draws_nothing_is_refused_in_one_line(tmp_path):
    from rlstack.envs import DiscreteDummyEnv

    algo = Algorithm(DiscreteDummyEnv, **SMALL)
    with pytest.raises(ValueError, match="draws no frames: videos are drawn for the built-in"):
        record_video(tmp_path / "x.mp4", DiscreteDummyEnv, algo.actor())


def test_mujoco_without_an_offscreen_backend_is_one_line(monkeypatch):
    from rlstack.integrations import video

    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(video.ctypes.util, "find_library", lambda name: None)
    with pytest.raises(RuntimeError, match="neither is installed: install libegl1"):
        video.choose_mujoco_gl()


@pytest.mark.slow
def test_a_mujoco_policy_is_rendered_offscreen(tmp_path):
    from rlstack.integrations.gymnasium_adapter import gymnasium_env
    from rlstack.integrations.video import choose_mujoco_gl

    try:
        choose_mujoco_gl()
    except RuntimeError as e:
        pytest.skip(str(e))
    spec = gymnasium_env("HalfCheetah-v5", width=128, height=96)
    algo = Algorithm(spec, num_envs=2, horizon=8, compile=False, model_config={"hiddens": (8,)})
    recorded = record_video(tmp_path / "cheetah.mp4", spec, algo.actor())
    assert frames_of(tmp_path / "cheetah.mp4").shape == (1000, 96, 128, 3)
    assert recorded["frames"] == 1000  # HalfCheetah-v5 runs to its time limit
