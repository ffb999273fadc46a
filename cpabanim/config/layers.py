"""Parameters in five layers, resolved into one validated plain dict before any stage works.

Layers, lowest first (docs/pipeline.md, "Parameters"):

1. **built-in defaults**: the ``default`` of every leaf of the schema (``cpabanim/schemas/<section>.yaml``); they
   describe the embedded default (synthetic data, small model, CPU). No Python dict repeats them.
2. **the preset** named by ``preset`` (``presets/<name>.yaml``, the paper's experiments), sparse;
3. **params.yaml**, the project's own file, sparse: only what differs (``dvc exp run -S`` edits it);
4. **the experiment overlay** named by ``experiment`` (``experiments/<name>.yaml``: CPAB vs TPS, ablations), sparse;
5. **command-line overrides**: ``--set key=value`` / ``--preset`` / ``--experiment`` on a stage, ``snakemake
   --config key=value`` / ``--configfile FILE``.

The preset and experiment *names* are read from the merged upper layers first, so ``--set preset=vox-256`` picks
the preset that then sits below params.yaml. :func:`load_params` returns a complete, validated plain dict; stages
get a :class:`~cpabanim.config.section.Section` of it restricted to the keys they declare (:mod:`cpabanim.pipeline`),
and library code takes typed sections (:mod:`cpabanim.config.typed`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cpabanim.config.mappings import deep_merge, flatten, nest, read_mapping
from cpabanim.config.overrides import parse_override
from cpabanim.config.paths import REPORT_FOLDER
from cpabanim.config.schema import defaults, validate
from cpabanim.errors import ConfigError, did_you_mean

DEFAULT_PARAMS = Path("params.yaml")
DEFAULT_EXPERIMENT = "default"
RESERVED_EXPERIMENT_NAMES = (REPORT_FOLDER,)  # {paths.outputs}/report holds the comparison of experiments
# names that become folder names and MLflow run names: a strict pattern, no path separators
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def preset_path(name: str | Path, base_dir: str | Path = ".") -> Path:
    """Where preset ``name`` lives: a path as given, or ``<base_dir>/presets/<name>.yaml`` for a bare name."""
    return _overlay_path(name, base_dir, "presets")


def experiment_path(name: str, base_dir: str | Path = ".") -> Path:
    return _overlay_path(name, base_dir, "experiments")


_MISSING = object()


def _overlay_path(name: str | Path, base_dir: str | Path, folder: str) -> Path:
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml"):
        return candidate if candidate.is_absolute() or candidate.is_file() else Path(base_dir) / candidate
    if not NAME_PATTERN.match(str(name)):
        raise ConfigError(f"{folder[:-1]} name {str(name)!r} is not a plain name (letters, digits, '_', '-', '.')")
    return Path(base_dir) / folder / f"{name}.yaml"


def available(folder: str, base_dir: str | Path = ".") -> list[str]:
    root = Path(base_dir) / folder
    return sorted(p.stem for p in root.glob("*.yaml")) if root.is_dir() else []


def _overlay(kind: str, name: str, base_dir: str | Path) -> dict[str, Any]:
    """A preset or experiment file (sparse params); neither may set ``paths`` nor chain to another overlay."""
    folder = "presets" if kind == "preset" else "experiments"
    path = _overlay_path(name, base_dir, folder)
    if not path.is_file():
        names = available(folder, base_dir)
        raise ConfigError(
            f"{kind} {name!r} not found at {path} (available: {', '.join(names) or 'none found'})"
            + did_you_mean(name, names)
        )
    values = read_mapping(path, kind)
    for forbidden in ("paths", "experiment", *(["preset"] if kind == "preset" else [])):
        if forbidden in values:
            raise ConfigError(
                f"{kind} {path} must not set `{forbidden}` (set it in params.yaml or on the command line)"
            )
    return values


def resolve(
    file_values: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    base_dir: str | Path = ".",
) -> dict[str, Any]:
    """Merge defaults < preset < params.yaml < experiment < overrides, validate, and return a complete plain dict.

    ``file_values`` is the content of params.yaml; ``overrides`` a nested (or dotted) mapping from the command line.
    """
    upper = deep_merge(nest(file_values or {}), nest(overrides or {}))
    preset = upper.get("preset")
    experiment = upper.get("experiment") or DEFAULT_EXPERIMENT
    if experiment in RESERVED_EXPERIMENT_NAMES:
        raise ConfigError(f"experiment {experiment!r}: the name is taken by the comparison report's folder")
    params = defaults()
    layers = [("the command line", nest(overrides or {}))]
    if preset:
        preset_values = _overlay("preset", str(preset), base_dir)
        params = deep_merge(params, preset_values)
        layers.append((f"preset {preset}", preset_values))
    params = deep_merge(params, nest(file_values or {}))
    layers.insert(1, ("params.yaml", nest(file_values or {})))
    if experiment_path(experiment, base_dir).is_file():
        experiment_values = _overlay("experiment", experiment, base_dir)
        params = deep_merge(params, experiment_values)
        layers.insert(1, (f"experiments/{experiment}.yaml", experiment_values))
    elif experiment != DEFAULT_EXPERIMENT:
        names = available("experiments", base_dir)
        raise ConfigError(
            f"experiment {experiment!r} not found at {experiment_path(experiment, base_dir)} "
            f"(available: {', '.join(names) or 'none found'})" + did_you_mean(experiment, names)
        )
    params = deep_merge(params, nest(overrides or {}))
    params["preset"] = str(preset) if preset else None
    params["experiment"] = str(experiment)
    try:
        validate(params)
    except ConfigError as err:
        raise ConfigError(f"{err}{origin_note(str(err), layers)}") from None
    return params


def set_by(dotted: str, layers: list[tuple[str, Mapping[str, Any]]]) -> str | None:
    """The first of ``layers`` (highest first) that sets the key ``dotted``; None: a default."""
    for name, values in layers:
        node: Any = values
        for part in dotted.split("."):
            node = node.get(part, _MISSING) if isinstance(node, Mapping) else _MISSING
        if node is not _MISSING:
            return name
    return None


def origin_note(message: str, layers: list[tuple[str, Mapping[str, Any]]]) -> str:
    """Where each refused key of a validation ``message`` was set, so that the fix is found where it must be made:
    a value ``dvc exp run -S`` wrote into params.yaml stays there after DVC reports the failure."""
    problems = message.removeprefix("invalid parameters: ").split("; ")
    # a misspelt key has no value anywhere worth pointing at: its message ends with the closest key
    keys = [m.group(1) for p in problems if "no such parameter" not in p and (m := re.match(r"([A-Za-z0-9_.]+):", p))]
    origins = {key: layer for key in keys if (layer := set_by(key, layers))}
    if not origins:
        return ""
    note = "; ".join(f"{key} from {layer}" for key, layer in origins.items())
    if "params.yaml" in origins.values():
        note += ": fix it there; a value that `dvc exp run -S` wrote stays until `git checkout params.yaml`"
    return f" ({note})"


def load_params(
    path: str | Path = DEFAULT_PARAMS,
    preset: str | Path | None = None,
    overrides: Iterable[str] | None = None,
    experiment: str | None = None,
    override_values: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Read params.yaml and resolve the layers (``preset``/``experiment``/``overrides`` are command-line layers;
    ``override_values``, a nested mapping, sits under the ``overrides`` assignments)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"parameter file {path} not found (run from the project root or pass --params)")
    cli: dict[str, Any] = nest(override_values or {})
    for assignment in overrides or []:
        cli = deep_merge(cli, parse_override(assignment))
    if preset:
        cli["preset"] = str(preset)
    if experiment:
        cli["experiment"] = experiment
    return resolve(read_mapping(path, "parameter file"), cli, base_dir=path.parent)


def changed_from_defaults(params: Mapping[str, Any]) -> dict[str, Any]:
    """The dotted keys whose value differs from the built-in defaults (what makes an experiment what it is)."""
    base = flatten(defaults())
    return {k: v for k, v in flatten(params).items() if base.get(k, object()) != v and k not in ("experiment",)}


def add_params_arguments(parser, *, preset: bool = True, experiment: bool = True, overrides_file: bool = False) -> None:
    """The parameter layers' options, for a stage or a command that resolves params (:func:`params_from_args`):
    ``--params FILE`` and ``--set KEY=VALUE`` always; ``--preset`` and ``--experiment`` where that overlay can
    change what the command does; ``--overrides FILE`` with ``overrides_file`` (pipeline stages: how the Snakefile
    hands its jobs the ``--config`` values). A command offers only the options it reads."""
    parser.add_argument("--params", default=str(DEFAULT_PARAMS), help="parameter file (default: params.yaml)")
    if preset:
        parser.add_argument("--preset", default=None, help="preset in presets/ (vox-256, taichi-256, ...) or a path")
    if experiment:
        parser.add_argument("--experiment", default=None, help="experiment in experiments/ (cpab, tps, ...)")
    if overrides_file:
        parser.add_argument(
            "--overrides",
            dest="overrides_file",
            default=None,
            metavar="FILE",
            help="a YAML mapping of parameter values on the command-line layer (the Snakefile hands "
            "its jobs the `--config` values this way; --set wins over it)",
        )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one parameter, e.g. --set train.num_epochs=2 (repeatable)",
    )


def params_from_args(args) -> dict[str, Any]:
    """The resolved params of a command line parsed with :func:`add_params_arguments`' options (those it lacks
    are absent layers)."""
    overrides_file = getattr(args, "overrides_file", None)
    values = read_mapping(Path(overrides_file), "overrides file") if overrides_file else None
    return load_params(
        args.params, getattr(args, "preset", None), args.overrides, getattr(args, "experiment", None), values
    )
