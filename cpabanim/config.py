"""Parameters: four layers, one home for every default, validated before any stage works.

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
get a :class:`Section` view of it (frozen, attribute access) restricted to the keys they declare
(:mod:`cpabanim.stages`).
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cpabanim.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")
DEFAULT_EXPERIMENT = "default"
RESERVED_EXPERIMENT_NAMES = ("report",)  # {paths.outputs}/report holds the comparison of experiments
# names that become folder names and MLflow run names: a strict pattern, no path separators
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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


def read_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping (an empty file is an empty mapping); clear errors otherwise."""
    try:
        values = yaml_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{what} {path} cannot be read: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} {path} is not valid YAML: {err}") from None
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


def parse_override(assignment: str) -> dict[str, Any]:
    """``"train.batch_size=3"`` -> ``{"train": {"batch_size": 3}}``; the value is parsed as YAML (``1e-4``, ``[1, 2]``)."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} is not of the form key.sub=value")
    dotted, raw = assignment.split("=", 1)
    dotted = dotted.strip()
    if not dotted or any(not part for part in dotted.split(".")):
        raise ConfigError(f"override {assignment!r} has an empty key")
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"override {assignment!r}: the value is not valid YAML ({problem})") from None
    return nest({dotted: value})


def _typed(value: Any) -> Any:
    """Snakemake parses ``--config k='{a: 1}'`` with YAML's BaseLoader (every leaf a string): read leaves again."""
    if isinstance(value, Mapping):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if isinstance(value, str):
        try:
            return yaml_load(value) if value.strip() else value
        except yaml.YAMLError:
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
            for assignment in value if isinstance(value, list) else [value]:
                out = deep_merge(out, parse_override(str(assignment)))
        else:
            out = deep_merge(out, nest({key: _typed(value)}))
    return out


# --------------------------------------------------------------------------------------------------------------
# the schema: structure, types and defaults


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


def _validator():
    """Draft 2020-12, except that ``4.0`` is not an integer (JSON Schema would accept it; a step count of 4.0 is a
    mistake that would fail deep inside a stage)."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine("integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool))
    return jsonschema.validators.extend(base, type_checker=checker)(schema())


def validate(params: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` listing every schema violation and cross-field inconsistency."""
    errors = sorted(_validator().iter_errors(params), key=lambda e: list(e.absolute_path))
    lines = [f"  {'.'.join(str(p) for p in e.absolute_path) or '<top level>'}: {e.message}" for e in errors]
    if not lines:
        lines = [f"  {problem}" for problem in consistency_problems(params)]
    if lines:
        raise ConfigError("invalid parameters:\n" + "\n".join(lines))


def consistency_problems(params: Mapping[str, Any]) -> list[str]:
    """Checks across keys that the schema cannot express, run when parameters load (before any stage works)."""
    problems = []
    size = params["data"]["frame_size"]
    model = params["model"]
    levels = model["generator"]["num_down_blocks"]
    if size % (2 ** levels):
        problems.append(f"data.frame_size {size} must be divisible by 2^model.generator.num_down_blocks = {2 ** levels}")
    scale = model["dense_motion"]["scale_factor"]
    if abs(2 ** round(math.log2(scale)) - scale) > 1e-9:
        problems.append(f"model.dense_motion.scale_factor {scale} must be a power of 1/2 (0.5, 0.25, ...)")
    else:
        working = size * scale
        depth = model["dense_motion"]["num_blocks"]
        if working != int(working) or int(working) % (2 ** depth):
            problems.append(f"the dense-motion working size data.frame_size x scale_factor = {working:g} must be divisible "
                            f"by 2^model.dense_motion.num_blocks = {2 ** depth}")
    if params["data"]["source"] == "synthetic":
        train_items = params["data"]["synthetic"]["num_train"] * params["data"]["num_repeats"]
        if train_items < params["train"]["batch_size"]:
            problems.append(f"train.batch_size {params['train']['batch_size']} is larger than the synthetic training set "
                            f"({train_items} items = data.synthetic.num_train x data.num_repeats)")
    return problems


# --------------------------------------------------------------------------------------------------------------
# the layers


def preset_path(name: str | Path, base_dir: str | Path = ".") -> Path:
    """Where preset ``name`` lives: a path as given, or ``<base_dir>/presets/<name>.yaml`` for a bare name."""
    return _overlay_path(name, base_dir, "presets")


