"""Keypoint semantic loss L_KS from region masks (the paper's SAM-guided loss, docs/model.md, re-read).

The paper's module was never released. What is known: a frozen SAM-based extractor sees source, driving and
both keypoint sets, and the loss makes "corresponding keypoints on the source and driving images semantically
consistent". Our pipeline runs SAM (or offline superpixels) once, in the masks stage, and stores per-frame
region label maps; this loss consumes them instead of running SAM inside the training step.

Reading, and why:
* A keypoint's semantic descriptor is the (soft) region membership at its location: the label map is turned
  into one-hot channels, blurred by a small Gaussian (so membership varies smoothly across region borders and
  the loss is differentiable w.r.t. the keypoint coordinates), and bilinearly sampled at the keypoint
  (grid_sample, [-1, 1] coordinates as the detector's).
* Region ids are per-frame (SAM's automatic masks are not tracked over time), so descriptors of source and
  driving are not directly comparable. What is comparable is their *relational* structure: keypoints i and j
  lie in the same region of the source iff they should lie in the same region of the driving frame. With
  a_ij = <m_S(p_S^i), m_S(p_S^j)> and b_ij = <m_D(p_D^i), m_D(p_D^j)> (soft co-membership in [0, 1]),
  L_KS = mean_ij |a_ij - b_ij|. It is zero for identical frames and keypoints, invariant to relabelling, and
  pushes same-index keypoints onto the same semantic part in both frames, the paper's stated purpose.
* Label 0 ("no region") carries no membership, so keypoints on unlabelled pixels are simply unconstrained.
Gradients flow into both keypoint sets (the masks are constant), as in the paper's proposal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def region_membership(labels: torch.Tensor, num_regions: int, blur_sigma: float) -> torch.Tensor:
    """labels (B, H, W) int64 in 0..R -> soft one-hot membership (B, R, H, W), channel r-1 for label r (0 dropped)."""
    onehot = F.one_hot(labels, num_regions + 1)[..., 1:].permute(0, 3, 1, 2).float()
    if blur_sigma > 0:
        radius = max(1, int(round(3 * blur_sigma)))
        coords = torch.arange(-radius, radius + 1, dtype=torch.float32, device=labels.device)
        kernel = torch.exp(-(coords**2) / (2 * blur_sigma**2))
        kernel = kernel / kernel.sum()
        r = onehot.shape[1]
        onehot = F.conv2d(
            F.pad(onehot, (radius, radius, 0, 0), mode="replicate"),
            kernel.view(1, 1, 1, -1).expand(r, 1, 1, -1),
            groups=r,
        )
        onehot = F.conv2d(
            F.pad(onehot, (0, 0, radius, radius), mode="replicate"),
            kernel.view(1, 1, -1, 1).expand(r, 1, -1, 1),
            groups=r,
        )
    return onehot


def sample_at_keypoints(maps: torch.Tensor, kp: torch.Tensor) -> torch.Tensor:
    """maps (B, R, H, W), kp (B, K, 2) in [-1, 1] -> (B, K, R), bilinear (differentiable in kp)."""
    out = F.grid_sample(maps, kp[:, :, None, :].to(maps.dtype), align_corners=True, padding_mode="border")
    return out[..., 0].transpose(1, 2)


def co_membership(descriptors: torch.Tensor) -> torch.Tensor:
    """(B, K, R) -> (B, K, K) soft probability that keypoints i and j share a region."""
    return descriptors @ descriptors.transpose(1, 2)


class KeypointSemanticLoss(nn.Module):
    """(kp_source, kp_driving (B, K, 2), source_mask, driving_mask (B, H, W) int64) -> scalar L_KS."""

    def __init__(self, blur_sigma: float = 2.0):
        super().__init__()
        self.blur_sigma = blur_sigma

    def forward(
        self, kp_source: torch.Tensor, kp_driving: torch.Tensor, source_mask: torch.Tensor, driving_mask: torch.Tensor
    ) -> torch.Tensor:
        # Compact the label ids present in this batch (uint8 maps may use any of 1..255): 0 stays "no region".
        both = torch.stack([source_mask, driving_mask]).long()
        present, compact = torch.unique(both, return_inverse=True)
        if present[0] != 0:
            compact = compact + 1
        regions = max(int(compact.max()), 1)
        source_mask, driving_mask = compact[0], compact[1]
        desc_s = sample_at_keypoints(region_membership(source_mask, regions, self.blur_sigma), kp_source)
        desc_d = sample_at_keypoints(region_membership(driving_mask, regions, self.blur_sigma), kp_driving)
        return (co_membership(desc_s) - co_membership(desc_d)).abs().mean()
