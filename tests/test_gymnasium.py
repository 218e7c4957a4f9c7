"""Training on gymnasium vector envs through rlstack.integrations.gymnasium_adapter."""

import os
import signal
import subprocess
import sys

import gymnasium
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from rlstack import Algorithm, Trainer, random
from rlstack.cli import load_env, main
from rlstack.core.spaces import Box, Discrete
from rlstack.env import check_env
from rlstack.integrations.gymnasium_adapter import GymnasiumEnv, gymnasium_env
from rlstack.shell.presets import PRESETS

SAME_STEP = {"autoreset_mode": gymnasium.vector.AutoresetMode.SAME_STEP}


def _vector(env_id, n=4, **kw):
    return gymnasium.make_vec(
        env_id, num_envs=n, vectorization_mode="sync", vector_kwargs=SAME_STEP, **kw
    )


def test_discrete_env_steps_auto_resets_and_keeps_final_observations():
    env = GymnasiumEnv(_vector("CartPole-v1"))
    assert env.observation_space == Box((4,)) and env.action_space == Discrete(2)
    check_env(env, num_envs=4)
    state, obs = env.reset(random.key(0), 4)
    reference = _vector("CartPole-v1")
    ref_obs, _ = reference.reset(seed=int(random.bits(random.key(0), (1,))[0]))
    np.testing.assert_array_equal(obs.numpy(), ref_obs)  # seeded from the key
    push = torch.ones(4, dtype=torch.int64)
    for _ in range(40):  # always pushing right ends every episode within ~10 steps
        state, obs, reward, terminated, truncated = env.step(random.key(1), state, push)
        ref_obs, ref_reward, ref_term, _, info = reference.step(np.ones(4, dtype=np.int64))
        np.testing.assert_array_equal(obs.numpy(), ref_obs)
        assert torch.equal(terminated, torch.as_tensor(ref_term)) and reward.dtype == torch.float32
        final = env.final_observation(state).numpy()
        for i in np.flatnonzero(ref_term):
            np.testing.assert_array_equal(
                final[i], info["final_obs"][i]
            )  # the true last observation
            assert (
                abs(final[i][2]) > 0.2 and abs(ref_obs[i][2]) <= 0.05
            )  # fallen pole; a fresh start
        for i in np.flatnonzero(~ref_term):
            np.testing.assert_array_equal(final[i], ref_obs[i])


def test_box_env_trains_through_the_algorithm_with_episode_stats():
    algo = Algorithm(
        gymnasium_env("Pendulum-v1"),
        num_envs=4,
        horizon=60,
        horizons_per_env_reset=-1,
        sgd_minibatch_size=120,
        compile=False,
        model_config={"hiddens": (16,)},
    )
    assert algo.env.action_space == Box((1,), low=-2.0, high=2.0)
    for _ in range(4):  # Pendulum-v1 truncates at 200 steps
        stats = algo.collect()
        algo.step()
    assert stats["episodes/count"] == 4 and stats["episodes/length/mean"] == 200
    assert stats["episodes/terminated"] == 0.0  # time limits truncate, never terminate
    assert stats["episodes/return/mean"] < 0


def test_bad_gymnasium_inputs_get_clear_errors(monkeypatch):
    with pytest.raises(
        TypeError, match="must be a gymnasium.vector.VectorEnv, got TimeLimit; vectorise it"
    ):
        GymnasiumEnv(gymnasium.make("CartPole-v1"))
    with pytest.raises(
        ValueError, match=r"must auto-reset in the same step \(AutoresetMode.SAME_STEP\)"
    ):
        GymnasiumEnv(gymnasium.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync"))
    with pytest.raises(ValueError, match=r"observation_space MultiBinary\(3\) is not supported"):
        GymnasiumEnv(
            gymnasium.vector.SyncVectorEnv(
                [lambda: _MultiBinaryEnv()], autoreset_mode=SAME_STEP["autoreset_mode"]
            )
        )
    with pytest.raises(ValueError, match="gymnasium does not know this id"):
        load_env("gymnasium:NoSuchEnv-v0")
    with pytest.raises(ValueError, match="simulates 4 envs, but `num_envs` is 8"):
        Algorithm(GymnasiumEnv(_vector("CartPole-v1")), num_envs=8, horizon=4, compile=False)
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'rlstack\[gymnasium\]'"):
        gymnasium_env("CartPole-v1")


class _MultiBinaryEnv(gymnasium.Env):
    observation_space = gymnasium.spaces.MultiBinary(3)
    action_space = gymnasium.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        return np.zeros(3, dtype=np.int8), {}

    def step(self, action):
        return np.zeros(3, dtype=np.int8), 0.0, False, False, {}


def test_cli_trains_a_gymnasium_id_and_resumes_without_naming_it_again(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--env",
                "gymnasium:CartPole-v1",
                "--max-steps",
                "2",
                "--checkpoint-dir",
                "ck",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--resume",
                "ck/step-00000002.pt",
                "--max-steps",
                "3",
                "--checkpoint-dir",
                "ck2",
            ]
        )
        == 0
    )
    assert main(["eval", "ck2/step-00000003.pt", "--num-envs", "4"]) == 0
    out = capsys.readouterr().out
    assert "success/episode_return" in out
    run = MlflowClient().search_runs(["0"])[0]
    assert (
        run.data.params["env"] == "gymnasium:CartPole-v1" and "episodes/count" in run.data.metrics
    )


ASYNC_RUN = [
    sys.executable,
    "-m",
    "rlstack",
    "train",
    "--env",
    "gymnasium:CartPole-v1",
    "--vectorization-mode",
    "async",
    "--num-envs",
    "4",
    "--no-compile",
]


