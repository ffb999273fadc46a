"""FramesDataset: layout, items, id sampling, augmentations applied identically to frames and masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cpabanim.data.augmentation import augment_pair
from cpabanim.data.dataset import FramesDataset, iter_videos
from cpabanim.data.masks import save_labels
from cpabanim.errors import DataError
from tests.data.helpers import moving_square_video, write_frame_folder, write_mp4


@pytest.fixture()
def root(tmp_path):
    root = tmp_path / "processed"
    # safe names (docs/data.md, "Names"): the parts are joined by '.', so a folder has a "suffix" (.clip1) and a
    # file two (.a.mp4): the names must survive that
    for i, name in enumerate(["alice.clip1", "alice.clip2", "alice.clip3", "bob.clip1"]):
        write_frame_folder(root / "train" / name, moving_square_video(6, 32, seed=i))
    write_mp4(root / "test" / "carol.a.mp4", moving_square_video(5, 32, seed=9))
    Image.fromarray(np.concatenate(list(moving_square_video(4, 32, seed=8)), axis=1)).save(root / "test" / "dan.b.png")
    return root


def _masks(root, tmp_path):
    masks = tmp_path / "masks"
    for video in (root / "train").iterdir():
        labels = np.zeros((6, 32, 32), np.uint8)
        labels[:, :, :16] = 1  # left half = region 1, right half = region 2: flips must move them
        labels[:, :, 16:] = 2
        labels[:, 0, 0] = np.arange(6)  # frame index, to check alignment
        save_labels(masks / "train" / f"{video.name}.npz", labels)
    return masks


def test_train_items(root):
    data = FramesDataset(root, "train", frame_shape=(32, 32, 3), num_repeats=3)
    assert len(data) == 12
    item = data[5]
    assert set(item) == {"source", "driving", "name"}
    for key in ("source", "driving"):
        assert item[key].shape == (3, 32, 32) and item[key].dtype == torch.uint8  # float on the device
    assert item["name"] == "alice.clip2"


def test_frames_are_drawn_from_the_video_and_sorted(root):
    data = FramesDataset(root, "train")
    frames = torch.from_numpy(moving_square_video(6, 32, seed=0)).permute(0, 3, 1, 2).float()
    for _ in range(10):
        item = data[0]
        s = [int((frames - item["source"].float()).abs().flatten(1).sum(1).argmin())]
        d = [int((frames - item["driving"].float()).abs().flatten(1).sum(1).argmin())]
        assert s[0] <= d[0]


def test_deterministic_given_the_seed(root):
    data = FramesDataset(
        root,
        "train",
        augmentation={"horizontal_flip": True, "time_flip": True, "jitter": {"brightness": 0.2, "hue": 0.1}},
    )
    torch.manual_seed(3)
    first = [data[i] for i in range(4)]
    torch.manual_seed(3)
    again = [data[i] for i in range(4)]
    for a, b in zip(first, again):
        assert torch.equal(a["source"], b["source"]) and torch.equal(a["driving"], b["driving"])


def test_id_sampling_groups_identities(root):
    data = FramesDataset(root, "train", id_sampling=True)
    assert len(data) == 2  # alice, bob
    seen = {data[0]["name"] for _ in range(30)}
    assert seen <= {"alice.clip1", "alice.clip2", "alice.clip3"} and len(seen) > 1
    assert data[1]["name"] == "bob.clip1"


def test_id_sampling_groups_the_fields_hash_names_the_same_way(tmp_path):
    """A copy in the field's naming (``id#video#start#end``, read as it is) has the same identities."""
    root = tmp_path / "fomm"
    for i, name in enumerate(["id1#v1#000000#000006", "id1#v2#000000#000006", "id2#v1#000000#000006"]):
        write_frame_folder(root / "train" / name, moving_square_video(6, 32, seed=i))
    data = FramesDataset(root, "train", id_sampling=True)
    assert [[video.name for video in group] for group in data.groups] == [
        ["id1#v1#000000#000006", "id1#v2#000000#000006"],
        ["id2#v1#000000#000006"],
    ]


def test_masks_follow_frames_and_flips(root, tmp_path):
    masks = _masks(root, tmp_path)
    data = FramesDataset(root, "train", masks_root=masks, augmentation={"horizontal_flip": True, "time_flip": True})
    flipped = 0
    for _ in range(12):
        item = data[3]
        assert item["source_mask"].shape == (32, 32) and item["source_mask"].dtype == torch.int64
        left_is_one = bool((item["source_mask"][1:, :16] == 1).all())
        flipped += not left_is_one
        # same flip on the image: the gradient's red channel increases left->right unless flipped
        red = item["source"][0, 0]
        assert (red[-1] > red[0]) == left_is_one
        assert torch.equal(item["source_mask"][1:, :] > 0, item["driving_mask"][1:, :] > 0)
    assert 0 < flipped < 12


