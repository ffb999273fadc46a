"""The comparison of experiments: a table, one plot per metric, loss curves, a labelled sample grid, an HTML page.

Library of the ``report`` stage (:mod:`cpabanim.pipeline.report`). Each experiment's metrics and media are also
logged to its MLflow parent run (artifact names safe for the UI).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import logging
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cpabanim import tracking
from cpabanim.tracking import provenance, runs, store
from cpabanim.config.layers import changed_from_defaults, experiment_path
from cpabanim.config.mappings import deep_merge, read_mapping
from cpabanim.errors import CpabanimError
from cpabanim.evaluation.baselines import BASELINE_PREFIX, baseline_key

log = logging.getLogger(__name__)

MAX_MEDIA_ARTIFACTS = 8  # GIF/MP4 files per folder logged to MLflow: enough to look at, small enough to keep
SAMPLE_VIDEOS = 2
SAMPLE_FRAMES = 3
LOWER_IS_BETTER = ("l1", "akd", "mkr", "aed", "lpips", "fid")
ARROWS = {True: "\u2193", False: "\u2191"}  # lower / higher is better
BASELINE_ROW = "baseline: no motion"
TABLE_NOTE = ("\u2193 lower is better, \u2191 higher is better. *baseline: no motion* is scored on the same frames: "
              "reconstruction = the source frame copied as every prediction, animation = the source image unchanged "
              "(its `l1_first` and `aed_source` are 0 by construction). See docs/evaluation.md.")


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
    log.info("report: %s; the runs side by side in the MLflow UI: `cpabanim ui`", out["html"])


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


def metric_columns(metrics: dict[str, dict[str, float]]) -> list[str]:
    """The model metrics of every experiment, reconstruction first (baselines are rows, not columns)."""
    names = {m for values in metrics.values() for m in values if not m.startswith(BASELINE_PREFIX)}
    return sorted(names, key=lambda m: (not m.startswith("recon/"), m.endswith("/frames"), m))


def lower_is_better(metric: str) -> bool:
    """``recon/l1`` and ``anim/relative/akd_driving`` are lower-is-better; PSNR and SSIM higher-is-better."""
    return metric.split("/")[-1].split("_")[0] in LOWER_IS_BETTER


def baseline_rows(names: list[str], metrics: dict[str, dict[str, float]], columns: list[str]
                  ) -> list[tuple[str, dict[str, float]]]:
    """The no-motion baseline under each metric column: one row when every experiment scored it on the same
    frames (same values), else one row per experiment (e.g. a different ``reconstruct.max_frames``)."""
    values = {name: {m: metrics[name][key] for m in columns
                     if (key := baseline_key(m)) is not None and key in metrics[name]} for name in names}
    distinct = {json.dumps(v, sort_keys=True) for v in values.values() if v}
    if not distinct:
        return []
    if len(distinct) == 1:
        return [(BASELINE_ROW, next(v for v in values.values() if v))]
    return [(f"{BASELINE_ROW}, {name}", values[name]) for name in names if values[name]]


def write_tables(names, differing, metrics, md_path: Path, csv_path: Path) -> str:
    """One row per experiment (the parameters that differ between them, then every metric) and the baseline
    row(s); returns the markdown table."""
    from cpabanim.config.schema import defaults
    from cpabanim.config.mappings import flatten

    keys = sorted({k for d in differing.values() for k in d})
    built_in = flatten(defaults())
    values = {n: {k: differing[n][k] if k in differing[n] else built_in.get(k, "(default)") for k in keys}
              for n in names}
    varying = [k for k in keys if len({json.dumps(values[n][k]) for n in names}) > 1]
    metric_names = metric_columns(metrics)
    columns = ["experiment", *varying, *metric_names]
    rows = []
    for name in names:
        row = {"experiment": name, **{k: _cell(values[name][k]) for k in varying}}
        row.update({m: f"{metrics[name][m]:.4g}" for m in metric_names if m in metrics[name]})
        rows.append(row)
    for label, values in baseline_rows(names, metrics, metric_names):
        rows.append({"experiment": label, **{k: "" for k in varying}, **{m: f"{v:.4g}" for m, v in values.items()}})
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    header = [c if c not in metric_names or c.endswith("/frames") else f"{c} {ARROWS[lower_is_better(c)]}"
              for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row.get(c, "") for c in columns) + " |" for row in rows]
    text = "\n".join(lines)
    md_path.write_text("# cpabanim: experiments side by side\n\n" + text + "\n\n" + TABLE_NOTE + "\n")
    return text


def _cell(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metrics(metrics: dict[str, dict[str, float]], path: Path) -> None:
    """One small dot plot per metric (its own axis, values written beside the dots), one row per experiment and
    a grey "no motion" row with a dashed line for the baseline on the same frames, the better direction in the title.

    Dots rather than bars: bars must start at 0, which hides the differences that matter (PSNR 16.38 vs 16.44).
    """
    plt = _pyplot()
    names = [m for m in metric_columns(metrics) if not m.endswith("/frames")]
    experiments = list(metrics)
    cols = min(3, max(len(names), 1))
    rows = max(1, math.ceil(len(names) / cols))
    height = 1.0 + 0.32 * (len(experiments) + 1)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, height * rows + 0.4), dpi=110, squeeze=False)
    colours = list(plt.cm.tab10(np.arange(len(experiments)) % 10))
    for ax, name in zip(axes.flat, names, strict=False):
        key = baseline_key(name)
        baselines = [metrics[e][key] for e in experiments if key is not None and key in metrics[e]]
        labels, values, dot_colours = list(experiments), [metrics[e].get(name, np.nan) for e in experiments], colours
        if baselines:  # one value: the experiments share the test frames (the table shows it per experiment if not)
            labels, values, dot_colours = [*labels, "no motion"], [*values, baselines[0]], [*colours, "0.45"]
            ax.axvline(baselines[0], color="0.45", linestyle="--", linewidth=1, zorder=2)
        values = np.array(values, dtype=float)
        positions = np.arange(len(labels))[::-1]  # first experiment on top, the baseline at the bottom
        ax.scatter(values, positions, color=dot_colours, s=36, zorder=3)
        ax.set_yticks(positions, labels, fontsize=8)
        ax.set_ylim(-0.7, len(labels) - 0.3)
        finite = values[np.isfinite(values)]
        if finite.size:
            low, high = float(finite.min()), float(finite.max())
            margin = 0.25 * (high - low) if high > low else 0.05 * max(abs(high), 1e-3)
            ax.set_xlim(low - margin, high + margin)
        for value, y in zip(values, positions, strict=True):
            if np.isfinite(value):
                ax.annotate(f"{value:.4g}", (value, y), xytext=(0, 5), textcoords="offset points", ha="center",
                            fontsize=7, zorder=4, bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.3})
        better = "lower" if lower_is_better(name) else "higher"
        ax.set_title(f"{name}  ({ARROWS[lower_is_better(name)]} {better} is better)", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", color="0.9", zorder=0)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle("metrics per experiment; no motion (dashed): the baseline on the same frames "
                 "(reconstruction: the source frame copied; animation: the source image unchanged)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def train_history(params: dict[str, Any], experiment: str) -> dict[int, float]:
    """``step -> loss/total`` of the newest train run of ``experiment`` that logged losses (empty without MLflow)."""
    if not store.enabled(params):
        return {}
    client = runs.mlflow_client()
    found = client.search_runs(
        [store.configure(params)],
        filter_string=(f"tags.`{provenance.TAG_STAGE}` = 'train' and tags.`{provenance.TAG_EXPERIMENT}` = '{experiment}'"
                       " and attributes.status = 'FINISHED'"),
        order_by=["attributes.start_time DESC"], max_results=5)
    run = next((r for r in found if "loss/total" in r.data.metrics), None)
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
                ax.plot(steps, [history[s] for s in steps], label=name, marker="o", markersize=3)
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


SampleRow = tuple[str, list[np.ndarray | None]]  # row label, images: source | driving | each experiment


def reconstruction_rows(experiments: dict[str, dict[str, Path]]) -> list[SampleRow]:
    """A few frames of a few test videos: source (frame 0) | driving frame t | each experiment's prediction of t."""
    first = next(iter(experiments.values()))
    test_root = first["processed"] / "test"
    # the reconstructed test videos are the frame folders that have a test video (not e.g. the explain/ pictures)
    videos = sorted(p.name for p in first["reconstruction"].iterdir()
                    if p.is_dir() and (first["processed"] / "test" / p.name).is_dir())[:SAMPLE_VIDEOS]
    rows = []
    for video in videos:
        count = len(list((test_root / video).glob("*.png")))
        for index in np.linspace(1, max(count - 1, 1), SAMPLE_FRAMES).round().astype(int):
            images = [_frame(test_root / video, 0), _frame(test_root / video, index)]
            images += [_frame(paths["reconstruction"] / video, index) for paths in experiments.values()]
            rows.append((f"{video}\nframe {index}", images))
    return rows


