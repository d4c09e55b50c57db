"""x-vector speaker encoder (Snyder et al., 2018), with an ECAPA-style attentive-statistics option.

Frame level: TDNN layers (dilated 1-D convolutions + ReLU + BatchNorm) over fbank frames; pooling:
masked mean and standard deviation over the valid frames (``stats``) or channel-wise attentive
statistics (``attentive``, as ECAPA-TDNN); segment level: the **embedding** affine layer (the
x-vector, taken before its nonlinearity as in Kaldi), ReLU + BatchNorm, one more hidden layer and a
speaker classifier trained with softmax cross-entropy or additive-angular-margin softmax (AAM,
``margin > 0``, as ECAPA). Trained by ``stk train`` like the ``classifier`` model::

    model: {name: xvector, conf: {label: spk, channels: 256, embed_dim: 128}}
    data:
      label_vocab: {spk: [spk1, spk2, ...]}
      train: {spk: {data_dir: dump/train, targets: {}, labels: {spk: utt2spk}}}

``stk speaker embed DATA_DIR --model PKG`` writes ``xvector.{ark,scp}`` from :meth:`embed`;
``stk decode --method classify`` gives the closed-set speaker ID.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from stk.models import MODELS, StkModel
from stk.modules.conformer import lengths_to_mask


class _TDNN(nn.Module):
    """Conv1d (same length) + ReLU + BatchNorm: (B, C_in, T) -> (B, C_out, T)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2)
        self.bn = nn.BatchNorm1d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