def experiment_path(name: str, base_dir: str | Path = ".") -> Path:
    return _overlay_path(name, base_dir, "experiments")


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
        known = ", ".join(available(folder, base_dir)) or "none found"
        raise ConfigError(f"{kind} {name!r} not found at {path} (available: {known})")
    values = read_mapping(path, kind)
    for forbidden in ("paths", "experiment", *(["preset"] if kind == "preset" else [])):
        if forbidden in values:
            raise ConfigError(f"{kind} {path} must not set `{forbidden}` (set it in params.yaml or on the command line)")
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
    if preset:
        params = deep_merge(params, _overlay("preset", str(preset), base_dir))
    params = deep_merge(params, nest(file_values or {}))
    if experiment_path(experiment, base_dir).is_file():
        params = deep_merge(params, _overlay("experiment", experiment, base_dir))
    elif experiment != DEFAULT_EXPERIMENT:
        known = ", ".join(available("experiments", base_dir)) or "none found"
        raise ConfigError(f"experiment {experiment!r} not found at {experiment_path(experiment, base_dir)} "
                          f"(available: {known})")
    params = deep_merge(params, nest(overrides or {}))
    params["preset"] = str(preset) if preset else None
    params["experiment"] = str(experiment)
    validate(params)
    return params


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


def add_params_arguments(parser) -> None:
    """The options every stage shares: which params file, which preset and experiment, and key=value overrides."""
    parser.add_argument("--params", default=str(DEFAULT_PARAMS), help="parameter file (default: params.yaml)")
    parser.add_argument("--preset", default=None, help="preset in presets/ (vox-256, taichi-256, ...) or a path")
    parser.add_argument("--experiment", default=None, help="experiment in experiments/ (cpab, tps, ...)")
    parser.add_argument("--overrides", dest="overrides_file", default=None, metavar="FILE",
                        help="a YAML mapping of parameter values on the command-line layer (the Snakefile hands its "
                             "jobs the `--config` values this way; --set wins over it)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one parameter, e.g. --set train.num_epochs=2 (repeatable)",
    )


def params_from_args(args) -> dict[str, Any]:
    values = read_mapping(Path(args.overrides_file), "overrides file") if getattr(args, "overrides_file", None) else None
    return load_params(args.params, args.preset, args.overrides, getattr(args, "experiment", None), values)


# --------------------------------------------------------------------------------------------------------------
# typed, frozen views for the stages


class Section(dict):
    """A frozen view of params: ``cfg.train.batch_size`` or ``cfg["train"]["batch_size"]``.

    Built once at the CLI from validated params and restricted to the keys a stage declares, so a stage cannot
    read (and the orchestrators cannot miss) a key it did not declare: reading one raises ``KeyError`` naming it.
    A ``dict`` underneath, so JSON, comparisons and ``torch.save`` see plain values.
    """

    def __init__(self, values: Mapping[str, Any], where: str = ""):
        super().__init__({k: Section(v, f"{where}{k}.") if isinstance(v, Mapping) else copy.deepcopy(v)
                          for k, v in values.items()})
        object.__setattr__(self, "_where", where)

    def __getitem__(self, key: str) -> Any:
        try:
            return dict.__getitem__(self, key)
        except KeyError:
            raise KeyError(f"{self._where}{key} (not among the parameters this stage declares)") from None

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__") or key == "_where":
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError as err:
            raise AttributeError(str(err)) from None

    def _read_only(self, *args, **kwargs):
        raise TypeError(f"parameters are read-only ({self._where or 'params'})")

    __setattr__ = __setitem__ = __delitem__ = _read_only
    clear = pop = popitem = setdefault = update = __ior__ = _read_only  # type: ignore[assignment]

    def __deepcopy__(self, memo) -> dict[str, Any]:
        return self.to_dict()  # a copy is for changing: hand out a plain dict

    def __copy__(self) -> dict[str, Any]:
        return self.to_dict()

    def __reduce__(self):
        return (dict, (self.to_dict(),))  # pickles (DataLoader workers, checkpoints) as a plain dict

    def to_dict(self) -> dict[str, Any]:
        return {k: v.to_dict() if isinstance(v, Section) else copy.deepcopy(v) for k, v in self.items()}


def restrict(params: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """Only the dotted ``keys`` (a key names a value or a whole section) of ``params``, as a nested dict."""
    out: dict[str, Any] = {}
    for dotted in keys:
        node: Any = params
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise ConfigError(f"a stage declares the parameter {dotted!r}, which the schema does not have")
            node = node[part]
        out = deep_merge(out, nest({dotted: copy.deepcopy(node)}))
    return out
