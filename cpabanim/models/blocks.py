"""Small building blocks shared by the networks (TPSMM/FOMM-style, re-written).

Coordinates follow ``grid_sample(align_corners=True)``: (x, y) in [-1, 1], x along width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cpabanim.cpab.warp import identity_grid


def make_coordinate_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Regular grid (H, W, 2) of (x, y) in [-1, 1], the identity sampling grid for ``grid_sample``
    (``align_corners=True``): TPSMM's name for :func:`cpabanim.cpab.warp.identity_grid`, the one home."""
    return identity_grid((height, width), dtype=dtype, device=device)


def kp2gaussian(kp: torch.Tensor, size: tuple[int, int], variance: float) -> torch.Tensor:
    """Gaussian heatmaps of keypoints: kp (B, K, 2) -> (B, K, H, W), exp(-|z - p|^2 / (2 var))."""
    grid = make_coordinate_grid(size[0], size[1], kp.device, kp.dtype)  # (H, W, 2)
    diff = grid[None, None] - kp[:, :, None, None, :]
    return torch.exp(-0.5 * (diff**2).sum(-1) / variance)


class AntiAliasInterpolation2d(nn.Module):
    """Gaussian blur (sigma = (1/s - 1)/2) then nearest down-sampling by ``scale``: alias-free pyramids."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.scale = scale
        self.channels = channels
        if scale == 1:
            self.register_buffer("weight", torch.ones(1), persistent=False)
            self.ka = self.kb = 0
            return
        sigma = (1 / scale - 1) / 2
        kernel_size = 2 * round(sigma * 4) + 1
        self.ka = kernel_size // 2
        self.kb = self.ka - 1 if kernel_size % 2 == 0 else self.ka
        coords = torch.arange(kernel_size, dtype=torch.float32) - (kernel_size - 1) / 2
        g1 = torch.exp(-(coords**2) / (2 * sigma**2))
        kernel = g1[:, None] * g1[None, :]
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel[None, None].repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, round(H s), round(W s))."""
        if self.scale == 1:
            return x
        out = F.pad(x, (self.ka, self.kb, self.ka, self.kb))
        out = F.conv2d(out, self.weight.to(out.dtype), groups=self.channels)
        size = (int(round(x.shape[2] * self.scale)), int(round(x.shape[3] * self.scale)))
        return F.interpolate(out, size=size, mode="nearest")


class ResBlock2d(nn.Module):
    """Pre-activation residual block: IN -> ReLU -> conv3 -> IN -> ReLU -> conv3, plus the input."""

    def __init__(self, features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size, padding=padding)
        self.conv2 = nn.Conv2d(features, features, kernel_size, padding=padding)
        self.norm1 = nn.InstanceNorm2d(features, affine=True)
        self.norm2 = nn.InstanceNorm2d(features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class UpBlock2d(nn.Module):
    """Nearest x2 up-sampling -> conv -> IN -> ReLU."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding)
        self.norm = nn.InstanceNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(x, scale_factor=2, mode="nearest")
        return F.relu(self.norm(self.conv(out)))


class DownBlock2d(nn.Module):
    """conv -> IN -> ReLU -> AvgPool 2."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding)
        self.norm = nn.InstanceNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), 2)


class SameBlock2d(nn.Module):
    """conv -> IN -> ReLU at constant resolution."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding)
        self.norm = nn.InstanceNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class Hourglass(nn.Module):
    """U-Net of ``num_blocks`` Down/Up blocks; ``forward`` returns every decoder level (coarse to fine).

    The finest level has ``block_expansion + in_features`` channels (last up-block output + the input).
    """

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256):
        super().__init__()
        self.down = nn.ModuleList()
        for i in range(num_blocks):
            cin = in_features if i == 0 else min(max_features, block_expansion * 2**i)
            cout = min(max_features, block_expansion * 2 ** (i + 1))
            self.down.append(DownBlock2d(cin, cout))
        self.up = nn.ModuleList()
        self.out_channels: list[int] = []
        for i in reversed(range(num_blocks)):
            cin = (1 if i == num_blocks - 1 else 2) * min(max_features, block_expansion * 2 ** (i + 1))
            cout = min(max_features, block_expansion * 2**i)
            self.up.append(UpBlock2d(cin, cout))
            skip = in_features if i == 0 else min(max_features, block_expansion * 2**i)
            self.out_channels.append(cout + skip)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, H, W) -> [level_1 at H/2^(n-1), ..., level_n at H] (each = up-block output ++ skip)."""
        skips = [x]
        for block in self.down:
            skips.append(block(skips[-1]))
        out = skips.pop()
        levels = []
        for block in self.up:
            out = torch.cat([block(out), skips.pop()], dim=1)
            levels.append(out)
        return levels


def resnet18(in_channels: int, num_outputs: int) -> nn.Module:
    """torchvision ResNet-18 (random init, as the paper) with ``in_channels`` inputs and a new fc."""
    from torchvision import models

    net = models.resnet18(weights=None)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.fc = nn.Linear(net.fc.in_features, num_outputs)
    return net


def small_encoder(in_channels: int, num_outputs: int, width: int = 16) -> nn.Module:
    """CPU-friendly stand-in for ResNet-18 (``backbone: small``): 4 stride-2 conv/BN/ReLU stages
    (width, 2w, 4w, 8w channels), global average pooling and an ``fc`` (same attribute name as ResNet's)."""
    layers: list[nn.Module] = []
    channels = in_channels
    for i in range(4):
        out = width * 2**i
        layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(True)]
        channels = out
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return _WithFc(net, nn.Linear(channels, num_outputs))


class _WithFc(nn.Module):
    def __init__(self, features: nn.Module, fc: nn.Linear):
        super().__init__()
        self.features = features
        self.fc = fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def backbone(kind: str, in_channels: int, num_outputs: int) -> nn.Module:
    """``resnet18`` (the paper, random init) or ``small`` (embedded CPU default)."""
    if kind == "resnet18":
        return resnet18(in_channels, num_outputs)
    if kind == "small":
        return small_encoder(in_channels, num_outputs)
    raise ValueError(f"model.backbone must be 'resnet18' or 'small', got {kind!r}")


def convex_hull_area(points: torch.Tensor) -> torch.Tensor:
    """Area of the convex hull of (K, 2) points (scipy Qhull; used only for relative animation's scale)."""
    from scipy.spatial import ConvexHull

    pts = points.detach().double().cpu().numpy()
    try:
        return torch.tensor(ConvexHull(pts).volume, dtype=points.dtype)
    except Exception:  # degenerate (collinear) keypoints: no area, caller falls back to scale 1
        return torch.tensor(math.nan, dtype=points.dtype)
