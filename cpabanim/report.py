"""Stage ``cpabanim report``: the pipeline's results in MLflow, and a comparison table of runs.

* logs ``{paths.outputs}/metrics.json`` as metrics of the pipeline's parent run (and of the report's child run),
  with the per-video table, figures, sample GIF/MP4 reconstructions and animations, and the final checkpoint
  as artifacts;
* writes ``{paths.outputs}/report/{runs.md,runs.csv}``: the latest pipeline runs of the experiment side by side
  (the MLflow UI's compare view shows the same numbers), prints the markdown table, and draws
  ``metrics.png`` (this run's metrics) and ``samples.png`` (driving frames over their reconstructions) for
  ``snakemake --report``.

``cpabanim report --init`` only creates the tracking database, the experiment and the invocation's parent run:
a serial first step for setups that start many stage jobs at once.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from cpabanim import tracking
from cpabanim.config import add_params_arguments, params_from_args
from cpabanim.errors import CpabanimError

log = logging.getLogger(__name__)

MAX_MEDIA_ARTIFACTS = 8  # GIF/MP4 files per folder logged to MLflow: enough to look at, small enough to keep
SAMPLE_VIDEOS = 3
SAMPLE_FRAMES = 6
INFO_COLUMNS = ["run", "started", "status", "orchestrator", "preset", "git", "dirty", "device", "clips (train/test)"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_arguments(parser)
    parser.add_argument(
        "--init", action="store_true",
        help="only create the MLflow database, experiment and this invocation's parent run (serial first step)",
    )
    parser.add_argument("--no-table", action="store_true", help="do not print the comparison table")


def run(args: argparse.Namespace) -> int:
    params = params_from_args(args)
    if args.init:
        if not tracking.enabled(params):
            log.info("tracking disabled (tracking.enabled: false): nothing to initialise")
            return 0
        run_id = tracking.find_or_create_parent(params)
        log.info("MLflow ready at %s; pipeline run %s", tracking.tracking_uri(params), run_id)
        return 0

    outputs = Path(params["paths"]["outputs"])
    metrics_path = outputs / "metrics.json"
    metrics, notes = read_metrics(metrics_path)
    report_dir = outputs / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    plot_metrics(metrics, report_dir / "metrics.png")
    write_samples(params, report_dir / "samples.png")

    with tracking.stage_run("report", params) as stage:
        write_train_history(params if stage is not None else None, report_dir / "train_loss.csv")
        if stage is not None:
            log_to_parent(params, metrics, notes, report_dir)
            tracking.log_metrics(metrics)
        rows = comparison_rows(params) if stage is not None else [current_row(params, metrics)]
        table_md = write_tables(rows, report_dir / "runs.md", report_dir / "runs.csv")
        if stage is not None:
            tracking.log_artifact(report_dir / "runs.md", "report")
    if not args.no_table:
        sys.stdout.write(table_md + "\n")
    return 0


# ----------------------------------------------------------------------------------------------------------
# metrics


def read_metrics(path: Path) -> tuple[dict[str, float], dict[str, str]]:
    """Numbers of metrics.json (finite ones) and the other entries (e.g. why a metric is unavailable)."""
    if not path.is_file():
        raise CpabanimError(f"{path} not found: run `cpabanim evaluate` first")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CpabanimError(f"{path} is not valid JSON: {err}") from None
    metrics: dict[str, float] = {}
    notes: dict[str, str] = {}
    for key, value in _flat(raw).items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            notes[key] = str(value)
        else:
            metrics[key] = float(value)
    return metrics, notes


def _flat(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _media(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".gif", ".mp4"))
    return files[: 2 * MAX_MEDIA_ARTIFACTS]


def log_to_parent(params: dict[str, Any], metrics: dict[str, float], notes: dict[str, str], report_dir: Path) -> None:
    """Metrics, notes and artifacts of the evaluation onto the pipeline's parent run."""
    import mlflow
    from mlflow.tracking import MlflowClient

    parent = tracking.parent_run_id()
    if parent is None:
        return
    client = MlflowClient()
    entities = [mlflow.entities.Metric(k, v, 0, 0) for k, v in metrics.items()]
    for start in range(0, len(entities), 500):
        client.log_batch(parent, metrics=entities[start : start + 500])
    for key, value in notes.items():
        client.set_tag(parent, f"metric_note.{key}", value[:5000])
    outputs = Path(params["paths"]["outputs"])
    files = [(outputs / "metrics.json", "evaluation"), (outputs / "metrics_per_video.csv", "evaluation")]
    files += [(report_dir / name, "report") for name in ("metrics.png", "samples.png", "train_loss.csv")]
    files.append((outputs / "metrics_unavailable.json", "evaluation"))
    for kind in ("reconstruction", "animation"):
        files += [(p, f"{kind}/{p.parent.relative_to(outputs / kind)}".rstrip("/.")) for p in _media(outputs / kind)]
    checkpoint = Path(params["paths"]["checkpoints"]) / "last.pt"
    if params["tracking"].get("log_checkpoints", True) and checkpoint.is_file():
        files.append((checkpoint, "checkpoints"))
    for path, artifact_path in files:
        if path.is_file():
            client.log_artifact(parent, str(path), artifact_path=artifact_path)
    log.info("MLflow: %d metrics and %d artifacts logged to the pipeline run %s", len(metrics), len(files), parent)


