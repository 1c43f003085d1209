"""
Dependencies under srp/ run only downward.

Every module belongs to a part (the first name under C{srp}); every part to
a layer.  A module may import from a lower layer, and from its own part;
never from a higher layer, nor from another part of its own layer (the
server and the client do not know each other; neither do tap and cli).
Imports are read with C{ast}, so imports inside functions count too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRP = Path(__file__).parent.parent / "srp"

#: The layers, lowest first, and the parts in each.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("", "wire"),  # "": the package itself (srp/__init__.py: the version)
    # The values both sides hold; sealing cluster messages and where their
    # key comes from, which both nodes and clients need.
    ("records", "authenticator", "clusterkey"),
    ("interfaces", "plugins"),  # plugins: finding the implementations of an interface
    # etcd: the etcd v3 client (JSON gateway), its watch and the key layout: nodes use
    # them, and the client's etcd= watch.
    ("transports", "etcd"),
    # logs, notify: where a node's log goes; telling systemd it is ready.
    ("server", "client", "options", "logs", "notify"),
    ("tap", "cli"),
    ("testing",),
)
LAYER = {part: number for number, parts in enumerate(LAYERS) for part in parts}


def moduleName(path: Path) -> str:
    """The dotted name of the module at C{path}, a file under srp/."""
    parts = path.relative_to(SRP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def partOf(module: str) -> str:
    """The part of srp that C{module} (srp or srp.X...) belongs to."""
    names = module.split(".")
    return names[1] if len(names) > 1 else ""


def isModule(module: str) -> bool:
    """Whether C{module} is a module or package under srp/."""
    path = SRP.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def importsIn(source: str, module: str, package: str) -> Iterator[tuple[int, str]]:
    """
    (line, module) for every import in C{source}, the text of C{module}, anywhere
    in it; relative imports are resolved against C{package}.
    """
    for node in ast.walk(ast.parse(source, module)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                names = package.split(".")
                base = ".".join(names[: len(names) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                # `from srp import transports` imports the part, not the package.
                sub = f"{base}.{alias.name}"
                yield node.lineno, sub if isModule(sub) else base


def importsOf(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in the module at C{path}, a file under srp/."""
    module = moduleName(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return importsIn(path.read_text(), module, package)


def violations() -> list[str]:
    """Every import under srp/ that goes up a layer or across to a sibling part."""
    found = []
    for path in sorted(SRP.rglob("*.py")):
        module = moduleName(path)
        part = partOf(module)
        for line, imported in importsOf(path):
            if imported != "srp" and not imported.startswith("srp."):
                continue
            target = partOf(imported)
            if target == part:
                continue
            if LAYER[target] > LAYER[part]:
                why = "a higher layer"
            elif LAYER[target] == LAYER[part]:
                why = "a sibling part"
            else:
                continue
            found.append(f"{path.relative_to(SRP.parent)}:{line}: {module} imports "
                         f"{imported}, {why} ({target or 'srp'})")
    return found


def test_every_part_has_a_layer() -> None:
    parts = {partOf(moduleName(path)) for path in SRP.rglob("*.py")}
    assert parts - set(LAYER) == set(), "add the new part to LAYERS"


def test_dependencies_run_downward() -> None:
    assert violations() == []


def test_the_check_sees_every_import() -> None:
    """The checker itself: imports at module level, inside functions, and relative ones."""
    source = ("from srp.wire import WireError\n"
              "def f():\n"
              "    from srp.server import config\n"
              "    import srp.cli\n"
              "    from . import resolver\n"
              "    from ..transports.tcp import endpointFor\n")
    assert list(importsIn(source, "srp.client.probe", "srp.client")) == [
        (1, "srp.wire"), (3, "srp.server.config"), (4, "srp.cli"),
        (5, "srp.client.resolver"), (6, "srp.transports.tcp")]
    assert [partOf(m) for m in ("srp", "srp.wire.mcsqlr", "srp.server.node")] == [
        "", "wire", "server"]