def animation_rows(experiments: dict[str, dict[str, Path]]) -> tuple[str, list[SampleRow]]:
    """The first animation pair in relative mode (else the first mode): source image | driving frame t | each
    experiment's animated frame t. Returns the mode and the rows (none without animations)."""
    first = next(iter(experiments.values()))
    pairs_file = first["animation"] / "pairs.json"
    if not pairs_file.is_file():
        return "", []
    record = json.loads(pairs_file.read_text())
    if not record["pairs"] or not record["modes"]:
        return "", []
    mode = "relative" if "relative" in record["modes"] else record["modes"][0]
    pair = record["pairs"][0]
    driving = first["processed"] / "test" / pair["driving"]
    rows = []
    for index in np.linspace(1, max(pair["frames"] - 1, 1), SAMPLE_FRAMES).round().astype(int):
        images = [_frame(first["animation"] / pair["name"], 0), _frame(driving, index)]
        images += [_frame(paths["animation"] / pair["name"] / mode, index) for paths in experiments.values()]
        rows.append((f"{pair['source']} (frame {pair['source_frame']})\ndriven by {pair['driving']}\nframe {index}",
                     images))
    return mode, rows


def write_samples(experiments: dict[str, dict[str, Path]], path: Path) -> None:
    """A labelled grid, one column per experiment: reconstruction rows (source | driving | predictions) for a
    few frames of a few test videos, then animation rows of one cross-identity pair."""
    plt = _pyplot()
    names = list(experiments)
    mode, anim = animation_rows(experiments)
    sections = [("reconstruction", ["source (frame 0)", "driving"], reconstruction_rows(experiments))]
    if anim:
        sections.append((f"animation ({mode})", ["source image", "driving"], anim))
    cols = 2 + len(names)
    total = sum(len(rows) for _, _, rows in sections)
    fig, axes = plt.subplots(total, cols, figsize=(1.45 * cols + 1.9, 1.3 * total + 0.7), dpi=110, squeeze=False)
    r = 0
    for section, heads, rows in sections:
        for i, (label, images) in enumerate(rows):
            for c, image in enumerate(images):
                ax = axes[r][c]
                if image is not None:
                    ax.imshow(image)
                else:
                    ax.text(0.5, 0.5, "missing", ha="center", va="center", fontsize=7, transform=ax.transAxes)
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:  # column titles once per section: what each column shows
                    title = [*heads, *names][c]
                    ax.set_title(f"{section}\n{title}" if c == 0 else title, fontsize=8,
                                 fontweight="bold" if c >= 2 else "normal")
            axes[r][0].set_ylabel(label, fontsize=7.5, rotation=0, ha="right", va="center", labelpad=4)
            r += 1
    fig.suptitle("samples: source | driving | each experiment's prediction (columns after the second)", fontsize=9)
    fig.tight_layout(h_pad=0.2, w_pad=0.3)
    fig.savefig(path)
    plt.close(fig)