def write_train_history(params: dict[str, Any] | None, path: Path) -> None:
    """The loss curves of the latest finished train run, as a CSV (``step``, ``loss/...``) for ``dvc plots``."""
    history: dict[int, dict[str, float]] = {}
    keys: list[str] = ["loss/total"]
    if params is not None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        runs = client.search_runs(
            [tracking.configure(params)],
            filter_string=f"tags.`{tracking.TAG_STAGE}` = 'train' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=5,
        )
        # a train run that found a complete checkpoint logs nothing: take the newest one with curves
        run = next((r for r in runs if any(k.startswith("loss/") for k in r.data.metrics)), None)
        if run is not None:
            keys = sorted(k for k in run.data.metrics if k.startswith("loss/"))
            for key in keys:
                for point in client.get_metric_history(run.info.run_id, key):
                    history.setdefault(point.step, {})[key] = point.value
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", *keys])
        for step in sorted(history):
            writer.writerow([step, *(f"{history[step].get(k, float('nan')):.6g}" for k in keys)])


# ----------------------------------------------------------------------------------------------------------
# comparison table


def _short(value: float) -> str:
    return f"{value:.4g}"


def comparison_rows(params: dict[str, Any]) -> list[dict[str, str]]:
    """The latest pipeline (parent) runs of the experiment, newest first, one dict per run."""
    from mlflow.tracking import MlflowClient

    experiment_id = tracking.configure(params)
    runs = MlflowClient().search_runs(
        [experiment_id],
        filter_string=f"tags.`{tracking.TAG_ROLE}` = 'pipeline'",
        order_by=["attributes.start_time DESC"],
        max_results=int(params["tracking"].get("compare_runs", 10)),
    )
    rows = []
    for run in runs:
        tags = run.data.tags
        row = {
            "run": run.info.run_name or run.info.run_id[:8],
            "started": _timestamp(run.info.start_time),
            "status": run.info.status.lower(),
            "orchestrator": tags.get("pipeline.orchestrator", ""),
            "preset": tags.get("preset", ""),
            "git": tags.get("git.commit", "")[:8],
            "dirty": tags.get("git.dirty", ""),
            "device": tags.get("device", ""),
            "clips (train/test)": f"{tags.get('data.clips.train', '?')}/{tags.get('data.clips.test', '?')}",
        }
        row.update({k: _short(v) for k, v in sorted(run.data.metrics.items()) if "/" in k})
        rows.append(row)
    return rows


