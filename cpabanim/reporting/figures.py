"""The report's figures: one dot plot per metric and a labelled grid of sample frames (the training curves are
:mod:`cpabanim.reporting.curves`').

Contract: each function writes one PNG (matplotlib, Agg backend) from values already read; a missing sample
frame is drawn as "missing", never an error.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from cpabanim.data.layout import split_videos
from cpabanim.data.video import frame_count
from cpabanim.errors import DataError
from cpabanim.evaluation.baselines import baseline_key
from cpabanim.reporting.tables import ARROWS, lower_is_better, metric_columns

SAMPLE_VIDEOS = 2
SAMPLE_FRAMES = 3


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
                ax.annotate(
                    f"{value:.4g}",
                    (value, y),
                    xytext=(0, 5),
                    textcoords="offset points",
                    ha="center",
                    fontsize=7,
                    zorder=4,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.3},
                )
        better = "lower" if lower_is_better(name) else "higher"
        ax.set_title(f"{name}  ({ARROWS[lower_is_better(name)]} {better} is better)", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", color="0.9", zorder=0)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(
        "metrics per experiment; no motion (dashed): the baseline on the same frames "
        "(reconstruction: the source frame copied; animation: the source image unchanged)",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _frame(video: Path | None, index: int) -> np.ndarray | None:
    """Frame ``index`` (the last, for a shorter video) of a frame folder or archive; None when there is none."""
    from cpabanim.data.video import read_frame_at

    try:
        return read_frame_at(video, index) if video is not None else None
    except DataError:  # a prediction folder without frames (a failed run): an empty panel
        return None


SampleRow = tuple[str, list[np.ndarray | None]]  # row label, images: source | driving | each experiment


def reconstruction_rows(experiments: dict[str, dict[str, Path]]) -> list[SampleRow]:
    """A few frames of a few test videos: source (frame 0) | driving frame t | each experiment's prediction of t."""
    first = next(iter(experiments.values()))
    tests = split_videos(first["processed"], "test")
    # the reconstructed test videos are the frame folders that have a test video (not e.g. the explain/ pictures)
    videos = sorted(p.name for p in first["reconstruction"].iterdir() if p.is_dir() and p.name in tests)
    rows = []
    for video in videos[:SAMPLE_VIDEOS]:
        count = frame_count(tests[video])
        for index in np.linspace(1, max(count - 1, 1), SAMPLE_FRAMES).round().astype(int):
            images = [_frame(tests[video], 0), _frame(tests[video], index)]
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
    driving = split_videos(first["processed"], "test").get(pair["driving"])
    rows = []
    for index in np.linspace(1, max(pair["frames"] - 1, 1), SAMPLE_FRAMES).round().astype(int):
        images = [_frame(first["animation"] / pair["name"], 0), _frame(driving, index)]
        images += [_frame(paths["animation"] / pair["name"] / mode, index) for paths in experiments.values()]
        rows.append(
            (f"{pair['source']} (frame {pair['source_frame']})\ndriven by {pair['driving']}\nframe {index}", images)
        )
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
                    ax.set_title(
                        f"{section}\n{title}" if c == 0 else title,
                        fontsize=8,
                        fontweight="bold" if c >= 2 else "normal",
                    )
            axes[r][0].set_ylabel(label, fontsize=7.5, rotation=0, ha="right", va="center", labelpad=4)
            r += 1
    fig.suptitle("samples: source | driving | each experiment's prediction (columns after the second)", fontsize=9)
    fig.tight_layout(h_pad=0.2, w_pad=0.3)
    fig.savefig(path)
    plt.close(fig)
