"""Labelled pictures that explain one generated frame: what moved, how, and which transform moved it.

CPABMM's dense motion (docs/model.md, "Networks") blends T sampling grids — the background affine, N partial
CPABs (5 keypoints each) and one global CPAB (``motion: tps``: the background and N TPS) — with per-pixel
softmax weights, the *contribution maps*; the generator then inpaints what the occlusion map marks as not
visible in the source. :func:`write_explanation` draws, for one frame (its data: a
:class:`~cpabanim.viz.motion.FrameExplanation`):

- ``keypoints.png``: keypoints on the source, on the driving frame and on the result (the keypoints the
  generator was driven with), one colour per CPAB group;
- ``flow.png``: the dense motion as a colour wheel (hue = direction, saturation = length) and as arrows;
- ``occlusion.png``: the finest occlusion map next to the result;
- ``contributions.png``: each transform's contribution map, the source warped by that transform alone, and
  which transform dominates each pixel;
- ``overview.png``: the essentials of all four on one page (the picture to log or to share).

Every panel has a title; each PNG also records its panel titles in its text metadata (``Title``,
``Description``), which the tests read.

    out = model.generate(source, kp_source, kp_driving)            # or model.reconstruct(source, driving)
    explanation = explanation_from_output(out, 0, source[0], driving[0], motion="cpab", num_groups=2)  # viz.motion
    write_explanation(explanation, "explain/")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cpabanim.viz.motion import (
    FrameExplanation,
    colour_wheel,
    flow_to_rgb,
    group_colours,
    motion_vectors,
    resize_map,
    to_pixels,
    transform_colours,
    transform_names,
)

POINTS_PER_GROUP = 5  # keypoints per partial transform (cpabanim.models.keypoint_detector)
MIN_FULL_SATURATION_PX = 1.0
PANEL_INCHES = 2.6
DPI = 100


def _figure(rows: int, cols: int, title: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(PANEL_INCHES * cols, PANEL_INCHES * rows + 0.6), dpi=DPI, layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return fig, axes


def _save(fig, path: Path) -> Path:
    """Save with the panel titles in the PNG's text metadata (what makes "labelled" checkable)."""
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    suptitle = fig.get_suptitle() or path.stem
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Title": suptitle, "Description": " | ".join(t.replace("\n", " ") for t in titles)})
    return path


def _hull_outline(points: np.ndarray) -> np.ndarray | None:
    """The closed convex hull polygon (V + 1, 2) of (P, 2) points, or None when they are (nearly) collinear."""
    from scipy.spatial import ConvexHull, QhullError

    try:
        hull = ConvexHull(points)
    except (QhullError, ValueError):
        return None
    return points[np.append(hull.vertices, hull.vertices[0])]


def _draw_keypoints(ax, explanation: FrameExplanation, image: np.ndarray, kp: np.ndarray, title: str) -> None:
    """The image with its keypoints, one colour per group (= per partial transform), each group's hull outlined:
    the region its partial transform is fitted on."""
    height, width = image.shape[:2]
    ax.imshow(image, interpolation="nearest")
    points = to_pixels(kp, height, width)
    names = transform_names(explanation.motion, explanation.num_groups)[1:]
    for group, colour in enumerate(group_colours(explanation.num_groups)):
        mine = points[group * POINTS_PER_GROUP : (group + 1) * POINTS_PER_GROUP]
        outline = _hull_outline(mine)
        if outline is not None:
            ax.plot(*outline.T, color=colour, linewidth=0.9, alpha=0.7)
        ax.scatter(
            mine[:, 0], mine[:, 1], s=28, color=colour, edgecolors="white", linewidths=0.8, label=names[group], zorder=3
        )
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_title(title, fontsize=9)


def _winner_map(ax, explanation: FrameExplanation, title: str) -> None:
    """Which transform has the largest contribution at each pixel, over the result."""
    import cv2

    height, width = explanation.result.shape[:2]
    colours = transform_colours(explanation.motion, explanation.num_groups)
    # nearest-neighbour labels: a bilinear mix of labels would invent transforms at the borders
    labels = cv2.resize(
        explanation.contributions.argmax(0).astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST
    )
    overlay = 0.45 * explanation.result / 255.0 + 0.55 * colours[labels]
    ax.imshow(overlay, interpolation="nearest")
    ax.set_title(title, fontsize=9)


def _legend(ax, explanation: FrameExplanation) -> None:
    from matplotlib.patches import Patch

    names = transform_names(explanation.motion, explanation.num_groups)
    colours = transform_colours(explanation.motion, explanation.num_groups)
    ax.legend(
        handles=[Patch(color=c, label=n) for c, n in zip(colours, names)], loc="center", fontsize=8, frameon=False
    )
    ax.axis("off")


def _flow_panel(ax, explanation: FrameExplanation, title_prefix: str = "dense motion") -> float:
    """The motion as a colour wheel image with the wheel as an inset legend; returns the longest motion (px)."""
    height, width = explanation.result.shape[:2]
    vectors = motion_vectors(explanation.deformation, height, width)
    longest = float(np.linalg.norm(vectors, axis=-1).max())
    # full saturation at the longest motion, but never below one pixel: sub-pixel noise stays pale
    ax.imshow(flow_to_rgb(vectors, max(longest, MIN_FULL_SATURATION_PX)), interpolation="nearest")
    inset = ax.inset_axes([0.72, 0.72, 0.26, 0.26])
    inset.imshow(colour_wheel())
    inset.axis("off")
    ax.set_title(f"{title_prefix}: hue = direction,\nsaturation = length (max {longest:.1f} px)", fontsize=9)
    return longest


