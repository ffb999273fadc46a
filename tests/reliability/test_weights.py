"""Corrupt or hostile pretrained weight files (VGG, DINO, SAM): one line naming the file and the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cpabanim import files, weights
from cpabanim.data import download
from cpabanim.errors import CpabanimError
from tests.reliability.helpers import assert_no_unsafe_advice, write_malicious_checkpoint


def _random_bytes(path, size=4096):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(0).bytes(size))
    return path


def _assert_names_file_and_fix(message: str, path, name: str) -> None:
    assert str(path) in message and f"cpabanim weights {name}" in message
    assert_no_unsafe_advice(message)


@pytest.mark.parametrize("name", ["vgg19", "dino_vitb8"])
def test_random_bytes_under_the_official_name_are_named_with_the_fix(tmp_path, name):
    path = _random_bytes(tmp_path / "weights" / weights.WEIGHTS[name].filename)
    assert weights.find_weights(name, tmp_path / "weights") == path
    with pytest.raises(CpabanimError) as info:
        weights.load_weights(name, path)
    _assert_names_file_and_fix(str(info.value), path, name)
    # vgg19 is caught by torchvision's hash prefix before any byte is unpickled; DINO publishes no hash
    assert ("does not start with dcbb9e9d" if name == "vgg19" else "corrupt") in str(info.value)


def test_a_dino_file_is_checked_against_the_sha256_recorded_at_download(tmp_path):
    remote = tmp_path / "remote" / "dino_vitbase8_pretrain.pth"
    remote.parent.mkdir()
    torch.save({"cls_token": torch.zeros(1, 1, 4)}, remote)
    path = download.download_weights("dino_vitb8", tmp_path / "weights", url=remote.as_uri())
    sidecar = path.with_name(path.name + weights.SIDECAR_SUFFIX)
    assert sidecar.read_text().strip() == files.sha256_file(remote)
    assert torch.equal(weights.load_weights("dino_vitb8", path)["cls_token"], torch.zeros(1, 1, 4))
    # later corruption (a bad disk, a partial copy) no longer loads: the recorded hash catches it
    torch.save({"cls_token": torch.ones(1, 1, 4)}, path)
    with pytest.raises(CpabanimError, match="does not start with") as info:
        weights.load_weights("dino_vitb8", path)
    _assert_names_file_and_fix(str(info.value), path, "dino_vitb8")
    # the fix the message gives works: the download sets the bad file aside and fetches it again
    assert download.download_weights("dino_vitb8", tmp_path / "weights", url=remote.as_uri()) == path
    assert path.with_name(path.name + ".bad").is_file()
    assert torch.equal(weights.load_weights("dino_vitb8", path)["cls_token"], torch.zeros(1, 1, 4))


def test_a_vgg_file_with_the_right_hash_loads_and_a_hostile_one_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "code-ran"
    path = write_malicious_checkpoint(tmp_path / "vgg19-dcbb9e9d.pth", marker)
    # pretend the hostile file carries the registry's hash: safe loading still refuses it
    monkeypatch.setitem(
        weights.WEIGHTS,
        "vgg19",
        weights.WeightFile(
            "vgg19",
            "https://example.invalid/vgg19-dcbb9e9d.pth",
            "vgg19-dcbb9e9d.pth",
            files.sha256_file(path)[:8],
            "test",
        ),
    )
    with pytest.raises(CpabanimError, match="refused") as info:
        weights.load_weights("vgg19", path)
    _assert_names_file_and_fix(str(info.value), path, "vgg19")
    assert not marker.exists()
    good = tmp_path / "good" / "vgg19-dcbb9e9d.pth"
    good.parent.mkdir()
    torch.save({"features.0.weight": torch.ones(2)}, good)
    monkeypatch.setitem(
        weights.WEIGHTS,
        "vgg19",
        weights.WEIGHTS["vgg19"].__class__(
            "vgg19",
            "https://example.invalid/vgg19-dcbb9e9d.pth",
            "vgg19-dcbb9e9d.pth",
            files.sha256_file(good)[:8],
            "test",
        ),
    )
    assert torch.equal(weights.load_weights("vgg19", good)["features.0.weight"], torch.ones(2))


def _sam_params(tmp_path, checkpoint: str = "") -> tuple[dict, str]:
    """``load_sam``'s arguments: the ``masks.sam`` params and the weights folder."""
    return {"model_type": "vit_b", "checkpoint": checkpoint}, str(tmp_path / "weights")


def test_a_corrupt_sam_download_is_named_with_the_fix_before_sam_is_built(tmp_path, monkeypatch):
    from cpabanim.data import masks

    path = _random_bytes(tmp_path / "weights" / "sam_vit_b_01ec64.pth")
    monkeypatch.setattr("segment_anything.sam_model_registry", None)  # must not be reached
    with pytest.raises(CpabanimError, match="does not start with ec2df627") as info:
        masks.load_sam(*_sam_params(tmp_path))
    _assert_names_file_and_fix(str(info.value), path, "sam_vit_b")


def test_a_hostile_sam_checkpoint_of_the_users_own_is_refused(tmp_path, monkeypatch):
    from cpabanim.data import masks

    marker = tmp_path / "code-ran"
    path = write_malicious_checkpoint(tmp_path / "my-finetuned-sam.pth", marker)
    monkeypatch.setattr("segment_anything.sam_model_registry", None)
    with pytest.raises(CpabanimError, match="refused") as info:
        masks.load_sam(*_sam_params(tmp_path, str(path)))
    assert str(path) in str(info.value)
    assert_no_unsafe_advice(str(info.value))
    assert not marker.exists()
