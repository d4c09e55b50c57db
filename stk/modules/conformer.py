"""Conformer encoder (Gulati et al., 2020) with relative-position self-attention.

Each block: ½·FFN (macaron) → rel-pos MHSA → convolution module → ½·FFN → LayerNorm, all
pre-norm residual. The attention uses Transformer-XL style relative positions (learned biases
``u``/``v`` and a sinusoidal relative embedding, as ESPnet's ``rel_selfattn``); the content and
position terms are fused into one ``scaled_dot_product_attention`` call with the position term as
an additive bias.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stk.modules.subsampling import Conv2dSubsampling


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool mask, True at valid positions."""
    max_len = int(max_len if max_len is not None else lengths.max().item() if lengths.numel() else 0)
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class RelPositionalEncoding(nn.Module):
    """Sinusoidal embeddings for relative distances ``T-1 … -(T-1)`` -> ``(1, 2T-1, D)``."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model

    def forward(self, t: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        pos = torch.arange(t - 1, -t, -1, device=device, dtype=torch.float32)  # (2T-1,)
        div = torch.exp(torch.arange(0, self.d_model, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / self.d_model))
        pe = torch.zeros(2 * t - 1, self.d_model, device=device)
        pe[:, 0::2] = torch.sin(pos[:, None] * div)
        pe[:, 1::2] = torch.cos(pos[:, None] * div)
        return pe.unsqueeze(0).to(dtype)


class RelPositionMultiHeadAttention(nn.Module):
    """Multi-head self-attention with relative positions (Transformer-XL / ESPnet ``rel_selfattn``)."""

    def __init__(self, *, d_model: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        self.h, self.dk = num_heads, d_model // num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.pos = nn.Linear(d_model, d_model, bias=False)
        self.out = nn.Linear(d_model, d_model)
        self.pos_bias_u = nn.Parameter(torch.zeros(num_heads, self.dk))
        self.pos_bias_v = nn.Parameter(torch.zeros(num_heads, self.dk))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)
        self.dropout = dropout

    @staticmethod
    def rel_shift(x: torch.Tensor) -> torch.Tensor:
        """(B, H, T, 2T-1) scores over distances ``T-1…-(T-1)`` -> (B, H, T, T) indexed by key."""
        b, h, t, n = x.shape
        x = F.pad(x, (1, 0)).view(b, h, n + 1, t)[:, :, 1:].view(b, h, t, n)
        return x[..., :t]

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``x`` (B, T, D), ``pos_emb`` (1, 2T-1, D), ``mask`` (B, T) True=valid -> (B, T, D)."""
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.h, self.dk).unbind(2)  # (B, T, H, dk) each
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        p = self.pos(pos_emb).view(1, -1, self.h, self.dk).transpose(1, 2)  # (1, H, 2T-1, dk)
        q_v = (q + self.pos_bias_v).transpose(1, 2)  # (B, H, T, dk)
        bias = self.rel_shift(torch.matmul(q_v, p.transpose(-2, -1))) / math.sqrt(self.dk)  # (B, H, T, T)
        if mask is not None:
            bias = bias.masked_fill(~mask[:, None, None, :], float("-inf"))
        q_u = (q + self.pos_bias_u).transpose(1, 2)
        y = F.scaled_dot_product_attention(q_u, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, t, self.h * self.dk))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model), nn.Linear(d_model, ffn_dim), nn.SiLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvModule(nn.Module):
    """Pointwise conv + GLU → depthwise conv → BatchNorm → SiLU → pointwise conv (padding-safe)."""

    def __init__(self, d_model: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.norm = nn.LayerNorm(d_model)
        self.pw1 = nn.Conv1d(d_model, 2 * d_model, 1)
        self.dw = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        self.bn = nn.BatchNorm1d(d_model)
        self.pw2 = nn.Conv1d(d_model, d_model, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        y = self.norm(x).transpose(1, 2)  # (B, D, T)
        y = F.glu(self.pw1(y), dim=1)
        if mask is not None:
            y = y.masked_fill(~mask[:, None, :], 0.0)
        y = self.pw2(F.silu(self.bn(self.dw(y))))
        return self.drop(y.transpose(1, 2))


class ConformerBlock(nn.Module):
    def __init__(self, *, d_model: int, num_heads: int, ffn_dim: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.ff1 = FeedForward(d_model, ffn_dim, dropout)
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = RelPositionMultiHeadAttention(d_model=d_model, num_heads=num_heads, dropout=dropout)
        self.conv = ConvModule(d_model, kernel_size, dropout)
        self.ff2 = FeedForward(d_model, ffn_dim, dropout)
        self.final_norm = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + 0.5 * self.drop(self.ff1(x))
        x = x + self.drop(self.attn(self.attn_norm(x), pos_emb, mask))
        x = x + self.conv(x, mask)
        x = x + 0.5 * self.drop(self.ff2(x))
        return self.final_norm(x)


class ConformerLayers(nn.Module):
    """A stack of Conformer blocks on already-embedded input ``(B, T, D)``.

    Used by :class:`ConformerEncoder` and, on its own, by joint speech–text models that feed
    text embeddings through the same layers.
    """

    def __init__(
        self, *, d_model: int = 256, num_heads: int = 4, ffn_dim: int = 1024, num_layers: int = 6,
        kernel_size: int = 31, dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.pos = RelPositionalEncoding(d_model)
        self.layers = nn.ModuleList(
            ConformerBlock(d_model=d_model, num_heads=num_heads, ffn_dim=ffn_dim, kernel_size=kernel_size, dropout=dropout)
            for _ in range(num_layers)
        )
        self.d_model = d_model

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, return_hidden: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """``x`` (B, T, D), ``lengths`` (B,) -> (B, T, D) (and every layer's output if asked)."""
        mask = lengths_to_mask(lengths, x.size(1))
        pos_emb = self.pos(x.size(1), x.device, x.dtype)
        hidden = []
        for layer in self.layers:
            x = layer(x, pos_emb, mask)
            hidden.append(x)
        return (x, hidden) if return_hidden else x


class ConformerEncoder(nn.Module):
    """Speech encoder: Conv2d subsampling + Conformer blocks.

    Args:
        input_dim: feature dimension F (e.g. 80 fbank bins).
        d_model, num_heads, ffn_dim, num_layers, kernel_size, dropout: Conformer sizes.
        subsampling_factor: 4 or 8.
        subsampling_channels: conv channels of the front-end (default ``d_model``).

    Shapes: ``forward(x (B, T, F), lengths (B,)) -> (B, T', D), (B,)`` with ``T' ≈ T / factor``.
    """

    def __init__(
        self, *, input_dim: int = 80, d_model: int = 256, num_heads: int = 4, ffn_dim: int = 1024,
        num_layers: int = 6, kernel_size: int = 31, dropout: float = 0.1, subsampling_factor: int = 4,
        subsampling_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.subsampling = Conv2dSubsampling(
            input_dim=input_dim, d_model=d_model, channels=subsampling_channels, factor=subsampling_factor
        )
        self.input_dropout = nn.Dropout(dropout)
        self.layers = ConformerLayers(
            d_model=d_model, num_heads=num_heads, ffn_dim=ffn_dim, num_layers=num_layers,
            kernel_size=kernel_size, dropout=dropout,
        )
        self.output_dim = d_model

    def min_input_length(self) -> int:
        return self.subsampling.min_input_length()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, lengths = self.subsampling(x, lengths)
        x = self.layers(self.input_dropout(x), lengths)
        return x, lengths
