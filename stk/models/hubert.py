"""HuBERT masked-prediction pre-training (Hsu et al., 2021) on fbank features.

A convolutional front end turns fbank frames ``(B, T, F)`` (100 Hz) into ``(B, T/stride, D)``
(50 Hz with ``stride=2``, HuBERT's label rate); spans of those frames are replaced by a learned
mask embedding and a stack of Conformer layers (:class:`~stk.modules.conformer.ConformerLayers`)
reads the result. Each output frame is projected (``final_proj``) and compared, by cosine
similarity divided by a temperature (0.1 in the paper), with one embedding per cluster; the loss
is the cross-entropy of the frame's cluster id (its k-means target, e.g. ``stk units dump``'s
``units`` file):

    L = masked_weight · CE(masked frames) + unmasked_weight · CE(unmasked frames)

(the paper's α·L_m + (1−α)·L_u with α = 1: ``masked_weight=1, unmasked_weight=0``), each term a
mean over its frames. Targets come in the batch as an integer sequence (``int_seqs: {units:
units}`` in a stream), one id per output frame; a length that differs from the model's frame
count by more than ``length_tolerance`` frames is an error naming the utterance (the targets were
made at another frame rate). Iteration 0 targets are k-means clusters of MFCCs, iteration 1
targets k-means clusters of a middle layer of the previous model (``stk units fit --features
hubert:PKG:LAYER``); :meth:`HubertModel.extract` gives a layer's output.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stk.losses.masking import span_mask
from stk.models import ENCODERS, MODELS, StkModel
from stk.modules.conformer import ConformerLayers, _mask_bias, dropout, lengths_to_mask


class HubertFrontend(nn.Module):
    """[Per-utterance mean/variance normalisation,] stack ``stride`` consecutive fbank frames, two
    1-D convolutions (kernel 3) + GELU, LayerNorm.

    ``utterance_cmvn``: normalise each utterance's fbank bins to zero mean and unit variance over
    its own frames first (removes the channel: recorded vs synthetic speech), on top of any global
    CMVN of the data.

    Shapes: ``(B, T, F), (B,) -> (B, T // stride, D), (B,)``.
    """

    def __init__(self, *, input_dim: int, d_model: int, channels: int, stride: int,
                 utterance_cmvn: bool = False) -> None:
        super().__init__()
        self.utterance_cmvn = utterance_cmvn
        if stride not in (1, 2, 4):
            raise ValueError(f"stride must be 1, 2 or 4, got {stride}")
        if input_dim < 1 or channels < 1:
            raise ValueError(f"input_dim and channels must be >= 1, got {input_dim}, {channels}")
        self.stride = stride
        self.conv1 = nn.Conv1d(input_dim * stride, channels, 3, padding=1)
        self.conv2 = nn.Conv1d(channels, d_model, 3, padding=1)
        self.norm = nn.LayerNorm(d_model)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths, self.stride, rounding_mode="floor")

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, f = x.shape
        n = t // self.stride
        if n < 1:
            raise ValueError(f"input has {t} frames; the front end needs at least {self.stride}")
        if self.utterance_cmvn:
            x = utterance_cmvn(x, lengths)
        x = x[:, : n * self.stride].reshape(b, n, f * self.stride).transpose(1, 2)  # (B, F·s, T')
        lens = self.output_lengths(lengths)
        valid = lengths_to_mask(lens, n)[:, None, :].to(x.dtype)
        h = F.gelu(self.conv1(x * valid))
        h = F.gelu(self.conv2(h * valid))
        return self.norm(h.transpose(1, 2)), lens


def utterance_cmvn(x: torch.Tensor, lengths: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Zero mean, unit variance per utterance and bin over its valid frames: ``(B, T, F) -> (B, T, F)``
    (padding stays 0)."""
    valid = lengths_to_mask(lengths.to(x.device), x.size(1))[..., None].to(x.dtype)
    n = valid.sum(1, keepdim=True).clamp(min=1)
    mean = (x * valid).sum(1, keepdim=True) / n
    var = (((x - mean) * valid) ** 2).sum(1, keepdim=True) / n
    return (x - mean) * torch.rsqrt(var + eps) * valid


class HubertEncoder(nn.Module):
    """Front end + Conformer layers (registered as encoder ``hubert``, so a fine-tuning model can
    ``init`` ``encoder.*`` from a HuBERT run).

    Args:
        input_dim: fbank bins F.
        d_model, num_heads, ffn_dim, num_layers, kernel_size, dropout: Conformer sizes.
        frontend_channels: channels of the first front-end convolution (default ``d_model``).
        stride: fbank frames per output frame (2: 100 Hz fbank -> 50 Hz).
        utterance_cmvn: per-utterance mean/variance normalisation of the fbank (see
            :class:`HubertFrontend`).

    Shapes: ``forward(x (B, T, F), lengths (B,)) -> (B, T // stride, D), (B,)``.
    """

    def __init__(
        self, *, input_dim: int = 80, d_model: int = 256, num_heads: int = 4, ffn_dim: int = 1024,
        num_layers: int = 6, kernel_size: int = 15, dropout: float = 0.1, frontend_channels: int | None = None,
        stride: int = 2, utterance_cmvn: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.frontend = HubertFrontend(input_dim=input_dim, d_model=d_model, channels=frontend_channels or d_model,
                                       stride=stride, utterance_cmvn=utterance_cmvn)
        self.layers = ConformerLayers(d_model=d_model, num_heads=num_heads, ffn_dim=ffn_dim, num_layers=num_layers,
                                      kernel_size=kernel_size, dropout=dropout)
        self.dropout_p = dropout
        self.output_dim = d_model
        self.num_layers = num_layers
        self.stride = stride

    def min_input_length(self) -> int:
        return self.stride

    def run_layers(self, x: torch.Tensor, lengths: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """Conformer layers 1..``upto`` (default all) on front-end output ``x`` (B, T', D)."""
        upto = self.num_layers if upto is None else upto
        x = dropout(x, self.dropout_p, self.training)
        if upto == 0:
            return x
        mask = lengths_to_mask(lengths, x.size(1))
        bias = _mask_bias(mask, x.dtype)
        pos = self.layers.pos(x.size(1), x.device, x.dtype)
        for layer in self.layers.layers[:upto]:
            x = layer(x, pos, mask, bias)
        return x

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, lens = self.frontend(x, lengths)
        return self.run_layers(h, lens), lens


ENCODERS.register("hubert")(HubertEncoder)


@MODELS.register("hubert")
class HubertModel(StkModel):
    """Args:
        vocab_size: supplied by the toolkit (the experiment's tokenizer); not used.
        input_dim: fbank bins F.
        num_units: k, the number of clusters of the targets.
        encoder: keyword arguments of :class:`HubertEncoder`.
        final_dim: width of the projection and of the cluster embeddings.
        mask_ratio, mask_span: span masking of front-end frames (share covered before overlaps,
            span length in frames; the paper's p = 8 % starts x span 10 ≈ ratio 0.8).
        masked_weight, unmasked_weight: the paper's α (masked) and 1 − α (unmasked) weights.
        temperature: of the cosine-similarity logits (0.1 in the paper).
        target: batch key of the frame targets (``int_seqs`` key).
        length_tolerance: largest allowed difference (frames) between an utterance's target and
            model lengths; within it both are cut to the shorter one.
    """

    def __init__(
        self, *, vocab_size: int, input_dim: int, num_units: int, encoder: dict[str, Any] | None = None,
        final_dim: int = 128, mask_ratio: float = 0.8, mask_span: int = 10, masked_weight: float = 1.0,
        unmasked_weight: float = 0.0, temperature: float = 0.1, target: str = "units", length_tolerance: int = 2,
    ) -> None:
        super().__init__()
        from stk.config import check_call_kwargs

        del vocab_size
        if num_units < 2:
            raise ValueError(f"num_units must be >= 2, got {num_units}")
        if masked_weight < 0 or unmasked_weight < 0 or masked_weight + unmasked_weight == 0:
            raise ValueError(f"masked_weight and unmasked_weight must be >= 0 and not both 0, "
                             f"got {masked_weight}, {unmasked_weight}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if length_tolerance < 0:
            raise ValueError(f"length_tolerance must be >= 0, got {length_tolerance}")
        conf = check_call_kwargs(HubertEncoder, dict(encoder or {}), "model.conf.encoder")
        self.encoder = HubertEncoder(input_dim=input_dim, **conf)
        d = self.encoder.output_dim
        self.mask_emb = nn.Parameter(torch.empty(d).uniform_())
        self.final_proj = nn.Linear(d, final_dim)
        self.code_emb = nn.Parameter(torch.empty(num_units, final_dim).uniform_())
        self.num_units = num_units
        self.mask_ratio, self.mask_span = mask_ratio, mask_span
        self.masked_weight, self.unmasked_weight = masked_weight, unmasked_weight
        self.temperature = temperature
        self.target = target
        self.length_tolerance = length_tolerance
        span_mask(torch.tensor([1]), ratio=mask_ratio, span=mask_span)  # validates the masking arguments

    def min_input_length(self) -> int:
        return self.encoder.min_input_length()

    def encode(self, feats: torch.Tensor, feats_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F) -> last-layer output (B, T', D) and lengths (no masking)."""
        return self.encoder(feats, feats_lens)

    def extract(self, feats: torch.Tensor, feats_lens: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Output of Conformer layer ``layer`` (1-based; 0 = front end) ``(B, T', D)`` and lengths,
        running only the layers below it."""
        if not 0 <= layer <= self.encoder.num_layers:
            raise ValueError(f"layer must be in 0..{self.encoder.num_layers}, got {layer}")
        h, lens = self.encoder.frontend(feats, feats_lens)
        return self.encoder.run_layers(h, lens, upto=layer), lens

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """(N, D) frames -> (N, num_units) cosine-similarity logits / temperature."""
        p = F.normalize(self.final_proj(h).float(), dim=-1)
        e = F.normalize(self.code_emb.float(), dim=-1)
        return (p @ e.t()) / self.temperature

    def masked_prediction_loss(self, out: torch.Tensor, y: torch.Tensor, m: torch.Tensor
                               ) -> tuple[torch.Tensor, dict[str, float]]:
        """``masked_weight · CE(masked) + unmasked_weight · CE(unmasked)`` (each a mean over its frames).

        ``out`` (B, T, D) encoder output; ``y`` (B, T) cluster ids, -1 at padding; ``m`` (B, T) True
        at masked frames.
        """
        valid = y >= 0
        m = m & valid
        loss = out.sum() * 0.0  # keeps the graph when a batch has no frame of a weighted kind
        stats: dict[str, float] = {}
        for name, sel, w in (("masked", m, self.masked_weight), ("unmasked", valid & ~m, self.unmasked_weight)):
            if not sel.any():
                continue
            with torch.set_grad_enabled(torch.is_grad_enabled() and w > 0):
                logits = self.logits(out[sel])
                ce = F.cross_entropy(logits, y[sel])
            if w > 0:
                loss = loss + w * ce
            stats[f"ce_{name}"] = ce.item()
            stats[f"acc_{name}"] = (logits.argmax(-1) == y[sel]).float().mean().item()
        stats["masked_frames"] = (m.sum() / valid.sum().clamp(min=1)).item()
        stats["loss"] = loss.item()
        return loss, stats

    def _targets(self, batch: dict[str, Any], n_frames: int, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ys, ylens = batch[self.target], batch[f"{self.target}_lens"].to(lens.device)
        diff = (ylens - lens).abs()
        if (diff > self.length_tolerance).any():
            i = int(diff.argmax())
            utt = batch.get("utt_ids", ["?"] * len(diff))[i]
            raise ValueError(
                f"utterance {utt!r}: {int(ylens[i])} target frames for {int(lens[i])} model frames (more than "
                f"{self.length_tolerance} apart): the {self.target!r} targets were made at another frame rate "
                f"(the model has stride {self.encoder.stride} on {n_frames}-frame batches)")
        if ys.max() >= self.num_units:
            raise ValueError(f"target id {int(ys.max())} >= num_units {self.num_units}")
        n = torch.minimum(ylens, lens)
        t = lens.max().item() if lens.numel() else 0
        y = torch.full((ys.size(0), int(t)), -1, dtype=torch.long, device=ys.device)
        m = min(int(t), ys.size(1))
        y[:, :m] = ys[:, :m]
        y = y.masked_fill(~lengths_to_mask(n, int(t)), -1)
        return y, n

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        feats, lens = batch["feats"], batch["feats_lens"]
        if self.target not in batch:
            raise ValueError(f"batch of stream {batch.get('stream')!r} has no {self.target!r} targets "
                             f"(give the stream int_seqs: {{{self.target}: {self.target}}})")
        h, hlens = self.encoder.frontend(feats, lens)
        y, _ = self._targets(batch, feats.size(1), hlens)
        valid = y >= 0
        m = span_mask(hlens, ratio=self.mask_ratio, span=self.mask_span, max_len=h.size(1)) & valid
        x = torch.where(m[..., None], self.mask_emb.to(h.dtype), h)
        out = self.encoder.run_layers(x, hlens)
        loss, stats = self.masked_prediction_loss(out, y, m)
        return {"loss": loss, "stats": stats, "weight": float(feats.size(0))}
