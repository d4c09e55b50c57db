"""Shared front of speech models: encoder + SpecAugment + optional CTC head."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from stk.features.fbank import SpecAugmentConfig, spec_augment
from stk.models import ENCODERS, StkModel


class SpeechEncoderModel(StkModel):
    """Builds ``self.encoder`` (a registered encoder), ``self.specaug`` and ``self.ctc``
    (a linear CTC head when ``with_ctc``), and gives ``encode``/``ctc_log_probs`` that
    ``stk decode`` uses."""

    def _build_front(self, *, input_dim: int, vocab_size: int, encoder: dict[str, Any] | None,
                     specaug: dict[str, Any] | None, with_ctc: bool) -> int:
        from stk.config import from_dict

        self.encoder = ENCODERS.build(encoder or {"name": "conformer"}, "model.conf.encoder", input_dim=input_dim)
        d = self.encoder.output_dim
        self.ctc = nn.Linear(d, vocab_size) if with_ctc else None
        self.specaug = from_dict(SpecAugmentConfig, specaug, "model.conf.specaug") if specaug is not None else None
        return d

    def min_input_length(self) -> int:
        return self.encoder.min_input_length()

    def encode(self, feats: torch.Tensor, feats_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F) -> encoder output (B, T', D) and lengths; SpecAugment in training mode."""
        if self.training and self.specaug is not None:
            feats = spec_augment(feats, feats_lens, self.specaug)
        return self.encoder(feats, feats_lens)

    def ctc_log_probs(self, enc: torch.Tensor) -> torch.Tensor:
        """(B, T', D) -> CTC log-probabilities (B, T', V)."""
        if self.ctc is None:
            raise ValueError("this model has no CTC head (ctc_weight=0)")
        return torch.log_softmax(self.ctc(enc), dim=-1)
