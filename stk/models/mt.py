"""Text-to-text attention encoder–decoder (machine translation), the text reference of ST recipes.

The source sentence (batch key ``src_target``, token ids of the recipe's tokenizer) is embedded
and encoded by Conformer blocks (relative positions, no subsampling); the Transformer decoder of
:mod:`stk.models.encdec` predicts ``dec_target``. The model has no speech input: it trains on a
text-only stream (``speech: false``) and decodes with ``stk decode --model PKG --text FILE``
(the encoder's ``forward_text``), so a cascade is ``stk decode`` of an ASR model followed by this.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from stk.models import ENCODERS, MODELS, StkModel
from stk.models.encdec import add_sos_eos, label_smoothing_loss
from stk.modules.conformer import ConformerLayers, dropout
from stk.modules.transformer_decoder import TransformerDecoder


class TextConformerEncoder(nn.Module):
    """Token embedding (``N(0, 1/d)``, scaled by ``sqrt(d)``) + Conformer blocks.

    Args:
        vocab_size: token vocabulary V (set by the toolkit).
        d_model, num_heads, ffn_dim, num_layers, kernel_size, dropout: Conformer sizes.

    Shapes: ``forward_text(ids (B, U), lens (B,)) -> (B, U, D), (B,)`` (padding ids may be any
    value, e.g. -1). ``forward`` (speech features) raises ``ValueError``: this encoder reads text.
    """

    def __init__(
        self, *, vocab_size: int, d_model: int = 256, num_heads: int = 4, ffn_dim: int = 1024, num_layers: int = 4,
        kernel_size: int = 15, dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.embed = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embed.weight, std=d_model ** -0.5)
        self.layers = ConformerLayers(d_model=d_model, num_heads=num_heads, ffn_dim=ffn_dim, num_layers=num_layers,
                                      kernel_size=kernel_size, dropout=dropout)
        self.dropout_p = dropout
        self.output_dim = d_model

    def min_input_length(self) -> int:
        return 1

    def forward_text(self, ids: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embed(ids.clamp(min=0)) * math.sqrt(self.output_dim)
        return self.layers(dropout(x, self.dropout_p, self.training), lens), lens

    def forward(self, feats: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise ValueError("TextConformerEncoder reads token ids (forward_text), not speech features; "
                         "decode an MT model with `stk decode --text FILE`")


ENCODERS.register("text_conformer")(TextConformerEncoder)


@MODELS.register("mt")
class TextTranslationModel(StkModel):
    """Text encoder + Transformer decoder, trained with label-smoothed cross entropy.

    Args:
        vocab_size: from the tokenizer (shared by source and target). ``input_dim`` (features)
            is accepted for the toolkit's uniform call and ignored.
        encoder: keyword arguments of :class:`TextConformerEncoder` (except ``vocab_size``).
        decoder: keyword arguments of :class:`~stk.modules.transformer_decoder.TransformerDecoder`.
        lsm_weight: label smoothing.
        src_target / dec_target: batch keys of the source and target token sequences.

    ``forward(batch)`` needs ``batch[src_target]`` (B, U) and ``batch[dec_target]`` (B, L) with
    their ``*_lens``; returns the loss (summed over tokens, averaged over sentences) and token
    accuracy.
    """

    def __init__(
        self, *, vocab_size: int, input_dim: int = 0, encoder: dict[str, Any] | None = None,
        decoder: dict[str, Any] | None = None, lsm_weight: float = 0.1, src_target: str = "text",
        dec_target: str = "text_en",
    ) -> None:
        super().__init__()
        from stk.config import check_call_kwargs

        if not 0.0 <= lsm_weight < 1.0:
            raise ValueError(f"lsm_weight must be in [0, 1), got {lsm_weight}")
        if src_target == dec_target:
            raise ValueError(f"src_target and dec_target are both {src_target!r}; a translation model needs two")
        if "vocab_size" in (encoder or {}):
            raise ValueError("model.conf.encoder.vocab_size is set by the toolkit from the tokenizer; remove it")
        enc_conf = check_call_kwargs(TextConformerEncoder, dict(encoder or {}), "model.conf.encoder")
        self.encoder = TextConformerEncoder(vocab_size=vocab_size, **enc_conf)
        dec_conf = check_call_kwargs(TransformerDecoder, dict(decoder or {}), "model.conf.decoder")
        if dec_conf.get("num_layers", 3) < 1:
            raise ValueError("model.conf.decoder.num_layers must be >= 1")
        self.decoder = TransformerDecoder(vocab_size=vocab_size, memory_dim=self.encoder.output_dim, **dec_conf)
        self.ctc = None  # the search scores with the attention decoder only
        self.lsm_weight, self.src_target, self.dec_target = lsm_weight, src_target, dec_target
        self.vocab_size = vocab_size

    def min_input_length(self) -> int:
        return 1

    def encode_text(self, ids: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, U) -> encoder output (B, U, D) and lengths (``stk decode --text``)."""
        return self.encoder.forward_text(ids, lens)

    def encode(self, feats: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(feats, lens)  # raises: no speech input

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        for k in (self.src_target, self.dec_target):
            if k not in batch:
                raise ValueError(f"batch of stream {batch.get('stream')!r} has no {k!r} (the mt model needs "
                                 f"targets {{{self.src_target}: …, {self.dec_target}: …}} on a speech: false stream)")
        src, src_lens = batch[self.src_target], batch[f"{self.src_target}_lens"]
        enc, enc_lens = self.encode_text(src, src_lens)
        ys, ylens = batch[self.dec_target], batch[f"{self.dec_target}_lens"]
        ys_in, ys_out = add_sos_eos(ys, ylens)
        logits = self.decoder(ys_in, ylens + 1, enc, enc_lens)
        b = ys.size(0)
        loss = label_smoothing_loss(logits, ys_out, self.lsm_weight) / b
        valid = ys_out != -1
        acc = ((logits.argmax(-1) == ys_out) & valid).sum().item() / max(1, valid.sum().item())
        return {"loss": loss, "stats": {"att": loss.item(), "acc": acc, "loss": loss.item()}, "weight": float(b)}
