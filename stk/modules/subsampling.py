"""Convolutional front-ends that subsample features in time before the encoder.

On CPU the 3×3 stride-2 convolutions run channels-last as one matrix product each (im2col): the
input windows are copied into a ``(B·T'·F', 9·C)`` matrix once, the forward product and the
weight gradient are single large GEMMs on it, and the input gradient is oneDNN's backward-data
convolution on the channels-last view. On a 2-core AVX2 CPU the front-end's forward + backward
takes ~0.74× the time of ``nn.Conv2d`` in NCHW (whose kernels reach ~40–65 % of the matmul peak
there), and the channels-last output feeds the output projection without a transpose. Elsewhere (CUDA) the plain
``F.conv2d`` path is used. Both compute the same function with the same parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _windows(h: torch.Tensor, ones_column: bool = False) -> torch.Tensor:
    """Channels-last ``(B, T, F, C)`` -> the 3×3 stride-2 windows ``(B·T'·F', 9·C)`` (a copy).

    Column order is ``(kh, kw, c)``, matching ``weight.permute(0, 2, 3, 1)``. With ``ones_column``
    a last column of ones is appended (so a bias can ride along in the product).
    """
    b, t, f, c = h.shape
    t2, f2 = (t - 1) // 2, (f - 1) // 2
    s = h.stride()
    view = h.as_strided((b, t2, f2, 3, 3, c), (s[0], 2 * s[1], 2 * s[2], s[1], s[2], s[3]))
    if not ones_column:
        return view.reshape(b * t2 * f2, 9 * c)
    cols = h.new_empty(b * t2 * f2, 9 * c + 1)
    cols[:, : 9 * c].view(b, t2, f2, 3, 3, c).copy_(view)
    cols[:, 9 * c] = 1.0
    return cols


class _Conv3x3s2ReLU(torch.autograd.Function):
    """``relu(conv2d(h, weight, bias, stride=2))`` on channels-last ``h`` ``(B, T, F, C)`` -> ``(B, T', F', C')``.

    For few input channels (the first conv: 9 columns) the product is memory-bound, so the bias
    rides in it as a ones column: no separate pass to broadcast it into the output, and its
    gradient comes out of the weight-gradient product.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b, t, f, c = h.shape
        t2, f2 = (t - 1) // 2, (f - 1) // 2
        w2d = weight.permute(0, 2, 3, 1).reshape(weight.size(0), -1)  # (C', 9·C)
        ctx.fold_bias = 9 * c < 64
        cols = _windows(h, ones_column=ctx.fold_bias)
        if ctx.fold_bias:
            y = torch.mm(cols, torch.cat([w2d, bias[:, None]], 1).t()).relu_()
        else:
            y = torch.addmm(bias, cols, w2d.t()).relu_()
        ctx.save_for_backward(h, cols, weight, y)
        return y.view(b, t2, f2, -1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:  # type: ignore[override]
        h, cols, weight, y = ctx.saved_tensors
        g = torch.ops.aten.threshold_backward(grad.reshape(y.shape), y, 0)  # zero where the ReLU was off
        grad_h = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            b, t, f, _ = h.shape
            out_nchw = g.view(b, (t - 1) // 2, (f - 1) // 2, -1).permute(0, 3, 1, 2)  # channels-last views
            grad_h = torch.ops.aten.convolution_backward(
                out_nchw, h.permute(0, 3, 1, 2), weight.contiguous(memory_format=torch.channels_last), None,
                [2, 2], [0, 0], [1, 1], False, [0, 0], 1, [True, False, False],
            )[0].permute(0, 2, 3, 1)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            # (9·C[+1], C') then transposed: MKL is far faster with the long K axis leading here
            # (for the 1-channel first conv, g.t() @ cols is ~8× slower).
            gwb = (cols.t() @ g).t()
            k = 9 * h.size(-1)
            grad_w = gwb[:, :k].reshape(weight.size(0), 3, 3, -1).permute(0, 3, 1, 2)
            grad_b = gwb[:, k] if ctx.fold_bias else g.sum(0)
        return grad_h, grad_w, grad_b


def conv3x3s2_relu(h: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``relu(conv(h))`` for a 3×3 stride-2 ``conv`` applied to channels-last ``h`` ``(B, T, F, C)``."""
    if h.device.type == "cpu":
        return _Conv3x3s2ReLU.apply(h.contiguous(), conv.weight, conv.bias)
    return F.relu(conv(h.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)


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
        self.out = nn.Linear(channels * f, d_model)  # input features ordered (channel, frequency)
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
        h = x.unsqueeze(-1)  # (B, T, F, 1) channels-last
        for conv in self.conv[::2]:
            h = conv3x3s2_relu(h, conv)  # (B, T', F', C)
        b, t, f, c = h.shape
        # The projection's weight is laid out for (channel, frequency) features; read it as (frequency, channel).
        w = self.out.weight.view(-1, c, f).transpose(1, 2).reshape(-1, f * c)
        x = F.linear(h.reshape(b, t, f * c), w, self.out.bias)
        return x, self.output_lengths(lengths).clamp(min=0)
