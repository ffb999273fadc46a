"""Stage `cpabanim train` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse

from cpabanim.config import add_params_arguments, params_from_args
from cpabanim.errors import CpabanimError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_arguments(parser)


def run(args: argparse.Namespace) -> int:
    params_from_args(args)
    raise CpabanimError("stage 'train' is not implemented yet")
