"""``cpabanim bench motion``: the motion models alone, without training, against the synthetic data's true motion.

For each ``data.synthetic.motion`` size, the test videos of the embedded default are rendered and every (source =
frame 0, driving = frame t) pair gets exact keypoints from the generator's ground truth
(:func:`cpabanim.data.synthetic_truth.keypoints`: 5 points on the body, 5 on each limb, the same points of the object
in both frames). From the same keypoints each motion model gives a backward sampling grid (driving -> source), as
the animation model builds it (:func:`cpabanim.models.full.motion_model` with the schema's defaults):

- ``parts``: one transform per part (CPAB: the 4x4 partial fits; TPS: TPSMM's solve on the part's 5 points; affine:
  least squares), each pixel taking its own part's transform from the true part map of the driving frame. That is
  the mixing a perfect dense motion network would learn; what is left is the error of the transforms themselves;
- ``global``: one transform from all 15 keypoints for every pixel (CPAB: the 6x6 global fit; TPS and affine on the
  15 points).

Each grid is compared with the true warp (:func:`cpabanim.data.synthetic_truth.backward_warp`) on the object's
pixels in the driving frame: the mean end-point error in pixels (all pairs, and the quarter of pairs whose true
motion is largest), and the L1 of the source frame sampled with the grid against the driving frame (on the [0, 1]
scale; the true warp's own L1 is the floor: resampling and occlusion). ``no motion`` (the source copied) and
``true warp`` frame the table. Figures are printed and written with ``--json``; none is asserted in a test.
"""

from __future__ import annotations

import platform
import time

import numpy as np
import torch

from cpabanim.commands.bench.common import write_figures
from cpabanim.data import synthetic, synthetic_truth

SIZES = tuple(synthetic.MOTION_SIZES)
SPLIT, SEED = "test", 0  # the embedded default's test videos (data.seed 0)
PARTS = len(synthetic_truth.LIMBS) + 1  # body + limbs: keypoint groups of 5
LARGEST_SHARE = 0.25  # "largest motions": this share of the pairs, by their true mean motion


def to_grid_units(p: np.ndarray, size: int) -> np.ndarray:
    """Frame positions (fractions, pixel centres at (j + 0.5) / size) -> grid_sample(align_corners=True) units
    ([-1, 1] from the first to the last pixel centre), the models' coordinates."""
    return 2 * (p * size - 0.5) / (size - 1) - 1


def pair_truth(track, t: int, size: int) -> dict[str, np.ndarray]:
    """The ground truth of the pair (source frame 0, driving frame ``t``) at ``size`` px, in grid units:
    ``grid`` (S, S, 2) the true backward warp, ``parts`` (S, S) the driving frame's part map, ``kp_source``,
    ``kp_driving`` (15, 2)."""
    warp, parts = synthetic_truth.backward_warp(synthetic_truth.pixel_centres(size), track, t, 0)
    return {
        "grid": to_grid_units(warp, size),
        "parts": parts,
        "kp_source": to_grid_units(synthetic_truth.keypoints(track, 0), size),
        "kp_driving": to_grid_units(synthetic_truth.keypoints(track, t), size),
    }


def affine_grids(kp_source: torch.Tensor, kp_driving: torch.Tensor, groups: int, size: int) -> torch.Tensor:
    """Least-squares affine map driving -> source per group of keypoints: kp (B, G*K, 2) -> grids (B, G, S, S, 2)."""
    from cpabanim.cpab.warp import identity_grid

    b = kp_source.shape[0]
    drv = kp_driving.reshape(b * groups, -1, 2).double()
    src = kp_source.reshape(b * groups, -1, 2).double()
    homogeneous = torch.cat([drv, torch.ones_like(drv[..., :1])], dim=-1)  # (BG, K, 3)
    affine = torch.linalg.lstsq(homogeneous, src).solution  # (BG, 3, 2)
    grid = identity_grid((size, size), dtype=torch.float64).reshape(1, -1, 2)
    points = torch.cat([grid, torch.ones_like(grid[..., :1])], dim=-1)
    return (points @ affine).view(b, groups, size, size, 2).float()


MODELS = {  # row name -> the model section it is built from (every other key: the schema's default)
    "affine": None,
    "tps": {"motion": "tps"},
    "cpab": {"motion": "cpab"},  # the default inference: LM fit
    "cpab adam": {"motion": "cpab", "fit_method": "adam"},  # the paper's inference
}


