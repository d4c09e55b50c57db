"""Conformer encoder (Gulati et al., 2020) with relative-position self-attention.

Each block: ½·FFN (macaron) → rel-pos MHSA → convolution module → ½·FFN → LayerNorm, all
pre-norm residual. The attention uses Transformer-XL style relative positions (learned biases
``u``/``v`` and a sinusoidal relative embedding, as ESPnet's ``rel_selfattn``).

Written for speed on small CPUs without changing the model (see ``bench/README.md``):

* the positional term and the key-padding mask become one additive score bias; ``rel_shift`` is a
  strided view (no padded copy); the sinusoid table is built once (for the longest length seen)
  and shared by all layers;
* training-time attention is ``baddbmm`` (content scores accumulated onto the bias) → softmax →
  dropout → ``bmm``; without dropout it is one fused ``scaled_dot_product_attention``;
* the convolution module stays in ``(B, T, D)``: its pointwise convolutions are plain GEMMs and the
  depthwise one runs as a channels-last 2-D convolution (oneDNN's NHWC kernel, ~3× faster than
  the NCW one here), with no transposes in between;
* on CPU, dropout masks come from 16-bit slices of 64-bit random words (4 draws per generator
  call) turned into a 0/1 mask by one comparison — ~6× cheaper than ``F.dropout``'s Bernoulli
  sampling — with the drop probability rounded to a multiple of 2⁻¹⁶ (0.1 → 0.100006) and the
  keep-scale matched to it. The scale is folded into the next op: the residual dropouts are one
  ``addcmul`` (with the ½ macaron factor), the FFN and attention-weight dropouts scale the
  following projection's weight.
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


def dropout_mask(like: torch.Tensor, p: float) -> tuple[torch.Tensor, float]:
    """A 0/1 keep mask shaped and typed like ``like`` and the scale ``1 / (1 - p')`` of the kept values.

    On CPU, each element's draw is a 16-bit slice of a 64-bit random word and the drop probability
    is ``p' = round(p·2¹⁶) / 2¹⁶``; the mask is written by one comparison. Elsewhere it is a
    Bernoulli sample with ``p' = p``. Callers fold the scale into a following op (a weight, an
    ``addcmul`` value) instead of spending a pass over the activations on it.
    """
    if like.device.type != "cpu":
        return torch.empty_like(like).bernoulli_(1.0 - p), 1.0 / (1.0 - p)
    k = round(p * 65536)
    if k >= 65536:  # p = 1: everything dropped
        return torch.zeros_like(like), 0.0
    n = like.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
    draws = words.view(torch.int16)[:n].view(like.shape)  # uniform over [-2¹⁵, 2¹⁵)
    mask = torch.ge(draws, k - 32768, out=torch.empty(like.shape, dtype=like.dtype))
    return mask, 65536 / (65536 - k)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout`` with the cheaper CPU mask of :func:`dropout_mask`."""
    if not training or p == 0.0:
        return x
    mask, keep_scale = dropout_mask(x, p)
    return (x * mask).mul_(keep_scale)


def residual(x: torch.Tensor, y: torch.Tensor, p: float, training: bool, scale: float = 1.0) -> torch.Tensor:
    """``x + scale · dropout(y)`` in one pass (``addcmul``)."""
    if training and p > 0.0:
        mask, keep_scale = dropout_mask(y, p)
        return torch.addcmul(x, y, mask, value=scale * keep_scale)
    return x + y if scale == 1.0 else torch.add(x, y, alpha=scale)


