"""Stack attention (`motion_modules.i.temporal_transformer`): attention across focus slices.

At every spatial position the N slice tokens attend to each other; a focus-distance
embedding is added to the attention input so the layer knows where each slice was focused.
Permuting the slices together with their focus distances permutes nothing in the output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FocusDistanceEncoder(nn.Module):
    """``scale * MLP(fd)``: (..., N, 1) canonical focus distances -> (..., N, C)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.mlp = nn.Sequential(nn.Linear(1, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, fd: torch.Tensor) -> torch.Tensor:
        return self.scale * self.mlp(fd)


class StackSelfAttention(nn.Module):
    """Multi-head self-attention across slices, with the focus-distance embedding added."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])
        self.fd_encoder = FocusDistanceEncoder(dim)

    def forward(self, x: torch.Tensor, fd: torch.Tensor) -> torch.Tensor:
        """x: (B, N, P, C) tokens of N slices at P positions; fd: (B, N) canonical distances."""
        b, n, p, c = x.shape
        x = x + self.fd_encoder(fd[..., None])[:, :, None, :]
        x = x.permute(0, 2, 1, 3).reshape(b * p, n, c)  # attention runs over the slices

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b * p, n, self.heads, c // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.to_q(x)), heads(self.to_k(x)), heads(self.to_v(x)))
        out = self.to_out[0](out.transpose(1, 2).reshape(b * p, n, c))
        return out.view(b, p, n, c).permute(0, 2, 1, 3)


class GEGLU(nn.Module):
    """Linear to 2*hidden, split into value and gate, value * gelu(gate)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward (``net.0.proj``, ``net.2``), hidden width 4C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, 4 * dim), nn.Dropout(0.0), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class StackTransformerBlock(nn.Module):
    """Two pre-norm stack-attention sub-layers, then a pre-norm GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList([StackSelfAttention(dim, heads) for _ in range(2)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(2)])
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, fd: torch.Tensor) -> torch.Tensor:
        for attn, norm in zip(self.attention_blocks, self.norms):
            x = attn(norm(x), fd) + x
        return self.ff(self.ff_norm(x)) + x


class StackTransformer(nn.Module):
    """GroupNorm per slice -> proj_in -> one block -> proj_out, plus the input residual."""

    def __init__(self, dim: int, heads: int, groups: int = 32) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, dim, eps=1e-6)
        self.proj_in = nn.Linear(dim, dim)
        self.transformer_blocks = nn.ModuleList([StackTransformerBlock(dim, heads)])
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, fd: torch.Tensor) -> torch.Tensor:
        """x: (B, N, P, C) patch tokens; fd: (B, N). Returns the same shape."""
        b, n, p, c = x.shape
        h = self.norm(x.reshape(b * n, p, c).transpose(1, 2)).transpose(1, 2)
        h = self.proj_in(h).reshape(b, n, p, c)
        for block in self.transformer_blocks:
            h = block(h, fd)
        return self.proj_out(h) + x


class StackModule(nn.Module):
    """One ``motion_modules.i`` entry (a wrapper that only holds ``temporal_transformer``)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.temporal_transformer = StackTransformer(dim, heads)

    def forward(self, x: torch.Tensor, fd: torch.Tensor) -> torch.Tensor:
        return self.temporal_transformer(x, fd)
