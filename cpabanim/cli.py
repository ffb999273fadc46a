"""The one command line both orchestrators call: ``cpabanim <stage> [options]``.

Pipeline stages (declared in :mod:`cpabanim.pipeline`) all take ``--params``, ``--preset``, ``--experiment`` and
``--set KEY=VALUE``; the CLI resolves the parameter layers once, checks them and the stage's inputs, opens the
stage's MLflow run, and hands the stage only what it declared. Commands (``params``, ``dag``, ``bench``, ``demo``,
``import-checkpoint``, ``weights``, ``ui``) are tools around the pipeline, each a module with ``add_arguments`` and ``run``.

Modules are imported only when they run, so ``cpabanim --help`` stays fast (torch is not imported).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys

from cpabanim.errors import CpabanimError

log = logging.getLogger("cpabanim")

# command name -> (module with add_arguments/run, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "params": ("cpabanim.commands.params", "show the resolved parameters (and where each value comes from), or write them"),
    "dag": ("cpabanim.commands.dag", "generate (or check) dvc.yaml and workflow/rules/*.smk from the stage declarations"),
    "demo": ("cpabanim.commands.demo", "animate your own photo with a driving video"),
    "import-checkpoint": ("cpabanim.commands.import_checkpoint", "convert a TPSMM checkpoint into a cpabanim one"),
    "bench": ("cpabanim.commands.bench", "benchmarks that print figures side by side (cpab, train, data)"),
    "weights": ("cpabanim.commands.weights", "fetch official pretrained weights (SAM, VGG19, DINO) into paths.weights"),
    "ui": ("cpabanim.commands.ui", "open the runs in the MLflow UI (model-training layout)"),
}


def build_parser() -> argparse.ArgumentParser:
    from cpabanim.pipeline import STAGE_MODULES

    parser = argparse.ArgumentParser(prog="cpabanim", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="stage", metavar="<stage>")
    for name in STAGE_MODULES:
        sub.add_parser(name, help=f"pipeline stage {name}", add_help=False)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def stage_parser(name: str) -> argparse.ArgumentParser:
    """The options of pipeline stage ``name``: the shared parameter options, the stage's own, and for the report the
    experiments to compare."""
    from cpabanim.config.layers import add_params_arguments
    from cpabanim.pipeline import all_stages

    stage = all_stages()[name]
    parser = argparse.ArgumentParser(prog=f"cpabanim {name}", description=stage.help)
    add_params_arguments(parser)
    if stage.aggregate:
        parser.add_argument("--experiments", default=None,
                            help="comma-separated experiments to compare (default: the experiment of the params)")
    module = importlib.import_module(stage.module)
    if hasattr(module, "add_arguments"):
        module.add_arguments(parser)
    return parser


def run_pipeline_stage(name: str, rest: list[str]) -> None:
    from cpabanim.tracking import runs
    from cpabanim.config.layers import params_from_args
    from cpabanim.pipeline import all_stages, check_inputs, stage_config, stage_io

    stage = all_stages()[name]
    args = stage_parser(name).parse_args(rest)
    params = params_from_args(args)
    experiments = None
    if stage.aggregate:
        experiments = [e for e in (args.experiments or params["experiment"]).split(",") if e]
    io = stage_io(stage, params, experiments)
    check_inputs(stage, io)
    cfg = stage_config(stage, params)
    common = {"params", "preset", "experiment", "overrides", "overrides_file", "experiments"}
    options = {k: v for k, v in vars(args).items() if k not in common}
    module = importlib.import_module(stage.module)
    with runs.stage_context(name, params, used=cfg.to_dict()):
        if stage.aggregate:
            module.run(cfg, io, params=params, **options)
        else:
            module.run(cfg, io, **options)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    top, rest = parser.parse_known_args(argv)  # the stage module owns the rest of the arguments
    if top.stage is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.DEBUG if top.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        if top.stage in COMMANDS:
            module_name, help_text = COMMANDS[top.stage]
            module = importlib.import_module(module_name)
            command = argparse.ArgumentParser(prog=f"cpabanim {top.stage}", description=help_text)
            module.add_arguments(command)
            return int(module.run(command.parse_args(rest)) or 0)
        run_pipeline_stage(top.stage, rest)
        return 0
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except CpabanimError as err:
        log.error("%s", err)
        return 1
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT):
            # a full or read-only disk is the user's to fix: one line naming the path, no traceback
            log.error("cannot write %s: %s", err.filename or "a file", err.strerror)
            return 1
        raise