def _arrows_panel(ax, explanation: FrameExplanation, count: int = 12) -> None:
    """Sparse arrows on the source: where the content under each arrow's tail goes in the result."""
    height, width = explanation.source.shape[:2]
    vectors = motion_vectors(explanation.deformation, height, width)
    ax.imshow(explanation.source, interpolation="nearest")
    ys = np.linspace(0, height - 1, count + 2)[1:-1].round().astype(int)
    xs = np.linspace(0, width - 1, count + 2)[1:-1].round().astype(int)
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    moved = vectors[grid_y, grid_x]
    # tail at the source position q = p - motion, head at the result position p
    ax.quiver(
        grid_x - moved[..., 0],
        grid_y - moved[..., 1],
        moved[..., 0],
        -moved[..., 1],
        color="yellow",
        angles="xy",
        scale_units="xy",
        scale=1,
        width=0.006,
    )
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_title("motion of the source's content\n(arrow: source -> result)", fontsize=9)


def _occlusion_panel(fig, ax, explanation: FrameExplanation) -> None:
    image = ax.imshow(explanation.occlusion, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    ax.set_title("occlusion map: 1 = warped source,\n0 = inpainted by the generator", fontsize=9)


def _keypoint_row(axes, e: FrameExplanation, titles: tuple[str, str, str]) -> None:
    """Source, driving and result, each with the keypoints that belong to it, on three axes."""
    for ax, image, kp, title in zip(
        axes, (e.source, e.driving, e.result), (e.kp_source, e.kp_driving, e.kp_animated), titles, strict=True
    ):
        _draw_keypoints(ax, e, image, kp, title)


def keypoints_figure(explanation: FrameExplanation):
    fig, axes = _figure(1, 3, explanation.title or "keypoints (one colour per group)")
    _keypoint_row(
        axes[0],
        explanation,
        ("source: detected keypoints", "driving: detected keypoints", "result: keypoints it was driven with"),
    )
    axes[0, 0].legend(loc="lower left", fontsize=7, framealpha=0.6)
    return fig


def flow_figure(explanation: FrameExplanation):
    fig, axes = _figure(1, 3, explanation.title or "dense motion")
    _arrows_panel(axes[0, 0], explanation)
    _flow_panel(axes[0, 1], explanation)
    axes[0, 2].imshow(explanation.result, interpolation="nearest")
    axes[0, 2].set_title("result", fontsize=9)
    return fig


def occlusion_figure(explanation: FrameExplanation):
    fig, axes = _figure(1, 2, explanation.title or "occlusion")
    _occlusion_panel(fig, axes[0, 0], explanation)
    axes[0, 1].imshow(explanation.result, interpolation="nearest")
    axes[0, 1].set_title("result", fontsize=9)
    return fig


def contributions_figure(explanation: FrameExplanation):
    """Row 1: each transform's contribution map (its softmax weight per pixel); row 2: the source warped by that
    transform alone; last column: which transform dominates where, and the colour legend."""
    names = transform_names(explanation.motion, explanation.num_groups)
    t = len(names)
    if explanation.contributions.shape[0] != t:
        raise ValueError(f"{explanation.contributions.shape[0]} contribution maps for the {t} transforms {names}")
    fig, axes = _figure(2, t + 1, explanation.title or "contribution of each transform")
    height, width = explanation.result.shape[:2]
    for k, name in enumerate(names):
        share = float(explanation.contributions[k].mean())
        image = axes[0, k].imshow(
            resize_map(explanation.contributions[k], height, width),
            cmap="viridis",
            vmin=0,
            vmax=1,
            interpolation="nearest",
        )
        axes[0, k].set_title(f"{name}: weight\n({share:.0%} of the image)", fontsize=9)
        axes[1, k].imshow(
            np.clip(resize_map(explanation.deformed_sources[k], height, width), 0, 1), interpolation="nearest"
        )
        axes[1, k].set_title(f"source warped by\n{name} alone", fontsize=9)
    fig.colorbar(image, ax=axes[0, t - 1], fraction=0.046, pad=0.02)
    _winner_map(axes[0, t], explanation, "which transform moves\neach pixel (largest weight)")
    _legend(axes[1, t], explanation)
    return fig


def overview_figure(explanation: FrameExplanation):
    fig, axes = _figure(2, 3, explanation.title or "how the result was made")
    _keypoint_row(axes[0], explanation, ("source: keypoints", "driving: keypoints", "result: driven keypoints"))
    _flow_panel(axes[1, 0], explanation)
    _occlusion_panel(fig, axes[1, 1], explanation)
    _winner_map(axes[1, 2], explanation, "which transform moves each pixel")
    from matplotlib.patches import Patch

    names = transform_names(explanation.motion, explanation.num_groups)
    colours = transform_colours(explanation.motion, explanation.num_groups)
    axes[1, 2].legend(
        handles=[Patch(color=c, label=n) for c, n in zip(colours, names)], loc="lower left", fontsize=6, framealpha=0.7
    )
    return fig


FIGURES = {
    "keypoints": keypoints_figure,
    "flow": flow_figure,
    "occlusion": occlusion_figure,
    "contributions": contributions_figure,
    "overview": overview_figure,
}


def write_explanation(explanation: FrameExplanation, folder: str | Path) -> dict[str, Path]:
    """Write ``<folder>/{keypoints,flow,occlusion,contributions,overview}.png``; returns name -> path."""
    folder = Path(folder)
    return {name: _save(make(explanation), folder / f"{name}.png") for name, make in FIGURES.items()}