def write_html(table_md: str, outputs: dict[str, Path], path: Path) -> None:
    """One self-contained page (figures embedded as data URIs) that opens offline."""
    lines = [line.strip("|").split("|") for line in table_md.splitlines() if not line.startswith("|---")]
    head, body = lines[0], lines[1:]
    table = "<table><tr>" + "".join(f"<th>{html.escape(c.strip())}</th>" for c in head) + "</tr>"
    table += "".join(("<tr class='baseline'>" if row[0].strip().startswith(BASELINE_ROW) else "<tr>")
                     + "".join(f"<td>{html.escape(c.strip())}</td>" for c in row) + "</tr>" for row in body)
    table += f"</table><p>{html.escape(TABLE_NOTE.replace('*', '').replace('`', ''))}</p>"
    figures = ""
    for key, title in (("metrics_png", "Metrics"), ("loss_png", "Training loss"), ("samples_png", "Samples")):
        data = base64.b64encode(outputs[key].read_bytes()).decode()
        figures += f"<h2>{title}</h2><img alt='{title}' src='data:image/png;base64,{data}'>"
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px}tr.baseline{color:#555;font-style:italic}img{max-width:100%}")
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>cpabanim experiments</title>"
                    f"<style>{style}</style></head><body><h1>cpabanim: experiments side by side</h1>{table}{figures}"
                    "</body></html>\n")


