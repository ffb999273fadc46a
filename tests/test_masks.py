"""Region masks: the real SAM code path (random weights, one frame), SLIC on a clip, skipping done videos."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from cpabanim.config.layers import load_params
from cpabanim.data import archive, synthetic
from cpabanim.data.labels import mask_files
from cpabanim.data.masks import extract_masks, masks_to_labels, sam_generator, sam_labels, slic_labels
from cpabanim.data.video import write_frames
from cpabanim.errors import DataError, MissingWeightsError
from tests.conftest import PROJECT_ROOT


@pytest.fixture()
def params(tmp_path):
    p = copy.deepcopy(load_params(PROJECT_ROOT / "params.yaml"))
    p["paths"] = {k: str(tmp_path / k) for k in p["paths"]}
    for name, video in synthetic.generate("train", 2, 4, 48, 0):
        write_frames(video, tmp_path / "processed" / "train" / name)
    return p


def _tiny_sam():
    """segment-anything's own Sam (same prompt encoder, mask decoder and automatic generator) with a small
    ViT image encoder (64 wide, 2 blocks instead of vit_b's 768 x 12), randomly initialised: the real code
    path at a cost a CPU test can afford. Pretrained weights cannot be downloaded here."""
    from segment_anything.build_sam import _build_sam

    torch.manual_seed(0)
    return _build_sam(
        encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1]
    ).eval()


def _labels(masks_root, name):
    """uint8 (T, H, W) of one training video, through the masks' index."""
    path = mask_files(masks_root, "train")[name]
    with archive.FrameArchive(path) as labels:
        return labels.images()


def test_slic_labels_follow_the_image():
    _, video = next(synthetic.generate("train", 1, 3, 48, 0))
    labels = slic_labels(video, n_segments=16)
    assert labels.shape == (3, 48, 48) and labels.dtype == np.uint8
    assert labels.min() >= 1 and 6 <= len(np.unique(labels[0])) <= 40
    # superpixels group similar colours: mean within-region variance far below the frame's variance
    frame = video[0].reshape(-1, 3).astype(np.float64)
    flat = labels[0].ravel()
    within = np.mean([frame[flat == r].var(axis=0).sum() for r in np.unique(flat)])
    assert within < 0.5 * frame.var(axis=0).sum()


def test_masks_to_labels_paints_small_regions_over_large_ones():
    big = np.zeros((8, 8), bool)
    big[:, :6] = True
    small = np.zeros((8, 8), bool)
    small[2:4, 2:4] = True
    tiny = np.zeros((8, 8), bool)
    tiny[7, 7] = True
    labels = masks_to_labels(
        [{"segmentation": small, "area": 4}, {"segmentation": big, "area": 48}, {"segmentation": tiny, "area": 1}],
        (8, 8),
        min_area=2 / 64,
    )
    assert labels[0, 0] == 1 and labels[2, 2] == 2 and labels[7, 7] == 0 and labels[0, 7] == 0


def test_sam_code_path_with_random_weights_on_one_frame(params, tmp_path):
    _, video = next(synthetic.generate("train", 1, 1, 48, 0))
    generator = sam_generator(
        _tiny_sam(), {"points_per_side": 3, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    )
    labels = sam_labels(video[:1], generator)
    assert labels.shape == (1, 48, 48) and labels.dtype == np.uint8
    assert labels.max() >= 1  # with thresholds at 0 even random weights yield regions


def test_missing_sam_weights_fail_clearly(params, tmp_path):
    params["masks"]["source"] = "sam"
    with pytest.raises(MissingWeightsError, match=r"sam_vit_b_01ec64\.pth.*cpabanim weights sam_vit_b"):
        extract_masks(params["masks"], tmp_path / "processed", tmp_path / "masks", tmp_path / "weights")


def test_extract_masks_slic_writes_aligned_maps_and_skips_done_videos(params, tmp_path):
    meta = extract_masks(params["masks"], tmp_path / "processed", tmp_path / "masks", tmp_path / "weights")
    names = sorted(p.name for p in (tmp_path / "processed" / "train").iterdir())
    assert meta["source"] == "slic" and sorted(meta["videos"]["train"]) == names
    files = [mask_files(tmp_path / "masks", "train")[name] for name in names]
    first_labels = _labels(tmp_path / "masks", names[0])
    assert first_labels.shape == (4, 48, 48) and first_labels.dtype == np.uint8
    stamps = {f: f.stat().st_mtime_ns for f in files}
    first_bytes = files[0].read_bytes()
    # nothing to do: files untouched
    extract_masks(params["masks"], tmp_path / "processed", tmp_path / "masks", tmp_path / "weights")
    assert {f: f.stat().st_mtime_ns for f in files} == stamps
    params["masks"]["slic"]["n_segments"] = 8  # other settings: redone, byte-stable writer
    extract_masks(params["masks"], tmp_path / "processed", tmp_path / "masks", tmp_path / "weights")
    assert files[0].stat().st_mtime_ns != stamps[files[0]] and files[0].read_bytes() != first_bytes
    assert len(np.unique(_labels(tmp_path / "masks", names[0])[0])) < len(np.unique(first_labels[0]))  # fewer


def test_extract_masks_with_sam_source_records_it(params, tmp_path):
    params["masks"]["source"] = "sam"
    params["masks"]["sam"].update(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    # one video of one frame pair keeps the random-weight SAM affordable on CPU
    train = tmp_path / "processed" / "train"
    for video in sorted(train.iterdir())[1:]:
        import shutil

        shutil.rmtree(video)
    only = next(train.iterdir())
    for png in sorted(only.glob("*.png"))[2:]:
        png.unlink()
    meta = extract_masks(
        params["masks"], tmp_path / "processed", tmp_path / "masks", tmp_path / "weights", sam_model=_tiny_sam()
    )
    assert meta["source"] == "sam" and meta["settings"]["checkpoint"].startswith("random-init")
    assert _labels(tmp_path / "masks", only.name).shape == (2, 48, 48)


def test_saved_labels_are_byte_stable_atomic_and_leave_no_temporary_file(tmp_path, monkeypatch):
    from cpabanim import files
    from cpabanim.data.masks import save_labels

    labels = np.random.default_rng(0).integers(0, 9, (3, 16, 16)).astype(np.uint8)
    save_labels(tmp_path / "a" / "clip.npz", labels)
    save_labels(tmp_path / "b" / "clip.npz", labels)
    first, second = ((tmp_path / d / "clip.npz").read_bytes() for d in "ab")
    assert first == second and np.array_equal(np.load(tmp_path / "a" / "clip.npz")["labels"], labels)
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["clip.npz"]

    # through the one atomic writer: a failed write leaves the previous file as it was
    def broken(path, write, verify=None):
        raise files.CpabanimError(f"cannot write {path}")

    monkeypatch.setattr(files, "write_atomically", broken)
    with pytest.raises(files.CpabanimError):
        save_labels(tmp_path / "a" / "clip.npz", np.zeros((1, 16, 16), np.uint8))
    assert (tmp_path / "a" / "clip.npz").read_bytes() == first


def test_sam_with_batched_embeddings_gives_the_masks_of_one_frame_at_a_time(params, tmp_path):
    """The image encoder on 3 frames at once (masks.batch_frames) and segment-anything's own per-frame path give
    the same label maps."""
    _, video = next(synthetic.generate("train", 1, 3, 48, 0))
    cfg = {"points_per_side": 3, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    generator = sam_generator(_tiny_sam(), cfg)
    with torch.inference_mode():
        alone = np.stack([masks_to_labels(generator.generate(f), f.shape[:2]) for f in video])
    batched = sam_labels(video, generator, batch=3)
    assert np.array_equal(batched, alone) and batched.max() >= 1
    assert "set_image" not in vars(generator.predictor)  # the predictor is itself again


def test_masks_of_every_kth_frame_serve_the_nearest(params, tmp_path):
    from cpabanim.data.labels import mask_frames

    params["masks"]["every"] = 3
    extract_masks(params["masks"], tmp_path / "processed", tmp_path / "masks", tmp_path / "weights")
    name = sorted(p.name for p in (tmp_path / "processed" / "train").iterdir())[0]
    path = mask_files(tmp_path / "masks", "train")[name]
    with archive.FrameArchive(path) as stored:
        assert len(stored) == 2 and stored.record["frames"] == 4  # frames 0 and 3 of 4
        first, fourth = stored.image(0), stored.image(1)
    got = mask_frames(path, [0, 1, 2, 3])
    assert [np.array_equal(g, want) for g, want in zip(got, [first, first, fourth, fourth], strict=True)] == [True] * 4
    with pytest.raises(DataError, match="masks of 4 frames, frame 4 was asked for"):
        mask_frames(path, [4])
