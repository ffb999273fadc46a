"""The one command line both orchestrators call: ``cpabanim <stage> [options]`` (``cpabanim --help`` lists them,
``cpabanim --version`` names the installed version).

Pipeline stages (each declared once in :mod:`cpabanim.pipeline`, whose declaration's ``help`` is its line in
``cpabanim --help``) all take the parameter layers' options ``--params``, ``--preset``, ``--experiment``, ``--set
KEY=VALUE`` and ``--overrides FILE`` (how the Snakefile hands its jobs the ``--config`` values); the CLI resolves
the layers once, checks them and the stage's inputs, opens the stage's MLflow run, and hands the stage only what it
declared. Commands (:mod:`cpabanim.commands`: ``params``, ``dag``, ``bench``, ``demo``, ``import-checkpoint``,
``weights``, ``ui``, ``tracking-server``, ``app``, ``checkpoints``) are tools around the pipeline, each a module with
``add_arguments`` and ``run``; each takes only the layer options it reads.

Every error is one line on stderr in argparse's form, ``<prog>: error: <message>``, where ``<prog>`` is
``cpabanim`` or ``cpabanim <stage>``; a misspelt stage, option or parameter key ends with ``(did you mean
'...'?)``. Exit codes: 2 for a usage error (an unknown option, a missing argument, an unknown stage), 1 for
anything the user can fix from the message (a :class:`~cpabanim.errors.CpabanimError`: invalid parameters, missing
inputs or weights, a full or read-only disk), 130 when interrupted.

Modules are imported only when they run, so ``cpabanim --help`` stays fast (torch is not imported).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys

from cpabanim.errors import CpabanimError, did_you_mean

log = logging.getLogger("cpabanim")

# command name -> (module with add_arguments/run, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "params": (
        "cpabanim.commands.params",
        "show the resolved parameters (and where each value comes from), or write them",
    ),
    "dag": (
        "cpabanim.commands.dag",
        "generate (or check) dvc.yaml and workflow/rules/*.smk from the stage declarations",
    ),
    "demo": ("cpabanim.commands.demo", "animate your own photo with a driving video"),
    "app": ("cpabanim.commands.app", "the demo as a web page on 127.0.0.1 (Gradio: pip install 'cpabanim[app]')"),
    "import-checkpoint": ("cpabanim.commands.import_checkpoint", "convert a TPSMM checkpoint into a cpabanim one"),
    "bench": ("cpabanim.commands.bench", "benchmarks that print figures side by side (cpab, train, data)"),
    "weights": ("cpabanim.commands.weights", "fetch official pretrained weights (SAM, VGG19, DINO) into paths.weights"),
    "ui": ("cpabanim.commands.ui", "open the runs in the MLflow UI (model-training layout)"),
    "tracking-server": (
        "cpabanim.commands.tracking_server",
        "serve one MLflow tracking server (PostgreSQL store) that jobs on several machines log to",
    ),
    "record": ("cpabanim.commands.record", "write what a Snakemake run made into dvc.lock (dvc commit)"),
    "checkpoints": ("cpabanim.commands.checkpoints", "list the trained models, with every one a restart kept aside"),
}


class UsageError(Exception):
    """A command line argparse refuses (exit 2): raised by :class:`CliParser` so that :func:`main` prints it."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog, self.message = prog, message


class CliParser(argparse.ArgumentParser):
    """argparse, with the CLI's error form (one line, no usage dump: see :func:`main`) and a suggestion for a
    misspelt choice or option."""

    def error(self, message: str):  # argparse's hook for every usage error; it must not return
        raise UsageError(self.prog, f"{message}; see '{self.prog} --help'")

    def _check_value(self, action: argparse.Action, value) -> None:
        if action.choices is not None and value not in action.choices:
            hint = did_you_mean(value, action.choices)
            if hint:
                raise argparse.ArgumentError(action, f"invalid choice: {value!r}{hint}")
        super()._check_value(action, value)

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            options = [a.split("=", 1)[0] for a in extras if a.startswith("--")]
            hint = did_you_mean(options[0], self._option_string_actions) if options else ""
            self.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return parsed


class _CliFormatter(logging.Formatter):
    """The CLI's log lines; an error :func:`report_error` logs reads as argparse's ``<prog>: error: <message>``."""

    def format(self, record: logging.LogRecord) -> str:
        prog = getattr(record, "cli_prog", None)
        if prog is not None:
            return f"{prog}: error: {record.getMessage()}"
        return super().format(record)


