"""A Griffe extension for the documentation site: the reST roles rlstack's
docstrings use (``:class:`~rlstack.config.AlgorithmConfig```, ``:func:`gae```)
become mkdocs-autorefs cross-references, rendered as links where the target
is documented and as plain code otherwise (``--help`` strips the same roles to
plain text: :func:`rlstack.cli.arguments.plain_text`).

Loaded by mkdocs.yml (``plugins.mkdocstrings.handlers.python.options.extensions``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc):`(?P<short>~?)(?P<body>[^`]+)`")
EXPLICIT = re.compile(r"(?P<title>.*?)\s*<(?P<target>[\w.]+)>", re.DOTALL)  # :meth:`title <target>`


def cross_references(text: str, scope: str) -> str:
    """``text`` with each role replaced by an optional autoref; a target with
    no dot is looked up in ``scope`` (the module or class the docstring is in).

    Examples:
        >>> cross_references("see :class:`~rlstack.config.AlgorithmConfig`", "rlstack.algorithm")
        'see <autoref identifier="rlstack.config.AlgorithmConfig"
        optional><code>AlgorithmConfig</code></autoref>'
    """

    def link(match: re.Match) -> str:
        body = " ".join(match["body"].split())
        explicit = EXPLICIT.fullmatch(body)
        target = explicit["target"] if explicit else body.rstrip("()")
        identifier = target if "." in target else f"{scope}.{target}"
        title = (
            explicit["title"] if explicit else target.rsplit(".", 1)[-1] if match["short"] else body
        )
        return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'

    return ROLE.sub(link, text)


def _documented(obj: Any) -> Any:
    """``obj`` and every object below it (aliases, which document elsewhere, left out)."""
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _documented(member)


class RolesToCrossReferences(griffe.Extension):
    """Rewrite the roles of every docstring in a loaded package."""

    def on_package(self, *, pkg: Any, **kwargs: Any) -> None:  # Griffe 2
        """Griffe's hook, once the package is loaded: rewrite every docstring's roles."""
        for obj in _documented(pkg):
            if obj.docstring is not None:
                scope = obj.path if obj.is_class or obj.is_module else obj.parent.path
                obj.docstring.value = cross_references(obj.docstring.value, scope)

    on_package_loaded = on_package  # Griffe 1
