"""Sphinx configuration for the srp documentation."""

project = "srp"
author = "the srp developers"
copyright = "2026, the srp developers"
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.viewcode"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
html_theme = "alabaster"
nitpicky = False

import re  # noqa: E402

_FIELD = re.compile(r"^(\s*)@(param|type|raise|return|rtype|ivar|cvar|var|note)\b\s*([^:]*):")
_MARKUP = re.compile(r"[CLI]\{([^{}]*)\}")


def _epytext(app: object, what: str, name: str, obj: object, options: object,
             lines: list[str]) -> None:
    """Read the Twisted-style (epytext) fields and markup of srp's docstrings as RST."""
    names = {"raise": "raises", "note": "note"}
    for index, line in enumerate(lines):
        line = _FIELD.sub(
            lambda m: f"{m.group(1)}:{names.get(m.group(2), m.group(2))}"
            f"{' ' + m.group(3).strip() if m.group(3).strip() else ''}:", line)
        lines[index] = _MARKUP.sub(r"``\1``", line)


def setup(app: object) -> None:
    app.connect("autodoc-process-docstring", _epytext)  # type: ignore[attr-defined]
