"""The explanation pictures (cpabanim.viz.explain; their data: cpabanim.viz.motion): the maths of the flow colours
and arrows, and labelled PNGs for a real model output, CPAB (background + partial + global) and TPS (background +
TPS) alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cpabanim.config.typed import ModelConfig
from cpabanim.viz.explain import write_explanation
from cpabanim.viz.motion import (
    explanation_from_output,
    flow_to_rgb,
    motion_vectors,
    to_pixels,
    transform_colours,
    transform_names,
)

TINY_MODEL = {
    "num_cpab": 2,
    "backbone": "small",
    "generator": {"block_expansion": 8, "max_features": 32, "num_down_blocks": 2},
    "dense_motion": {"block_expansion": 8, "max_features": 32, "num_blocks": 2, "scale_factor": 0.5},
    "avd": {"id_bottle_size": 8, "pose_bottle_size": 8},
}


def test_transform_names_follow_the_dense_motion_order():
    assert transform_names("cpab", 2) == ["background affine", "partial CPAB 1", "partial CPAB 2", "global CPAB"]
    assert transform_names("tps", 2) == ["background affine", "TPS 1", "TPS 2"]
    assert transform_colours("cpab", 2).shape == (4, 3) and transform_colours("tps", 2).shape == (3, 3)


def test_motion_vectors_are_the_negated_backward_flow_in_pixels():
    h = w = 9
    ys, xs = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    identity = np.stack([xs, ys], axis=-1)
    assert np.allclose(motion_vectors(identity, 17, 17), 0, atol=1e-5)
    # each result pixel samples the source 0.25 to its left: the content moved right by 0.25 * (W - 1) / 2 px
    shifted = identity - [0.25, 0.0]
    moved = motion_vectors(shifted, 17, 17)
    assert np.allclose(moved[..., 0], 0.25 * 16 / 2, atol=1e-4) and np.allclose(moved[..., 1], 0, atol=1e-5)
    assert np.allclose(to_pixels(np.array([[-1.0, -1.0], [1.0, 1.0]]), 17, 33), [[0, 0], [32, 16]])


def test_flow_colours_white_when_still_and_hue_by_direction():
    vectors = np.array([[[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]])
    rgb = flow_to_rgb(vectors, max_length=1.0)
    assert np.allclose(rgb[0, 0], 1.0)  # no motion: white
    assert np.allclose(rgb[0, 1], [1, 0, 0])  # right: red
    assert np.allclose(rgb[0, 2], [0, 1, 1])  # left: cyan
    assert not np.allclose(rgb[0, 3], rgb[0, 1])


@pytest.mark.parametrize("motion", ["cpab", "tps"])
def test_explanation_of_a_model_output_is_labelled(tmp_path, motion):
    from cpabanim.models.full import AnimationModel

    model = AnimationModel(ModelConfig.from_mapping({**TINY_MODEL, "motion": motion})).eval()
    size = 32
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    source = torch.stack([(xx + 1) / 2, (yy + 1) / 2, ((xx**2 + yy**2) < 0.3).float()])[None]
    driving = source.roll(3, dims=3)
    with torch.no_grad():
        out = model.reconstruct(source, driving)
    explanation = explanation_from_output(
        out, 0, source[0], driving[0], motion, model.num_groups, title=f"{motion} reconstruction"
    )
    paths = write_explanation(explanation, tmp_path)
    assert sorted(paths) == ["contributions", "flow", "keypoints", "occlusion", "overview"]
    names = transform_names(motion, model.num_groups)
    for path in paths.values():
        with Image.open(path) as image:
            assert image.size[0] > 300 and image.size[1] > 200
            assert image.text["Title"] == f"{motion} reconstruction"
            labels = image.text["Description"]
        assert labels  # every panel has a title
    contributions = Image.open(paths["contributions"]).text["Description"]
    assert all(f"{name}: weight" in contributions for name in names)
    assert all(f"source warped by {name} alone" in contributions for name in names)
    overview = Image.open(paths["overview"]).text["Description"]
    for label in ("source: keypoints", "driving: keypoints", "dense motion", "occlusion map", "which transform"):
        assert label in overview
