"""``cpabanim weights``: fetch the official pretrained weights into ``{paths.weights}`` (docs/data.md).

    cpabanim weights sam_vit_b            # one file (resumable; its sha256 checked)
    cpabanim weights vgg19 dino_vitb8     # several
    cpabanim weights auto                 # exactly what the params need (nothing for the offline default)

Not a pipeline stage: weights are an input the user fetches once, like the data a ``source_dir`` points at.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cpabanim.config.layers import add_params_arguments, params_from_args
from cpabanim.errors import ConfigError, did_you_mean

log = logging.getLogger("cpabanim")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cpabanim.data.download import weight_names

    add_params_arguments(parser)
    parser.add_argument(
        "names", nargs="+", metavar="NAME", help=f"{', '.join(weight_names())}, or auto (what the params need)"
    )
    parser.add_argument("--url", default=None, help="fetch a single NAME from this mirror instead of the official URL")


def run(args: argparse.Namespace) -> int:
    from cpabanim.data.download import download_weights, needed_weights, weight_names

    params = params_from_args(args)
    names = needed_weights(params) if args.names == ["auto"] else list(args.names)
    unknown = sorted(set(names) - set(weight_names()))
    if unknown:
        raise ConfigError(
            f"unknown weights {', '.join(unknown)}: choose from {', '.join(weight_names())} or auto"
            + did_you_mean(unknown[0], [*weight_names(), "auto"])
        )
    if args.url and len(names) != 1:
        raise ConfigError("--url names the mirror of one weight file: give exactly one NAME with it")
    for name in names:
        path = download_weights(name, Path(params["paths"]["weights"]), args.url)
        log.info("weights %s ready at %s", name, path)
    if not names:
        log.info("the params need no pretrained weights (offline alternatives chosen): nothing to download")
    return 0
