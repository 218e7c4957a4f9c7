"""Every public name of rlstack 1.1.0 is present in rlstack 2 or listed, with
what replaces it, in docs/guides/from-1x.md; every replacement imports.
"""

import importlib
import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guides" / "from-1x.md"

# The public names of rlstack 1.1.0's modules (its sdist's __init__ imports and
# module-level definitions, underscores left out), as 1.x code imports them.
NAMES_1X = {
    "rlstack": "Algorithm GenericAlgorithmBase RecurrentAlgorithm Categorical Distribution Normal "
    "SquashedNormal Env "
    "EnvFactory GenericEnv DefaultContinuousModel DefaultContinuousRecurrentModel "
    "DefaultDiscreteModel "
    "DefaultDiscreteRecurrentModel GenericModel GenericModelBase GenericRecurrentModel Model "
    "ModelFactory "
    "RecurrentModel RecurrentModelFactory GenericPolicyBase MLflowPolicyModel "
    "MLflowRecurrentPolicyModel "
    "Policy RecurrentPolicy GenericTrainerBase RecurrentTrainer Trainer",
    "rlstack.env": "DataKeys Device Env EnvFactory GenericEnv DummyEnv ContinuousDummyEnv "
    "DiscreteDummyEnv",
    "rlstack.conditions": "TrainStatKey TrainStats Condition And HitsLowerBound HitsUpperBound "
    "Plateaus "
    "StopsDecreasing StopsIncreasing",
    "rlstack.schedulers": "ScheduleKind Scheduler ConstantScheduler InterpScheduler StepScheduler "
    "EntropyScheduler "
    "LRScheduler",
    "rlstack.policies": "GenericPolicyBase MLflowPolicyModel Policy MLflowRecurrentPolicyModel "
    "RecurrentPolicy",
    "rlstack.models": "GenericModelBase DefaultContinuousModel DefaultDiscreteModel GenericModel "
    "Model ModelFactory "
    "DefaultContinuousRecurrentModel DefaultDiscreteRecurrentModel GenericRecurrentModel "
    "RecurrentModel RecurrentModelFactory",
    "rlstack.distributions": "assert_1d_spec Distribution TorchDistributionWrapper Categorical "
    "Normal SquashedNormal",
    "rlstack.nn": "binary_mask_to_float_mask float_mask_to_binary_mask "
    "generalized_advantage_estimate "
    "mask_from_lengths masked_avg masked_categorical_sample masked_log_softmax masked_max "
    "ppo_losses "
    "skip_connection MLP CrossAttention Module PerceiverIOLayer PerceiverLayer PositionalEmbedding "
    "SelfAttention SelfAttentionStack SequentialSkipConnection SquaredReLU get_activation",
    "rlstack.views": "DataKeys ViewKind ViewMethod View pad_last_sequence pad_whole_sequence "
    "rolling_window "
    "RollingWindow PaddedRollingWindow ViewRequirement",
}


def _table() -> dict[str, str]:
    """``{1.x dotted name: replacement cell}`` from the guide's names table."""
    rows = re.findall(r"^\| `(rlstack[\w.]*)` \| (.+) \|$", GUIDE.read_text(), flags=re.MULTILINE)
    return dict(rows)


def _resolve(dotted: str):
    """The object a dotted name names (a module, or an attribute of one)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def _present(module: str, name: str) -> bool:
    try:
        return hasattr(importlib.import_module(module), name)
    except ImportError:
        return False


@pytest.mark.parametrize("module", list(NAMES_1X))
def test_every_1x_name_is_present_or_listed_with_its_replacement(module):
    table = _table()
    missing = [
        name
        for name in NAMES_1X[module].split()
        if not _present(module, name) and f"{module}.{name}" not in table
    ]
    assert not missing, f"{module}: neither present nor in {GUIDE.name}: {missing}"


def test_a_listed_name_is_really_missing_and_its_replacements_import():
    for old, cell in _table().items():
        module, _, name = old.rpartition(".")
        if module in NAMES_1X:
            assert not _present(module, name), f"{old} is present: drop its row from {GUIDE.name}"
        replacements = re.findall(r"`((?:rlstack|torch)\.[\w.]+)`", cell)
        assert replacements, f"{old}: the row names no replacement"
        for new in replacements:
            _resolve(new)


def test_1x_scheduler_and_recurrent_policy_names_import_as_1x_code_writes_them():
    from rlstack import RecurrentPolicy
    from rlstack.schedulers import EntropyScheduler, LRScheduler  # noqa: F401

    assert callable(RecurrentPolicy.init_states)


def _behaviour_table(text: str) -> str:
    start = text.index("| rlstack 1.x | rlstack 2 | what to write instead |")
    return text[start : text.index("\n\n", start)]


def test_the_guide_tables_the_deliberate_differences_and_the_readme_links_it():
    readme = (GUIDE.parents[2] / "README.md").read_text()
    assert "(docs/guides/from-1x.md)" in readme
    assert "| rlstack 1.x | rlstack 2 | what to write instead |" not in readme  # one copy
    assert _behaviour_table(GUIDE.read_text()).count("\n") >= 10


def test_a_recurrent_algorithms_policy_resets_memory_with_1x_init_states():
    from rlstack import RecurrentAlgorithm
    from rlstack.envs import CartPole

    algo = RecurrentAlgorithm(CartPole, num_envs=8, horizon=8, sgd_minibatch_size=64, compile=False)
    memory = algo.policy.init_states(3)  # 1.x code resets its envs' memory this way
    leaves = memory if isinstance(memory, tuple) else (memory,)
    assert all(leaf.shape[0] == 3 and not leaf.any() for leaf in leaves)
