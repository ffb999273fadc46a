"""Plain nested mappings: YAML as every tool of the pipeline reads it, merging, dotted keys.

These are the only representations parameters take before they become a :class:`~cpabanim.config.section.Section`
(the stage boundary) or a typed section (:mod:`cpabanim.config.typed`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cpabanim.errors import ConfigError

# A parameter file has a few hundred values; aliases may repeat a node, but never expand a document past this.
MAX_EXPANDED_NODES = 100_000


class YamlTooLarge(yaml.YAMLError):
    """A document whose aliases expand beyond :data:`MAX_EXPANDED_NODES` (a "billion laughs"), or refer to
    themselves: refused before anything walks it (merging or validating would expand it in memory)."""


def expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many nodes ``node`` holds with every alias expanded: linear in the distinct nodes (``sizes`` remembers
    each one's), so a bomb is measured without being expanded. A node inside itself counts as too large."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        mark = node.start_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        raise YamlTooLarge(f"an alias at {where} refers to the node that contains it")
    open_nodes.add(key)
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    total = 1
    for child in children:
        total += expanded_size(child, sizes, open_nodes)
        if total > MAX_EXPANDED_NODES:
            raise YamlTooLarge(f"its aliases expand to more than {MAX_EXPANDED_NODES} values (a YAML alias bomb?)")
    open_nodes.discard(key)
    sizes[key] = total
    return total


# libyaml's parser where PyYAML has it (its wheels do): every stage and every Snakemake start reads a dozen YAML
# files, 6x faster than the pure-Python parser (0.05 s instead of 0.30 s for the project's 28 files)
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_SafeLoader):
    """SafeLoader that reads ``1e-4`` as a float (YAML 1.2, as DVC's ruamel does), not as a string, and refuses
    documents whose aliases expand too far (:class:`YamlTooLarge`) before they are constructed."""

    def get_single_node(self):  # the one step both parsers share between composing and constructing
        node = super().get_single_node()
        if node is not None:
            expanded_size(node, {}, set())
        return node


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def yaml_load(text: str):
    """Parse YAML the way every tool of the pipeline should see it (``1e-4`` is a float)."""
    return yaml.load(text, Loader=_Loader)


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (PyYAML's message spans several, with a caret)."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem


def read_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping (an empty file is an empty mapping); clear errors otherwise."""
    try:
        values = yaml_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{what} {path} cannot be read: {err.strerror}") from None
    except YamlTooLarge as err:
        raise ConfigError(f"{what} {path} refused: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} {path} is not valid YAML: {yaml_problem(err)}") from None
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ConfigError(f"{what} {path} must be a mapping of sections, not {type(values).__name__}")
    return values


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``override`` merged in recursively (mappings merge, everything else replaces)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``; lists are kept as values (for MLflow params and DVC comparisons)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def nest(dotted: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "c": {"d.e": 2}} -> {"a": {"b": 1}, "c": {"d": {"e": 2}}}`` (Snakemake's ``--config a.b=1``)."""
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        if isinstance(value, Mapping):
            value = nest(value)
        *parents, leaf = str(key).split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {part!r} is set both as a value and as a section")
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf] = deep_merge(node[leaf], value)
        else:
            node[leaf] = value
    return out
