"""The code a stage runs, as a dependency of its outputs (docs/pipeline.md, "Code is a dependency").

A stage's code is found from its imports, not written by hand: its stage module, every ``cpabanim`` module it
imports (at module level or inside functions, which is where the stages import their libraries), and what those
import, transitively, with the ``__init__.py`` of every package above an imported module (importing
``cpabanim.data.video`` runs ``cpabanim/data/__init__.py``). The dependency is each of those module *files*, not
their packages: editing ``cpabanim/data/augmentation.py``, which only training imports, re-runs training and what
follows, never download, preprocess or masks. Left out: the few modules of :data:`NOT_OUTPUTS`, which run in a
stage but cannot change what it writes. Both orchestrators get the same paths:

- ``dvc.yaml`` lists them under the stage's ``deps`` (DVC hashes their content);
- the Snakemake rules carry :func:`code_digest` of the same files as a ``params`` value, Snakemake's re-run
  trigger (a content hash, not file times: a fresh clone or ``git checkout`` re-runs nothing that did not change).

A new import changes a stage's list, hence dvc.yaml: ``cpabanim dag --check`` (a test) says when to run
``cpabanim dag --write``.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

PACKAGE = "cpabanim"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


@cache
def _module_file(module: str) -> Path | None:
    """The source file of ``cpabanim.x.y`` (``x/y.py`` or ``x/y/__init__.py``), or None for a non-module name."""
    if module == PACKAGE:  # `from cpabanim import __version__`
        return PACKAGE_ROOT / "__init__.py"
    relative = Path(*module.split(".")[1:])
    for candidate in (PACKAGE_ROOT / relative.with_suffix(".py"), PACKAGE_ROOT / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _statements(nodes: list[ast.stmt]) -> Iterator[ast.AST]:
    """Every statement in ``nodes`` and in their blocks (function and class bodies, branches, handlers, cases):
    imports are statements, so the expressions, most of a file's nodes, are never walked."""
    for node in nodes:
        yield node
        for block in ("body", "orelse", "finalbody", "handlers", "cases"):
            inner = getattr(node, block, None)
            if isinstance(inner, list):
                yield from _statements(inner)


@cache
def _imports(module: str) -> frozenset[str]:
    """The ``cpabanim`` modules ``module`` imports anywhere in its file (``from cpabanim.a import b`` counts
    ``cpabanim.a.b`` when that is a module, else ``cpabanim.a``). Cached: each file is parsed once per process, not
    once per stage whose closure reaches it (Snakemake computes every stage's code on each start)."""
    path = _module_file(module)
    found: set[str] = set()
    for node in _statements(ast.parse(path.read_text(), str(path)).body):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(PACKAGE):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if _module_file(sub) else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith(PACKAGE))
    return frozenset(name for name in found if _module_file(name) is not None)


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


# Modules that run in (or around) a stage but cannot change its outputs: not a dependency of any stage, so editing
# one re-runs nothing. Keep this list short and each reason true: a module that decides anything a stage writes
# does not belong here (the MLflow modules the report reads runs with, tracking.runs, .store and .provenance, stay
# dependencies of the stages that import them).
NOT_OUTPUTS: dict[str, str] = {
    "cpabanim": "the package's version string, which no stage writes",
    "cpabanim.pipeline.code": "finds the stages' dependencies for the orchestrators; no stage calls it",
    "cpabanim.pipeline.journal": "notes that a stage completed, for `cpabanim record`",
    "cpabanim.progress": "progress bars in the logs",
    "cpabanim.tracking": "logs numbers, tags and files to the stage's MLflow run (no-ops without one), never a file "
    "of the stage's outputs",
}


def _path(module: str) -> str:
    """The file of ``module``, relative to the project root: ``cpabanim/data/video.py``."""
    return _module_file(module).relative_to(PACKAGE_ROOT.parent).as_posix()


def stage_code(stage_module: str) -> tuple[str, ...]:
    """The sorted module files a stage runs, e.g. ``("cpabanim/config/mappings.py", ..., "cpabanim/pipeline/train.py",
    ...)``: :func:`imported_closure` less :data:`NOT_OUTPUTS`."""
    return tuple(sorted(_path(m) for m in imported_closure(stage_module) if m not in NOT_OUTPUTS))


def code_digest(stage_module: str) -> str:
    """A sha256 of the stage's code (each file's path and content): Snakemake's re-run trigger for code."""
    root = PACKAGE_ROOT.parent
    digest = hashlib.sha256()
    for relative in stage_code(stage_module):
        digest.update(relative.encode() + b"\0" + (root / relative).read_bytes() + b"\0")
    return digest.hexdigest()
