"""TPSMM checkpoint import and warm start (cpabanim/models/tpsmm_import.py, docs/faithfulness.md).

The TPSMM checkpoint is built here from TPSMM's published module structure -- its module names, its channel
formulas, its persistent anti-alias buffer, torchvision's ResNet-18 under ``fg_encoder`` / ``bg_encoder`` -- with
random values, written with ``torch.save`` as TPSMM's Logger does (one state dict per network + ``epoch`` +
optimiser states). Nothing here is derived from our own networks.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from cpabanim.animation.animate import animate_video
from cpabanim.config.typed import ModelConfig
from cpabanim.errors import CpabanimError
from cpabanim.models.checkpoint import load_checkpoint
from cpabanim.models.full import AnimationModel
from cpabanim.models.tpsmm_import import convert_tpsmm_checkpoint, warm_start

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NUM_TPS = 2
GEN = {"block_expansion": 8, "max_features": 32, "num_down_blocks": 3}
DENSE = {"block_expansion": 8, "max_features": 32, "num_blocks": 3, "scale_factor": 0.5}
AVD = {"id_bottle_size": 16, "pose_bottle_size": 16}
MODEL_BASE = {
    "motion": "cpab",
    "fit_method": "lm",
    "backbone": "small",
    "num_cpab": 7,
    "num_channels": 3,
    "bg": False,
    "partial_tessellation": [4, 4],
    "global_tessellation": [6, 6],
    "adam_iters": 100,
    "integrator": "fast",
    "kp_variance": 0.01,
    "generator": {"block_expansion": 64, "max_features": 512, "num_down_blocks": 3},
    "dense_motion": {"block_expansion": 64, "max_features": 1024, "num_blocks": 5, "scale_factor": 0.25},
    "avd": {"id_bottle_size": 128, "pose_bottle_size": 128},
}


def _rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape) * 0.05


def _conv(prefix: str, cin: int, cout: int, k: int) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": _rand(cout, cin, k, k), f"{prefix}.bias": _rand(cout)}


def _block(prefix: str, cin: int, cout: int, k: int = 3) -> dict[str, torch.Tensor]:
    """TPSMM's Down/Up/SameBlock2d: ``conv`` + ``norm`` (InstanceNorm2d(affine=True): weight, bias only)."""
    return {
        **_conv(f"{prefix}.conv", cin, cout, k),
        f"{prefix}.norm.weight": 1 + _rand(cout),
        f"{prefix}.norm.bias": _rand(cout),
    }


def _batchnorm(prefix: str, n: int) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": 1 + _rand(n),
        f"{prefix}.bias": _rand(n),
        f"{prefix}.running_mean": _rand(n),
        f"{prefix}.running_var": 1 + _rand(n).abs(),
        f"{prefix}.num_batches_tracked": torch.tensor(7),
    }


def _linear(prefix: str, cin: int, cout: int) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": _rand(cout, cin), f"{prefix}.bias": _rand(cout)}


def _resnet18(prefix: str, in_channels: int, outputs: int) -> dict[str, torch.Tensor]:
    from torchvision import models

    net = models.resnet18(weights=None)
    net.conv1 = torch.nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.fc = torch.nn.Linear(512, outputs)
    return {f"{prefix}.{k}": v.clone() for k, v in net.state_dict().items()}


def tpsmm_antialias_kernel(channels: int, scale: float) -> torch.Tensor:
    """TPSMM's AntiAliasInterpolation2d buffer: a normalised Gaussian, sigma = (1/scale - 1)/2, repeated."""
    sigma = (1 / scale - 1) / 2
    size = 2 * round(sigma * 4) + 1
    grid = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(grid**2) / (2 * sigma**2))
    kernel = g[:, None] * g[None, :]
    return (kernel / kernel.sum()).view(1, 1, size, size).repeat(channels, 1, 1, 1)