def masked_stats(x: torch.Tensor, mask: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean and standard deviation over time: x (B, C, T), mask (B, T), weights (B, C, T)
    summing to 1 over valid frames (None: uniform) -> (B, 2C)."""
    m = mask[:, None, :].to(x.dtype)
    if w is None:
        w = m / m.sum(-1, keepdim=True).clamp(min=1.0)
    mean = (w * x).sum(-1)
    var = (w * (x - mean[..., None]) ** 2).sum(-1)
    return torch.cat([mean, var.clamp(min=1e-6).sqrt()], dim=-1)


@MODELS.register("xvector")
class XVectorModel(StkModel):
    """TDNN x-vector speaker encoder + speaker classifier.

    Args:
        vocab_size, input_dim: set by the toolkit (``vocab_size`` is unused).
        num_labels: set by the toolkit from ``data.label_vocab`` (number of training speakers).
        label: batch key of the speaker labels (``data.label_vocab`` key), default ``spk``.
        channels: TDNN width of the four frame layers (the paper: 512).
        pool_channels: width of the last frame layer before pooling (the paper: 1500).
        embed_dim: x-vector dimension (the paper: 512).
        pooling: ``stats`` (mean + std) or ``attentive`` (ECAPA's channel-wise attentive statistics).
        margin, scale: AAM-softmax margin (radians; 0: plain softmax cross-entropy) and scale.
        dropout: dropout before the classifier.
    """

    def __init__(
        self, *, vocab_size: int, input_dim: int, num_labels: dict[str, int] | None = None, label: str = "spk",
        channels: int = 256, pool_channels: int = 768, embed_dim: int = 128,
        pooling: Literal["stats", "attentive"] = "stats", margin: float = 0.0, scale: float = 30.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        from stk.config import ConfigError

        if not num_labels or label not in num_labels:
            raise ConfigError(
                f"model.conf.label: the x-vector model predicts {label!r}, but data.label_vocab has "
                f"{sorted(num_labels or {}) or 'no label sets'}; add data.label_vocab.{label}: [the speaker ids]")
        if num_labels[label] < 2:
            raise ConfigError(f"data.label_vocab.{label}: a speaker classifier needs at least 2 speakers")
        for name, v in (("channels", channels), ("pool_channels", pool_channels), ("embed_dim", embed_dim)):
            if v < 1:
                raise ConfigError(f"model.conf.{name} must be >= 1, got {v}")
        if pooling not in ("stats", "attentive"):
            raise ConfigError(f"model.conf.pooling must be stats or attentive, got {pooling!r}")
        if not 0.0 <= margin < math.pi / 2 or scale <= 0:
            raise ConfigError(f"model.conf: need 0 <= margin < pi/2 and scale > 0, got {margin}, {scale}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.conf.dropout must be in [0, 1), got {dropout}")
        self.label, self.num_classes = label, num_labels[label]
        self.margin, self.scale = margin, scale
        self.frames = nn.Sequential(
            _TDNN(input_dim, channels, 5, 1), _TDNN(channels, channels, 3, 2), _TDNN(channels, channels, 3, 3),
            _TDNN(channels, channels, 1, 1), _TDNN(channels, pool_channels, 1, 1))
        self.attention = (nn.Sequential(nn.Conv1d(3 * pool_channels, 128, 1), nn.Tanh(), nn.Conv1d(128, pool_channels, 1))
                          if pooling == "attentive" else None)
        self.embedding = nn.Linear(2 * pool_channels, embed_dim)
        self.segment = nn.Sequential(nn.ReLU(), nn.BatchNorm1d(embed_dim), nn.Linear(embed_dim, embed_dim), nn.ReLU(),
                                     nn.BatchNorm1d(embed_dim), nn.Dropout(dropout))
        self.head = nn.Linear(embed_dim, self.num_classes, bias=margin == 0.0)
        self.embed_dim = embed_dim

    def min_input_length(self) -> int:
        return 1

    def pool(self, h: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """(B, C, T) frame features -> (B, 2C) statistics over the valid frames."""
        mask = lengths_to_mask(lens, h.size(-1))
        if self.attention is None:
            return masked_stats(h, mask)
        g = masked_stats(h, mask)  # global context, as ECAPA
        c = h.size(1)
        ctx = torch.cat([h, g[:, :c, None].expand_as(h), g[:, c:, None].expand_as(h)], dim=1)
        e = self.attention(ctx).masked_fill(~mask[:, None, :], float("-inf"))
        return masked_stats(h, mask, e.softmax(-1))

    def embed(self, feats: torch.Tensor, feats_lens: torch.Tensor) -> torch.Tensor:
        """(B, T, F) features -> (B, embed_dim) x-vectors (the embedding layer's affine output)."""
        m = lengths_to_mask(feats_lens, feats.size(1))[:, None, :].to(feats.dtype)  # (B, 1, T)
        h = feats.transpose(1, 2) * m  # (B, F, T)
        for layer in self.frames:  # padded frames stay 0, as the convolutions' own zero padding
            h = layer(h) * m
        return self.embedding(self.pool(h, feats_lens))

    def logits(self, feats: torch.Tensor, feats_lens: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, F) -> (B, num_speakers) scores; with AAM and ``labels``, the target logit carries the margin."""
        z = self.segment(self.embed(feats, feats_lens))
        if self.margin == 0.0:
            return self.head(z)
        cos = F.linear(F.normalize(z, dim=-1), F.normalize(self.head.weight, dim=-1))  # (B, S)
        if labels is not None:
            theta = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
            target = torch.cos(theta + self.margin)
            cos = torch.where(F.one_hot(labels, self.num_classes).bool(), target, cos)
        return self.scale * cos

    def classify(self, feats: torch.Tensor, feats_lens: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B,) closed-set speaker ids."""
        return self.logits(feats, feats_lens).argmax(-1)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        y = batch.get(self.label)
        if not isinstance(y, torch.Tensor):
            raise ValueError(
                f"batch has no {self.label!r} label ids: give the stream `labels: {{{self.label}: utt2spk}}` "
                f"and data.label_vocab.{self.label}")
        logits = self.logits(batch["feats"], batch["feats_lens"], y)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(-1) == y).float().mean().item()
        return {"loss": loss, "stats": {"loss": loss.item(), "acc": acc}, "weight": float(y.size(0))}
