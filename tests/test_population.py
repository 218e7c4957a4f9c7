"""Populations: K runs in one process, vmapped; member k is a single run with its seed and "
"hyperparameters.
"""

import math

import mlflow
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient
from trees import assert_trees_close, assert_trees_equal

from rlstack import Algorithm, Population, Trainer, grid, optim
from rlstack.cli import main
from rlstack.envs import CartPole
from rlstack.shell.conditions import HitsUpperBound

SMALL = dict(
    num_envs=16,
    horizon=8,
    sgd_minibatch_size=64,
    num_sgd_iters=2,
    compile=False,
    model_config={"hiddens": (8,)},
)
HPARAMS = dict(
    entropy_coeff=[0.0, 0.01, 0.02],
    clip_param=[0.1, 0.2, 0.3],
    gamma=[0.9, 0.95, 0.99],
    gae_lambda=[0.8, 0.9, 1.0],
)
LRS = [1e-3, 3e-3, 1e-2]


def member_hparams(k):
    return {name: values[k] for name, values in HPARAMS.items()}


def population(**kwargs):
    return Population(
        CartPole,
        num_members=3,
        seed=[5, 6, 7],
        optimizer_config={"lr": LRS},
        **HPARAMS,
        **{**SMALL, **kwargs},
    )


def train(algo, updates):
    for _ in range(updates):
        algo.collect()
        algo.step()
    return algo


def test_member_k_trains_as_a_single_run_with_its_seed_and_hyperparameters():
    pop = train(population(), 4)
    for k in range(3):
        single = train(
            Algorithm(
                CartPole, seed=5 + k, optimizer_config={"lr": LRS[k]}, **member_hparams(k), **SMALL
            ),
            4,
        )
        # vmap runs batched matrix products: equal to float rounding, not bit for bit.
        assert_trees_close(pop.member(k).params, single.params, atol=1e-5, rtol=1e-5)
        assert_trees_close(pop.member(k).opt_state, single.opt_state, atol=1e-5, rtol=1e-4)


def test_a_member_does_not_depend_on_the_others_bit_for_bit():
    """Eager: member 1 of a 3-member population is the same whatever the other two are.

    Bit for bit, whatever the other two members' seeds and hyperparameters. (Against a
    1-member population it is equal to float rounding only: on some CPUs
    (AVX-512) the batched matmuls of 3 and of 1 members round differently.)
    """
    pop = train(population(), 3)
    others = {
        name: [values[0] * 0.5, values[1], values[2] * 0.5] for name, values in HPARAMS.items()
    }
    changed = train(
        Population(
            CartPole,
            num_members=3,
            seed=[50, 6, 70],
            optimizer_config={"lr": [3e-2, LRS[1], 3e-4]},
            **others,
            **SMALL,
        ),
        3,
    )
    assert not torch.equal(
        pop.params["actor_head.weight"][0], changed.params["actor_head.weight"][0]
    )
    assert_trees_equal(
        {n: v[1] for n, v in pop.params.items()}, {n: v[1] for n, v in changed.params.items()}
    )
    alone = train(
        Population(
            CartPole,
            num_members=1,
            seed=[6],
            optimizer_config={"lr": LRS[1]},
            **member_hparams(1),
            **SMALL,
        ),
        3,
    )
    assert_trees_close(
        {n: v[1] for n, v in pop.params.items()},
        {n: v[0] for n, v in alone.params.items()},
        rtol=1e-5,
        atol=1e-7,
    )


def test_members_with_different_hyperparameters_differ_and_same_ones_with_one_seed_agree():
    pop = train(
        Population(
            CartPole,
            num_members=3,
            seed=[1, 1 + 100, 1 + 200],
            entropy_coeff=[0.0, 0.0, 0.5],
            **SMALL,
        ),
        2,
    )
    assert not torch.equal(pop.params["actor_head.weight"][0], pop.params["actor_head.weight"][2])
    same = train(
        Population(CartPole, num_members=2, seed=[3, 4], clip_param=[0.2, 0.2], **SMALL), 2
    )
    twin = train(
        Population(CartPole, num_members=2, seed=[9, 3], clip_param=[0.2, 0.2], **SMALL), 2
    )
    assert_trees_equal(
        {n: v[0] for n, v in same.params.items()}, {n: v[1] for n, v in twin.params.items()}
    )


def test_stats_come_back_per_member_and_coefficients_are_each_members():
    pop = population()
    collected, stepped = pop.collect(), pop.step()
    assert len(collected) == len(stepped) == 3
    assert [s["coefficients/lr"] for s in stepped] == LRS
    assert [s["coefficients/entropy"] for s in stepped] == HPARAMS["entropy_coeff"]
    assert all(math.isfinite(s["losses/total"]) for s in stepped)
    assert len(pop.evaluate()) == 3