def current_row(params: dict[str, Any], metrics: dict[str, float]) -> dict[str, str]:
    """The table row of this run alone (tracking disabled)."""
    tags = tracking.run_tags(params)
    row = {
        "run": "current", "started": "", "status": "", "orchestrator": "", "preset": tags.get("preset", ""),
        "git": tags.get("git.commit", "")[:8], "dirty": tags.get("git.dirty", ""), "device": tags["device"],
        "clips (train/test)": f"{tags.get('data.clips.train', '?')}/{tags.get('data.clips.test', '?')}",
    }
    row.update({k: _short(v) for k, v in sorted(metrics.items())})
    return row


def _timestamp(millis: int | None) -> str:
    import datetime as dt

    if not millis:
        return ""
    return dt.datetime.fromtimestamp(millis / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M")


def write_tables(rows: list[dict[str, str]], md_path: Path, csv_path: Path) -> str:
    """Write the rows as a markdown and a CSV table (same columns: info first, then every metric); return the md."""
    metric_columns = sorted({k for row in rows for k in row} - set(INFO_COLUMNS))
    columns = INFO_COLUMNS + metric_columns
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row.get(c, "") for c in columns) + " |" for row in rows]
    text = "\n".join(lines)
    md_path.write_text("# cpabanim: latest pipeline runs\n\n" + text + "\n")
    return text


# ----------------------------------------------------------------------------------------------------------
# figures for `snakemake --report` and MLflow


def plot_metrics(metrics: dict[str, float], path: Path) -> None:
    """One horizontal bar per metric, grouped by prefix (recon/..., anim/...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(metrics)
    fig, ax = plt.subplots(figsize=(7, 0.35 * max(len(names), 2) + 1.0), dpi=100)
    if names:
        values = [metrics[n] for n in names]
        bars = ax.barh(range(len(names)), values, color="#4c72b0")
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        for bar, value in zip(bars, values, strict=True):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:.4g}", va="center", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no numeric metrics in metrics.json", ha="center", va="center")
    ax.set_title("evaluation metrics")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _frames(folder: Path, count: int) -> list[np.ndarray]:
    from PIL import Image

    files = sorted(folder.glob("*.png"))
    if not files:
        return []
    picks = np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int)
    return [np.asarray(Image.open(files[i]).convert("RGB")) for i in picks]


def write_samples(params: dict[str, Any], path: Path) -> None:
    """A contact sheet: for a few test videos, driving frames over their reconstruction; then animations."""
    from PIL import Image

    outputs = Path(params["paths"]["outputs"])
    test_root = Path(params["paths"]["processed"]) / "test"
    strips: list[np.ndarray] = []
    recon_root = outputs / "reconstruction"
    videos = sorted(p for p in recon_root.iterdir() if p.is_dir()) if recon_root.is_dir() else []
    for video in videos[:SAMPLE_VIDEOS]:
        for frames in (_frames(test_root / video.name, SAMPLE_FRAMES), _frames(video, SAMPLE_FRAMES)):
            if frames:
                strips.append(np.concatenate(frames, axis=1))
    anim_root = outputs / "animation"
    pairs = sorted(p for p in anim_root.rglob("*") if p.is_dir() and any(p.glob("*.png"))) if anim_root.is_dir() else []
    for pair in pairs[:SAMPLE_VIDEOS]:
        frames = _frames(pair, SAMPLE_FRAMES)
        if frames:
            strips.append(np.concatenate(frames, axis=1))
    if not strips:
        Image.new("RGB", (64, 64), (255, 255, 255)).save(path)
        return
    width = max(s.shape[1] for s in strips)
    padded = [np.pad(s, ((0, 2), (0, width - s.shape[1]), (0, 0)), constant_values=255) for s in strips]
    Image.fromarray(np.concatenate(padded, axis=0).astype(np.uint8)).save(path, optimize=True)
