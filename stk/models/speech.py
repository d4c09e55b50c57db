"""Shared front of speech models: encoder + SpecAugment + optional CTC head.

An encoder whose constructor takes ``vocab_size`` (one that also embeds token ids, as mSLAM's)
gets it from the toolkit; if it has ``forward_text(ids, lens)``, :meth:`encode_text` feeds text
through it (``stk decode --text``).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from stk.features.fbank import SpecAugmentConfig, spec_augment
from stk.models import ENCODERS, StkModel


class SpeechEncoderModel(StkModel):
    """Builds ``self.encoder`` (a registered encoder), ``self.specaug`` and ``self.ctc``
    (a linear CTC head when ``with_ctc``), and gives ``encode``/``encode_text``/``ctc_log_probs``
    that ``stk decode`` uses."""

    def _build_front(self, *, input_dim: int, vocab_size: int, encoder: dict[str, Any] | None,
                     specaug: dict[str, Any] | None, with_ctc: bool) -> int:
        from stk.config import from_dict
        from stk.registry import ComponentSpec

        spec = from_dict(ComponentSpec, encoder or {"name": "conformer"}, "model.conf.encoder")
        extra: dict[str, Any] = {"input_dim": input_dim}
        if "vocab_size" in inspect.signature(ENCODERS.get(spec.name)).parameters:
            extra["vocab_size"] = vocab_size
        self.encoder = ENCODERS.build(spec, "model.conf.encoder", **extra)
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

    def encode_text(self, ids: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, U) (padding beyond ``lens``) -> encoder output (B, U', D) and lengths.

        Needs an encoder with ``forward_text`` (a joint speech–text encoder such as mSLAM's).
        """
        forward_text = getattr(self.encoder, "forward_text", None)
        if forward_text is None:
            raise ValueError(
                f"this model's encoder has no text input ({type(self.encoder).__name__} has no forward_text); "
                "text-input decoding needs a joint speech-text encoder")
        return forward_text(ids, lens)

    def ctc_log_probs(self, enc: torch.Tensor) -> torch.Tensor:
        """(B, T', D) -> CTC log-probabilities (B, T', V)."""
        if self.ctc is None:
            raise ValueError("this model has no CTC head (ctc_weight=0)")
        return torch.log_softmax(self.ctc(enc), dim=-1)