def test_a_frozen_member_keeps_its_state_while_the_others_train():
    pop = train(population(), 1)
    before = {n: v[1].clone() for n, v in pop.params.items()}
    key, carry_obs = pop.key[1].clone(), pop.carry.obs[1].clone()
    pop.members.freeze(1, "stop condition")
    train(pop, 2)
    assert_trees_equal({n: v[1] for n, v in pop.params.items()}, before)
    assert torch.equal(pop.key[1], key) and torch.equal(pop.carry.obs[1], carry_obs)
    assert pop.members.steps == [3, 1, 3]
    assert pop.member(1).steps == 1


def test_a_member_whose_update_is_not_finite_is_frozen_with_its_last_good_state():
    pop = train(population(), 1)
    before = {n: v[2].clone() for n, v in pop.params.items()}
    pop.collect()
    rewards = pop.trajectory.rewards.clone()
    rewards[2] = float("nan")
    pop.trajectory = pop.trajectory._replace(rewards=rewards)
    stats = pop.step()
    assert pop.members.stopped[2].startswith("Non-finite") and pop.members.stopped[:2] == [
        None,
        None,
    ]
    assert not math.isfinite(stats[2]["losses/total"])
    assert_trees_equal({n: v[2] for n, v in pop.params.items()}, before)
    assert pop.members.active.tolist() == [True, True, False]


def test_a_population_checkpoint_resumes_exactly(tmp_path):
    pop = train(population(), 2)
    pop.collect()  # an uncollected trajectory travels too
    pop.members.freeze(0, "Non-finite losses/total=nan at step 3.")  # for good
    pop.members.freeze(1, "stop condition")  # for one Trainer.run only: not stored
    path = pop.save_checkpoint(tmp_path / "pop.pt")
    resumed = Population.from_checkpoint(path)
    assert (
        resumed.members.stopped == [pop.members.stopped[0], None, None]
        and resumed.member_lrs == LRS
        and resumed.seeds == [5, 6, 7]
    )
    pop.members.unfreeze(1)
    pop.step(), resumed.step()
    train(pop, 1), train(resumed, 1)
    assert_trees_equal(pop.params, resumed.params)
    assert_trees_equal(pop.opt_state, resumed.opt_state)
    # One loader: the checkpoint decides the kind of run, whichever class loads it.
    assert Algorithm.from_checkpoint(path).num_members == 3
    single = Algorithm(CartPole, **SMALL).save_checkpoint(tmp_path / "one.pt")
    assert Population.from_checkpoint(single).num_members is None


def test_a_member_taken_out_checkpoints_resumes_and_continues_as_in_the_population(tmp_path):
    pop = train(population(), 2)
    member = pop.member(1)
    assert member.config.clip_param == 0.2 and member.seed == 6 and member.steps == 2
    path = member.save_checkpoint(tmp_path / "member.pt")
    resumed = Algorithm.from_checkpoint(path)
    train(member, 2), train(resumed, 2), train(pop, 2)
    assert_trees_equal(member.params, resumed.params)
    assert_trees_close(
        member.params, {n: v[1] for n, v in pop.params.items()}, atol=1e-5, rtol=1e-5
    )
    with pytest.raises(ValueError, match=r"`k` must be a member index in \[0, 3\)"):
        pop.member(3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_members=0), r"`num_members` must be an int >= 1, got 0"),
        (
            dict(num_members=2, entropy_coeff=[0.0, 0.1, 0.2]),
            r"`entropy_coeff` has 3 values for num_members=2",
        ),
        (
            dict(num_members=3, gamma=[0.9, 1.5, 0.99]),
            r"member 1: `gamma` must be in \[0, 1\], got 1.5",
        ),
        (dict(num_members=2, clip_param=[0.2, -0.1]), r"member 1: `clip_param` must be >= 0.0"),
        (dict(num_members=2, optimizer_config={"lr": [1e-3, -1.0]}), r"member 1: .*lr"),
        (dict(num_members=2, horizon=[8, 16]), r"`horizon` cannot differ across members"),
        (dict(num_members=2, seed=[3, 3]), r"`seed` must give each member its own seed"),
        (dict(num_members=2, seed=[3]), r"`seed` must be an int, None or a list of 2 ints"),
        (
            dict(
                num_members=2,
                entropy_coeff=[0.0, 0.1],
                entropy_coeff_schedule=[(0, 0.1), (100, 0.0)],
            ),
            r"per-member `entropy_coeff` values and an `entropy_coeff_schedule` exclude each other",
        ),
    ],
)
def test_bad_population_arguments_are_refused_before_anything_is_built(
    kwargs, message, monkeypatch
):
    monkeypatch.setattr(CartPole, "reset", lambda *a, **k: pytest.fail("an env was built"))
    with pytest.raises((ValueError, TypeError), match=message):
        Population(CartPole, **{**SMALL, **kwargs})


