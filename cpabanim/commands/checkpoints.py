"""``cpabanim checkpoints``: the trained models under ``{paths.checkpoints}``, each run's ``last.pt`` (the train
stage's and the avd stage's) and every model a restart set aside (``superseded/NNN.pt``,
cpabanim/training/state.py), so that none is forgotten.

    cpabanim checkpoints                     # every experiment and seed
    cpabanim checkpoints --experiment tps    # one experiment's seeds

It reads the ``.json`` beside each kept model and the ``complete.json`` marker, never a checkpoint itself, so
it stays fast on big models; restore a kept model by copying it over ``last.pt``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cpabanim.config.layers import add_params_arguments, params_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_arguments(parser, preset=False)  # paths.checkpoints; --experiment picks one experiment's folder


def run_folders(root: Path, experiment: str | None) -> list[Path]:
    """The seed folders under ``root``: the train stage's (``<experiment>/seed<N>``) and the avd stage's
    (``<experiment>/avd/seed<N>``), of ``experiment`` only when given."""
    from cpabanim.config.paths import AVD_FOLDER

    experiments = [root / experiment] if experiment else sorted(p for p in root.glob("*") if p.is_dir())
    folders = [folder / part for folder in experiments for part in (".", AVD_FOLDER)]
    return [seed for folder in folders for seed in sorted(folder.glob("seed*")) if seed.is_dir()]


def describe_run(folder: Path) -> list[str]:
    """The lines of one run folder: its ``last.pt`` (complete or not), then each kept model, oldest first."""
    from cpabanim.config.paths import CHECKPOINT_NAME, COMPLETE_MARKER
    from cpabanim.training.state import superseded_models

    last = folder / CHECKPOINT_NAME
    marker = folder / COMPLETE_MARKER
    if last.is_file():
        state = f"complete, {_marker_step(marker)}" if marker.is_file() else "not complete (training or stopped)"
        lines = [f"{last}  {_size(last.stat().st_size)}  {state}"]
    else:
        lines = [f"{folder}  no {CHECKPOINT_NAME}"]
    for kept in superseded_models(folder):
        lines.append(f"  superseded {kept['path'].relative_to(folder)}  {_size(kept['bytes'])}  {_kept_line(kept)}")
    return lines


def _marker_step(marker: Path) -> str:
    try:
        return f"step {json.loads(marker.read_text()).get('step', '?')}"
    except (OSError, ValueError):
        return "step ?"


def _kept_line(record: dict[str, Any]) -> str:
    """What a kept model's ``.json`` says, in one line."""
    if "note" in record or "from" in record:
        return record.get("note") or f"moved in from {record['from']} on {record.get('kept_at', '?')}"
    changed = ", ".join(record.get("changed") or []) or "?"
    done = "complete" if record.get("complete") else "not complete"
    return (
        f"step {record.get('step', '?')} ({done}), params {record.get('params_digest', '?')}, "
        f"kept {record.get('kept_at', '?')} when {changed} changed"
    )


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MiB"


def run(args: argparse.Namespace) -> int:
    params = params_from_args(args)
    root = Path(str(params["paths"]["checkpoints"]))
    folders = run_folders(root, args.experiment)
    if not folders:
        where = root / args.experiment if args.experiment else root
        print(f"no trained models in {where} (train one: `cpabanim train`)")
        return 0
    for folder in folders:
        print("\n".join(describe_run(folder)))
    return 0
