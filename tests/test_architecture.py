"""The package's layering (docs/architecture.md), checked on the source: every import, function-local ones
included, goes from a package to one in a lower layer (or inside its own package); nothing imports upwards, so
there is no import cycle between packages; no module grows past ~350 lines without saying why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cpabanim"

# Lowest first. A unit may import from its own unit and from any unit of a lower layer, never from its own layer
# (peers stay independent) or a higher one. The same table is drawn in docs/architecture.md.
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("files", "config", "progress"),
    ("runtime", "weights", "cpab"),
    ("tracking",),
    ("data", "models", "viz"),
    ("losses",),
    ("training", "evaluation"),
    ("animation",),
    ("reporting",),
    ("pipeline",),
    ("commands",),
    ("cli",),
    ("__main__",),
]
LAYER_OF = {unit: level for level, units in enumerate(LAYERS) for unit in units}
MAX_LINES = 350
# A module over the limit says why in its docstring with this phrase.
LENGTH_REASON = "longer than 350 lines because"


def modules() -> dict[str, Path]:
    """dotted module name -> file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def unit_of(module: str) -> str | None:
    """``cpabanim.training.loop`` -> ``training``; the package root itself has no unit."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def imported_modules(path: Path, known: dict[str, Path]) -> set[str]:
    """Every cpabanim module ``path`` imports, at any depth of the file (function-local imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cpabanim"):
            # `from pkg import submodule` imports the submodule; `from module import name`, the module
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names
            ]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.startswith("cpabanim")]
        for name in names:
            while name not in known and "." in name:  # `from pkg import name`: the module, or the package
                name = name.rsplit(".", 1)[0]
            if name in known:
                out.add(name)
    return out


def test_every_top_level_unit_has_a_layer():
    units = {unit_of(name) for name in modules()} - {None}
    assert units <= set(LAYER_OF), f"give these a layer (here and in docs/architecture.md): {units - set(LAYER_OF)}"


def test_imports_only_go_down_the_layers():
    known = modules()
    wrong = []
    for name, path in known.items():
        here = unit_of(name)
        for target in imported_modules(path, known):
            there = unit_of(target)
            if here is None or there is None or here == there:
                continue
            if LAYER_OF[there] >= LAYER_OF[here]:
                wrong.append(
                    f"{name} imports {target} ({here}: layer {LAYER_OF[here]}, {there}: layer {LAYER_OF[there]})"
                )
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_the_package_root_imports_nothing():
    """``import cpabanim`` stays instant and cycle-free: the root module holds the version only."""
    assert imported_modules(PACKAGE / "__init__.py", modules()) == set()


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_stay_short_or_say_why(name):
    path = modules()[name]
    lines = len(path.read_text().splitlines())
    if lines > MAX_LINES:
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert LENGTH_REASON in docstring, f"{path} has {lines} lines: split it, or say why ('{LENGTH_REASON} ...')"


def test_no_private_name_is_imported_from_another_module():
    """A leading underscore means "this module's own": other modules (and tests) use the public names."""
    known = modules()
    roots = [PACKAGE, PACKAGE.parent / "tests"]
    wrong = []
    for path in sorted(p for root in roots for p in root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cpabanim"):
                wrong += [
                    f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports {alias.name} from {node.module}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__") and node.module in known
                ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_modules():
    """Inside a package too: no module reaches itself through its imports (a module may use its own package's
    ``__init__``, which then must not import it back)."""
    known = modules()
    graph = {name: imported_modules(path, known) - {name} for name, path in known.items()}
    done: set[str] = set()

    def cycle_from(start: str, path: list[str]) -> list[str] | None:
        for target in sorted(graph[start]):
            if target in path:
                return path[path.index(target) :] + [target]
            if target not in done:
                found = cycle_from(target, path + [target])
                if found:
                    return found
        done.add(start)
        return None

    for name in sorted(graph):
        found = cycle_from(name, [name])
        assert found is None, " -> ".join(found)
