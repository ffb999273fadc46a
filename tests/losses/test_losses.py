"""Losses: zero on identical inputs, gradients where they matter, weights loaded from files the tests make,
and the clear error when weights are absent."""

from __future__ import annotations

import pytest
import torch

from cpabanim import files
from cpabanim.config.typed import LossConfig
from cpabanim.errors import MissingWeightsError
from cpabanim.losses.perceptual import PerceptualPyramidLoss, VGG19Features
from cpabanim.losses.semantic import KeypointSemanticLoss
from cpabanim.losses.structure import DinoViT, StructureLoss, key_self_similarity
from cpabanim.weights import WEIGHTS, find_weights, search_paths, verify_hash


@pytest.fixture()
def isolated_hub(tmp_path, monkeypatch):
    """Point the torch hub cache at an empty folder so that no real cache is seen."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def test_pixel_pyramid_is_zero_on_identical_and_positive_otherwise():
    loss = PerceptualPyramidLoss("pixel", [1.0, 0.5, 0.25], [10.0] * 5)
    image = torch.rand(2, 3, 32, 32)
    assert float(loss(image, image)) == pytest.approx(0.0, abs=1e-5)
    other = torch.rand(2, 3, 32, 32, requires_grad=True)
    value = loss(other, image)
    value.backward()
    assert float(value.detach()) > 0 and other.grad.abs().sum() > 0


def test_missing_vgg_weights_give_a_clear_error(tmp_path, isolated_hub):
    with pytest.raises(MissingWeightsError) as info:
        PerceptualPyramidLoss("vgg", [1.0], [10.0] * 5, weights_dir=tmp_path / "weights")
    message = str(info.value)
    assert "vgg19-dcbb9e9d.pth" in message and str(tmp_path / "weights") in message
    assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in message
    assert "loss.perceptual=pixel" in message


def test_vgg_loads_from_the_hub_cache_and_is_zero_on_identical(isolated_hub, tmp_path, monkeypatch):
    from torchvision.models import vgg19

    from cpabanim import weights

    reference = vgg19(weights=None)
    isolated_hub.mkdir(parents=True)
    # the real file also holds the classifier (500 MB): only `features.*` is used, so only that is written here
    features = {f"features.{k}": v for k, v in reference.features.state_dict().items()}
    torch.save(features, isolated_hub / "vgg19-dcbb9e9d.pth")
    # a stand-in under the official name: the registry's hash prefix is pointed at it (the real check stays on)
    prefix = files.sha256_file(isolated_hub / "vgg19-dcbb9e9d.pth")[:8]
    monkeypatch.setitem(
        weights.WEIGHTS,
        "vgg19",
        weights.WeightFile("vgg19", weights.WEIGHTS["vgg19"].url, "vgg19-dcbb9e9d.pth", prefix, "test"),
    )
    assert find_weights("vgg19", tmp_path / "nowhere") == isolated_hub / "vgg19-dcbb9e9d.pth"
    loss = PerceptualPyramidLoss("vgg", [1.0, 0.5], [10.0] * 5, weights_dir=tmp_path / "nowhere")
    torch.testing.assert_close(loss.vgg.slices[0][0].weight, reference.features[0].weight)
    image = torch.rand(1, 3, 32, 32)
    assert float(loss(image, image)) == 0.0
    assert float(loss(torch.rand(1, 3, 32, 32), image)) > 0
    assert all(not p.requires_grad for p in loss.vgg.parameters())


def test_vgg_features_are_the_relu_x_1_layers():
    feats = VGG19Features()(torch.rand(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512]
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]
    assert all((f >= 0).all() for f in feats)  # after ReLU


def test_weights_registry_and_hash_check(tmp_path):
    assert set(WEIGHTS) >= {"vgg19", "dino_vitb8"}
    for entry in WEIGHTS.values():
        assert entry.url.startswith("https://") and entry.url.endswith(entry.filename)
    assert search_paths("vgg19", tmp_path)[0] == tmp_path / "vgg19-dcbb9e9d.pth"
    fake = tmp_path / "vgg19-dcbb9e9d.pth"
    fake.write_bytes(b"not the real file")
    assert not verify_hash(fake, "vgg19")


def _small_vit():
    return DinoViT(patch=8, dim=32, depth=2, heads=4, image_size=32)


def test_structure_loss_zero_on_identical_and_summed_over_batch():
    loss = StructureLoss(vit=_small_vit(), size=32)
    image = torch.rand(2, 3, 40, 40)
    assert float(loss(image, image)) == pytest.approx(0.0, abs=1e-6)
    other = torch.rand(2, 3, 40, 40, requires_grad=True)
    both = loss(other, image)
    both.backward()
    assert other.grad.abs().sum() > 0
    single = [float(loss(other[i : i + 1].detach(), image[i : i + 1])) for i in range(2)]
    assert float(both) == pytest.approx(sum(single), rel=1e-4)


def test_structure_loss_loads_a_dino_state_dict(tmp_path):
    vit = _small_vit()
    state = {**vit.state_dict(), "head.weight": torch.zeros(1)}  # DINO files may carry a head: ignored
    path = tmp_path / "dino.pth"
    torch.save(state, path)
    loaded = StructureLoss(path, vit=_small_vit(), size=32)
    torch.testing.assert_close(loaded.vit.pos_embed, vit.pos_embed)
    keys = loaded.vit.last_keys(torch.rand(1, 3, 32, 32))
    assert keys.shape == (1, 1 + 16, 32)  # CLS token included
    sim = key_self_similarity(keys)
    torch.testing.assert_close(torch.diagonal(sim, dim1=1, dim2=2), torch.ones(1, 17))


def test_missing_dino_weights_give_a_clear_error(tmp_path, isolated_hub):
    from cpabanim.losses.objective import GeneratorObjective

    with pytest.raises(MissingWeightsError, match="dino_vitbase8_pretrain.pth.*loss.structure=off"):
        GeneratorObjective(LossConfig.from_mapping({"structure": "dino"}), weights_dir=tmp_path)


def _two_region_mask(size=32, split=16):
    mask = torch.ones(1, size, size, dtype=torch.long)
    mask[:, :, split:] = 2
    return mask


def test_semantic_loss_zero_for_identical_and_penalises_region_swaps():
    loss = KeypointSemanticLoss(blur_sigma=1.0)
    mask = _two_region_mask()
    left, right = -0.6, 0.6
    kp = torch.tensor([[[left, 0.0], [left, 0.5], [right, 0.0]]])
    assert float(loss(kp, kp, mask, mask)) == pytest.approx(0.0, abs=1e-7)
    # relabelling the regions changes nothing (SAM ids are per frame)
    relabelled = torch.where(mask == 1, 200, 7)  # any uint8 ids
    assert float(loss(kp, kp, mask, relabelled)) == pytest.approx(0.0, abs=1e-7)
    # keypoint 1 crosses into the other region in the driving frame: penalised
    moved = kp.clone()
    moved[0, 1, 0] = right
    assert float(loss(kp, moved, mask, mask)) > 0.1


def test_semantic_loss_is_differentiable_wrt_keypoints():
    loss = KeypointSemanticLoss(blur_sigma=3.0)
    mask = _two_region_mask()
    kp_source = torch.tensor([[[-0.6, 0.0], [-0.5, 0.5]]])
    kp_driving = torch.tensor([[[-0.6, 0.0], [0.05, 0.5]]], requires_grad=True)  # near the border
    value = loss(kp_source, kp_driving, mask, mask)
    value.backward()
    # moving keypoint 1 left (back into the shared region) lowers the loss
    assert kp_driving.grad[0, 1, 0] > 0
