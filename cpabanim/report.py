"""The comparison of experiments: a table, one plot per metric, loss curves, a labelled sample grid, an HTML page.

Library of the ``report`` stage (:mod:`cpabanim.stages.report`). Each experiment's metrics and media are also
logged to its MLflow parent run (artifact names safe for the UI).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from cpabanim import tracking
from cpabanim.config import changed_from_defaults, deep_merge, experiment_path, read_mapping
from cpabanim.errors import CpabanimError

log = logging.getLogger(__name__)

MAX_MEDIA_ARTIFACTS = 8  # GIF/MP4 files per folder logged to MLflow: enough to look at, small enough to keep
SAMPLE_VIDEOS = 2
SAMPLE_FRAMES = 3
LOWER_IS_BETTER = ("l1", "akd", "mkr", "aed", "lpips", "fid")


def report_experiments(params: dict[str, Any], cfg, io) -> None:
    """Write every output of the report stage for the experiments in ``io.experiments``."""
    names = list(io.experiments)
    metrics = {name: read_metrics(io.experiments[name]["metrics"])[0] for name in names}
    differing = {name: experiment_differences(params, name) for name in names}
    histories = {name: train_history(params, name) for name in names}
    out = io.outputs
    out["table_md"].parent.mkdir(parents=True, exist_ok=True)
    table = write_tables(names, differing, metrics, out["table_md"], out["table_csv"])
    plot_metrics(metrics, out["metrics_png"])
    plot_losses(histories, out["loss_png"], out["loss_csv"])
    write_samples(io.experiments, out["samples_png"])
    write_html(table, out, out["html"])
    for name in names:
        log_experiment(params, name, metrics[name], io.experiments[name], out, bool(cfg.tracking.log_checkpoints))
    print(table)


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
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            notes[key] = str(value)
        else:
            metrics[key] = float(value)
    return metrics, notes


def experiment_differences(params: dict[str, Any], name: str) -> dict[str, Any]:
    """The parameters of experiment ``name`` that differ from the built-in defaults (paths and tracking aside)."""
    overlay_file = experiment_path(name, ".")
    values = deep_merge(params, read_mapping(overlay_file, "experiment")) if overlay_file.is_file() else params
    return {k: v for k, v in changed_from_defaults(values).items() if not k.startswith(("paths.", "tracking."))}


def write_tables(names, differing, metrics, md_path: Path, csv_path: Path) -> str:
    """One row per experiment: the parameters that differ between them, then every metric; returns the markdown."""
    keys = sorted({k for d in differing.values() for k in d})
    varying = [k for k in keys if len({json.dumps(differing[n].get(k)) for n in names}) > 1]
    metric_names = sorted({m for values in metrics.values() for m in values})
    columns = ["experiment", *varying, *metric_names]
    rows = []
    for name in names:
        row = {"experiment": name, **{k: _cell(differing[name].get(k, "(default)")) for k in varying}}
        row.update({m: f"{metrics[name][m]:.4g}" for m in metric_names if m in metrics[name]})
        rows.append(row)
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row.get(c, "") for c in columns) + " |" for row in rows]
    text = "\n".join(lines)
    md_path.write_text("# cpabanim: experiments side by side\n\n" + text + "\n")
    return text


def _cell(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metrics(metrics: dict[str, dict[str, float]], path: Path) -> None:
    """One small bar chart per metric (its own axis), one bar per experiment, the better direction in the title."""
    plt = _pyplot()
    names = sorted({m for values in metrics.values() for m in values if not m.endswith("/frames")})
    cols = min(4, max(len(names), 1))
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), dpi=100, squeeze=False)
    experiments = list(metrics)
    colours = plt.cm.tab10(np.arange(len(experiments)) % 10)
    for ax, name in zip(axes.flat, names, strict=False):
        values = [metrics[e].get(name, np.nan) for e in experiments]
        ax.bar(range(len(experiments)), values, color=colours)
        ax.set_xticks(range(len(experiments)), experiments, rotation=30, ha="right", fontsize=8)
        better = "lower" if name.split("/")[-1].split("_")[0] in LOWER_IS_BETTER else "higher"
        ax.set_title(f"{name}\n({better} is better)", fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def train_history(params: dict[str, Any], experiment: str) -> dict[int, float]:
    """``step -> loss/total`` of the newest train run of ``experiment`` that logged losses (empty without MLflow)."""
    if not tracking.enabled(params):
        return {}
    client = tracking._client()
    runs = client.search_runs(
        [tracking.configure(params)],
        filter_string=(f"tags.`{tracking.TAG_STAGE}` = 'train' and tags.`{tracking.TAG_EXPERIMENT}` = '{experiment}'"
                       " and attributes.status = 'FINISHED'"),
        order_by=["attributes.start_time DESC"], max_results=5)
    run = next((r for r in runs if "loss/total" in r.data.metrics), None)
    if run is None:
        return {}
    return {p.step: p.value for p in client.get_metric_history(run.info.run_id, "loss/total")}


def plot_losses(histories: dict[str, dict[int, float]], png: Path, csv_path: Path) -> None:
    """The training loss of every experiment on one plot (and as a long CSV: experiment, step, loss)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["experiment", "step", "loss/total"])
        for name, history in histories.items():
            steps = sorted(history)
            writer.writerows([name, s, f"{history[s]:.6g}"] for s in steps)
            if steps:
                ax.plot(steps, [history[s] for s in steps], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss/total (lower is better)")
    ax.set_title("training loss")
    if any(histories.values()):
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no training curves (tracking off, or training was already complete)", ha="center",
                va="center", transform=ax.transAxes, fontsize=8)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def _frame(folder: Path, index: int) -> np.ndarray | None:
    from PIL import Image

    files = sorted(folder.glob("*.png"))
    if not files:
        return None
    return np.asarray(Image.open(files[min(index, len(files) - 1)]).convert("RGB"))


