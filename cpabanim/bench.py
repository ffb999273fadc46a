"""``cpabanim bench <what>``: benchmarks that print figures measured side by side in one run.

    cpabanim bench cpab  [--json FILE] [--device cpu|cuda]   CPAB fit (fast vs paper's Adam) and dense warp vs libcpab
    cpabanim bench train [--json FILE] [--device cpu|cuda]   training step time / peak memory, CPAB vs TPS motion
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "cpab": "cpabanim.cpab.bench",
    "train": "cpabanim.models.bench",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=sorted(BENCHMARKS), help="which benchmark")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the figures as JSON here")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(BENCHMARKS[args.what])
    return module.main(json_path=args.json_path, device=args.device, quick=args.quick)