def model_grids(
    kp_source: torch.Tensor, kp_driving: torch.Tensor, size: int, models: tuple[str, ...] = tuple(MODELS)
) -> dict[str, dict[str, torch.Tensor]]:
    """The grids of ``models`` (names of :data:`MODELS`) from keypoints (B, 15, 2): ``{model: {"parts":
    (B, PARTS, S, S, 2), "global": (B, S, S, 2)}}``; each motion model as the animation model builds it (eval mode,
    as at reconstruction)."""
    from cpabanim.config.typed import ModelConfig
    from cpabanim.models.full import motion_model

    out = {}
    for name in models:
        section = MODELS[name]
        if section is None:
            out[name] = {"parts": affine_grids(kp_source, kp_driving, PARTS, size)}
            out[name]["global"] = affine_grids(kp_source, kp_driving, 1, size)[:, 0]
            continue
        model = motion_model(ModelConfig(**section), PARTS)[0].eval()
        with torch.no_grad():
            if section["motion"] == "tps":
                parts = model(kp_source, kp_driving, PARTS, (size, size))
                out[name] = {"parts": parts, "global": model(kp_source, kp_driving, 1, (size, size))[:, 0]}
            else:  # CPAB gives the N partial grids, then the global one fitted on all the keypoints
                grids = model(kp_source, kp_driving, PARTS, (size, size))
                out[name] = {"parts": grids[:, :PARTS], "global": grids[:, PARTS]}
    return out


def keypoint_residual(grids: torch.Tensor, truth: dict[str, torch.Tensor], size: int) -> float:
    """How far a transform's grid puts the driving keypoints from the source ones, pixels (mean over the pairs'
    keypoints inside the driving frame: the grid covers only the frame): whether a fit reaches its keypoints at all.
    grids (B, G, S, S, 2), G = PARTS (group g read at its own keypoints) or 1 (all keypoints); the grid is read by
    bilinear interpolation at the keypoints."""
    b, groups = grids.shape[:2]
    drv = truth["kp_driving"].reshape(b * groups, 1, -1, 2)
    field = grids.reshape(b * groups, size, size, 2).permute(0, 3, 1, 2)
    reached = torch.nn.functional.grid_sample(field, drv, align_corners=True)[:, :, 0].permute(0, 2, 1)
    distance = (reached.reshape(b, -1, 2) - truth["kp_source"]).norm(dim=-1) * (size - 1) / 2
    inside = (truth["kp_driving"].abs() <= 1).all(dim=-1)
    return float(distance[inside].mean())