def write_samples(experiments: dict[str, dict[str, Path]], path: Path) -> None:
    """A labelled grid: for a few frames of a few test videos, source | driving | each experiment's prediction."""
    plt = _pyplot()
    first = next(iter(experiments.values()))
    test_root = first["processed"] / "test"
    videos = sorted(p.name for p in first["reconstruction"].iterdir() if p.is_dir())[:SAMPLE_VIDEOS]
    cells = []
    for video in videos:
        count = len(list((test_root / video).glob("*.png")))
        for index in np.linspace(1, max(count - 1, 1), SAMPLE_FRAMES).round().astype(int):
            row = [(f"{video}\nsource (frame 0)", _frame(test_root / video, 0)),
                   (f"driving (frame {index})", _frame(test_root / video, index))]
            row += [(name, _frame(paths["reconstruction"] / video, index)) for name, paths in experiments.items()]
            cells.append(row)
    cols = 2 + len(experiments)
    fig, axes = plt.subplots(max(len(cells), 1), cols, figsize=(1.6 * cols, 1.75 * max(len(cells), 1)), dpi=100,
                             squeeze=False)
    for r, row in enumerate(cells):
        for c, (label, image) in enumerate(row):
            ax = axes[r][c]
            if image is not None:
                ax.imshow(image)
            ax.set_title(label, fontsize=7)
            ax.axis("off")
    for ax in axes.flat[len(cells) * cols:]:
        ax.axis("off")
    fig.suptitle("reconstruction: source | driving | prediction of each experiment", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_html(table_md: str, outputs: dict[str, Path], path: Path) -> None:
    """One self-contained page (figures embedded as data URIs) that opens offline."""
    lines = [line.strip("|").split("|") for line in table_md.splitlines() if not line.startswith("|---")]
    head, body = lines[0], lines[1:]
    table = "<table><tr>" + "".join(f"<th>{html.escape(c.strip())}</th>" for c in head) + "</tr>"
    table += "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in row) + "</tr>" for row in body)
    table += "</table>"
    figures = ""
    for key, title in (("metrics_png", "Metrics"), ("loss_png", "Training loss"), ("samples_png", "Samples")):
        data = base64.b64encode(outputs[key].read_bytes()).decode()
        figures += f"<h2>{title}</h2><img alt='{title}' src='data:image/png;base64,{data}'>"
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>cpabanim experiments</title>"
                    f"<style>{style}</style></head><body><h1>cpabanim: experiments side by side</h1>{table}{figures}"
                    "</body></html>\n")


def _media(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".gif", ".mp4"))
    return files[: 2 * MAX_MEDIA_ARTIFACTS]


def log_experiment(params, name: str, metrics: dict[str, float], paths: dict[str, Path], report: dict[str, Path],
                   log_checkpoint: bool) -> None:
    """Metrics, figures and media of one experiment onto its MLflow parent run."""
    parent = tracking.experiment_parent(params, name)
    if parent is None:
        return
    import mlflow

    client = tracking._client()
    entities = [mlflow.entities.Metric(k, v, 0, 0) for k, v in metrics.items()]
    for start in range(0, len(entities), 500):
        client.log_batch(parent, metrics=entities[start:start + 500])
    files = [(paths["metrics"], "evaluation"), (paths["per_video"], "evaluation")]
    files += [(report[k], "report") for k in ("metrics_png", "samples_png", "loss_png", "html")]
    for kind in ("reconstruction", "animation"):
        root = paths[kind]
        files += [(p, tracking.safe_artifact_name(f"{kind}/{p.parent.relative_to(root)}".rstrip("/."))) for p in _media(root)]
    from cpabanim.models.checkpoint import CHECKPOINT_NAME

    checkpoint = paths["checkpoints"] / CHECKPOINT_NAME
    if log_checkpoint and checkpoint.is_file():
        files.append((checkpoint, "checkpoints"))
    for path, artifact_path in files:
        if path.is_file():
            safe = path.with_name(tracking.safe_artifact_name(path.name))
            if safe != path:  # the UI cannot open names with '#': log a copy under a safe name
                import shutil
                import tempfile

                folder = Path(tempfile.mkdtemp())
                path = Path(shutil.copy2(path, folder / safe.name))
            client.log_artifact(parent, str(path), artifact_path=artifact_path)
    log.info("MLflow: %d metrics and %d artifacts logged to the parent run of %s", len(metrics), len(files), name)