def test_a_stateful_env_is_refused_with_a_clear_error():
    from test_envs import LegacyDiscreteDummyEnv

    with pytest.raises(ValueError, match="A population needs a pure env"):
        Population(LegacyDiscreteDummyEnv, num_members=2, **SMALL)


@given(
    st.dictionaries(
        st.sampled_from(["lr", "gamma", "clip_param"]),
        st.lists(st.floats(0.1, 0.9), min_size=1, max_size=3),
        min_size=1,
    )
)
@settings(max_examples=25, deadline=None)
def test_grid_is_the_cartesian_product_first_name_slowest(values):
    import itertools

    result = grid(**values)
    combos = list(itertools.product(*values.values()))
    assert all(len(v) == len(combos) for v in result.values())
    assert [tuple(result[n][i] for n in values) for i in range(len(combos))] == combos


def test_trainer_logs_a_parent_run_and_one_nested_run_per_member():
    trainer = Trainer(
        CartPole,
        num_members=2,
        run_name="sweep",
        seed=3,
        entropy_coeff=[0.0, 0.01],
        optimizer_config={"lr": [1e-3, 3e-4]},
        **SMALL,
    )
    stats = trainer.run(stop_conditions=[HitsUpperBound("algorithm/steps", 2)], steps_per_eval=1)
    trainer.close()
    client = MlflowClient()
    parent = client.get_run(trainer.run_id)
    assert parent.info.status == "FINISHED" and parent.data.params["entropy_coeff"] == "[0.0, 0.01]"
    assert parent.data.params["optimizer/lr"] == "[0.001, 0.0003]"
    assert stats["population/active"] == 2 and "eval/returns/mean" in stats
    children = [client.get_run(r) for r in trainer.member_run_ids]
    assert [c.info.run_name for c in children] == ["sweep/member-0", "sweep/member-1"]
    for k, child in enumerate(children):
        assert (
            child.data.tags["mlflow.parentRunId"] == trainer.run_id
            and child.info.status == "FINISHED"
        )
        assert child.data.params["entropy_coeff"] == str([0.0, 0.01][k]) and child.data.params[
            "seed"
        ] == str(3 + k)
        assert float(child.data.params["optimizer/lr"]) == [1e-3, 3e-4][k]
        history = client.get_metric_history(child.info.run_id, "returns/mean")
        assert [m.step for m in history] == [128, 256]
        assert history[-1].value == trainer.member_stats[k]["returns/mean"]
    mean = client.get_metric_history(trainer.run_id, "returns/mean")[-1].value
    assert mean == pytest.approx(sum(s["returns/mean"] for s in trainer.member_stats) / 2)
    lowest = client.get_metric_history(trainer.run_id, "returns/min")[
        -1
    ].value  # combined by its rule, not averaged
    assert lowest == pytest.approx(min(s["returns/min"] for s in trainer.member_stats))


@pytest.mark.parametrize("mode, steps", [("each", [2, 3]), ("any", [2, 2]), ("mean", [3, 3])])
def test_member_stop_applies_conditions_per_member_to_any_or_to_the_mean(mode, steps):
    class StopMemberAt:
        """Stops member 0 after step 2 and member 1 after step 3 (told apart by their lr)."""

        def __call__(self, stats):
            limit = 2 if stats["coefficients/lr"] == 1e-3 else 3
            return stats["algorithm/steps"] >= (limit if mode != "mean" else 3)

    trainer = Trainer(CartPole, num_members=2, optimizer_config={"lr": [1e-3, 2e-3]}, **SMALL)
    trainer.run(stop_conditions=[StopMemberAt()], member_stop=mode)
    trainer.close()
    assert trainer.algorithm.members.steps == steps
    assert bool(trainer.algorithm.members.active.all())  # conditions stop members for one run only
    with pytest.raises(ValueError, match="`member_stop` must be 'each', 'any' or 'mean'"):
        trainer.run(member_stop="all")


def test_trainer_resumes_a_population_into_the_same_parent_and_member_runs(tmp_path):
    trainer = Trainer(CartPole, num_members=2, **SMALL)
    trainer.run(
        stop_conditions=[HitsUpperBound("algorithm/steps", 2)],
        checkpoint_every=2,
        checkpoint_dir=tmp_path,
    )
    trainer.close()
    resumed = Trainer.from_checkpoint(next(tmp_path.glob("*.pt")))
    assert resumed.run_id == trainer.run_id and resumed.member_run_ids == trainer.member_run_ids
    assert resumed.step()["algorithm/steps"] == 3
    resumed.close()
    with pytest.raises(ValueError, match="`member` must name the member to export"):
        resumed.export_policy(tmp_path / "x")