class RelPositionalEncoding(nn.Module):
    """Sinusoidal embeddings for relative distances ``T-1 … -(T-1)`` -> ``(1, 2T-1, D)``.

    The table for the longest length seen so far is kept (not saved in the state dict) and sliced.
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model
        self._table: torch.Tensor | None = None  # (2L-1, D) for distances L-1 … -(L-1)

    def _build(self, t: int, device: torch.device) -> torch.Tensor:
        pos = torch.arange(t - 1, -t, -1, device=device, dtype=torch.float32)  # (2T-1,)
        div = torch.exp(torch.arange(0, self.d_model, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / self.d_model))
        pe = torch.zeros(2 * t - 1, self.d_model, device=device)
        pe[:, 0::2] = torch.sin(pos[:, None] * div)
        pe[:, 1::2] = torch.cos(pos[:, None] * div)
        return pe

    def forward(self, t: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        table = self._table
        if table is None or table.device != device or table.size(0) < 2 * t - 1:
            table = self._table = self._build(max(t, 64), device)
        mid = (table.size(0) - 1) // 2  # row of distance 0
        return table[mid - (t - 1) : mid + t].unsqueeze(0).to(dtype)


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
        """(…, T, 2T-1) scores over distances ``T-1…-(T-1)`` -> (…, T, T) indexed by key (a strided view).

        Entry ``(i, j)`` is ``x[…, i, T-1-i+j]`` (distance ``i - j``).
        """
        if x.stride(-1) != 1:
            x = x.contiguous()
        t = x.size(-2)
        *batch, s_row, _ = x.stride()
        return x.as_strided((*x.shape[:-1], t), (*batch, s_row - 1, 1), x.storage_offset() + t - 1)

    def forward(self, x: torch.Tensor, pos_emb: torch.Tensor, mask_bias: torch.Tensor | None) -> torch.Tensor:
        """``x`` (B, T, D), ``pos_emb`` (1, 2T-1, D), ``mask_bias`` (B, 1, 1, T) 0 / -inf -> (B, T, D)."""
        b, t, _ = x.shape
        h, dk = self.h, self.dk
        scale = 1.0 / math.sqrt(dk)
        q, k, v = self.qkv(x).view(b, t, 3, h, dk).unbind(2)  # (B, T, H, dk) each
        p = (self.pos(pos_emb[0]) * scale).view(-1, h, dk).permute(1, 2, 0)  # (H, dk, 2T-1), pre-scaled
        q_v = (q + self.pos_bias_v).transpose(1, 2)  # (B, H, T, dk)
        bias = self.rel_shift(torch.matmul(q_v, p))  # (B, H, T, T), already / sqrt(dk)
        bias = bias + mask_bias if mask_bias is not None else bias.contiguous()
        q_u = (q + self.pos_bias_u).transpose(1, 2)  # (B, H, T, dk)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        if self.training and self.dropout > 0.0:
            scores = torch.baddbmm(bias.view(b * h, t, t), q_u.reshape(b * h, t, dk),
                                   k.reshape(b * h, t, dk).transpose(1, 2), alpha=scale)
            attn = scores.softmax(-1)
            mask, keep_scale = dropout_mask(attn, self.dropout)
            y = torch.bmm(attn * mask, v.reshape(b * h, t, dk)).view(b, h, t, dk)
            out_weight = self.out.weight * keep_scale  # the dropout scale, folded into the projection
        else:
            y = F.scaled_dot_product_attention(q_u, k, v, attn_mask=bias)
            out_weight = self.out.weight
        return F.linear(y.transpose(1, 2).reshape(b, t, h * dk), out_weight, self.out.bias)


class FeedForward(nn.Module):
    """LayerNorm → Linear → SiLU → dropout → Linear (the caller adds the residual)."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model), nn.Linear(d_model, ffn_dim), nn.SiLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm, lin1, _, drop, lin2 = self.net
        h = F.silu(lin1(norm(x)))
        if not self.training or drop.p == 0.0:
            return lin2(h)
        mask, keep_scale = dropout_mask(h, drop.p)
        return F.linear(h * mask, lin2.weight * keep_scale, lin2.bias)  # dropout scale folded into the weight


class ConvModule(nn.Module):
    """Pointwise conv + GLU → depthwise conv → BatchNorm → SiLU → pointwise conv (padding-safe).

    The caller applies the output dropout (``self.drop.p``) with the residual.
    """

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
        """``x`` (B, T, D), ``mask`` (B, T) True=valid -> (B, T, D) (before dropout)."""
        b, t, d = x.shape
        y = F.glu(F.linear(self.norm(x), self.pw1.weight.squeeze(-1), self.pw1.bias), dim=-1)  # (B, T, D)
        if mask is not None:
            y = y.masked_fill(~mask[:, :, None], 0.0)
        # Depthwise conv as a channels-last 2-D conv (B, D, 1, T): oneDNN's NHWC kernel, no transposes.
        y = F.conv2d(y.transpose(1, 2).unsqueeze(2), self.dw.weight.unsqueeze(2), self.dw.bias,
                     padding=(0, self.dw.padding[0]), groups=self.dw.groups)
        y = F.silu(self.bn(y.permute(0, 2, 3, 1).reshape(b * t, d)))  # BatchNorm over (B·T, D)
        return F.linear(y.view(b, t, d), self.pw2.weight.squeeze(-1), self.pw2.bias)


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

    def forward(
        self, x: torch.Tensor, pos_emb: torch.Tensor, mask: torch.Tensor | None, mask_bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x`` (B, T, D); ``mask`` (B, T) True=valid; ``mask_bias`` (B, 1, 1, T) 0/-inf (derived if not given)."""
        if mask is not None and mask_bias is None:
            mask_bias = _mask_bias(mask, x.dtype)
        p, train = self.drop.p, self.training
        x = residual(x, self.ff1(x), p, train, 0.5)
        x = residual(x, self.attn(self.attn_norm(x), pos_emb, mask_bias), p, train)
        x = residual(x, self.conv(x, mask), self.conv.drop.p, train)
        x = residual(x, self.ff2(x), p, train, 0.5)
        return self.final_norm(x)


def _mask_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) True=valid -> (B, 1, 1, T) additive attention bias: 0 at valid keys, -inf at padding."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))[:, None, None, :]


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
        self.grad_checkpointing = False  # recompute each layer in backward (stk.amp.set_grad_checkpointing)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, return_hidden: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """``x`` (B, T, D), ``lengths`` (B,) -> (B, T, D) (and every layer's output if asked)."""
        mask = lengths_to_mask(lengths, x.size(1))
        mask_bias = _mask_bias(mask, x.dtype)
        pos_emb = self.pos(x.size(1), x.device, x.dtype)
        hidden = []
        ckpt = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            if ckpt:
                from torch.utils.checkpoint import checkpoint

                x = checkpoint(layer, x, pos_emb, mask, mask_bias, use_reentrant=False)
            else:
                x = layer(x, pos_emb, mask, mask_bias)
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
        x = self.layers(dropout(x, self.input_dropout.p, self.training), lengths)
        return x, lengths
