"""Envs that follow rsl_rl's VecEnv protocol (Isaac Lab, ManiSkill3, mjlab)
train with rlstack unchanged: flags, bootstrapping, observation groups,
episode logs, devices, the CLI and an asymmetric actor-critic.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rsl_rl_envs import ProtocolPendulum, Scripted

from rlstack import Algorithm, Trainer, random
from rlstack.integrations.export import ExportedPolicy, export_policy
from rlstack.integrations.rsl_rl_adapter import RslRlEnv, observation_groups, rsl_rl_env
from rlstack.policy.models import MLPModel

SMALL = dict(
    num_envs=16, horizon=8, sgd_minibatch_size=64, num_sgd_iters=1, model_config={"hiddens": (8,)}
)


def _steps(env: RslRlEnv, n: int):
    state, obs = env.reset(random.key(0), env.num_envs)
    out = []
    for _ in range(n):
        state, obs, reward, terminated, truncated = env.step(
            random.key(1), state, torch.zeros(env.num_envs, 2)
        )
        out.append((env.final_observation(state), obs, reward, terminated, truncated))
    return out


def test_dones_split_into_terminations_and_time_outs_a_time_out_bootstrapped_from_the_obs_it_left():
    env = RslRlEnv(Scripted(3, ends={1: [(0, False), (2, True)]}))
    (_, obs1, _, term1, trunc1), (final2, obs2, reward2, term2, trunc2) = _steps(env, 2)
    assert (
        not term1.any()
        and not trunc1.any()
        and reward2.dtype == torch.float32
        and reward2.shape == (3,)
    )
    assert term2.tolist() == [True, False, False] and trunc2.tolist() == [False, False, True]
    assert obs2["policy"][:, 0].tolist() == [-1.0, 2.0, -1.0]  # the ended envs already reset
    # Without the true final observation the ended envs' final one is s_t, the observation the
    # ending action was taken from (rsl_rl's r + gamma * V(s_t)); the others' is the new one.
    assert final2["policy"][:, 0].tolist() == [1.0, 2.0, 1.0]


def test_a_wrapper_that_gives_the_true_final_observation_is_bootstrapped_from_it():
    env = RslRlEnv(Scripted(3, ends={1: [(2, True)]}, final_obs=True))
    final2 = _steps(env, 2)[1][0]
    assert final2["policy"][:, 0].tolist() == [
        2.0,
        2.0,
        2.0,
    ]  # env 2's true last observation, step 2


@pytest.mark.parametrize("tensordict", [True, False])
def test_observation_groups_become_a_dict_space_from_a_tensordict_or_a_dict(tensordict):
    env = RslRlEnv(ProtocolPendulum(4, privileged=True, tensordict=tensordict))
    assert list(env.observation_space) == ["policy", "critic"]
    assert env.observation_space["policy"].shape == (3,) and env.observation_space[
        "critic"
    ].shape == (5,)
    assert env.action_space.shape == (1,) and not env.action_space.bounded


def test_a_real_tensordict_is_read_as_its_groups():
    tensordict = pytest.importorskip("tensordict")
    td = tensordict.TensorDict(
        {"policy": torch.zeros(4, 3), "critic": torch.ones(4, 5)}, batch_size=[4]
    )
    groups = observation_groups(td)
    assert set(groups) == {"policy", "critic"} and groups["critic"].shape == (4, 5)


def test_rsl_rl_2_observations_and_extras_are_read_as_groups():
    groups = observation_groups((torch.zeros(4, 3), {"observations": {"critic": torch.ones(4, 5)}}))
    assert set(groups) == {"policy", "critic"}
    with pytest.raises(TypeError, match=r"observations\['policy'\] must be a tensor"):
        observation_groups({"policy": [1, 2]})


def test_an_env_on_another_device_than_the_policy_is_refused_naming_both():
    vec_env = ProtocolPendulum(4)
    vec_env.device = torch.device("cuda:1")  # where the simulator says it runs
    with pytest.raises(
        ValueError, match=r"runs on cuda:1, the policy on cpu: pass device='cuda:1'"
    ):
        Algorithm(RslRlEnv(vec_env), **{**SMALL, "num_envs": 4, "sgd_minibatch_size": 32})


def test_an_object_missing_the_protocol_is_refused_naming_what_it_lacks():
    with pytest.raises(TypeError, match=r"has no \['num_actions', 'get_observations'\]"):
        RslRlEnv(type("Half", (), {"num_envs": 4, "device": "cpu", "step": None})())


def test_extras_log_is_averaged_over_the_rollouts_steps_and_logged_under_rsl_rls_names():
    vec_env = ProtocolPendulum(16)
    vec_env.env.max_episode_steps = (
        3  # every env's episode ends every 3 steps: 2 or 3 times in an 8-step rollout
    )
    algo = Algorithm(RslRlEnv(vec_env), **SMALL)
    vec_env.logged.clear()
    stats = algo.collect()
    assert len(vec_env.logged) in (2, 3)
    assert (
        stats["Episode/resets"] == 16.0
    )  # a key without "/" goes under Episode/, as rsl_rl logs it
    expected = torch.stack([log["Episode_Reward/swing"] for log in vec_env.logged]).mean().item()
    assert stats["Episode_Reward/swing"] == pytest.approx(
        expected, rel=1e-6
    )  # the mean over the steps reporting it
    vec_env.env.max_episode_steps = (
        1000  # no episode ends in the next rollout: nothing to report, nothing kept
    )
    assert not any(k.startswith("Episode") for k in algo.collect())


def test_the_critic_only_group_never_reaches_the_actors_params():
    env = RslRlEnv(ProtocolPendulum(8, privileged=True))
    model = MLPModel(
        env.observation_space, env.action_space, hiddens=(8,), obs_groups={"actor": ["policy"]}
    )
    assert model.actor[0].in_features == 3 and model.critic[0].in_features == 3 + 5
    obs = {"policy": torch.randn(8, 3), "critic": torch.randn(8, 5, requires_grad=True)}
    (mean, log_std), value = model(obs)
    (grad_of_actor,) = torch.autograd.grad(
        (mean.sum() + log_std.sum()), obs["critic"], allow_unused=True
    )
    assert grad_of_actor is None  # the actor's outputs do not depend on the critic's group at all
    (grad_of_critic,) = torch.autograd.grad(value.sum(), obs["critic"])
    assert grad_of_critic.abs().sum() > 0


def test_bad_obs_groups_are_refused_naming_the_set_and_the_keys():
    env = RslRlEnv(ProtocolPendulum(4, privileged=True))
    with pytest.raises(
        ValueError,
        match=r"`obs_groups\['actor'\]` must be a non-empty list of the observation's keys",
    ):
        MLPModel(env.observation_space, env.action_space, obs_groups={"actor": ["privileged"]})
    with pytest.raises(ValueError, match=r"`obs_groups` has sets \['student'\]"):
        MLPModel(env.observation_space, env.action_space, obs_groups={"student": ["policy"]})


def test_each_group_is_normalised_on_its_own_and_a_trainer_runs_with_asymmetric_groups(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    env = RslRlEnv(ProtocolPendulum(16, privileged=True))
    config = {
        **SMALL,
        "normalize_obs": True,
        "desired_kl": 0.01,
        "model_config": {
            "hiddens": (8,),
            "obs_groups": {"actor": ["policy"], "critic": ["policy", "critic"]},
        },
    }
    with Trainer(env, **config) as trainer:
        stats = trainer.step()
        moments = trainer.algorithm.obs_moments
        assert set(moments) == {"policy", "critic"} and moments["critic"].mean.shape == (5,)
        assert torch.isfinite(torch.tensor(stats["losses/total"]))
        obs = {"policy": torch.randn(2, 3), "critic": torch.randn(2, 5)}
        action = trainer.algorithm.predict(obs)
        assert action.shape == (2, 1)
        # Acting reads the actor's groups alone: the critic's privileged one may be left out.
        torch.testing.assert_close(trainer.algorithm.predict({"policy": obs["policy"]}), action)
        numpy_obs = {"policy": obs["policy"].numpy()}
        np.testing.assert_allclose(trainer.algorithm.predict(numpy_obs), action.numpy(), atol=1e-6)
        # Each group standardised by its own statistics: the same as normalising the groups one by
        # one.
        from rlstack.core.normalization import normalize

        seen = normalize(moments, obs)
        for group in obs:
            torch.testing.assert_close(seen[group], normalize(moments[group], obs[group]))
        assert not torch.allclose(
            seen["critic"][:, :3], seen["policy"]
        )  # its own statistics, not policy's
        path = export_policy(
            trainer.algorithm, tmp_path / "export"
        )  # the statistics of both groups travel along
        torch.testing.assert_close(torch.as_tensor(ExportedPolicy(path).predict(obs)), action)


def test_a_factory_builds_the_env_for_the_runs_num_envs_and_device():
    made = []

    def make(num_envs, device):
        made.append((num_envs, device))
        return ProtocolPendulum(num_envs, device)

    factory = rsl_rl_env(make)
    algo = Algorithm(factory, **SMALL)
    assert made == [(16, "cpu")] and isinstance(algo.env, RslRlEnv)
    assert (
        factory.build_env(num_envs=16, device="cpu") is algo.env and len(made) == 1
    )  # one simulator per process
    with pytest.raises(ValueError, match=r"made an env of 4 envs"):
        Algorithm(rsl_rl_env(lambda num_envs, device: ProtocolPendulum(4, device)), **SMALL)


def test_the_cli_trains_a_module_factory_behind_the_protocol(tmp_path):
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
        ),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlstack",
            "train",
            "--env",
            "rsl_rl_envs:make_pendulum",
            "--max-steps",
            "2",
            "--num-envs",
            "16",
            "--horizon",
            "8",
            "--sgd-minibatch-size",
            "64",
            "--hiddens",
            "8",
            "--no-compile",
            "--log-every-s",
            "0",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "steps/s" in result.stdout


@pytest.mark.slow
def test_pendulum_behind_the_protocol_trains_to_gymnasiums_target():
    """Rlstack's Pendulum-v1 behind rsl_rl's VecEnv, with its preset (each
    observation group normalised on its own, unbounded Gaussian actions
    that the env clips, as under rsl_rl) and, as under rsl_rl, no resets
    but the env's own: the deterministic policy reaches gymnasium's target
    of -200, checked on the pure env.
    """
    from rlstack.envs import PendulumV1
    from rlstack.presets import PRESETS

    preset = PRESETS["Pendulum-v1"]
    algo = Algorithm(
        RslRlEnv(ProtocolPendulum(preset["num_envs"], privileged=True)),
        seed=0,
        compile=False,
        **{
            **preset,
            "horizons_per_env_reset": -1,  # the VecEnv resets its envs itself
            "model_config": {**preset["model_config"], "obs_groups": {"actor": ["policy"]}},
        },
    )

    def act(obs):  # the deployed actor sees the policy group only; the critic's is never read by it
        return algo.predict({"policy": obs, "critic": torch.full((obs.shape[0], 5), 1e6)})

    assert PendulumV1().success(act, num_envs=256)["success/episode_return"] < -200.0  # untrained
    for _ in range(50):
        algo.collect()
        algo.step()
    assert PendulumV1().success(act, num_envs=256)["success/episode_return"] >= -200.0


def test_random_episode_starts_reaches_the_adapter_from_env_config_and_the_flag():
    from rlstack.cli.arguments import build_parser
    from rlstack.cli.config import train_config

    made = []

    def make(num_envs, device, **options):
        made.append(options)
        return ProtocolPendulum(num_envs, device)

    env = rsl_rl_env(make).build_env(num_envs=16, config={"random_episode_starts": True})
    assert env.random_episode_starts and made == [{}]  # the adapter's option, not the factory's
    with pytest.raises(TypeError, match="env_config.random_episode_starts must be true or false"):
        rsl_rl_env(make).build_env(num_envs=16, config={"random_episode_starts": "yes"})
    parser = build_parser()
    flags = ["train", "--env", "rsl_rl_envs:make_pendulum", "--random-episode-starts"]
    spec = train_config(parser.parse_args(flags))
    assert spec.trainer["env_config"] == {"random_episode_starts": True}
    with pytest.raises(ValueError, match=r"--random-episode-starts is for rsl_rl envs"):
        train_config(parser.parse_args(["train", "--env", "CartPole", "--random-episode-starts"]))


def test_a_checkpoint_rebuilds_its_rsl_rl_factory_without_being_told_the_env(tmp_path, capsys):
    from rsl_rl_envs import make_pendulum

    from rlstack.cli import main
    from rlstack.integrations.checkpoint import CheckpointError

    algo = Algorithm(rsl_rl_env(make_pendulum), **SMALL)
    path = algo.save_checkpoint(tmp_path / "step.pt")
    loaded = Algorithm.from_checkpoint(path)  # make_pendulum imported again, by name
    assert isinstance(loaded.env, RslRlEnv) and loaded.env_spec.import_spec == (
        "rsl_rl_envs:make_pendulum"
    )
    assert main(["eval", str(path), "--num-envs", str(SMALL["num_envs"])]) == 0
    assert "success/" in capsys.readouterr().out
    local = Algorithm(rsl_rl_env(lambda num_envs, device: make_pendulum(num_envs, device)), **SMALL)
    with pytest.raises(CheckpointError, match=r"cannot be imported here .*pass env="):
        Algorithm.from_checkpoint(local.save_checkpoint(tmp_path / "local.pt"))
