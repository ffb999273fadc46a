"""The params schema (``cpabanim/schemas/<section>.yaml``): structure, types, ranges and the one home of every
default; validation of a merged params dict, with the cross-key checks the schema cannot express."""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Mapping
from importlib import resources
from typing import Any

from cpabanim.config.mappings import yaml_load
from cpabanim.errors import ConfigError, did_you_mean


@functools.cache
def schema() -> dict[str, Any]:
    """The merged JSON schema of the params (top level from ``_root.yaml``, one property per section file)."""
    folder = resources.files("cpabanim") / "schemas"
    root = yaml_load((folder / "_root.yaml").read_text())
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml") and not entry.name.startswith("_"):
            root.setdefault("properties", {})[entry.name[: -len(".yaml")]] = yaml_load(entry.read_text())
    return root


def _defaults_of(node: dict[str, Any], where: str) -> Any:
    if "default" in node:
        return copy.deepcopy(node["default"])
    if "properties" not in node:
        raise ConfigError(f"schema: {where or 'top level'} has no default (every leaf needs one)")
    return {key: _defaults_of(sub, f"{where}.{key}".lstrip(".")) for key, sub in node["properties"].items()}


def defaults() -> dict[str, Any]:
    """The built-in defaults (layer 1): the ``default`` of every schema leaf, as one nested dict (a fresh copy)."""
    return copy.deepcopy(_cached_defaults())


@functools.cache
def _cached_defaults() -> dict[str, Any]:
    return _defaults_of(schema(), "")


def validator(section: str | None = None):
    """A validator of the params (or of one ``section`` of them, e.g. a checkpoint's recorded ``model``): Draft
    2020-12, except that ``4.0`` is not an integer (JSON Schema would accept it; a step count of 4.0 is a mistake
    that would fail deep inside a stage)."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    )
    root = schema()
    return jsonschema.validators.extend(base, type_checker=checker)(root["properties"][section] if section else root)


def validate(params: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` listing every schema violation and cross-field inconsistency, in one line; a
    misspelt key (the schema allows no other) names the closest one the schema has."""
    errors = sorted(validator().iter_errors(params), key=lambda e: list(e.absolute_path))
    problems = sorted(problem for error in errors for problem in _describe(error))
    if not problems:
        problems = consistency_problems(params)
    if problems:
        raise ConfigError("invalid parameters: " + "; ".join(problems))


def _describe(error) -> list[str]:
    """One jsonschema error as ``dotted.key: what is wrong``; an unknown key (``additionalProperties: false``)
    becomes one problem per key, with the closest known key of the same section."""
    where = ".".join(str(p) for p in error.absolute_path)
    known = error.schema.get("properties", {}) if isinstance(error.schema, Mapping) else {}
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping) and known:
        prefix = f"{where}." if where else ""
        unknown = sorted(str(key) for key in error.instance if key not in known)
        return [f"{prefix}{key}: no such parameter" + did_you_mean(key, known, prefix) for key in unknown]
    return [f"{where or '<top level>'}: {error.message}"]


def consistency_problems(params: Mapping[str, Any]) -> list[str]:
    """Checks across keys that the schema cannot express, run when parameters load (before any stage works)."""
    problems = []
    size = params["data"]["frame_size"]
    model = params["model"]
    levels = model["generator"]["num_down_blocks"]
    if size % (2**levels):
        problems.append(f"data.frame_size {size} must be divisible by 2^model.generator.num_down_blocks = {2**levels}")
    scale = model["dense_motion"]["scale_factor"]
    if abs(2 ** round(math.log2(scale)) - scale) > 1e-9:
        problems.append(f"model.dense_motion.scale_factor {scale} must be a power of 1/2 (0.5, 0.25, ...)")
    else:
        working = size * scale
        depth = model["dense_motion"]["num_blocks"]
        if working != int(working) or int(working) % (2**depth):
            problems.append(
                f"the dense-motion working size data.frame_size x scale_factor = {working:g} must be divisible "
                f"by 2^model.dense_motion.num_blocks = {2**depth}"
            )
    if params["data"]["source"] == "synthetic":
        train_items = params["data"]["synthetic"]["num_train"] * params["data"]["num_repeats"]
        if train_items < params["train"]["batch_size"]:
            problems.append(
                f"train.batch_size {params['train']['batch_size']} is larger than the synthetic training set "
                f"({train_items} items = data.synthetic.num_train x data.num_repeats)"
            )
    return problems
