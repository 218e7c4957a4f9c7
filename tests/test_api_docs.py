"""The API reference lists every public module of the layered packages.

A module a newcomer can import but cannot find in ``docs/api`` is a module
nobody reads; this keeps the reference in step with the code as it moves.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("core", "envs", "policy", "learn", "integrations", "shell")


def _documented() -> set[str]:
    names = set()
    for page in (ROOT / "docs" / "api").glob("*.md"):
        for line in page.read_text().splitlines():
            if line.startswith("::: "):
                names.add(line.removeprefix("::: ").strip())
    return names


def _public_modules() -> set[str]:
    names = set()
    for layer in LAYERS:
        for path in (ROOT / "rlstack" / layer).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if any(part.startswith("_") and part != "__init__" for part in parts):
                continue
            names.add(".".join(part for part in parts if part != "__init__"))
    # A layer's __init__ re-exports its modules' names; version.py holds one string.
    return names - {f"rlstack.{layer}" for layer in LAYERS} - {"rlstack.core.version"}


def _covered(module: str, documented: set[str]) -> bool:
    """A module is covered by its own entry or by a documented package above it."""
    parts = module.split(".")
    return any(".".join(parts[:end]) in documented for end in range(2, len(parts) + 1))


def test_every_public_module_is_in_the_api_reference():
    documented = _documented()
    missing = sorted(m for m in _public_modules() if not _covered(m, documented))
    assert not missing, f"add to docs/api/*.md: {missing}"


def test_the_api_reference_names_only_modules_that_exist():
    stale = sorted(
        name for name in _documented() if name.startswith("rlstack.") and not _exists(name)
    )
    assert not stale, f"docs/api/*.md names modules that are gone: {stale}"


def _exists(name: str) -> bool:
    path = ROOT / Path(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def test_every_preset_the_code_and_docs_name_exists():
    from rlstack.shell.presets import PRESETS

    texts = [p.read_text() for p in (*ROOT.glob("rlstack/**/*.py"), *ROOT.glob("docs/**/*.md"))]
    named = {name for text in texts for name in re.findall(r"PRESETS\[\"([^\"]+)\"\]", text)}
    assert named and named <= set(PRESETS), sorted(named - set(PRESETS))


def test_the_docs_home_links_every_notebook():
    home = (ROOT / "docs" / "index.md").read_text()
    notebooks = sorted(p.name for p in (ROOT / "docs" / "notebooks").glob("*.ipynb"))
    assert notebooks and [n for n in notebooks if f"notebooks/{n}" not in home] == []


def test_the_site_wraps_long_code_lines_in_notebook_cells_and_code_blocks():
    import yaml

    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    (sheet,) = config["extra_css"]
    css = (ROOT / "docs" / sheet).read_text()
    rule = re.search(r"([^{}]*)\{([^}]*)\}", re.sub(r"/\*.*?\*/", "", css, flags=re.S))
    selectors, body = rule.group(1), rule.group(2)
    assert ".jupyter-wrapper .highlight pre" in selectors and ".md-typeset pre > code" in selectors
    assert "white-space: pre-wrap" in body
