"""The structure a reader relies on: layers in folders that import only
downwards, no import cycles, classes that read only their own private
attributes, small modules and functions, keys first.
"""

import ast
import subprocess
import sys
from pathlib import Path

import rlstack

PACKAGE = Path(rlstack.__file__).parent
# The layers, lowest first (docs/design.md, "Layout"): a module may import its
# own folder and the folders below it, never one above.
LAYERS = ["core", "envs", "policy", "learn", "integrations", "shell", "cli"]
# The modules that stay at the top: the package itself, ``python -m rlstack``,
# the 1.x env module, the functional API, and the import paths that rlstack
# 1.x code, the README and the notebooks use (each only hands on the names of
# one module of a layer).
TOP = {
    "",
    "__main__",
    "env",
    "functional",
    "models",
    "nn",
    "distributions",
    "random",
    "conditions",
    "presets",
    "optim",
    "schedulers",
    "transforms",
    "export",
    "gymnasium_adapter",
    "types",
    "spaces",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level(module: str) -> str:
    """``rlstack.envs.checks`` -> ``envs``; ``rlstack.models`` -> ``models``."""
    return module.split(".")[1] if module.count(".") else ""


def _layer(module: str) -> int:
    """A module's layer (0 = core); the top-level modules sit above them all."""
    top = _top_level(module)
    return LAYERS.index(top) if top in LAYERS else len(LAYERS)


def _is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").is_file() or (
        PACKAGE / relative / "__init__.py"
    ).is_file()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """``id`` of every import under an ``if TYPE_CHECKING:`` (no runtime import)."""
    found = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING"
        ):
            found |= {id(sub) for stmt in node.body for sub in ast.walk(stmt)}
    return found


def _rlstack_imports(
    path: Path, module: str | None = None, *, runtime_only: bool = False
) -> set[str]:
    """Every rlstack module ``path`` (the module ``module``, by default the
    one at that place in the package) imports, at any depth of its code
    (``from pkg import name`` counts as ``pkg.name`` when that is a module);
    ``runtime_only`` leaves out imports made only for type checkers.
    """
    here = module or _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skip = _type_checking_nodes(tree) if runtime_only else set()
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
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
                found |= {
                    f"{target}.{a.name}" if _is_module(f"{target}.{a.name}") else target
                    for a in node.names
                }
    return found


def test_every_module_lives_in_a_layer_or_is_a_known_top_level_path():
    strays = [
        path.name
        for path in sorted(PACKAGE.glob("*.py"))
        if _module_name(path).partition(".")[2] not in TOP
    ]
    folders = sorted(d.name for d in PACKAGE.iterdir() if (d / "__init__.py").is_file())
    assert not strays and folders == sorted(LAYERS), (strays, folders)


def test_top_level_import_paths_only_hand_on_a_layer_module():
    """``rlstack.models`` and the others define nothing: each is ``from
    .policy.models import *``, so there is one home for every name.
    """
    for name in TOP - {"", "__main__", "env", "functional"}:
        body = [
            node
            for node in ast.parse((PACKAGE / f"{name}.py").read_text()).body
            if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
        ]
        assert (
            len(body) == 1 and isinstance(body[0], ast.ImportFrom) and body[0].names[0].name == "*"
        ), name
        assert _layer(f"rlstack.{body[0].module}") < len(LAYERS), name


def _upward_imports(modules: dict[str, Path]) -> list[str]:
    return [
        f"{module} imports {target}"
        for module, path in modules.items()
        for target in sorted(_rlstack_imports(path, module))
        if _layer(target) > _layer(module)
    ]


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def test_nothing_imports_a_layer_above_its_own():
    offending = _upward_imports(_modules())
    assert not offending, "imports that point upwards:\n" + "\n".join(offending)


