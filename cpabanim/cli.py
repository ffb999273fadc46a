"""The one command line both orchestrators call: ``cpabanim <stage> [options]``.

Every stage lives in its own module, which provides

    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int | None

Modules are imported only when their stage runs, so ``cpabanim --help`` stays fast (torch is not imported).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from cpabanim.errors import CpabanimError

# stage name -> (module, one-line help)
STAGES: dict[str, tuple[str, str]] = {
    "download": ("cpabanim.data.download", "fetch a dataset (or pretrained weights) into the raw data folder"),
    "preprocess": ("cpabanim.data.preprocess", "turn raw videos into the train/test frame dataset"),
    "masks": ("cpabanim.masks", "extract SAM (or offline superpixel) region masks for the training frames"),
    "train": ("cpabanim.train", "train the animation model (resumes from the last checkpoint)"),
    "reconstruct": ("cpabanim.reconstruct", "video reconstruction: source = frame 0, driving = every frame"),
    "animate": ("cpabanim.animate", "cross-identity animation on a deterministic list of test pairs"),
    "evaluate": ("cpabanim.evaluate", "metrics (L1, PSNR, SSIM, AKD, MKR, AED) of reconstructions and animations"),
    "report": ("cpabanim.report", "report metrics to MLflow and print a comparison table of runs"),
    "bench": ("cpabanim.bench", "benchmarks that print figures side by side (cpab, train)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cpabanim", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="stage", metavar="<stage>")
    for name, (module, help_text) in STAGES.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Parse only up to the stage name; the stage module owns the rest of the arguments.
    top, rest = parser.parse_known_args(argv)
    if top.stage is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if top.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
    )
    module_name, help_text = STAGES[top.stage]
    module = importlib.import_module(module_name)
    stage_parser = argparse.ArgumentParser(prog=f"cpabanim {top.stage}", description=help_text)
    module.add_arguments(stage_parser)
    args = stage_parser.parse_args(rest)
    try:
        code = module.run(args)
    except KeyboardInterrupt:
        logging.getLogger("cpabanim").error("interrupted")
        return 130
    except CpabanimError as err:
        logging.getLogger("cpabanim").error("%s", err)
        return 1
    return int(code or 0)