def _train_async(tmp_path, max_steps):
    """The CLI on gymnasium's async (forked worker) vector env, in a process group of its own."""
    return subprocess.Popen(
        [*ASYNC_RUN, "--max-steps", str(max_steps)],
        cwd=tmp_path,
        env={
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "PYTHONUNBUFFERED": "1",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _rlstack_lines(err):
    """Standard error less MLflow's own INFO log lines."""
    return [line for line in err.splitlines() if line.strip() and " INFO mlflow." not in line]


@pytest.mark.slow  # two fresh processes with worker processes: about 20 s each
def test_an_async_vector_env_run_ends_quietly(tmp_path):
    proc = _train_async(tmp_path, max_steps=2)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert _rlstack_lines(err) == []
    assert "(FINISHED)" in out


@pytest.mark.slow
def test_ctrl_c_stops_an_async_vector_env_run_once_without_worker_tracebacks(tmp_path):
    proc = _train_async(tmp_path, max_steps=10_000)
    for line in proc.stdout:
        if line.startswith("step "):
            break
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert _rlstack_lines(err) == ["rlstack: SIGINT: stopping after this step (again to stop now)"]
    assert "(KILLED)" in out


@pytest.mark.slow
def test_ppo_solves_gymnasium_cartpole_v1_past_400():
    trainer = Trainer(gymnasium_env("CartPole-v1"), seed=0, **PRESETS["gymnasium:CartPole-v1"])
    returns = []

    def enough(stats):
        if "episodes/return/mean" in stats:
            returns.append(stats["episodes/return/mean"])
        return len(returns) >= 5 and sum(returns[-5:]) / 5 > 400

    stats = trainer.run(callbacks=[enough], stop_conditions=[lambda s: s["env/steps"] >= 60_000])
    trainer.close()
    assert sum(returns[-5:]) / 5 > 400, (stats["env/steps"], returns[-5:])
    # The deterministic policy on fresh envs keeps most of it (an untrained one scores ~10-20).
    success = trainer.algorithm.env.success(trainer.algorithm.predict, num_envs=8)
    assert success["success/episode_return"] > 250, success


def test_an_env_without_a_preset_gets_defaults_that_fit_it(capsys):
    """A vector env's own count is the default num_envs (not 1.x's 8192), a gymnasium
    id gets 8 sub-envs, episodic envs are never reset on 1.x's schedule, and the CLI
    says in one line which defaults it runs with.
    """
    from rlstack.envs import BUILTIN_ENVS
    from rlstack.shell.launch import defaults_notice

    trainer = Trainer(
        GymnasiumEnv(_vector("CartPole-v1", n=3)), horizon=8, model_config={"hiddens": (8,)}
    )
    assert (
        trainer.algorithm.config.num_envs == 3
        and trainer.algorithm.config.horizons_per_env_reset == -1
    )
    trainer.close()
    algo = Algorithm(gymnasium_env("Acrobot-v1"), horizon=4, model_config={"hiddens": (8,)})
    assert algo.config.num_envs == 8 and algo.config.horizons_per_env_reset == -1
    assert (
        Algorithm(
            BUILTIN_ENVS["MountainCar-v0"], num_envs=4, horizon=4
        ).config.horizons_per_env_reset
        == -1
    )
    assert (
        Algorithm(BUILTIN_ENVS["MountainCar"], num_envs=4, horizon=4).config.horizons_per_env_reset
        == 1
    )  # 1.x's
    notice = defaults_notice("gymnasium:Acrobot-v1", gymnasium_env("Acrobot-v1"), {"horizon": 16})
    assert notice == (
        "no preset for gymnasium:Acrobot-v1: rlstack 1.x's defaults (rlstack.AlgorithmConfig) with "
        "num_envs=8, horizons_per_env_reset=-1 to fit the env; set hyperparameters with flags or "
        "-f FILE."
    )
    assert (
        main(
            [
                "train",
                "--env",
                "gymnasium:Acrobot-v1",
                "--max-steps",
                "1",
                "--horizon",
                "4",
                "--hiddens",
                "8",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.splitlines()[0] == "rlstack: " + defaults_notice(
        "gymnasium:Acrobot-v1", gymnasium_env("Acrobot-v1"), {"horizon": 4}
    )
    assert PRESETS["CartPole-v1"]["horizons_per_env_reset"] == -1


def test_a_toml_file_that_sets_the_run_sizes_gets_no_defaults_notice(tmp_path, capsys):
    (tmp_path / "run.toml").write_text(
        'env = "gymnasium:Acrobot-v1"\nnum_envs = 4\nhorizon = 8\nsgd_minibatch_size = 32\n'
        "num_sgd_iters = 2\nmax_steps = 1\n[model_config]\nhiddens = [8]\n"
    )
    assert main(["train", "-f", str(tmp_path / "run.toml"), "--no-compile"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert (
        first == "rlstack: no preset for gymnasium:Acrobot-v1: running the hyperparameters given."
    )


def test_eval_runs_a_cpu_stepped_env_at_its_own_default_number_of_envs(capsys):
    train = ["train", "--env", "gymnasium:CartPole-v1", "--max-steps", "1", "--no-compile"]
    assert main([*train, "--checkpoint-dir", "ck"]) == 0
    assert main(["eval", "ck/step-00000001.pt"]) == 0
    assert "rlstack: gymnasium:CartPole-v1, 8 envs, deterministic policy" in capsys.readouterr().out
