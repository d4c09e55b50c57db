"""Convolutional front-ends that subsample features in time before the encoder."""

from __future__ import annotations

import torch
from torch import nn


class Conv2dSubsampling(nn.Module):
    """Two (or three) 3×3 stride-2 Conv2d + ReLU layers, then a linear projection.

    ESPnet-style ``conv2d`` (4×) / ``conv2d6``-like (with ``factor=8``: three convs).

    Args:
        input_dim: feature dimension F of the input ``(B, T, F)``.
        d_model: output dimension D.
        channels: conv channels (default ``d_model``).
        factor: 4 or 8 (time subsampling).
    """

    def __init__(self, *, input_dim: int, d_model: int, channels: int | None = None, factor: int = 4) -> None:
        super().__init__()
        if factor not in (4, 8):
            raise ValueError(f"factor must be 4 or 8, got {factor}")
        if input_dim < 7:
            raise ValueError(f"input_dim must be >= 7, got {input_dim}")
        channels = channels or d_model
        n = 2 if factor == 4 else 3
        layers: list[nn.Module] = []
        in_ch, f = 1, input_dim
        for _ in range(n):
            layers += [nn.Conv2d(in_ch, channels, 3, 2), nn.ReLU()]
            in_ch, f = channels, (f - 1) // 2
        self.conv = nn.Sequential(*layers)
        self.out = nn.Linear(channels * f, d_model)
        self.num_convs = n
        self.factor = factor

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for _ in range(self.num_convs):
            lengths = torch.div(lengths - 1, 2, rounding_mode="floor")
        return lengths

    def min_input_length(self) -> int:
        """The shortest input (in frames) that yields at least one output frame."""
        t = 1
        for _ in range(self.num_convs):
            t = 2 * t + 1
        return t

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (B, T, F), ``lengths`` (B,) -> ``(B, T', D)``, ``(B,)``."""
        if x.size(1) < self.min_input_length():
            raise ValueError(
                f"input has {x.size(1)} frames; the {self.factor}x subsampling needs at least {self.min_input_length()}"
            )
        x = self.conv(x.unsqueeze(1))  # (B, C, T', F')
        b, c, t, f = x.shape
        x = self.out(x.transpose(1, 2).reshape(b, t, c * f))
        return x, self.output_lengths(lengths).clamp(min=0)
