"""Hybrid CTC/attention encoder–decoder (Watanabe et al., 2017) for ASR and speech translation.

ASR: CTC and decoder both predict ``text``. ST: the decoder predicts the translation
(``dec_target: text_en``) while CTC on the source transcript (``ctc_target: text``) regularises
the encoder, as in ESPnet's ST recipes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from stk.models import MODELS
from stk.models.speech import SpeechEncoderModel
from stk.modules.transformer_decoder import TransformerDecoder
from stk.tokenizer import BLANK, SOS_EOS


def add_sos_eos(ys: torch.Tensor, lens: torch.Tensor, sos_eos: int = SOS_EOS) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded targets (B, U) (pad -1) -> decoder input ``<sos> y`` and output ``y <eos>`` (pad -1), (B, U+1)."""
    b = ys.size(0)
    col = torch.full((b, 1), sos_eos, dtype=ys.dtype, device=ys.device)
    ys_in = torch.cat([col, ys.clamp(min=0)], dim=1)
    ys_out = torch.cat([ys, torch.full_like(col, -1)], dim=1)
    ys_out[torch.arange(b), lens] = sos_eos
    return ys_in, ys_out


def label_smoothing_loss(logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Sum over tokens of label-smoothed cross entropy; ``target`` pad is -1. ``logits`` (B, L, V)."""
    return F.cross_entropy(logits.transpose(1, 2), target, ignore_index=-1, label_smoothing=smoothing, reduction="sum")


@MODELS.register("encdec")
class EncoderDecoderModel(SpeechEncoderModel):
    """Speech encoder + CTC head + Transformer decoder.

    Args:
        vocab_size, input_dim: set by the toolkit from the tokenizer and features.
        encoder: ``{name, conf}`` of a registered encoder (default Conformer).
        decoder: keyword arguments of :class:`TransformerDecoder` (``num_layers: 0`` for CTC only).
        ctc_weight: λ in ``λ·CTC + (1-λ)·attention``; 1.0 trains CTC only.
        lsm_weight: label smoothing of the attention loss.
        ctc_target / dec_target: batch keys of the CTC and decoder targets.
        specaug: SpecAugment settings, or None to disable.
    """

    def __init__(
        self, *, vocab_size: int, input_dim: int, encoder: dict[str, Any] | None = None,
        decoder: dict[str, Any] | None = None, ctc_weight: float = 0.3, lsm_weight: float = 0.1,
        ctc_target: str = "text", dec_target: str = "text", specaug: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
        from stk.config import check_call_kwargs

        d = self._build_front(input_dim=input_dim, vocab_size=vocab_size, encoder=encoder, specaug=specaug,
                              with_ctc=ctc_weight > 0)
        self.ctc_weight, self.lsm_weight = ctc_weight, lsm_weight
        self.ctc_target, self.dec_target = ctc_target, dec_target
        self.vocab_size = vocab_size
        dec_conf = check_call_kwargs(TransformerDecoder, dict(decoder or {}), "model.conf.decoder")
        self.decoder = (
            TransformerDecoder(vocab_size=vocab_size, memory_dim=d, **dec_conf)
            if ctc_weight < 1.0 and dec_conf.get("num_layers", 3) > 0 else None
        )

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        enc, enc_lens = self.encode(batch["feats"], batch["feats_lens"])
        stats: dict[str, float] = {}
        loss = enc.new_zeros(())
        b = enc.size(0)
        if self.ctc is not None:
            ys, ylens = batch[self.ctc_target], batch[f"{self.ctc_target}_lens"]
            lp = self.ctc_log_probs(enc).transpose(0, 1)  # (T, B, V)
            ctc = F.ctc_loss(lp, ys.clamp(min=0), enc_lens, ylens, blank=BLANK, reduction="sum", zero_infinity=True) / b
            loss = loss + self.ctc_weight * ctc
            stats["ctc"] = ctc.item()
        if self.decoder is not None:
            ys, ylens = batch[self.dec_target], batch[f"{self.dec_target}_lens"]
            ys_in, ys_out = add_sos_eos(ys, ylens)
            logits = self.decoder(ys_in, ylens + 1, enc, enc_lens)
            att = label_smoothing_loss(logits, ys_out, self.lsm_weight) / b
            loss = loss + (1.0 - self.ctc_weight) * att
            valid = ys_out != -1
            stats["att"] = att.item()
            stats["acc"] = ((logits.argmax(-1) == ys_out) & valid).sum().item() / max(1, valid.sum().item())
        stats["loss"] = loss.item()
        return {"loss": loss, "stats": stats, "weight": float(b)}