def by_part(grids: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
    """Each pixel's grid from its own part: grids (B, PARTS, S, S, 2), parts (B, S, S) codes (0 = background) ->
    (B, S, S, 2); background pixels take the body's (they are not scored)."""
    index = (parts - 1).clamp(min=0)[:, None, :, :, None].expand(-1, 1, -1, -1, 2)
    return torch.gather(grids, 1, index)[:, 0]


def scores(grid: torch.Tensor, truth: dict[str, torch.Tensor], size: int) -> dict[str, np.ndarray]:
    """Per pair (B,): the mean end-point error in pixels and the L1 of the warped source against the driving frame,
    both over the object's pixels in the driving frame. grid (B, S, S, 2) in grid units."""
    mask = truth["parts"] > 0
    pixels = mask.sum(dim=(1, 2)).clamp(min=1)
    epe = (grid - truth["grid"]).norm(dim=-1) * (size - 1) / 2
    warped = torch.nn.functional.grid_sample(truth["source"], grid, align_corners=True)  # (B, 3, S, S)
    l1 = (warped - truth["driving"]).abs().mean(dim=1)
    return {
        "epe_px": ((epe * mask).sum(dim=(1, 2)) / pixels).numpy(),
        "l1": ((l1 * mask).sum(dim=(1, 2)) / pixels).numpy(),
    }


def size_pairs(motion: str, videos: int, frames: int, size: int) -> dict[str, torch.Tensor]:
    """Every (frame 0, frame t) pair of the first ``videos`` test videos of motion size ``motion``, stacked:
    ``source``, ``driving`` (B, 3, S, S) in [0, 1], ``grid`` (B, S, S, 2), ``parts`` (B, S, S), ``kp_source``,
    ``kp_driving`` (B, 15, 2)."""
    stacks: dict[str, list] = {"source": [], "driving": [], "grid": [], "parts": [], "kp_source": [], "kp_driving": []}
    for index, planned in enumerate(synthetic.video_plan(SPLIT, videos, SEED)):
        video = synthetic.render_planned(SPLIT, index, planned, frames, size, SEED, motion)
        track = synthetic.motion_parameters(SPLIT, index, frames, SEED, motion)
        rgb = torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255
        for t in range(1, frames):
            truth = pair_truth(track, t, size)
            for key, value in truth.items():
                stacks[key].append(torch.from_numpy(value))
            stacks["source"].append(rgb[0])
            stacks["driving"].append(rgb[t])
    out = {key: torch.stack(values) for key, values in stacks.items()}
    return {key: value.float() if value.is_floating_point() else value for key, value in out.items()}


def measure_size(motion: str, videos: int, frames: int, size: int, models: tuple[str, ...]) -> dict:
    """The figures of one motion size: its true motion and each row's scores (means over pairs)."""
    truth = size_pairs(motion, videos, frames, size)
    identity = truth["grid"].new_tensor(to_grid_units(synthetic_truth.pixel_centres(size), size))
    identity = identity.expand_as(truth["grid"])
    true_motion = scores(identity, truth, size)["epe_px"]  # the source copied: its error is the motion itself
    largest = true_motion >= np.quantile(true_motion, 1 - LARGEST_SHARE)
    rows = {"no motion": (identity, None), "true warp": (truth["grid"], None)}
    for model, grids in model_grids(truth["kp_source"], truth["kp_driving"], size, models).items():
        rows[f"{model} parts"] = (by_part(grids["parts"], truth["parts"]), grids["parts"])
        rows[f"{model} global"] = (grids["global"], grids["global"][:, None])
    figures = {}
    for name, (grid, fitted) in rows.items():
        per_pair = scores(grid, truth, size)
        figures[name] = {
            "epe_px": float(per_pair["epe_px"].mean()),
            "epe_largest_px": float(per_pair["epe_px"][largest].mean()),
            "l1": float(per_pair["l1"].mean()),
            "keypoint_residual_px": keypoint_residual(fitted, truth, size) if fitted is not None else None,
        }
    keypoint_motion = (truth["kp_driving"] - truth["kp_source"]).norm(dim=-1).mean() * (size - 1) / 2
    return {
        "pairs": int(true_motion.size),
        "true_motion_px": float(true_motion.mean()),
        "true_motion_largest_px": float(true_motion[largest].mean()),
        "keypoint_motion_px": float(keypoint_motion),
        "rows": figures,
    }


def bench_motion(json_path: str | None, size: int, videos: int, frames: int, quick: bool = False) -> int:
    """Measure every motion size on ``videos`` test videos of ``frames`` frames at ``size`` px; ``quick`` leaves out
    the paper's Adam fit (250 sequential steps: most of the time)."""
    torch.manual_seed(0)
    models = tuple(name for name in MODELS if not (quick and name == "cpab adam"))
    started = time.perf_counter()
    results = {
        "frame_size": size,
        "videos": videos,
        "frames": frames,
        "split": SPLIT,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "sizes": {motion: measure_size(motion, videos, frames, size, models) for motion in SIZES},
    }
    results["seconds"] = time.perf_counter() - started
    print_table(results)
    write_figures(json_path, results)
    return 0


def print_table(results: dict) -> None:
    """One table per motion size: rows no motion, true warp, each model's parts and global grids."""
    print(
        f"motion models alone on the synthetic test videos ({results['videos']} videos x {results['frames'] - 1} "
        f"pairs (frame 0, frame t), {results['frame_size']} px); EPE: end-point error vs the true warp on the object, "
        f"pixels; largest: the {LARGEST_SHARE:.0%} of pairs that move most; L1: warped source vs driving on the object"
    )
    for motion, figures in results["sizes"].items():
        print(
            f"\n{motion}: {figures['pairs']} pairs, true motion {figures['true_motion_px']:.2f} px on average "
            f"({figures['true_motion_largest_px']:.2f} px in the largest), keypoints move "
            f"{figures['keypoint_motion_px']:.2f} px"
        )
        print(f"  {'':<18} {'EPE px':>8} {'largest':>8} {'L1':>8} {'kp residual px':>15}")
        for name, row in figures["rows"].items():
            residual = "" if row["keypoint_residual_px"] is None else f"{row['keypoint_residual_px']:.3f}"
            print(f"  {name:<18} {row['epe_px']:>8.3f} {row['epe_largest_px']:>8.3f} {row['l1']:>8.4f} {residual:>15}")
    print(f"\n({results['seconds']:.0f} s)")
