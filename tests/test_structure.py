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
    "train_state", "members", "loss", "update", "policy_build",
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


def _class_table(sources: dict[str, str]) -> dict[str, list[tuple[set[str], list[str | None]]]]:
    """Class name -> per definition: the private names it defines (methods,
    class attributes, ``self._x = ...`` in its methods) and its bases' names
    (``None`` for a base that is not a plain name, e.g. ``typing.NamedTuple``)."""
    table: dict[str, list[tuple[set[str], list[str | None]]]] = {}
    for source in sources.values():
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.ClassDef):
                continue
            defined = set()
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    defined.add(item.name)
                elif isinstance(item, ast.Assign):
                    defined |= {t.id for t in item.targets if isinstance(t, ast.Name)}
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    defined.add(item.target.id)
            for sub in ast.walk(node):
                if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store) and \
                        isinstance(sub.value, ast.Name) and sub.value.id in ("self", "cls"):
                    defined.add(sub.attr)
            bases = [b.id if isinstance(b, ast.Name) else None for b in node.bases]
            table.setdefault(node.name, []).append((defined, bases))
    return table


def _private_reads_not_owned(sources: dict[str, str]) -> list[str]:
    """``Class._name`` for every ``self._name`` a class reads that neither it
    nor a base class of the package defines (classes with a base from outside
    the package, whose private names cannot be listed here, are skipped)."""
    table = _class_table(sources)

    def owned(name: str, seen: frozenset = frozenset()) -> set[str] | None:
        if name not in table:
            return None
        names: set[str] = set()
        for defined, bases in table[name]:
            names |= defined
            for base in bases:
                inherited = owned(base, seen | {name}) if base is not None and base not in seen else None
                if inherited is None:
                    return None
                names |= inherited
        return names

    found = []
    for module, source in sources.items():
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.ClassDef):
                continue
            names = owned(node.name)
            if names is None:
                continue
            for sub in ast.walk(node):
                if (isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Load) and isinstance(sub.value, ast.Name)
                        and sub.value.id in ("self", "cls") and sub.attr.startswith("_")
                        and not sub.attr.startswith("__") and sub.attr not in names):
                    found.append(f"{module}: {node.name} reads {sub.attr}")
    return sorted(set(found))


def _package_sources() -> dict[str, str]:
    return {_module_name(path): path.read_text() for path in sorted(PACKAGE.rglob("*.py"))}


def test_no_class_reads_a_private_attribute_it_neither_defines_nor_inherits():
    """A part of a class (``Acting``, ``Checkpointing``) uses the public
    attributes of the class it is part of, never its private ones."""
    offending = _private_reads_not_owned(_package_sources())
    assert not offending, "private attributes read from outside their class:\n" + "\n".join(offending)


def test_the_walk_sees_a_mixin_read_a_private_attribute():
    """The check above can fail: a mixin reading its host's private state is caught; a subclass is not."""
    sources = {"probe": (
        "class Host:\n    def __init__(self):\n        self._state = 1\n\n"
        "class Part:\n    def peek(self):\n        return self._state\n\n"
        "class Child(Host):\n    def peek(self):\n        return self._state\n"
    )}
    assert _private_reads_not_owned(sources) == ["probe: Part reads _state"]


MAX_MODULE_LINES, MAX_BODY_LINES = 350, 60


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's body, its docstring not counted."""
    body = node.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
        body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0


def test_modules_and_functions_stay_small_enough_to_read():
    """No module over 350 lines, no function body over 60 (docstrings not counted)."""
    long_modules, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        if source.count("\n") > MAX_MODULE_LINES:
            long_modules.append(f"{_module_name(path)}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _body_lines(node) > MAX_BODY_LINES:
                long_functions.append(f"{_module_name(path)}.{node.name}: {_body_lines(node)} lines")
    assert not long_modules and not long_functions, "\n".join(long_modules + long_functions)


def test_the_body_count_leaves_out_the_docstring():
    source = 'def f():\n    """Doc\n    string."""\n    a = 1\n    return a\n'
    assert _body_lines(ast.parse(source).body[0]) == 2


def _misplaced_keys(source: str) -> list[str]:
    """Functions in ``source`` with a positional ``key`` (or ``*_key``)
    parameter that is not their first (``self``/``cls`` aside, and the
    ``pieces, member_axes`` a :class:`~rlstack.transforms.Staged` loop is
    given before its caller's arguments)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        names = [a.arg for a in node.args.posonlyargs + node.args.args]
        if names and names[0] in ("self", "cls"):
            names = names[1:]
        if names[:2] == ["pieces", "member_axes"]:
            names = names[2:]
        if any(n == "key" or n.endswith("_key") for n in names[1:]):
            found.append(f"{getattr(node, 'name', 'lambda')}({', '.join(names)})")
    return found


def test_every_function_that_takes_a_key_takes_it_first():
    """JAX's convention, everywhere: ``env.step(key, state, action)``,
    ``policy.step(key, params, ...)``, ``update(key, params, ...)``,
    ``random.normal(key, shape)``; an optional key is the keyword ``key=``."""
    misplaced = [f"{_module_name(path)}.{name}" for path in sorted(PACKAGE.rglob("*.py"))
                 for name in _misplaced_keys(path.read_text())]
    assert not misplaced, "a key that is not the first argument:\n" + "\n".join(misplaced)


def test_the_key_check_sees_a_key_in_last_place():
    assert _misplaced_keys("def step(self, state, action, key):\n    pass\n") == ["step(state, action, key)"]
    assert _misplaced_keys("def step(self, key, state, action, *, other_key=None):\n    pass\n") == []
