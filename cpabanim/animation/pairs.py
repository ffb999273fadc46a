"""Stage ``cpabanim animate``: cross-identity image animation on a deterministic list of test pairs (paper §4.2).

Pairs (source image, driving video) come from different test videos, drawn with `data.seed`: the same
params and data always give the same list. Each pair is animated in every mode of ``animate.modes``
("standard" = absolute keypoints, "relative" = FOMM's relative motion, "avd" = animation via disentanglement).
Writes under ``{paths.outputs}/animation/``:

- ``pairs.json``: the pairs (source video and frame, driving video), modes, animator;
- ``<pair>/source.png``, ``<pair>/<mode>/<00000>.png`` (lossless), ``<pair>/<mode>.mp4`` / ``.gif``
  (source | driving | animation, for viewing).
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import numpy as np
import torch

from cpabanim import files
from cpabanim.animation.animator import load_animator
from cpabanim.animation.reconstruct import checkpoint_path
from cpabanim.data.frames import (
    read_frames,
    side_by_side,
    test_videos,
    to_frames,
    to_tensor,
    write_frames,
    write_image,
    write_viewing_videos,
)
from cpabanim.data.layout import video_name
from cpabanim.data.names import safe_name
from cpabanim.data.video import frame_count
from cpabanim.errors import CpabanimError
from cpabanim.progress import progress_bar
from cpabanim.runtime import resolve_device

log = logging.getLogger(__name__)


def choose_pairs(videos: list[Path], num_pairs: int, seed: int) -> list[dict]:
    """A seeded list of ``{"name", "source", "source_frame", "driving"}``, source and driving from different videos.

    ``name`` (``000_astronaut.test003_to_chelsea.test001``) is the pair's folder and artifact name, safe in URLs
    and shells whatever the video names (:func:`cpabanim.data.names.safe_name`). Drawn without replacement from
    all ordered pairs of distinct videos (so fewer pairs when there are few videos); with a single test video, it
    drives itself (logged: not cross-identity).
    """
    rng = np.random.default_rng(seed)
    names = [video_name(v) for v in videos]
    candidates = list(itertools.permutations(range(len(names)), 2))
    if not candidates:
        log.warning("only one test video: it animates itself (no cross-identity pair exists)")
        candidates = [(0, 0)]
    order = rng.permutation(len(candidates))[:num_pairs]
    pairs = []
    for number, choice in enumerate(order):
        source, driving = candidates[choice]
        source_frame = int(rng.integers(0, frame_count(videos[source])))
        pairs.append(
            {
                "name": safe_name(f"{number:03d}_{names[source]}_to_{names[driving]}"),
                "source": names[source],
                "source_frame": source_frame,
                "driving": names[driving],
            }
        )
    return pairs


def animate_pairs(
    *,
    processed: Path,
    checkpoints: Path,
    out_root: Path,
    animator: str,
    checkpoint: str | None,
    num_pairs: int,
    modes: list[str],
    max_frames: int,
    fps: float,
    mp4: bool,
    gif: bool,
    device: str,
    seed: int,
    pairs_seed: int,
) -> dict:
    """Animate ``num_pairs`` test pairs of ``processed``, drawn with ``pairs_seed`` (``data.seed``: every run of
    every experiment animates the same pairs, so they can be compared pair by pair; ``seed``: the run's own), in
    every mode of ``modes`` (the first ``max_frames`` driving frames, 0 = all) into ``out_root``; returns the record
    written to ``pairs.json``.

    ``animator``: ``checkpoint`` (the model at ``checkpoint``, else ``checkpoints/last.pt``) | ``identity``;
    ``fps``, ``mp4``, ``gif``: the viewing videos; ``device``: ``auto`` | ``cpu`` | ``cuda[:N]``.
    """
    torch.manual_seed(seed)
    torch_device = resolve_device(device)
    runner, info = load_animator(animator, checkpoint_path(checkpoint, checkpoints), torch_device, "animate")
    videos = test_videos(processed)
    by_name = {video_name(v): v for v in videos}
    pairs = choose_pairs(videos, num_pairs, pairs_seed)
    files.fresh_output_folder(out_root, "cpabanim animate")

    from cpabanim.tracking import log_artifact, log_image, set_tags

    skipped: dict[str, str] = {}
    set_tags({"cpabanim.animator": info["animator"]})
    for pair in progress_bar(pairs, desc="animate", unit="pair"):
        source_uint8 = read_frames(by_name[pair["source"]])[pair["source_frame"]]
        driving_uint8 = read_frames(by_name[pair["driving"]])
        if max_frames:
            driving_uint8 = driving_uint8[:max_frames]
        pair["frames"] = len(driving_uint8)
        folder = out_root / pair["name"]
        write_image(source_uint8, folder / "source.png")
        source = to_tensor(source_uint8[None]).to(torch_device)
        driving = to_tensor(driving_uint8).to(torch_device)
        for mode in modes:
            try:
                with torch.no_grad():
                    generated = runner.animate(source, driving, mode=mode)
            except (NotImplementedError, CpabanimError) as err:
                skipped[mode] = f"the animator cannot animate in mode {mode!r}: {err}"
                log.warning("%s", skipped[mode])
                continue
            generated_uint8 = to_frames(generated.float())
            if len(generated_uint8) != len(driving_uint8):
                raise CpabanimError(
                    f"animate({mode!r}) returned {len(generated_uint8)} frames for {len(driving_uint8)} driving frames"
                )
            write_frames(generated_uint8, folder / mode)
            strip = side_by_side(source_uint8, driving_uint8, generated_uint8)
            write_viewing_videos(strip, folder / mode, fps, mp4, gif)
            log_image(strip[len(strip) // 2], f"animation/{pair['name']}_{mode}.png")
    record = {**info, "modes": [m for m in modes if m not in skipped], "skipped_modes": skipped, "pairs": pairs}
    (out_root / "pairs.json").write_text(json.dumps(record, indent=2))
    log_artifact(out_root / "pairs.json")
    log.info("animated %d pairs in modes %s into %s", len(pairs), record["modes"], out_root)
    return record