def configure_logging(verbose: bool = False) -> None:
    """Log to stderr with the CLI's format, unless the process has configured logging itself (tests, embedders)."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(_CliFormatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    if verbose and any(isinstance(h.formatter, _CliFormatter) for h in root.handlers):
        root.setLevel(logging.DEBUG)


def report_error(prog: str, message: str) -> None:
    """Print one user error: one line, ``<prog>: error: <message>`` (a message of several lines is joined)."""
    line = "; ".join(part.strip() for part in str(message).splitlines() if part.strip()) or "unknown error"
    log.error("%s", line, extra={"cli_prog": prog})


def build_parser() -> argparse.ArgumentParser:
    from cpabanim import __version__
    from cpabanim.pipeline import all_stages

    parser = CliParser(
        prog="cpabanim",
        description="CPAB motion image animation: the pipeline's stages, which "
        "Snakemake and DVC run, and the tools around them.",
        epilog="'cpabanim <stage> --help' lists the options of a stage or command.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"cpabanim {__version__}")
    sub = parser.add_subparsers(dest="stage", metavar="<stage>", title="pipeline stages (in order), then commands")
    for name, stage in all_stages().items():
        sub.add_parser(name, help=stage.help, add_help=False)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def stage_parser(name: str) -> argparse.ArgumentParser:
    """The options of pipeline stage ``name``: the parameter layers' options, the stage's own, and for the report
    the experiments to compare."""
    from cpabanim.config.layers import add_params_arguments
    from cpabanim.pipeline import all_stages

    stage = all_stages()[name]
    parser = CliParser(prog=f"cpabanim {name}", description=stage.help)
    add_params_arguments(parser, overrides_file=True)
    if stage.aggregate:
        parser.add_argument(
            "--experiments",
            default=None,
            help="comma-separated experiments to compare (default: the experiment of the params)",
        )
    if stage.shards:  # one job of a sharded stage (docs/pipeline.md, "Shards"); neither: every shard, then the gather
        job = parser.add_mutually_exclusive_group()
        job.add_argument("--shard", type=int, metavar="K", help=f"run shard K only (0 .. {stage.shards} - 1)")
        job.add_argument("--gather", action="store_true", help="write the stage's index from its shards' records")
    module = importlib.import_module(stage.module)
    if hasattr(module, "add_arguments"):
        module.add_arguments(parser)
    return parser


def run_pipeline_stage(name: str, rest: list[str]) -> None:
    from cpabanim.config.layers import params_from_args
    from cpabanim.pipeline import all_stages, check_inputs, check_outputs, journal, stage_config, stage_io
    from cpabanim.tracking import runs

    stage = all_stages()[name]
    args = stage_parser(name).parse_args(rest)
    params = params_from_args(args)
    experiments = None
    if stage.aggregate:
        experiments = [e for e in (args.experiments or params["experiment"]).split(",") if e]
    io = stage_io(stage, params, experiments)
    check_inputs(stage, io)
    check_outputs(stage, io)
    cfg = stage_config(stage, params)
    common = {"params", "preset", "experiment", "overrides", "overrides_file", "experiments"}
    options = {k: v for k, v in vars(args).items() if k not in common}
    module = importlib.import_module(stage.module)
    if options.get("shard") is not None:  # a shard job: its record says what it ran; the gather's run logs it all
        module.run(cfg, io, **options)
    else:
        from cpabanim.pipeline.resources import stage_gpus

        # only a stage whose work may run on a GPU with these parameters imports torch to name its device (2-3 s)
        device = stage_gpus(stage, params, None) > 0
        with runs.stage_context(name, params, used=cfg.to_dict(), seeded=stage.per_experiment, device=device):
            if stage.aggregate:  # the report, for its experiments' MLflow parent runs only (pipeline/report.py: run)
                module.run(cfg, io, params=params, **options)
            else:
                module.run(cfg, io, **options)
    # done: a Snakemake job says so in its invocation's journal, which `cpabanim record` commits (and only that)
    journal.note_completed(stage, params, options.get("shard"), bool(options.get("gather")))


def run_command(name: str, rest: list[str]) -> int:
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    command = CliParser(prog=f"cpabanim {name}", description=help_text)
    module.add_arguments(command)
    return int(module.run(command.parse_args(rest)) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    configure_logging()
    parser = build_parser()
    prog = parser.prog
    try:
        top, rest = parser.parse_known_args(argv)  # the stage module owns the rest of the arguments
        if top.stage is None:
            parser.print_help()
            return 2
        configure_logging(top.verbose)
        prog = f"cpabanim {top.stage}"
        if top.stage in COMMANDS:
            return run_command(top.stage, rest)
        run_pipeline_stage(top.stage, rest)
        return 0
    except UsageError as err:
        report_error(err.prog, err.message)
        return 2
    except KeyboardInterrupt:
        report_error(prog, "interrupted")
        return 130
    except CpabanimError as err:
        report_error(prog, str(err))
        return 1
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT):
            # a full or read-only disk is the user's to fix: one line naming the path, no traceback
            report_error(prog, f"cannot write {err.filename or 'a file'}: {err.strerror}")
            return 1
        raise
