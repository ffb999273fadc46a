"""params.yaml: the single source of parameters, validated against a JSON schema.

The schema is split by section (``cpabanim/schemas/<section>.yaml``, one file per pipeline area) and merged
here, so that each stage's owner documents its own keys. Presets (``presets/*.yaml``) are deep-merged over
params.yaml; ``--set key.sub=value`` overrides are applied last. Every stage calls :func:`load_params`.

A preset is chosen in one of three equivalent ways, so that both orchestrators have a documented switch:

* ``preset: vox-256`` in params.yaml (or ``dvc exp run -S preset=vox-256``, ``snakemake --config preset=vox-256``);
* ``--preset vox-256`` on the stage command line;
* ``snakemake --configfile presets/vox-256.yaml`` (Snakemake merges the file into its config itself and hands
  the stages the resolved parameters).
"""

from __future__ import annotations

import copy
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cpabanim.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a float (YAML 1.2, as DVC's ruamel does), not as a string."""


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


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``override`` merged in recursively (mappings merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_override(params: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` override in place; the value is parsed as YAML (``1e-4``, ``[1, 2]``...)."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} is not of the form key.sub=value")
    dotted, raw = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    node = params
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            raise ConfigError(f"override {assignment!r}: {key!r} is not a section of params")
        node = node[key]
    node[keys[-1]] = yaml_load(raw)


def schema() -> dict[str, Any]:
    """The merged JSON schema of params.yaml (top level from ``_root.yaml``, one property per section file)."""
    folder = resources.files("cpabanim") / "schemas"
    root = yaml_load((folder / "_root.yaml").read_text())
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml") and not entry.name.startswith("_"):
            root.setdefault("properties", {})[entry.name[: -len(".yaml")]] = yaml_load(entry.read_text())
    return root


def validate(params: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` listing every schema violation, each with its dotted path."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors:
            where = ".".join(str(p) for p in err.absolute_path) or "<top level>"
            lines.append(f"  {where}: {err.message}")
        raise ConfigError("invalid parameters:\n" + "\n".join(lines))


def load_params(
    path: str | Path = DEFAULT_PARAMS,
    preset: str | Path | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Load params.yaml, merge a preset (a name in ``presets/`` or a path) and overrides, validate, return."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"parameter file {path} not found (run from the project root or pass --params)")
    try:
        params = yaml_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path} must be a mapping of sections, not {type(params).__name__}")
    return resolve_params(params, base_dir=path.parent, preset=preset, overrides=overrides)


def preset_path(name: str | Path, base_dir: str | Path = ".") -> Path:
    """Where preset ``name`` lives: a path as given, or ``<base_dir>/presets/<name>.yaml`` for a bare name."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml"):
        return candidate if candidate.is_absolute() or candidate.is_file() else Path(base_dir) / candidate
    return Path(base_dir) / "presets" / f"{name}.yaml"


def available_presets(base_dir: str | Path = ".") -> list[str]:
    folder = Path(base_dir) / "presets"
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def resolve_params(
    params: dict[str, Any],
    base_dir: str | Path = ".",
    preset: str | Path | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Merge the preset named in ``params['preset']`` (then ``preset``) and overrides, validate, return a copy.

    Used by the stages (through :func:`load_params`) and by the Snakefile, so that both see the same values.
    """
    params = copy.deepcopy(params)
    for name in (params.get("preset"), preset):
        if not name:
            continue
        path = preset_path(name, base_dir)
        if not path.is_file():
            known = ", ".join(available_presets(base_dir)) or "none found"
            raise ConfigError(f"preset {str(name)!r} not found at {path} (available presets: {known})")
        try:
            values = yaml_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"preset {path} is not valid YAML: {err}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"preset {path} must be a mapping of sections")
        values.pop("preset", None)  # a preset cannot chain to another preset
        if "paths" in values:
            # DVC declares the stages' outputs from params.yaml's paths: a preset moving them would desync it
            raise ConfigError(f"preset {path} must not set `paths` (set them in params.yaml instead)")
        params = deep_merge(params, values)
        params["preset"] = str(name)
    for assignment in overrides or []:
        apply_override(params, assignment)
    validate(params)
    return params


def add_params_arguments(parser) -> None:
    """The options every stage shares: which params file, which preset, and key=value overrides."""
    parser.add_argument("--params", default=str(DEFAULT_PARAMS), help="parameter file (default: params.yaml)")
    parser.add_argument("--preset", default=None, help="preset name in presets/ (vox-256, taichi-256, ...) or a path")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one parameter, e.g. --set train.num_epochs=2 (repeatable)",
    )


def params_from_args(args) -> dict[str, Any]:
    return load_params(args.params, args.preset, args.overrides)


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``; lists are kept as values (for MLflow params and DVC comparisons)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
