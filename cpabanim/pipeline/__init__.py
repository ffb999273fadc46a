"""The pipeline's stages, each declared once (docs/pipeline.md, "Stages").

    download -> preprocess -> masks -> train -> avd -> animate -> evaluate -> report
                                           train -> reconstruct -> evaluate

Every stage module in this package holds its declaration (``STAGE``, a :class:`~cpabanim.pipeline.base.Stage`:
the keys it reads, its inputs and outputs, its one-line ``help`` that ``cpabanim --help`` shows), optionally
``add_arguments(parser)`` for options of its own, and one function ``run(cfg, io)``: ``cfg`` is a frozen
:class:`~cpabanim.config.section.Section` with exactly the parameters it declares (plus ``paths`` as the params
hold them, and the experiment's name), ``io`` the concrete input and output paths (a per-experiment stage finds
its experiment's folders there only; :class:`cpabanim.config.paths.ExperimentPaths` spells the same folders);
``run`` makes one call into a library (``cpabanim.data``, ``cpabanim.training``, ``cpabanim.animation``,
``cpabanim.evaluation``, ``cpabanim.reporting``). Stage modules import no torch at module level: the CLI and
``cpabanim dag`` read every declaration. Both orchestrators' files (dvc.yaml, workflow/rules/*.smk) are generated
from the declarations (``cpabanim dag``).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cpabanim import files
from cpabanim.config.section import Section, restrict
from cpabanim.data.layout import is_shard_name
from cpabanim.errors import ConfigError, DataError
from cpabanim.pipeline.base import SHARDS_FOLDER, Output, Stage, StageIO, expand

STAGE_MODULES = ("download", "preprocess", "masks", "train", "avd", "reconstruct", "animate", "evaluate", "report")


def all_stages() -> dict[str, Stage]:
    """name -> declaration, in pipeline order (imports only the light stage modules, never torch)."""
    return {name: importlib.import_module(f"cpabanim.pipeline.{name}").STAGE for name in STAGE_MODULES}


def producers() -> dict[str, tuple[Stage, Output]]:
    """output name -> (the stage that writes it, the output)."""
    return {out.name: (stage, out) for stage in all_stages().values() for out in stage.outputs}


def stage_config(stage: Stage, params: Mapping[str, Any]) -> Section:
    """The frozen view a stage runs with: its declared params and settings, ``paths`` (as the params hold them:
    a per-experiment stage finds its experiment's folders in ``io``, never here) and the experiment name."""
    values = restrict(params, (*stage.params, *stage.settings))
    values["paths"] = dict(params["paths"])
    values["experiment"] = params["experiment"]
    return Section(values)


def run_seeds(params: Mapping[str, Any]) -> list[int]:
    """The seeds every experiment runs with: ``seeds``, or the one ``seed`` when it is null."""
    return [int(s) for s in (params["seeds"] or [params["seed"]])]


def stage_io(stage: Stage, params: Mapping[str, Any], experiments: list[str] | None = None) -> StageIO:
    """The concrete paths of ``stage`` for the experiment and seed in ``params`` (aggregate stages: every
    experiment of ``experiments``, every seed of :func:`run_seeds`)."""
    outputs = producers()

    def path_of(out: Output, experiment: str, seed: int) -> Path:
        return Path(expand(out.path, {**params, "experiment": experiment, "seed": seed}))

    experiment, seed = params["experiment"], int(params["seed"])
    io = StageIO(
        # an aggregate stage reads its inputs per run (io.experiments), not the base experiment's
        inputs={} if stage.aggregate else {name: path_of(outputs[name][1], experiment, seed) for name in stage.inputs},
        outputs={out.name: path_of(out, experiment, seed) for out in stage.outputs},
    )
    for name in experiments or []:
        io.experiments[name] = {
            s: {key: path_of(outputs[key][1], name, s) for key in stage.inputs} for s in run_seeds(params)
        }
    return io


def check_inputs(stage: Stage, io: StageIO) -> None:
    """Every input exists (a clear error naming the stage that makes it, before any work)."""
    owners = producers()
    paths = [(name, path) for name, path in io.inputs.items()]
    paths += [(name, path) for seeds in io.experiments.values() for per in seeds.values() for name, path in per.items()]
    for name, path in paths:
        gathered = owners[name][1].gathered
        # a sharded stage's folder is there once its index is (a folder without shards is laid out by hand)
        by_hand = path.is_dir() and not (path / SHARDS_FOLDER).is_dir()
        needed = path / gathered[0] if gathered and not by_hand else path
        if not needed.exists():
            raise DataError(f"{stage.name} needs {needed} ({name}): run `cpabanim {owners[name][0].name}` first")


def check_outputs(stage: Stage, io: StageIO) -> None:
    """Check every folder the stage fills before it works (:func:`cpabanim.files.check_output_folder`; the stage
    claims it when it starts writing): one that holds files cpabanim did not write is refused in one line, naming
    the parameter that points there. Persistent folders (downloads, checkpoints) are left out: their stages never
    delete what they did not write, and ``paths.raw`` may well be a folder of videos the user already has."""
    for out in stage.outputs:
        if out.kind != "dir" or out.persist:
            continue
        param = re.match(r"\{(paths\.[a-z_]+)\}", out.path)
        where = f"set {param.group(1)} to another folder" if param else "choose another folder"
        if out.gathered:  # shared by its shard jobs (each claims its own shard folder): shards and the index only
            own = lambda name, out=out: name in (SHARDS_FOLDER, *out.gathered, files.OWNER_FILE)  # noqa: E731
            files.check_output_folder(io.outputs[out.name], f"move them away or {where}", own=own)
            continue
        if out.holds_shards:  # the shards' folders only (each claimed by its shard job)
            files.check_output_folder(io.outputs[out.name], f"move them away or {where}", own=is_shard_name)
            continue
        legacy = f"an output of a cpabanim older than its {files.OWNER_FILE} mark: delete it"
        files.check_output_folder(io.outputs[out.name], f"move them away or {where} ({legacy})")


def check_shared_stages(params_by_experiment: Mapping[str, Mapping[str, Any]]) -> None:
    """Experiments share download, preprocess and masks: no experiment may change a parameter those read."""
    from cpabanim.config.mappings import flatten

    names = list(params_by_experiment)
    for stage in all_stages().values():
        if stage.per_experiment or stage.aggregate:
            continue
        views = {n: flatten(restrict(params_by_experiment[n], stage.params)) for n in names}
        first = views[names[0]]
        for name in names[1:]:
            differing = sorted(k for k in first.keys() | views[name].keys() if first.get(k) != views[name].get(k))
            if differing:
                raise ConfigError(
                    f"experiments {names[0]} and {name} differ in {', '.join(differing)}, read by the shared "
                    f"stage {stage.name}: put such changes in params.yaml or a preset, not in an experiment"
                )


def check_shard_counts(params_by_experiment: Mapping[str, Mapping[str, Any]]) -> None:
    """Every experiment of one run splits a sharded per-experiment stage into the same shards: its count key
    (``reconstruct.shards``) names the jobs of the workflow, one list for every run (and dvc.yaml's matrix)."""
    from cpabanim.config.mappings import flatten

    names = list(params_by_experiment)
    for stage in all_stages().values():
        if not (stage.shards and stage.per_experiment):
            continue
        counts = {name: flatten(params_by_experiment[name])[stage.shards] for name in names}
        differing = [name for name in names if counts[name] != counts[names[0]]]
        if differing:
            raise ConfigError(
                f"experiments {names[0]} and {differing[0]} differ in {stage.shards} ({counts[names[0]]} and "
                f"{counts[differing[0]]}), the shard jobs of every run: put it in params.yaml or a preset, not in "
                "an experiment"
            )


def distinct_experiments(
    params_by_experiment: Mapping[str, Mapping[str, Any]], wanted: list[str]
) -> tuple[list[str], dict[str, str]]:
    """The experiments of ``wanted`` that differ, in order, and the aliases: an experiment whose resolved
    parameters equal those of an earlier one in ``params_by_experiment`` (the base experiment comes first) *is*
    that experiment (``cpab`` sets the defaults' ``model.motion: cpab``: it is ``default``), so it is trained and
    evaluated once, under the earlier name."""

    def values(name: str) -> dict[str, Any]:
        return {k: v for k, v in params_by_experiment[name].items() if k != "experiment"}

    order = list(params_by_experiment)
    canonical = {name: next(e for e in order if values(e) == values(name)) for name in wanted}
    aliases = {name: same for name, same in canonical.items() if same != name}
    return list(dict.fromkeys(canonical[name] for name in wanted)), aliases
