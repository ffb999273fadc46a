"""The command-line layer as users type it: ``--set key.sub=value`` and Snakemake's ``--config`` values."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from cpabanim.config.mappings import deep_merge, nest, yaml_load, yaml_problem
from cpabanim.errors import ConfigError


def parse_override(assignment: str) -> dict[str, Any]:
    """``"train.batch_size=3"`` -> ``{"train": {"batch_size": 3}}``; the value is parsed as YAML (``1e-4``,
    ``[1, 2]``)."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} is not of the form key.sub=value")
    dotted, raw = assignment.split("=", 1)
    dotted = dotted.strip()
    if not dotted or any(not part for part in dotted.split(".")):
        raise ConfigError(f"override {assignment!r} has an empty key")
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {assignment!r}: the value is not valid YAML ({yaml_problem(err)})") from None
    return nest({dotted: value})


def split_assignments(text: str) -> list[str]:
    """``"[a.b=[1, 2], c={d: 3}]"`` -> ``["a.b=[1, 2]", "c={d: 3}"]``: the ``set=[...]`` list Snakemake hands over
    as one string when a value nests brackets (its YAML reading of the list fails). Commas split at the top level
    only; one assignment without brackets is a list of one."""
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    parts, depth, current = [], 0, []
    for char in body:
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    if depth != 0:
        raise ConfigError(f"set={text!r}: unbalanced brackets")
    return [part.strip() for part in parts if part.strip()]


def _typed(value: Any) -> Any:
    """Snakemake parses ``--config k='{a: 1}'`` with YAML's BaseLoader (every leaf a string): read leaves again."""
    if isinstance(value, Mapping):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if isinstance(value, str):
        try:
            return yaml_load(value) if value.strip() else value
        except yaml.YAMLError as err:
            if value.lstrip().startswith(("{", "[")):  # meant as a mapping or list: say why it is not one
                raise ConfigError(f"value {value!r} is not valid YAML ({yaml_problem(err)})") from None
            return value
    return value


def overrides_from_snakemake(config: Mapping[str, Any], reserved: Iterable[str] = ("experiments",)) -> dict[str, Any]:
    """The command-line layer from Snakemake's ``config``: ``--config 'model={motion: tps}'``, ``--config
    set='[model.motion=tps, train.max_steps=50]'`` (the ``--set`` syntax; Snakemake itself refuses dotted keys)
    and ``--configfile FILE`` values."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in reserved:
            continue
        if key == "set":
            for assignment in value if isinstance(value, list) else split_assignments(str(value)):
                out = deep_merge(out, parse_override(str(assignment)))
        else:
            try:
                typed = _typed(value)
            except ConfigError as err:
                raise ConfigError(f"--config {key}=...: {err}") from None
            out = deep_merge(out, nest({key: typed}))
    return out
