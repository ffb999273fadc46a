"""Reconstruction losses: the paper's VGG19 perceptual pyramid (docs/model.md) and an offline alternative.

``vgg``: sum over scales [1, .5, .25, .125] and relu1_1..relu5_1 of w_l * mean|VGG_l(pred_s) - VGG_l(driving_s)|
(driving features detached). ``pixel``: same pyramid with sum over scales of w * (mean L1 + (1 - SSIM)) on the
images themselves, for machines without the ImageNet weights (recorded in the run's params as loss.perceptual).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cpabanim.models.blocks import AntiAliasInterpolation2d
from cpabanim.weights import imagenet_normalize

VGG_SLICES = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1


class ImagePyramid(nn.Module):
    """(B, C, H, W) -> {scale: anti-aliased down-sampled image}."""

    def __init__(self, scales: list[float], channels: int = 3):
        super().__init__()
        self.scales = list(scales)
        self.downs = nn.ModuleList(AntiAliasInterpolation2d(channels, s) for s in self.scales)

    def forward(self, image: torch.Tensor) -> dict[float, torch.Tensor]:
        return {s: down(image) for s, down in zip(self.scales, self.downs)}


class VGG19Features(nn.Module):
    """Frozen VGG19 (ImageNet) -> the five relu_x_1 feature maps of an ImageNet-normalised [0, 1] image."""

    def __init__(self, weights_path=None):
        super().__init__()
        from torchvision.models import vgg19

        features = vgg19(weights=None).features
        if weights_path is not None:
            from cpabanim.weights import load_weights

            state = load_weights("vgg19", weights_path)  # hash checked, weights_only, one-line errors
            prefixed = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
            features.load_state_dict(prefixed)
        self.slices = nn.ModuleList(nn.Sequential(*[features[i] for i in range(a, b)]) for a, b in VGG_SLICES)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # frozen: always eval
        return super().train(False)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        out = imagenet_normalize(image)
        feats = []
        for block in self.slices:
            out = block(out)
            feats.append(out)
        return feats


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Mean SSIM of (B, C, H, W) images in [0, 1] with a uniform window (reflect-padded), a scalar."""
    c1, c2 = 0.01**2, 0.03**2
    pad = window // 2
    x = F.pad(x, (pad,) * 4, mode="reflect") if min(x.shape[2:]) > pad else x
    y = F.pad(y, (pad,) * 4, mode="reflect") if min(y.shape[2:]) > pad else y
    mu_x, mu_y = F.avg_pool2d(x, window, 1), F.avg_pool2d(y, window, 1)
    var_x = F.avg_pool2d(x * x, window, 1) - mu_x**2
    var_y = F.avg_pool2d(y * y, window, 1) - mu_y**2
    cov = F.avg_pool2d(x * y, window, 1) - mu_x * mu_y
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return value.mean()


class PerceptualPyramidLoss(nn.Module):
    """prediction, driving (B, 3, H, W) in [0, 1] -> scalar. ``kind``: ``vgg`` (paper) or ``pixel`` (offline)."""

    def __init__(self, kind: str, scales: list[float], weights: list[float], weights_dir=None):
        super().__init__()
        self.kind = kind
        self.pyramid = ImagePyramid(scales)
        self.layer_weights = list(weights)
        if kind == "vgg":
            from cpabanim.weights import find_weights

            path = find_weights("vgg19", weights_dir, alternative="--set loss.perceptual=pixel")
            self.vgg = VGG19Features(path)
        elif kind != "pixel":
            raise ValueError(f"loss.perceptual must be 'vgg' or 'pixel', got {kind!r}")

    def forward(self, prediction: torch.Tensor, driving: torch.Tensor) -> torch.Tensor:
        pred_pyr, real_pyr = self.pyramid(prediction), self.pyramid(driving)
        total = prediction.new_zeros(())
        for scale in self.pyramid.scales:
            if self.kind == "vgg":
                pred_feats = self.vgg(pred_pyr[scale])
                with torch.no_grad():
                    real_feats = self.vgg(real_pyr[scale])
                for w, a, b in zip(self.layer_weights, pred_feats, real_feats):
                    total = total + w * (a - b.detach()).abs().mean()
            else:
                a, b = pred_pyr[scale], real_pyr[scale].detach()
                w = self.layer_weights[0]
                total = total + w * ((a - b).abs().mean() + (1 - ssim(a.float(), b.float())))
        return total