def tpsmm_checkpoint(num_tps: int = NUM_TPS, bg: bool = True, avd: bool = True) -> dict:
    """A checkpoint in TPSMM's layout, sizes from TPSMM's formulas (vox's structure at a tiny width)."""
    torch.manual_seed(1)
    c = 3
    gen = {**_block("first", c, GEN["block_expansion"], 7), **_conv("final", GEN["block_expansion"], c, 7)}
    be, mf, nd = GEN["block_expansion"], GEN["max_features"], GEN["num_down_blocks"]
    up, res = [], []
    for i in range(nd):
        cin, cout = min(mf, be * 2**i), min(mf, be * 2 ** (i + 1))
        gen.update(_block(f"down_blocks.{i}", cin, cout))
        dec_in = cout if i == nd - 1 else 2 * cout
        up.append((dec_in, cin))
        res += [dec_in, dec_in]
    for j, (cin, cout) in enumerate(up[::-1]):  # TPSMM reverses its up-block and res-block lists
        gen.update(_block(f"up_blocks.{j}", cin, cout))
    for j, ch in enumerate(res[::-1]):  # ResBlock2d: norm1, conv1, norm2, conv2
        for n in (1, 2):
            gen.update(
                {
                    **_conv(f"resblock.{j}.conv{n}", ch, ch, 3),
                    f"resblock.{j}.norm{n}.weight": 1 + _rand(ch),
                    f"resblock.{j}.norm{n}.bias": _rand(ch),
                }
            )
    be, mf, nb, scale = DENSE["block_expansion"], DENSE["max_features"], DENSE["num_blocks"], DENSE["scale_factor"]
    in_features = c * (num_tps + 1) + num_tps * 5 + 1
    dense = {"down.weight": tpsmm_antialias_kernel(c, scale)}
    for i in range(nb):
        dense.update(
            _block(
                f"hourglass.encoder.down_blocks.{i}",
                in_features if i == 0 else min(mf, be * 2**i),
                min(mf, be * 2 ** (i + 1)),
            )
        )
    out_channels = []
    for j, i in enumerate(reversed(range(nb))):
        cin = (1 if i == nb - 1 else 2) * min(mf, be * 2 ** (i + 1))
        dense.update(_block(f"hourglass.decoder.up_blocks.{j}", cin, min(mf, be * 2**i)))
        out_channels.append(cin)
    out_channels.append(be + in_features)  # TPSMM's decoder.out_channels
    last = out_channels[-1]
    dense.update(_conv("maps", last, num_tps + 1, 7))
    up_nums = int(round(-torch.log2(torch.tensor(scale)).item()))
    for i in range(up_nums):
        dense.update(_block(f"up.{i}", last // 2**i, last // 2 ** (i + 1)))
    occ_in = [out_channels[-i - 1] for i in range(4 - up_nums)[::-1]] + [last // 2 ** (i + 1) for i in range(up_nums)]
    for i, ch in enumerate(occ_in):
        dense.update(_conv(f"occlusion.{i}", ch, 1, 7))
    checkpoint = {
        "kp_detector": _resnet18("fg_encoder", 3, num_tps * 10),
        "dense_motion_network": dense,
        "inpainting_network": gen,
        "epoch": 99,
        "optimizer": {"state": {}, "param_groups": [{"lr": 2e-5, "betas": (0.5, 0.999), "params": [0]}]},
    }
    if bg:
        checkpoint["bg_predictor"] = _resnet18("bg_encoder", 6, 6)
    if avd:
        n = num_tps * 10
        net = {}
        for name, sizes in (
            ("id_encoder", [n, 256, 512, 1024, AVD["id_bottle_size"]]),
            ("pose_encoder", [n, 256, 512, 1024, AVD["pose_bottle_size"]]),
            ("decoder", [AVD["id_bottle_size"] + AVD["pose_bottle_size"], 1024, 512, 256, n]),
        ):
            for layer in range(3):  # Linear (3 l), BatchNorm1d (3 l + 1), ReLU (3 l + 2)
                net.update(_linear(f"{name}.{3 * layer}", sizes[layer], sizes[layer + 1]))
                net.update(_batchnorm(f"{name}.{3 * layer + 1}", sizes[layer + 1]))
            net.update(_linear(f"{name}.9", sizes[3], sizes[4]))
        checkpoint["avd_network"] = net
    return checkpoint


@pytest.fixture(scope="module")
def tpsmm_file(tmp_path_factory) -> tuple[Path, dict]:
    checkpoint = tpsmm_checkpoint()
    path = tmp_path_factory.mktemp("tpsmm") / "vox.pth.tar"
    torch.save(checkpoint, path)
    return path, checkpoint


RENAMED = (
    ("kp_detector", "kp_detector.", (("fg_encoder.", "backbone."),)),
    ("bg_predictor", "bg_predictor.", (("bg_encoder.", "backbone."),)),
    ("inpainting_network", "generator.", (("resblock.", "resblocks."),)),
    (
        "dense_motion_network",
        "dense_motion.",
        (("hourglass.encoder.down_blocks.", "hourglass.down."), ("hourglass.decoder.up_blocks.", "hourglass.up.")),
    ),
    ("avd_network", "avd.", ()),
)


def test_import_maps_every_tpsmm_tensor_and_the_model_runs(tpsmm_file, tmp_path):
    src, checkpoint = tpsmm_file
    result = convert_tpsmm_checkpoint(src, tmp_path / "imported.pt", MODEL_BASE)
    assert result["avd_trained"] and result["epoch"] == 99
    model, extra = load_checkpoint(tmp_path / "imported.pt")
    assert model.params["motion"] == "tps" and model.params["num_cpab"] == NUM_TPS and model.params["bg"]
    assert model.params["dense_motion"] == DENSE and model.params["generator"] == GEN and model.params["avd"] == AVD
    ours = model.state_dict()
    mapped = 0
    for network, prefix, renames in RENAMED:
        for key, value in checkpoint[network].items():
            if network == "dense_motion_network" and key == "down.weight":
                # TPSMM's stored anti-alias kernel is exactly the one our module computes
                torch.testing.assert_close(model.dense_motion.down.weight, value, rtol=0, atol=1e-7)
                continue
            for old, new in renames:
                key = key.replace(old, new, 1) if key.startswith(old) else key
            assert torch.equal(ours[prefix + key], value), prefix + key
            mapped += 1
    assert mapped == len(ours)  # every tensor of ours came from the TPSMM checkpoint
    out = model.reconstruct(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
    assert out["prediction"].shape == (2, 3, 64, 64) and torch.isfinite(out["prediction"]).all()
    assert animate_video(model, torch.rand(1, 3, 64, 64), torch.rand(3, 3, 64, 64), mode="avd").shape == (3, 3, 64, 64)


def test_import_without_avd_or_background(tmp_path):
    path = tmp_path / "mgif.pth.tar"
    torch.save(tpsmm_checkpoint(bg=False, avd=False), path)
    result = convert_tpsmm_checkpoint(path, tmp_path / "mgif.pt", MODEL_BASE)
    assert not result["avd_trained"]
    model, extra = load_checkpoint(tmp_path / "mgif.pt")
    assert model.bg_predictor is None and extra["avd_trained"] is False
    assert model.reconstruct(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))["prediction"].shape == (1, 3, 64, 64)


def test_import_refuses_what_is_not_a_tpsmm_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CpabanimError, match="not a TPSMM checkpoint"):
        convert_tpsmm_checkpoint(path, tmp_path / "out.pt", MODEL_BASE)


def test_warm_start_cpab_model_from_tpsmm_loads_slices_and_keeps_the_rest_fresh(tpsmm_file):
    src, checkpoint = tpsmm_file
    params = {
        **MODEL_BASE,
        "motion": "cpab",
        "backbone": "resnet18",
        "num_cpab": NUM_TPS,
        "bg": True,
        "generator": GEN,
        "dense_motion": DENSE,
        "avd": AVD,
    }
    model = AnimationModel(ModelConfig.from_mapping(params))
    fresh_values = {k: v.clone() for k, v in model.state_dict().items()}
    report = warm_start(model, src)  # from the file (weights_only); a dict works the same
    total = len(model.state_dict())
    assert len(report["loaded"]) + len(report["sliced"]) + len(report["fresh"]) == total
    assert report["fresh"] == [] and not any(k.startswith("motion.") for k in model.state_dict())  # bases: rebuilt
    assert report["unused"] == []
    assert all(name.startswith("dense_motion.") for name in report["sliced"])
    assert {"dense_motion.hourglass.down.0.conv.weight", "dense_motion.maps.weight", "dense_motion.maps.bias"} <= set(
        report["sliced"]
    )
    assert len(report["loaded"]) > 0.9 * total
    # the first layer: TPSMM's K+1 heatmaps and background + K deformed sources loaded, the global's 3 fresh
    first = model.dense_motion.hourglass.down[0].conv.weight
    tpsmm_first = checkpoint["dense_motion_network"]["hourglass.encoder.down_blocks.0.conv.weight"]
    k = tpsmm_first.shape[1]
    assert first.shape[1] == k + 3
    torch.testing.assert_close(first[:, :k], tpsmm_first, rtol=0, atol=0)
    torch.testing.assert_close(first[:, k:], fresh_values["dense_motion.hourglass.down.0.conv.weight"][:, k:])
    # the contribution maps: background + K TPS rows loaded, the global transform's row fresh
    maps = model.dense_motion.maps.weight
    torch.testing.assert_close(
        maps[: NUM_TPS + 1, : tpsmm_first.shape[1] + DENSE["block_expansion"]],
        checkpoint["dense_motion_network"]["maps.weight"],
        rtol=0,
        atol=0,
    )
    torch.testing.assert_close(maps[NUM_TPS + 1], fresh_values["dense_motion.maps.weight"][NUM_TPS + 1])
    # it trains: a forward and backward pass of the warm-started CPAB model
    out = model(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64))
    out["prediction"].mean().backward()
    assert model.dense_motion.maps.weight.grad.abs().sum() > 0


def test_warm_start_from_a_cpabanim_checkpoint_with_other_keypoints_reports_fresh(tpsmm_file, tmp_path):
    src, _ = tpsmm_file
    convert_tpsmm_checkpoint(src, tmp_path / "tps.pt", MODEL_BASE)
    params = {
        **MODEL_BASE,
        "motion": "tps",
        "backbone": "resnet18",
        "num_cpab": NUM_TPS + 1,
        "bg": True,
        "generator": GEN,
        "dense_motion": DENSE,
        "avd": AVD,
    }
    report = warm_start(
        AnimationModel(ModelConfig.from_mapping(params)), torch.load(tmp_path / "tps.pt", weights_only=True)
    )
    assert "kp_detector.backbone.fc.weight" in report["fresh"]  # 15 keypoints vs 10: not sliced outside dense motion
    assert "avd.id_encoder.0.weight" in report["fresh"]
    assert "generator.final.weight" in report["loaded"]


def test_command_line(tpsmm_file, tmp_path, capsys):
    from cpabanim.commands import import_checkpoint

    parser = argparse.ArgumentParser()
    import_checkpoint.add_arguments(parser)
    args = parser.parse_args(
        [
            "--params",
            str(PROJECT_ROOT / "params.yaml"),
            "--preset",
            "vox-256",
            "--format",
            "tpsmm",
            "--input",
            str(tpsmm_file[0]),
            "--output",
            str(tmp_path / "out.pt"),
        ]
    )
    assert import_checkpoint.run(args) == 0
    assert "wrote" in capsys.readouterr().out
    model, _ = load_checkpoint(tmp_path / "out.pt")
    assert model.params["motion"] == "tps" and model.params["integrator"] == "faithful"  # the rest from the preset
    assert import_checkpoint.run(args) == 0  # what an import wrote, the next one replaces


def test_an_output_that_is_not_a_cpabanim_checkpoint_is_never_replaced(tpsmm_file, tmp_path):
    """``--output`` naming the TPSMM input itself (or any file cpabanim did not write): one line, file unchanged."""
    from cpabanim.commands import import_checkpoint

    parser = argparse.ArgumentParser()
    import_checkpoint.add_arguments(parser)
    source = tmp_path / "vox.pth.tar"
    source.write_bytes(tpsmm_file[0].read_bytes())
    flags = ["--params", str(PROJECT_ROOT / "params.yaml"), "--preset", "vox-256", "--format", "tpsmm"]
    args = parser.parse_args([*flags, "--input", str(source), "--output", str(source)])
    with pytest.raises(CpabanimError, match="--output .*vox.pth.tar exists and cpabanim did not write it"):
        import_checkpoint.run(args)
    assert source.read_bytes() == tpsmm_file[0].read_bytes()