def _media(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".gif", ".mp4"))
    return files[: 2 * MAX_MEDIA_ARTIFACTS]


def log_experiment(params, name: str, metrics: dict[str, float], paths: dict[str, Path], report: dict[str, Path],
                   log_model: bool) -> None:
    """Metrics, figures, media and (``log_model``) the trained model of one experiment onto its MLflow parent run."""
    parent = runs.experiment_parent(params, name)
    if parent is None:
        return
    import mlflow

    client = runs.mlflow_client()
    entities = [mlflow.entities.Metric(k, v, 0, 0) for k, v in metrics.items()]
    for start in range(0, len(entities), 500):
        client.log_batch(parent, metrics=entities[start:start + 500])
    files = [(paths["metrics"], "evaluation"), (paths["per_video"], "evaluation")]
    files += [(report[k], "report") for k in ("metrics_png", "samples_png", "loss_png", "html")]
    for kind in ("reconstruction", "animation"):
        root = paths[kind]
        files += [(p, tracking.safe_artifact_name(f"{kind}/{p.parent.relative_to(root)}".rstrip("/.")))
                  for p in _media(root)]
    with tempfile.TemporaryDirectory() as scratch:
        for path, artifact_path in files:
            if path.is_file():
                client.log_artifact(parent, str(safe_copy(path, Path(scratch))), artifact_path=artifact_path)
    logged = log_trained_model(paths, parent) if log_model else None
    if parent != runs.parent_run_id() and client.get_run(parent).info.status == "RUNNING":
        # a parent this report created (its experiment ran no other stage in this invocation) would stay RUNNING
        # with no end time; the report's own parent is closed by its stage context
        client.set_terminated(parent, "FINISHED")
    log.info("MLflow: %d metrics, %d artifacts%s logged to the parent run of %s", len(metrics), len(files),
             f" and the model {logged}" if logged else "", name)


def safe_copy(path: Path, scratch: Path) -> Path:
    """``path``, or a copy of it in ``scratch`` under a name the MLflow UI can open (no '#', '?', '%': its artifact
    endpoint answers 400 "Invalid path" for them, docs/pipeline.md)."""
    safe = tracking.safe_artifact_name(path.name)
    if safe == path.name:
        return path
    folder = Path(tempfile.mkdtemp(dir=scratch))  # one folder per file: two names may map to the same safe name
    return Path(shutil.copy2(path, folder / safe))


def log_trained_model(paths: dict[str, Path], parent: str) -> str | None:
    """The experiment's checkpoint as an MLflow PyTorch model on its parent run, once per checkpoint: a parent
    that already holds a model of this checkpoint (a report re-run by hand joins the newest parent) keeps it."""
    from mlflow.entities import LoggedModelStatus

    from cpabanim.reporting.mlflow_model import ARTIFACT_NAME, CHECKSUM_TAG, checkpoint_checksum, log_checkpoint_model
    from cpabanim.config.paths import CHECKPOINT_NAME

    checkpoint = paths["checkpoints"] / CHECKPOINT_NAME
    if not checkpoint.is_file():
        log.warning("no checkpoint at %s: no model logged", checkpoint)
        return None
    checksum = checkpoint_checksum(checkpoint)
    client = runs.mlflow_client()
    run = client.get_run(parent)
    models = client.search_logged_models([run.info.experiment_id],
                                         filter_string=f"source_run_id = '{parent}' AND name = '{ARTIFACT_NAME}'")
    if any(m.tags.get(CHECKSUM_TAG) == checksum and m.status == LoggedModelStatus.READY for m in models):
        return None
    return log_checkpoint_model(checkpoint, parent, frame_size(paths["processed"]))


def frame_size(processed: Path) -> int:
    """Side of the test frames (the logged model's input size)."""
    from PIL import Image

    first = next((p for p in sorted((processed / "test").glob("*/*.png"))), None)
    if first is None:
        raise CpabanimError(f"no test frames under {processed / 'test'}: run `cpabanim preprocess` first")
    with Image.open(first) as image:
        return int(image.size[0])
