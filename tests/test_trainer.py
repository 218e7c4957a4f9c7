import mlflow
from mlflow.tracking import MlflowClient

from rlstack import Trainer
from rlstack.conditions import HitsUpperBound, Plateaus
from rlstack.env import DiscreteDummyEnv

SMALL = dict(num_envs=32, horizon=8, model_config={"hiddens": (16,)}, compile=False)


def test_trainer_logs_params_once_and_metric_series_every_step():
    trainer = Trainer(DiscreteDummyEnv, experiment_name="unit", gamma=0.9, **SMALL)
    stats = trainer.run(stop_conditions=[HitsUpperBound("algorithm/steps", 3)], steps_per_eval=2)
    trainer.close()
    assert stats["algorithm/steps"] == 3 and stats["env/steps"] == 3 * 256
    run = MlflowClient().get_run(trainer.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["gamma"] == "0.9" and run.data.params["num_envs"] == "32"
    assert run.data.params["env"] == "DiscreteDummyEnv" and run.data.params["optimizer_cls"] == "Adam"
    history = MlflowClient().get_metric_history(trainer.run_id, "returns/mean")
    assert [m.step for m in history] == [256, 512, 768]
    for key in ("losses/policy", "losses/vf", "losses/entropy", "losses/total", "monitors/kl_div", "env/steps",
                "profiling/collect_ms", "profiling/step_ms", "memory/percent", "eval/returns/mean"):
        assert key in run.data.metrics, key
    assert len(MlflowClient().get_metric_history(trainer.run_id, "eval/returns/mean")) == 1
    assert MlflowClient().get_experiment(run.info.experiment_id).name == "unit"


def test_trainer_logs_into_an_active_run_without_ending_it():
    with mlflow.start_run() as run:
        trainer = Trainer(DiscreteDummyEnv, **SMALL)
        trainer.step()
        trainer.close()
        assert mlflow.active_run().info.run_id == run.info.run_id == trainer.run_id
    assert "losses/total" in MlflowClient().get_run(run.info.run_id).data.metrics


def test_run_stops_on_plateau_and_callbacks_and_eval_uses_env_config():
    trainer = Trainer(DiscreteDummyEnv, **SMALL)
    seen = []
    stats = trainer.run(
        stop_conditions=[Plateaus("env/resets", patience=2, rtol=0.0)],
        callbacks=[lambda s: seen.append(s["algorithm/steps"])],
    )
    assert stats["algorithm/steps"] == 3 and seen == [1, 2, 3]
    stats = trainer.run(callbacks=[lambda s: True])
    assert stats["algorithm/steps"] == 4
    eval_stats = trainer.eval(env_config={"bounds": 0.5})
    assert eval_stats["eval/rewards/min"] >= -0.5 - 8
    trainer.close()


def test_learning_curve_plot_is_a_png_of_the_run(tmp_path):
    from rlstack.plotting import plot_learning_curve

    trainer = Trainer(DiscreteDummyEnv, **SMALL)
    trainer.run(stop_conditions=[HitsUpperBound("algorithm/steps", 3)], steps_per_eval=1)
    trainer.close()
    path = plot_learning_curve(trainer.run_id, tmp_path / "curve.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    import pytest

    with pytest.raises(ValueError, match="has none of the metrics"):
        plot_learning_curve(trainer.run_id, tmp_path / "x.png", metrics=["no/such"])
