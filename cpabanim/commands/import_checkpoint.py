"""``cpabanim import-checkpoint``: a TPSMM checkpoint -> a cpabanim checkpoint (``motion: tps``) that
reconstruct, animate and evaluate load directly (docs/faithfulness.md, "Checkpoints").

    cpabanim import-checkpoint --format tpsmm --input vox.pth.tar --output models/tpsmm-vox.pt --preset vox-256

The preset gives the ``model`` section; the sizes the checkpoint's tensors determine (keypoints, generator,
dense motion, AVD, background predictor) are read from the checkpoint and win over it. The file is read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cpabanim.config.layers import add_params_arguments, params_from_args
from cpabanim.files import check_output_file

log = logging.getLogger(__name__)

FORMATS = ("tpsmm",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_arguments(parser, experiment=False)  # the preset (and --set) give the model section; motion is tps
    parser.add_argument(
        "--format",
        choices=FORMATS,
        required=True,
        help="layout of the input: tpsmm = TPSMM's (and CPABMM's) train.py checkpoints",
    )
    parser.add_argument("--input", type=Path, required=True, help="the checkpoint to convert (e.g. vox.pth.tar)")
    parser.add_argument("--output", type=Path, required=True, help="the cpabanim checkpoint to write (e.g. model.pt)")


def is_cpabanim_checkpoint(path: Path) -> bool:
    """Whether ``path`` reads as a cpabanim checkpoint (one an earlier import may have written): a TPSMM
    checkpoint or any other file there is never replaced."""
    from cpabanim.errors import CpabanimError
    from cpabanim.models.checkpoint import read_checkpoint

    try:
        read_checkpoint(path)
    except CpabanimError:
        return False
    return True


def run(args: argparse.Namespace) -> int:
    from cpabanim.models.tpsmm_import import convert_tpsmm_checkpoint

    params = params_from_args(args)
    check_output_file(args.output, "--output", is_cpabanim_checkpoint)
    result = convert_tpsmm_checkpoint(args.input, args.output, params["model"])
    if result["overridden"]:
        log.info("model params read from the checkpoint instead of the preset: %s", ", ".join(result["overridden"]))
    if not result["avd_trained"]:
        log.warning(
            "%s holds no AVD network: animate mode avd needs one (train it with `cpabanim avd` on a run's "
            "checkpoint, or import a checkpoint saved after TPSMM's train_avd)",
            args.input,
        )
    print(
        f"wrote {result['path']} (TPSMM epoch {result['epoch']}, motion tps, "
        f"{result['model_params']['num_cpab']} x 5 keypoints)"
    )
    return 0
