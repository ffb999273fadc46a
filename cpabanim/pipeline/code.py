"""The code a stage runs, as a dependency of its outputs (docs/pipeline.md, "Code is a dependency").

A stage's code is found from its imports, not written by hand: every ``cpabanim`` module its stage module
imports (at module level or inside functions, which is where the stages import their libraries), and what those
import, transitively. The dependency is declared per *unit*: a top-level package of ``cpabanim`` (``models``,
``losses``) or module (``files.py``), except ``pipeline`` itself, of which only the stage's own module counts, so
editing one stage's declaration re-runs that stage, not the others. Both orchestrators get the same paths:

- ``dvc.yaml`` lists them under the stage's ``deps`` (DVC hashes their content; ``.dvcignore`` leaves out
  ``__pycache__``);
- the Snakemake rules carry :func:`code_digest` of the same files as a ``params`` value, Snakemake's re-run
  trigger (a content hash, not file times: a fresh clone or ``git checkout`` re-runs nothing that did not change).
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = "cpabanim"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
IGNORED_PARTS = ("__pycache__",)


def _module_file(module: str) -> Path | None:
    """The source file of ``cpabanim.x.y`` (``x/y.py`` or ``x/y/__init__.py``), or None for a non-module name."""
    relative = Path(*module.split(".")[1:])
    for candidate in (PACKAGE_ROOT / relative.with_suffix(".py"), PACKAGE_ROOT / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(module: str) -> set[str]:
    """The ``cpabanim`` modules ``module`` imports anywhere in its file (``from cpabanim.a import b`` counts
    ``cpabanim.a.b`` when that is a module, else ``cpabanim.a``)."""
    path = _module_file(module)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(PACKAGE):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if _module_file(sub) else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith(PACKAGE))
    return {name for name in found if _module_file(name) is not None}


@cache
def imported_closure(module: str) -> frozenset[str]:
    """``module`` and every ``cpabanim`` module it imports, transitively (package ``__init__`` files included:
    importing ``cpabanim.a.b`` runs ``cpabanim/a/__init__.py``)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(2, len(parts))]  # the packages above it
        todo += sorted(_imports(name) - seen)
    return frozenset(seen)


def _unit(module: str) -> str | None:
    """The path (relative to the project root) that stands for ``module`` in the dependencies."""
    parts = module.split(".")
    if len(parts) == 1:
        return None  # cpabanim/__init__.py: the version string only
    if parts[1] == "pipeline":
        return str(_module_file(module).relative_to(PACKAGE_ROOT.parent))
    top = PACKAGE_ROOT / parts[1]
    return f"{PACKAGE}/{parts[1]}" if top.is_dir() else f"{PACKAGE}/{parts[1]}.py"


def stage_code(stage_module: str) -> tuple[str, ...]:
    """The sorted code paths a stage runs, e.g. ``("cpabanim/cpab", "cpabanim/files.py", ...,
    "cpabanim/pipeline/train.py")``."""
    return tuple(sorted({unit for m in imported_closure(stage_module) if (unit := _unit(m)) is not None}))


def code_files(paths: tuple[str, ...]) -> list[Path]:
    """Every file under ``paths`` (relative to the project root), ``__pycache__`` left out, sorted."""
    root = PACKAGE_ROOT.parent
    files: list[Path] = []
    for relative in paths:
        path = root / relative
        found = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        files += [p for p in found if not any(part in IGNORED_PARTS for part in p.relative_to(root).parts)]
    return sorted(files)


def code_digest(stage_module: str) -> str:
    """A sha256 of the stage's code (each file's path and content): Snakemake's re-run trigger for code."""
    root = PACKAGE_ROOT.parent
    digest = hashlib.sha256()
    for path in code_files(stage_code(stage_module)):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