def test_the_walk_sees_an_upward_import_when_there_is_one(tmp_path):
    """The check above can fail: a learning module importing the Trainer is caught."""
    real = PACKAGE / "learn" / "update.py"
    probe = tmp_path / "update.py"
    probe.write_text(real.read_text() + "\n\ndef _f():\n    from ..shell.trainer import Trainer\n")
    assert _upward_imports({"rlstack.learn.update": probe}) == [
        "rlstack.learn.update imports rlstack.shell.trainer"
    ]
    assert _upward_imports({"rlstack.learn.update": real}) == []
    facade = tmp_path / "rollout.py"
    facade.write_text("from .. import random\n")  # a layer importing a top-level path is upward too
    assert _upward_imports({"rlstack.learn.rollout": facade}) == [
        "rlstack.learn.rollout imports rlstack.random"
    ]


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (module -> modules it imports), or ``[]``."""
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> list[str]:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return trail[trail.index(nxt) :] + [nxt] if nxt in trail else [node, nxt]
            if nxt not in state:
                found = visit(nxt, trail + [nxt])
                if found:
                    return found
        state[node] = "done"
        return []

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return []


def test_no_import_cycles():
    """No module reaches itself through runtime imports (a package's
    ``__init__`` aside: a submodule's import runs its package first).
    """
    graph = {
        module: {
            t for t in _rlstack_imports(path, runtime_only=True) if not module.startswith(t + ".")
        }
        for module, path in _modules().items()
    }
    assert _cycle(graph) == [], " -> ".join(_cycle(graph))


def test_the_cycle_search_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def _class_table(sources: dict[str, str]) -> dict[str, list[tuple[set[str], list[str | None]]]]:
    """Class name -> per definition: the private names it defines (methods,
    class attributes, ``self._x = ...`` in its methods) and its bases' names
    (``None`` for a base that is not a plain name, e.g. ``typing.NamedTuple``).
    """
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
                if (
                    isinstance(sub, ast.Attribute)
                    and isinstance(sub.ctx, ast.Store)
                    and isinstance(sub.value, ast.Name)
                    and sub.value.id in ("self", "cls")
                ):
                    defined.add(sub.attr)
            bases = [b.id if isinstance(b, ast.Name) else None for b in node.bases]
            table.setdefault(node.name, []).append((defined, bases))
    return table


def _private_reads_not_owned(sources: dict[str, str]) -> list[str]:
    """``Class._name`` for every ``self._name`` a class reads that neither it
    nor a base class of the package defines (classes with a base from outside
    the package, whose private names cannot be listed here, are skipped).
    """
    table = _class_table(sources)

    def owned(name: str, seen: frozenset = frozenset()) -> set[str] | None:
        if name not in table:
            return None
        names: set[str] = set()
        for defined, bases in table[name]:
            names |= defined
            for base in bases:
                inherited = (
                    owned(base, seen | {name}) if base is not None and base not in seen else None
                )
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
                if (
                    isinstance(sub, ast.Attribute)
                    and isinstance(sub.ctx, ast.Load)
                    and isinstance(sub.value, ast.Name)
                    and sub.value.id in ("self", "cls")
                    and sub.attr.startswith("_")
                    and not sub.attr.startswith("__")
                    and sub.attr not in names
                ):
                    found.append(f"{module}: {node.name} reads {sub.attr}")
    return sorted(set(found))


def _package_sources() -> dict[str, str]:
    return {_module_name(path): path.read_text() for path in sorted(PACKAGE.rglob("*.py"))}


def test_no_class_reads_a_private_attribute_it_neither_defines_nor_inherits():
    """A part of a class (``Acting``, ``Checkpointing``) uses the public
    attributes of the class it is part of, never its private ones.
    """
    offending = _private_reads_not_owned(_package_sources())
    assert not offending, "private attributes read from outside their class:\n" + "\n".join(
        offending
    )


def test_the_walk_sees_a_mixin_read_a_private_attribute():
    """The check above can fail: a mixin reading its host's private state is caught; a subclass is
    not.
    """
    sources = {
        "probe": (
            "class Host:\n    def __init__(self):\n        self._state = 1\n\n"
            "class Part:\n    def peek(self):\n        return self._state\n\n"
            "class Child(Host):\n    def peek(self):\n        return self._state\n"
        )
    }
    assert _private_reads_not_owned(sources) == ["probe: Part reads _state"]


MAX_MODULE_LINES, MAX_BODY_LINES = 400, 60


def formatted(source: str) -> str:
    """``source`` as ``ruff format`` lays it out (the project's settings), so that
    sizes do not depend on how a line was packed.
    """
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", "module.py", "-"],
        input=source,
        capture_output=True,
        text=True,
        cwd=PACKAGE.parent,
        check=True,
    )
    return result.stdout


def _own_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's body, its docstring and the functions and
    classes defined inside it not counted (each nested one is measured on its own).
    """
    body = node.body
    if (
        isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        body = body[1:]
    if not body:
        return 0
    lines = set(range(body[0].lineno, body[-1].end_lineno + 1))
    for sub in ast.walk(ast.Module(body=body, type_ignores=[])):
        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            first = min([sub.lineno] + [d.lineno for d in sub.decorator_list])
            lines -= set(range(first, sub.end_lineno + 1))
    return len(lines)


def _oversized(sources: dict[str, str]) -> list[str]:
    """Modules over MAX_MODULE_LINES formatted lines and functions whose own
    formatted body is over MAX_BODY_LINES, in ``sources`` (module name -> text).
    """
    found = []
    for module, source in sources.items():
        text = formatted(source)
        if text.count("\n") > MAX_MODULE_LINES:
            found.append(f"{module}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            is_function = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            if is_function and _own_lines(node) > MAX_BODY_LINES:
                found.append(f"{module}.{node.name}: {_own_lines(node)} lines")
    return found


def test_modules_and_functions_stay_small_enough_to_read():
    """No module over 400 lines and no function body over 60 (docstrings and
    nested functions not counted), measured on the code as ``ruff format`` lays
    it out: packing lines cannot meet the limit.
    """
    oversized = _oversized(_package_sources())
    assert not oversized, "\n".join(oversized)


def test_the_size_check_measures_formatted_code_and_sees_a_long_function():
    packed = "def f(a, b):\n" + "".join(f"    x{i} = a; y{i} = b\n" for i in range(31))
    assert _oversized({"probe": packed}) == ["probe.f: 62 lines"]
    source = (
        'def f():\n    """Doc\n    string."""\n    def g():\n        return 1\n'
        "    a = 1\n    return a\n"
    )
    outer, inner = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)]
    assert (_own_lines(outer), _own_lines(inner)) == (2, 1)


def _misplaced_keys(source: str) -> list[str]:
    """Functions in ``source`` with a positional ``key`` (or ``*_key``)
    parameter that is not their first (``self``/``cls`` aside, and the
    ``pieces, member_axes`` a :class:`~rlstack.learn.transforms.Staged` loop is
    given before its caller's arguments).
    """
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
    ``random.normal(key, shape)``; an optional key is the keyword ``key=``.
    """
    misplaced = [
        f"{_module_name(path)}.{name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for name in _misplaced_keys(path.read_text())
    ]
    assert not misplaced, "a key that is not the first argument:\n" + "\n".join(misplaced)


def test_the_key_check_sees_a_key_in_last_place():
    assert _misplaced_keys("def step(self, state, action, key):\n    pass\n") == [
        "step(state, action, key)"
    ]
    assert (
        _misplaced_keys("def step(self, key, state, action, *, other_key=None):\n    pass\n") == []
    )
