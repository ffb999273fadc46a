"""``cpabanim bench masks``: seconds per frame of the masks stage, SLIC and SAM (the image encoder one frame at a
time and ``--batch-size`` frames at once), with the days it would take for VoxCeleb's 4.0 M training frames at
``masks.every`` 1 and 4 (docs/data.md, "Region masks"; docs/cluster.md, "5. Data").

SAM's weights cannot be downloaded here: the model is ViT-B built with random weights (the same computation, so the
same time; ``--quick``: a 64-wide, 2-block encoder instead, a smoke run). On a GPU, ``scripts/gpu-checks.sh bench``
runs it on CUDA.
"""

from __future__ import annotations

import time

import numpy as np

from cpabanim.commands.bench.common import bench_params, write_figures

VOX_TRAIN_FRAMES = 4_004_098  # the pinned vox-metadata.csv (docs/data.md)


def _seconds_per_frame(run, frames: np.ndarray) -> float:
    started = time.perf_counter()
    run(frames)
    return (time.perf_counter() - started) / len(frames)


def bench_masks(json_path: str | None, size: int, batch: int, frames: int, quick: bool, device: str | None) -> int:
    import torch

    from cpabanim.data.masks import sam_generator, sam_labels, slic_labels
    from cpabanim.data.synthetic import generate
    from cpabanim.runtime import resolve_device

    params = bench_params(None, [f"data.frame_size={size}"])
    video = next(generate("train", 1, frames, size, seed=0))[1]
    slic = params["masks"]["slic"]
    results = {"frame_size": size, "frames": frames, "device": str(resolve_device(device or "auto"))}
    results["slic_s"] = _seconds_per_frame(
        lambda f: slic_labels(f, slic["n_segments"], slic["compactness"], slic["sigma"]), video
    )
    torch.manual_seed(0)
    if quick:
        from segment_anything.build_sam import _build_sam

        model = _build_sam(encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1])
    else:
        from segment_anything import sam_model_registry

        model = sam_model_registry[params["masks"]["sam"]["model_type"]](checkpoint=None)
    model = model.to(results["device"]).eval()
    sam = {**params["masks"]["sam"], **({"points_per_side": 4} if quick else {})}  # a smoke run: 16 prompts
    generator = sam_generator(model, sam)
    min_area = params["masks"]["sam"]["min_region_area"]
    with torch.inference_mode():
        sam_labels(video[:1], generator, min_area)  # warm-up
        results["sam_s_batch_1"] = _seconds_per_frame(lambda f: sam_labels(f, generator, min_area, 1), video)
        results[f"sam_s_batch_{batch}"] = _seconds_per_frame(lambda f: sam_labels(f, generator, min_area, batch), video)
    results["model"] = "tiny (smoke run)" if quick else params["masks"]["sam"]["model_type"] + " (random weights)"
    print(f"masks, seconds per {size} px frame on {results['device']} ({frames} frames; SAM {results['model']}):")
    print(f"  slic                      {results['slic_s']:8.3f}")
    for key in ("sam_s_batch_1", f"sam_s_batch_{batch}"):
        print(f"  sam, encoder batch {key.rsplit('_', 1)[1]:<6} {results[key]:8.3f}")
    best = min(results["sam_s_batch_1"], results[f"sam_s_batch_{batch}"])
    print(f"  ratio batch {batch} / batch 1: {results[f'sam_s_batch_{batch}'] / results['sam_s_batch_1']:.2f}")
    for every in (1, 4):
        days = VOX_TRAIN_FRAMES / every * best / 86400
        results[f"vox_sam_days_every_{every}"] = days
        print(
            f"  VoxCeleb's {VOX_TRAIN_FRAMES:,} training frames, masks.every {every}: {days:.1f} device-days "
            "(estimated)"
        )
    write_figures(json_path, results)
    return 0
