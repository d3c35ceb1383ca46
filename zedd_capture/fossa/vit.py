"""DINOv2 ViT encoder with FOSSA's stack attention (module names of the published `pretrained`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import PATCH_SIZE, POS_GRID, FossaConfig
from .stack_attention import StackModule


class PatchEmbed(nn.Module):
    """14x14 stride-14 convolution: (B, 3, H, W) -> (B, H/14 * W/14, C)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, PATCH_SIZE, PATCH_SIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class LayerScale(nn.Module):
    """Per-channel scale ``gamma``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 -> GELU (erf) -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block with layer scale (LayerNorm eps 1e-6)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_ratio * dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


def interpolate_pos_embed(pos_embed: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Resample the (1, 1 + 37*37, C) table to an h x w patch grid, as DINOv2 does.

    Bicubic (A = -0.75, align_corners=False, no antialias) with the explicit scale factor
    ((h + 0.1) / 37, (w + 0.1) / 37); the table is returned unchanged only for a 37x37 grid.
    """
    if h == POS_GRID and w == POS_GRID:
        return pos_embed
    dim = pos_embed.shape[-1]
    cls_pos, grid = pos_embed[:, :1].float(), pos_embed[:, 1:].float()
    grid = grid.reshape(1, POS_GRID, POS_GRID, dim).permute(0, 3, 1, 2)
    scale = ((h + 0.1) / POS_GRID, (w + 0.1) / POS_GRID)
    grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False, antialias=False)
    if grid.shape[-2:] != (h, w):
        raise RuntimeError(f"pos_embed interpolation gave {tuple(grid.shape[-2:])}, expected {(h, w)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, dim)
    return torch.cat([cls_pos, grid], dim=1).to(pos_embed.dtype)


class StackViT(nn.Module):
    """DINOv2 ViT over a focus stack.

    Blocks 0..4 run per slice; stack attention follows blocks 0..3; after block 4 the slices
    are averaged and blocks 5..11 run on the fused stream. Returns the normalised patch
    tokens of the feature blocks (cls dropped), each (B, h*w, C); a feature taken before the
    collapse is the slice mean, normalised after averaging.
    """

    def __init__(self, cfg: FossaConfig) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.cfg = cfg
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + POS_GRID * POS_GRID, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # unused at inference, kept for loading
        self.blocks = nn.ModuleList([Block(dim, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.motion_modules = nn.ModuleList([StackModule(dim, cfg.stack_heads) for _ in range(cfg.stack_layers)])

    def tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """(M, 3, H, W) with H, W multiples of 14 -> (M, 1 + h*w, C) with position embedding."""
        _, _, height, width = frames.shape
        x = self.patch_embed(frames)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + interpolate_pos_embed(self.pos_embed, height // PATCH_SIZE, width // PATCH_SIZE)

    def forward(self, stack: torch.Tensor, fd: torch.Tensor) -> list[torch.Tensor]:
        """stack: (B, N, 3, H, W) network-resolution frames; fd: (B, N) canonical focus distances."""
        b, n = stack.shape[:2]
        x = self.tokens(stack.flatten(0, 1))  # (B*N, 1+P, C)
        feats: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i < len(self.motion_modules):
                patches = x[:, 1:].reshape(b, n, x.shape[1] - 1, x.shape[2])
                patches = self.motion_modules[i](patches, fd).flatten(0, 1)
                x = torch.cat([x[:, :1], patches], dim=1)
            if i == self.cfg.collapse_after:
                x = x.view(b, n, *x.shape[1:]).mean(dim=1)
            if i in self.cfg.feature_blocks:
                fused = x if i >= self.cfg.collapse_after else x.view(b, n, *x.shape[1:]).mean(dim=1)
                feats.append(self.norm(fused)[:, 1:])  # slices averaged before the final norm
        return feats
