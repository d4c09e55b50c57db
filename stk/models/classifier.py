"""Utterance classification (intent classification, language ID) on a speech encoder.

Encoder (+ SpecAugment) → pooling over the valid frames (masked mean, or a learned attention
pooling) → dropout → linear head. Labels come from a stream's ``labels`` files (``utt2intent``,
``utt2lang``) mapped to ints by ``data.label_vocab``::

    model: {name: classifier, conf: {label: intent, encoder: {name: conformer, conf: {...}}}}
    data:
      label_vocab: {intent: [play_music, set_alarm, weather]}
      train: {slurp: {data_dir: data/train, targets: {}, labels: {intent: utt2intent}}}

``stk decode --method classify`` writes ``utt-id label``; ``stk score --metric acc`` scores it.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from stk.models import MODELS
from stk.models.speech import SpeechEncoderModel
from stk.modules.conformer import lengths_to_mask


@MODELS.register("classifier")
class ClassifierModel(SpeechEncoderModel):
    """Speech encoder + pooled linear classifier over one label set.

    Args:
        vocab_size, input_dim: set by the toolkit (``vocab_size`` only matters to text-capable encoders).
        num_labels: set by the toolkit from ``data.label_vocab`` (label key -> number of labels).
        label: batch key of the labels to predict (a key of ``data.label_vocab``), e.g. ``intent``, ``lang``.
        encoder: ``{name, conf}`` of a registered encoder (default Conformer).
        specaug: SpecAugment settings, or None to disable.
        dropout: dropout on the pooled vector.
        pooling: ``mean`` (masked mean over frames) or ``attention`` (learned softmax weights over frames).
    """

    def __init__(
        self, *, vocab_size: int, input_dim: int, num_labels: dict[str, int] | None = None, label: str = "intent",
        encoder: dict[str, Any] | None = None, specaug: dict[str, Any] | None = None, dropout: float = 0.1,
        pooling: Literal["mean", "attention"] = "mean",
    ) -> None:
        super().__init__()
        from stk.config import ConfigError

        if not num_labels or label not in num_labels:
            raise ConfigError(
                f"model.conf.label: the classifier predicts {label!r}, but data.label_vocab has "
                f"{sorted(num_labels or {}) or 'no label sets'}; add data.label_vocab.{label}: [the label strings]")
        if num_labels[label] < 2:
            raise ConfigError(f"data.label_vocab.{label}: a classifier needs at least 2 labels, got {num_labels[label]}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.conf.dropout must be in [0, 1), got {dropout}")
        d = self._build_front(input_dim=input_dim, vocab_size=vocab_size, encoder=encoder, specaug=specaug,
                              with_ctc=False)
        self.label, self.num_classes = label, num_labels[label]
        self.attn = nn.Linear(d, 1) if pooling == "attention" else None
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(d, self.num_classes)
        self.decoder = None

    def pool(self, enc: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, D) over the valid frames."""
        mask = lengths_to_mask(lens, enc.size(1))
        if self.attn is not None:
            w = self.attn(enc).squeeze(-1).masked_fill(~mask, float("-inf")).softmax(-1)
            return torch.einsum("bt,btd->bd", w, enc)
        m = mask.to(enc.dtype).unsqueeze(-1)
        return (enc * m).sum(1) / m.sum(1).clamp(min=1.0)

    def logits(self, feats: torch.Tensor, feats_lens: torch.Tensor) -> torch.Tensor:
        """(B, T, F) features -> (B, num_classes) unnormalised scores."""
        enc, lens = self.encode(feats, feats_lens)
        return self.head(self.dropout(self.pool(enc, lens)))

    def classify(self, feats: torch.Tensor, feats_lens: torch.Tensor) -> torch.Tensor:
        """(B, T, F) features -> (B,) predicted label ids."""
        return self.logits(feats, feats_lens).argmax(-1)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        y = batch.get(self.label)
        if not isinstance(y, torch.Tensor):
            raise ValueError(
                f"batch has no {self.label!r} label ids: give the stream `labels: {{{self.label}: utt2{self.label}}}` "
                f"and data.label_vocab.{self.label}")
        logits = self.logits(batch["feats"], batch["feats_lens"])
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(-1) == y).float().mean().item()
        return {"loss": loss, "stats": {"loss": loss.item(), "acc": acc}, "weight": float(y.size(0))}