def test_cli_trains_a_population_with_one_lr_per_member(tmp_path, capsys):
    code = main(
        [
            "train",
            "--env",
            "CartPole",
            "--num-members",
            "2",
            "--lr",
            "1e-3,3e-4",
            "--max-steps",
            "2",
            "--num-envs",
            "16",
            "--horizon",
            "8",
            "--no-compile",
            "--hiddens",
            "8",
            "--checkpoint-dir",
            str(tmp_path / "ck"),
            "--save",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["member-0", "member-1"]
    runs = MlflowClient().search_runs([mlflow.get_experiment_by_name("Default").experiment_id])
    assert sorted(r.data.params["optimizer_config"] for r in runs if "member" in r.data.params) == [
        '{"lr": 0.0003}',
        '{"lr": 0.001}',
    ]
    assert main(["train", "--env", "CartPole", "--lr", "1e-3,3e-4", "--max-steps", "1"]) == 2
    assert "--lr has 2 values: one value per member needs --num-members" in capsys.readouterr().err
    checkpoint = str(next((tmp_path / "ck").glob("*.pt")))
    assert main(["export", checkpoint, str(tmp_path / "one"), "--member", "1"]) == 0
    assert main(["eval", checkpoint, "--member", "0", "--num-envs", "8"]) == 0
    assert main(["export", checkpoint, str(tmp_path / "two")]) == 2
    assert "holds a population of 2 members: pick one with --member K" in capsys.readouterr().err


def test_cli_reads_a_population_from_a_toml_file(tmp_path):
    config = tmp_path / "sweep.toml"
    config.write_text(
        'env = "CartPole"\nnum_members = 2\nentropy_coeff = [0.0, 0.01]\nnum_envs = 16\nhorizon = '
        "8\n"
        "max_steps = 1\ncompile = false\n[model_config]\nhiddens = [8]\n[optimizer_config]\nlr = "
        "[1e-3, 3e-4]\n"
    )
    assert main(["train", "-f", str(config), "--checkpoint-dir", str(tmp_path / "ck")]) == 0
    population = Population.from_checkpoint(next((tmp_path / "ck").glob("*.pt")))
    assert population.member_lrs == [1e-3, 3e-4] and [
        c.entropy_coeff for c in population.member_config
    ] == [0.0, 0.01]


@pytest.mark.slow
def test_a_compiled_population_matches_the_eager_one():
    eager = train(population(), 2)
    compiled = train(population(compile=True), 2)
    assert_trees_close(compiled.params, eager.params, atol=1e-4, rtol=1e-4)


def test_grid_output_goes_straight_into_a_population_lr_included():
    pop = Population(
        CartPole, num_members=4, **grid(lr=[1e-3, 3e-4], clip_param=[0.1, 0.3]), **SMALL
    )
    assert pop.member_lrs == [1e-3, 1e-3, 3e-4, 3e-4]
    assert [c.clip_param for c in pop.member_config] == [0.1, 0.3, 0.1, 0.3]
    assert optim.learning_rate(pop.opt_state).tolist() == pytest.approx([1e-3, 1e-3, 3e-4, 3e-4])
    with pytest.raises(ValueError, match="Give the learning rate once"):
        Population(CartPole, num_members=2, lr=1e-3, optimizer_config={"lr": 1e-3}, **SMALL)
    with pytest.raises(ValueError, match="grid: `horizon` cannot differ across members"):
        grid(horizon=[8, 16])


def test_episodic_members_with_normalisation_and_their_own_gamma_train_as_single_runs():
    from rlstack.envs import CartPoleV1

    config = dict(
        SMALL, horizon=32, sgd_minibatch_size=128, normalize_obs=True, normalize_rewards=True
    )
    pop = train(Population(CartPoleV1, num_members=2, seed=[4, 5], gamma=[0.9, 0.99], **config), 3)
    for k in range(2):
        single = train(Algorithm(CartPoleV1, seed=4 + k, gamma=[0.9, 0.99][k], **config), 3)
        assert_trees_close(pop.member(k).params, single.params, atol=1e-5, rtol=1e-5)
        assert_trees_close(pop.member(k).carry.norm, single.carry.norm, atol=1e-5, rtol=1e-5)
    assert pop.carry.episode.returns.shape == (2, 16)  # each member's episodes in progress
