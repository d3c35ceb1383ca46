"""DPT head in the Depth Anything v2 layout (``depth_head.*`` of the published checkpoints)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import PATCH_SIZE


class ResidualConvUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x))))."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """Add the skip (through resConfUnit1), refine, upsample (bilinear, corners aligned), 1x1 conv."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None,
                size: tuple[int, int] | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            size = (2 * x.shape[-2], 2 * x.shape[-1])
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class Scratch(nn.Module):
    """Container with the published names: layer{1..4}_rn, refinenet{1..4}, output_conv{1,2}."""

    def __init__(self, in_channels: tuple[int, ...], features: int) -> None:
        super().__init__()
        self.layer1_rn = nn.Conv2d(in_channels[0], features, 3, padding=1, bias=False)
        self.layer2_rn = nn.Conv2d(in_channels[1], features, 3, padding=1, bias=False)
        self.layer3_rn = nn.Conv2d(in_channels[2], features, 3, padding=1, bias=False)
        self.layer4_rn = nn.Conv2d(in_channels[3], features, 3, padding=1, bias=False)
        self.refinenet1 = FusionBlock(features)
        self.refinenet2 = FusionBlock(features)
        self.refinenet3 = FusionBlock(features)
        self.refinenet4 = FusionBlock(features)
        self.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 1, 1), nn.Softplus())


class DPTHead(nn.Module):
    """Four token maps (B, h*w, C) -> one positive map (B, 1, 14h, 14w)."""

    def __init__(self, in_dim: int, features: int, out_channels: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.projects = nn.ModuleList([nn.Conv2d(in_dim, oc, 1) for oc in out_channels])
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(out_channels[0], out_channels[0], 4, stride=4),
            nn.ConvTranspose2d(out_channels[1], out_channels[1], 2, stride=2),
            nn.Identity(),
            nn.Conv2d(out_channels[3], out_channels[3], 3, stride=2, padding=1),
        ])
        self.scratch = Scratch(out_channels, features)

    def forward(self, feats: list[torch.Tensor], h: int, w: int) -> torch.Tensor:
        maps = []
        for tokens, project, resize in zip(feats, self.projects, self.resize_layers):
            x = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)
            maps.append(resize(project(x)))
        s = self.scratch
        l1, l2, l3, l4 = s.layer1_rn(maps[0]), s.layer2_rn(maps[1]), s.layer3_rn(maps[2]), s.layer4_rn(maps[3])
        p = s.refinenet4(l4, size=l3.shape[-2:])
        p = s.refinenet3(p, l3, size=l2.shape[-2:])
        p = s.refinenet2(p, l2, size=l1.shape[-2:])
        p = s.refinenet1(p, l1)
        out = s.output_conv1(p)
        out = F.interpolate(out, size=(h * PATCH_SIZE, w * PATCH_SIZE), mode="bilinear", align_corners=True)
        return s.output_conv2(out)
