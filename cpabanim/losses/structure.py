"""Structure alignment loss L_struc (docs/model.md; Splice's self-similarity of keys).

A frozen DINO ViT-B/8 sees the generated and the driving frame, each resized to 224 (shorter side, max 480)
and ImageNet-normalised; the keys of the last block's attention (CLS token included, heads concatenated) give a
T x T cosine self-similarity matrix; the loss is the MSE between the two matrices, SUMMED over the batch as the
released code does (weight 0.1 in the total). The ViT is defined here with DINO's parameter names, so the
official ``dino_vitbase8_pretrain.pth`` state dict loads without torch.hub code or internet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cpabanim.weights import imagenet_normalize


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, return_keys: bool = False):
        b, t, c = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, T, c/heads)
        if return_keys:
            return k
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, t, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, dim * 4)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoViT(nn.Module):
    """DINO's VisionTransformer (parameter names as facebookresearch/dino), enough to extract last-layer keys."""

    def __init__(self, patch: int = 8, dim: int = 768, depth: int = 12, heads: int = 12, image_size: int = 224):
        super().__init__()
        self.patch = patch
        self.patch_embed = _PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (image_size // patch) ** 2, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def _pos(self, h: int, w: int) -> torch.Tensor:
        n = self.pos_embed.shape[1] - 1
        if h * w == n:
            return self.pos_embed
        side = int(n**0.5)
        grid = self.pos_embed[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
        return torch.cat([self.pos_embed[:, :1], grid], dim=1)

    def last_keys(self, image: torch.Tensor) -> torch.Tensor:
        """Normalised image (B, 3, H, W) -> keys of the last block (B, T, dim), T = 1 + (H/p)(W/p)."""
        b, _, h, w = image.shape
        x = self.patch_embed(image)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1) + self._pos(h // self.patch, w // self.patch)
        for block in self.blocks[:-1]:
            x = block(x)
        keys = self.blocks[-1].attn(self.blocks[-1].norm1(x), return_keys=True)  # (B, heads, T, c/heads)
        return keys.transpose(1, 2).reshape(b, keys.shape[2], -1)


def key_self_similarity(keys: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> cosine self-similarity (B, T, T)."""
    normed = F.normalize(keys, dim=-1)
    return normed @ normed.transpose(1, 2)


class StructureLoss(nn.Module):
    """prediction, driving (B, 3, H, W) in [0, 1] -> sum_b MSE(S(pred_b), S(driving_b)) (unweighted)."""

    def __init__(self, weights_path=None, vit: DinoViT | None = None, size: int = 224):
        super().__init__()
        self.vit = vit if vit is not None else DinoViT()
        if weights_path is not None:
            from cpabanim.weights import load_weights

            state = load_weights("dino_vitb8", weights_path)  # hash checked, weights_only, one-line errors
            state = {k: v for k, v in state.items() if not k.startswith("head")}
            self.vit.load_state_dict(state)
        self.vit.requires_grad_(False).eval()
        self.size = size

    def train(self, mode: bool = True):  # frozen: always eval
        return super().train(False)

    def _prepare(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[2:]
        scale = self.size / min(h, w)
        if max(h, w) * scale > 480:  # torchvision Resize(224, max_size=480)
            scale = 480 / max(h, w)
        size = (int(round(h * scale)), int(round(w * scale)))
        image = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
        return imagenet_normalize(image)

    def forward(self, prediction: torch.Tensor, driving: torch.Tensor) -> torch.Tensor:
        sim_pred = key_self_similarity(self.vit.last_keys(self._prepare(prediction)))
        with torch.no_grad():
            sim_real = key_self_similarity(self.vit.last_keys(self._prepare(driving)))
        return ((sim_pred - sim_real) ** 2).mean(dim=(1, 2)).sum()