def test_augment_pair_colour_jitter_is_shared_by_both_frames():
    frame = torch.rand(1, 3, 16, 16).expand(2, 3, 16, 16).clone()
    torch.manual_seed(0)
    out, _ = augment_pair(frame, None, {"jitter": {"brightness": 0.5, "contrast": 0.5, "saturation": 0.5, "hue": 0.2}})
    assert not torch.allclose(out, frame)
    assert torch.allclose(out[0], out[1])  # identical frames stay identical: one colour change for the pair
    resized, masks = augment_pair(frame, torch.ones(2, 16, 16, dtype=torch.int64), {"resize_ratio": [0.9, 1.1]})
    assert resized.shape == frame.shape and masks.shape == (2, 16, 16)


def test_test_split_returns_whole_videos_and_iterator(root):
    data = FramesDataset(root, "test", frame_shape=(32, 32, 3))
    names = sorted(data[i]["name"] for i in range(len(data)))
    assert names == ["carol.a", "dan.b"]  # only the movie / image suffix goes
    videos = dict(iter_videos(root, "test"))
    assert videos["carol.a"].shape == (5, 32, 32, 3) and videos["dan.b"].shape == (4, 32, 32, 3)
    item = data[0]
    assert item["video"].shape[1:] == (3, 32, 32)


def test_missing_split_and_wrong_size_are_clear(root, tmp_path):
    with pytest.raises(DataError, match="no 'train' folder"):
        FramesDataset(tmp_path / "nowhere", "train")
    with pytest.raises(DataError, match="expects"):
        FramesDataset(root, "train", frame_shape=(64, 64, 3))[0]


def test_keyed_items_depend_only_on_their_key(root):
    from cpabanim.data.loader import ItemKey

    data = FramesDataset(
        root,
        "train",
        id_sampling=True,
        augmentation={
            "horizontal_flip": True,
            "time_flip": True,
            "resize_ratio": [0.9, 1.1],
            "jitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1},
        },
    )
    first = data[ItemKey(0, 123)]
    torch.rand(5)  # the global generator plays no part
    again = data[ItemKey(0, 123)]
    assert first["name"] == again["name"]
    for key in ("source", "driving"):
        assert torch.equal(first[key], again[key])
    others = [data[ItemKey(0, seed)] for seed in range(8)]
    assert any(not torch.equal(o["source"], first["source"]) for o in others)
    assert len({o["name"] for o in others}) > 1  # the clip of the identity is drawn too


def test_augmentation_is_sampled_then_applied():
    from cpabanim.data.augmentation import apply_augmentation, sample_augmentation

    params = {
        "horizontal_flip": True,
        "time_flip": True,
        "resize_ratio": [0.8, 1.2],
        "jitter": {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.2},
    }
    drawn = [sample_augmentation(params, (16, 16), torch.Generator().manual_seed(s)) for s in range(20)]
    assert drawn[3] == sample_augmentation(params, (16, 16), torch.Generator().manual_seed(3))
    assert len(set(drawn)) == 20 and {d.time_flip for d in drawn} == {True, False}
    assert all(d.resized is not None and sorted(d.jitter_order) == [0, 1, 2, 3] for d in drawn)
    frames = torch.rand(2, 3, 16, 16)
    masks = torch.randint(0, 3, (2, 16, 16))
    out, out_masks = apply_augmentation(frames, masks, drawn[0])
    again, again_masks = apply_augmentation(frames, masks, drawn[0])
    assert torch.equal(out, again) and torch.equal(out_masks, again_masks)
    assert out.shape == frames.shape and out_masks.shape == masks.shape
    assert sample_augmentation(None, (16, 16)) == sample_augmentation({}, (16, 16))


@pytest.mark.parametrize("operation", ["brightness", "contrast", "saturation", "hue"])
def test_colour_jitter_equals_torchvision(operation):
    import torchvision.transforms.functional as TF

    from cpabanim.data.augmentation import PairAugmentation, apply_augmentation

    frames = torch.rand(2, 3, 24, 24)
    frames[0, :, :4] = 0.5  # grey pixels: no hue
    frames[1, 0, :4] = frames[1, 1, :4]  # ties between the max channels
    for factor in (0.7, 1.3) if operation != "hue" else (-0.4, 0.15, 0.5):
        aug = PairAugmentation(jitter_order=(0, 1, 2, 3), **{operation: factor})
        expected = getattr(TF, f"adjust_{operation}")(frames, factor).clamp(0, 1)
        torch.testing.assert_close(apply_augmentation(frames, None, aug)[0], expected, atol=1e-5, rtol=0)


def test_read_frame_decodes_like_pil(tmp_path):
    from cpabanim.data.dataset import read_frame

    rgb = moving_square_video(1, 20, seed=3)[0]
    for mode in ("RGB", "RGBA", "P", "L"):
        path = tmp_path / f"{mode}.png"
        Image.fromarray(rgb).convert(mode).save(path)
        expected = np.asarray(Image.open(path).convert("RGB"))
        frame = read_frame(path)
        assert frame.dtype == torch.uint8 and frame.shape == (3, 20, 20), mode
        assert np.array_equal(frame.permute(1, 2, 0).numpy(), expected), mode
