"""The shared speech–text Conformer of mSLAM (Bapna et al., 2022).

Speech: fbank → convolutional feature encoder (subsampling) → LayerNorm → [contrastive block] →
[MLM block], as in w2v-BERT. Text: one character vocabulary across languages → embedding (scaled
to unit variance) → the *same* two blocks. A learned modality embedding is added to each input
so the layers know which modality they see; speech and text may also be joined in one sequence
(TLM).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from stk.modules.conformer import ConformerLayers, dropout
from stk.modules.subsampling import Conv2dSubsampling

SPEECH, TEXT = 0, 1


class MslamEncoder(nn.Module):
    """Args:
        input_dim: fbank bins F.
        vocab_size: character vocabulary size (the toolkit passes the tokenizer's).
        d_model, num_heads, ffn_dim, kernel_size, dropout: Conformer sizes.
        num_contrastive_layers: layers of the contrastive block (w2v-BERT's lower part).
        num_mlm_layers: layers of the masked-prediction block on top (≥ 0).
        subsampling_factor, subsampling_channels: the speech feature encoder.

    Shapes: ``forward(feats (B, T, F), lens) -> (B, T', D), (B,)`` (speech, full stack);
    ``forward_text(ids (B, U), lens) -> (B, U, D), (B,)``.
    """

    def __init__(
        self, *, input_dim: int = 80, vocab_size: int, d_model: int = 256, num_heads: int = 4, ffn_dim: int = 1024,
        num_contrastive_layers: int = 4, num_mlm_layers: int = 4, kernel_size: int = 15, dropout: float = 0.1,
        subsampling_factor: int = 4, subsampling_channels: int | None = None,
    ) -> None:
        super().__init__()
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
        if num_mlm_layers < 0:
            raise ValueError(f"num_mlm_layers must be >= 0, got {num_mlm_layers}")
        self.subsampling = Conv2dSubsampling(input_dim=input_dim, d_model=d_model, channels=subsampling_channels,
                                             factor=subsampling_factor)
        self.feat_norm = nn.LayerNorm(d_model)
        self.text_embed = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.text_embed.weight, std=d_model ** -0.5)
        self.modality = nn.Embedding(2, d_model)
        nn.init.normal_(self.modality.weight, std=0.02)
        sizes = dict(d_model=d_model, num_heads=num_heads, ffn_dim=ffn_dim, kernel_size=kernel_size, dropout=dropout)
        self.contrastive = ConformerLayers(num_layers=num_contrastive_layers, **sizes)
        self.mlm = ConformerLayers(num_layers=num_mlm_layers, **sizes) if num_mlm_layers > 0 else None
        self.dropout_p = dropout
        self.output_dim = d_model
        self.vocab_size = vocab_size

    def min_input_length(self) -> int:
        return self.subsampling.min_input_length()

    def speech_features(self, feats: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature-encoder output ``(B, T', D)`` (before masking; the quantizer's input)."""
        x, lens = self.subsampling(feats, lens)
        return self.feat_norm(x), lens

    def text_features(self, ids: torch.Tensor) -> torch.Tensor:
        """Character embeddings ``(B, U, D)`` for ids ``(B, U)`` (padding -1 allowed)."""
        return self.text_embed(ids.clamp(min=0)) * math.sqrt(self.output_dim)

    def add_modality(self, x: torch.Tensor, modality: int | torch.Tensor) -> torch.Tensor:
        """Add the modality embedding: an int for the whole batch or ``(B, T)`` ids per position."""
        if isinstance(modality, int):
            return x + self.modality.weight[modality]
        return x + self.modality(modality)

    def layers(self, x: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both blocks on embedded input ``(B, T, D)``: returns (contrastive out, final out)."""
        x = dropout(x, self.dropout_p, self.training)
        c = self.contrastive(x, lens)
        return c, (self.mlm(c, lens) if self.mlm is not None else c)

    def forward(self, feats: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, lens = self.speech_features(feats, lens)
        return self.layers(self.add_modality(x, SPEECH), lens)[1], lens

    def forward_text(self, ids: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.layers(self.add_modality(self.text_features(ids), TEXT), lens)[1], lens
