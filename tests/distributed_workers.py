"""Functions run in spawned processes by test_distributed.py (importable by name)."""

import os
import traceback

import torch
import torch.distributed as dist

from rlstack.core.config import AlgorithmConfig

SMALL = dict(num_envs=16, horizon=8, compile=False, model_config={"hiddens": (8,)}, num_sgd_iters=3)


def join(rank: int, world: int, init_file: str) -> None:
    os.environ["WORLD_SIZE"] = str(world)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)


def leave() -> None:
    """Both ranks finish their work before either tears the group down."""
    dist.barrier()
    dist.destroy_process_group()


def fixed_trajectory(num_envs: int):
    """The same trajectory on every rank: a seeded rollout of ``num_envs`` CartPoles."""
    from rlstack import random
    from rlstack.core.types import RolloutCarry
    from rlstack.envs import CartPole
    from rlstack.learn.rollout import make_rollout
    from rlstack.policy.distributions import Categorical
    from rlstack.policy.models import MLPModel
    from rlstack.policy.policy import Policy

    env = CartPole()
    torch.manual_seed(0)
    policy = Policy(MLPModel(env.observation_space, env.action_space, hiddens=(8,)), Categorical)
    params = policy.init_params()
    carry = RolloutCarry(*env.reset(random.key(0), num_envs), random.key(1))
    _, traj = make_rollout(env, policy, 8)(params, carry)
    return policy, params, traj


def update_config(num_envs: int) -> dict:
    return dict(
        num_envs=num_envs,
        horizon=8,
        normalize_advantages=False,
        num_sgd_iters=3,
        target_kl=0.05,
        desired_kl=0.002,
    )  # the adapted rate, from the KL averaged over ranks, is part of what must agree


def run_update(policy, params, traj, num_envs, reduce_grads=None):
    from rlstack import random
    from rlstack.learn.optimizer import make_optimizer
    from rlstack.learn.update import make_update

    config = update_config(num_envs)
    optimizer = make_optimizer(AlgorithmConfig(**config))
    update = make_update(policy, optimizer, AlgorithmConfig(**config), reduce_grads=reduce_grads)
    new_params, _, metrics = update(random.key(2), params, optimizer.init(params), traj)
    return new_params, metrics


def update_worker(rank: int, world: int, init_file: str, out: str) -> None:
    """Each rank updates on its half of the envs, gradients all-reduced."""
    import optree

    from rlstack.integrations.distributed import all_reduce_mean

    join(rank, world, init_file)
    policy, params, traj = fixed_trajectory(32)
    half = 32 // world
    mine = optree.tree_map(lambda x: x[:, rank * half : (rank + 1) * half], traj)
    new_params, metrics = run_update(policy, params, mine, half, reduce_grads=all_reduce_mean)
    torch.save(
        {"params": new_params, "sgd_steps": metrics["monitors/sgd_steps"]}, f"{out}/rank{rank}.pt"
    )
    leave()


def trainer_worker(
    rank: int, world: int, init_file: str, out: str, mode: str, kind: str = "mlp"
) -> None:
    """``fresh``: 3 steps, checkpoint, 2 more; ``resume``: from that checkpoint, 2 steps. ``kind``
    ``mlp``: a Trainer; ``gru``: a RecurrentTrainer (its hidden states are per rank, in the
    checkpoint).
    """
    import mlflow
    import optree

    from rlstack import RecurrentTrainer, Trainer
    from rlstack.envs import CartPoleV1
    from rlstack.shell.conditions import HitsUpperBound

    join(rank, world, init_file)
    mlflow.set_tracking_uri(f"sqlite:///{out}/mlflow.db")
    if mode == "fresh":
        if kind == "gru":
            trainer = RecurrentTrainer(
                CartPoleV1,
                seed=0,
                seq_len=4,
                **{**SMALL, "model_config": {"hidden_size": 8, "cell": "gru"}},
            )
        else:
            trainer = Trainer(CartPoleV1, seed=0, **SMALL)
        trainer.run(
            stop_conditions=[HitsUpperBound("algorithm/steps", 3)],
            checkpoint_every=3,
            checkpoint_dir=f"{out}/ck-{kind}",
        )
    else:
        trainer = Trainer.from_checkpoint(f"{out}/ck-{kind}/step-00000003.pt")
    trainer.run(stop_conditions=[HitsUpperBound("algorithm/steps", 5)])
    trainer.close()
    torch.save(
        {
            "params": trainer.algorithm.params,
            "run_id": trainer.run_id,
            "steps": trainer.algorithm.steps,
            "key": trainer.algorithm.key,
            "memory": optree.tree_leaves(trainer.algorithm.carry.memory),
        },
        f"{out}/{kind}-{mode}{rank}.pt",
    )
    leave()


def disagree_worker(rank: int, world: int, init_file: str, out: str) -> None:
    """Rank 1 is started with another learning rate."""
    from rlstack import Algorithm
    from rlstack.envs import CartPole

    join(rank, world, init_file)
    try:
        Algorithm(CartPole, optimizer_config={"lr": 1e-3 * (1 + rank)}, **SMALL)
        message = "no error"
    except ValueError as e:
        message = str(e)
    except Exception:
        message = traceback.format_exc()
    with open(f"{out}/rank{rank}.txt", "w") as f:
        f.write(message)
    leave()


def rank_trajectory(rank: int):
    """Each rank's own seeded 48-step rollout of 12 CartPole-v1s (a different key
    per rank, so different numbers of episodes end on each).
    """
    from rlstack import random
    from rlstack.envs import CartPoleV1
    from rlstack.learn.carry import reset_carry
    from rlstack.learn.rollout import make_rollout
    from rlstack.policy.distributions import Categorical
    from rlstack.policy.models import MLPModel
    from rlstack.policy.policy import Policy

    env = CartPoleV1()
    torch.manual_seed(0)
    policy = Policy(MLPModel(env.observation_space, env.action_space, hiddens=(8,)), Categorical)
    carry = reset_carry(random.key(10 + 7 * rank), env, 12)
    return make_rollout(env, policy, 48)(policy.init_params(), carry)[1]


def stats_worker(rank: int, world: int, init_file: str, out: str) -> None:
    """Each rank's rollout stats, then the stats reduced over ranks."""
    from rlstack.integrations import distributed
    from rlstack.learn.stats import trajectory_stats

    join(rank, world, init_file)
    own = {name: float(value) for name, value in trajectory_stats(rank_trajectory(rank)).items()}
    torch.save(
        {"own": own, "reduced": distributed.reduce_stats(own)}, os.path.join(out, f"stats{rank}.pt")
    )
    leave()
