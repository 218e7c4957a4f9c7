"""The layering a reader relies on: the pure core never imports the shell."""

import ast
from pathlib import Path

import rlstack

PACKAGE = Path(rlstack.__file__).parent
# The pure core: records, spaces, envs, models, distributions, policy,
# normalisation, keys, observation windows, rollout, PPO, optimizer, schedules and the config
# they read. Everything else (Algorithm, Trainer, checkpoints, tracking, CLI,
# export, adapters) is the shell, built on top.
CORE = {
    "types", "spaces", "envs", "models", "distributions", "policy", "normalization", "random", "rollout", "ppo",
    "optim", "schedules", "config", "functional", "nn", "windows", "stats", "torch_optimizers", "memory", "transforms",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level(module: str) -> str:
    """``rlstack.envs.checks`` -> ``envs``."""
    return module.split(".")[1] if module.count(".") else ""


def _rlstack_imports(path: Path, module: str | None = None) -> set[str]:
    """Every rlstack module ``path`` (the module ``module``, by default the
    one at that place in the package) imports, at any depth of its code."""
    here = module or _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("rlstack")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("rlstack"):
                names = [f"{target}.{a.name}" for a in node.names] if target == "rlstack" else [target]
                found |= set(names)
    return found


def test_the_pure_core_imports_nothing_from_the_shell():
    offending = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if _top_level(module) not in CORE:
            continue
        for target in sorted(_rlstack_imports(path)):
            if _top_level(target) not in CORE:
                offending.append(f"{module} imports {target}")
    assert not offending, "the core imports the shell:\n" + "\n".join(offending)


def test_the_walk_sees_a_shell_import_when_there_is_one(tmp_path):
    """The check above can fail: a core module importing the Trainer is caught."""
    fake = PACKAGE / "ppo.py"
    source = fake.read_text() + "\n\ndef _f():\n    from .trainer import Trainer\n"
    probe = tmp_path / "ppo.py"
    probe.write_text(source)
    assert "rlstack.trainer" in _rlstack_imports(probe, "rlstack.ppo")
    assert "rlstack.trainer" not in _rlstack_imports(fake)
