"""MAESTRO building blocks (Chen et al., 2022): the split speech/shared Conformer, the text
embedding extractor, duration upsampling, the duration model and the refiner's input path.

Shapes: speech ``(B, T, F)`` fbank -> ``(B, T', D)`` frames; text ids ``(B, U)`` -> ``(B, U, D)``
embeddings -> repeated by durations ``(B, U)`` to ``(B, sum d, D)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stk.modules.conformer import ConformerLayers, dropout, lengths_to_mask
from stk.modules.subsampling import Conv2dSubsampling


class MaestroEncoder(nn.Module):
    """Speech encoder (subsampling + lower Conformer layers) and the shared upper layers.

    Args:
        input_dim: fbank bins F.
        d_model, num_heads, ffn_dim, kernel_size, dropout: Conformer sizes.
        num_speech_layers: lower layers (speech only; the modality-matching point).
        num_shared_layers: upper layers shared by speech and refined text.
        subsampling_factor, subsampling_channels: the convolutional front-end.

    ``forward(feats (B, T, F), lens) -> (B, T', D), (B,)`` runs both parts (what fine-tuning and
    ``stk decode`` use); :meth:`speech` and :meth:`shared` run one part each.
    """

    def __init__(
        self, *, input_dim: int = 80, d_model: int = 256, num_heads: int = 4, ffn_dim: int = 1024,
        num_speech_layers: int = 4, num_shared_layers: int = 4, kernel_size: int = 15, dropout: float = 0.1,
        subsampling_factor: int = 4, subsampling_channels: int | None = None,
    ) -> None:
        super().__init__()
        sizes = dict(d_model=d_model, num_heads=num_heads, ffn_dim=ffn_dim, kernel_size=kernel_size, dropout=dropout)
        self.subsampling = Conv2dSubsampling(input_dim=input_dim, d_model=d_model, channels=subsampling_channels,
                                             factor=subsampling_factor)
        self.feat_norm = nn.LayerNorm(d_model)
        self.speech_layers = ConformerLayers(num_layers=num_speech_layers, **sizes)
        self.shared_layers = ConformerLayers(num_layers=num_shared_layers, **sizes)
        self.dropout_p = dropout
        self.output_dim = d_model
        self.subsampling_factor = subsampling_factor

    def min_input_length(self) -> int:
        return self.subsampling.min_input_length()

    def features(self, feats: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Front-end output ``(B, T', D)`` before the Conformer layers (the quantizer's input)."""
        x, lens = self.subsampling(feats, lens)
        return self.feat_norm(x), lens

    def speech(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """Lower layers on front-end frames ``(B, T', D)``."""
        return self.speech_layers(dropout(x, self.dropout_p, self.training), lens)

    def shared(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """Upper layers on speech-encoder output or refined text ``(B, T', D)``."""
        return self.shared_layers(x, lens)

    def forward(self, feats: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, lens = self.features(feats, lens)
        return self.shared(self.speech(x, lens), lens), lens


class TextEmbeddingExtractor(nn.Module):
    """Token embeddings -> ``num_conv`` 1-D convolutions -> ``num_layers`` Transformer layers.

    ``forward(ids (B, U) with -1 padding, lens (B,)) -> (B, U, D)``.
    """

    def __init__(self, *, vocab_size: int, d_model: int, num_conv: int = 2, kernel_size: int = 5,
                 num_layers: int = 2, num_heads: int = 4, ffn_dim: int = 1024, dropout: float = 0.1) -> None:
        super().__init__()
        if kernel_size % 2 == 0 or num_conv < 0 or num_layers < 0:
            raise ValueError(f"need an odd kernel_size and num_conv, num_layers >= 0; got {kernel_size}, {num_conv}, {num_layers}")
        self.embed = nn.Embedding(vocab_size, d_model)
        self.convs = nn.ModuleList(nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2) for _ in range(num_conv))
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(num_conv))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model, num_heads, ffn_dim, dropout, batch_first=True, norm_first=True)
            for _ in range(num_layers)
        )
        self.out_norm = nn.LayerNorm(d_model)
        self.dropout_p = dropout

    def forward(self, ids: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        valid = lengths_to_mask(lens, ids.size(1))
        x = self.embed(ids.clamp(min=0)) * valid[..., None]
        for conv, norm in zip(self.convs, self.norms):
            y = F.relu(conv(x.transpose(1, 2))).transpose(1, 2)
            x = norm(x + dropout(y, self.dropout_p, self.training)) * valid[..., None]
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=~valid)
        return self.out_norm(x) * valid[..., None]


def upsample(x: torch.Tensor, durations: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat each token's vector by its duration.

    Args:
        x: (B, U, D) token embeddings.
        durations: (B, U) frames per token (padding ignored; negative values count as 0).
        lens: (B,) valid tokens.

    Returns ``(B, max T, D)`` zero-padded and the lengths ``T_b = sum of b's durations``.
    """
    b, u, d = x.shape
    valid = lengths_to_mask(lens, u)
    dur = durations.clamp(min=0) * valid
    out_lens = dur.sum(1)
    t = int(out_lens.max().item()) if b else 0
    # token index of every output frame: the number of cumulative durations <= frame index
    ends = dur.cumsum(1)  # (B, U)
    frames = torch.arange(t, device=x.device)
    idx = (ends[:, None, :] <= frames[None, :, None]).sum(-1).clamp(max=u - 1)  # (B, T)
    out = torch.gather(x, 1, idx[..., None].expand(b, t, d))
    return out * lengths_to_mask(out_lens, t)[..., None], out_lens


class DurationModel(nn.Module):
    """Predicts frames per token from text embeddings (trained on alignment durations).

    Two convolutions + a linear layer regress ``log(1 + d)``; :meth:`predict` rounds back to
    integers ≥ 1.
    """

    def __init__(self, *, d_model: int, hidden: int = 256, kernel_size: int = 3, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(d_model, hidden, kernel_size, padding=kernel_size // 2)
        self.conv2 = nn.Conv1d(hidden, hidden, kernel_size, padding=kernel_size // 2)
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, 1)
        self.dropout_p = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, U, D) -> predicted ``log(1 + d)`` (B, U)."""
        h = self.norm1(F.relu(self.conv1(x.transpose(1, 2))).transpose(1, 2))
        h = dropout(h, self.dropout_p, self.training)
        h = self.norm2(F.relu(self.conv2(h.transpose(1, 2))).transpose(1, 2))
        return self.out(dropout(h, self.dropout_p, self.training)).squeeze(-1)

    def loss(self, x: torch.Tensor, durations: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """Mean squared error in the log domain over valid tokens."""
        valid = lengths_to_mask(lens, x.size(1))
        target = torch.log1p(durations.clamp(min=0).float())
        return F.mse_loss(self(x)[valid], target[valid])

    @torch.no_grad()
    def predict(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """Integer durations ``(B, U)`` ≥ 1 inside ``lens``, 0 in the padding."""
        d = torch.expm1(self(x)).round().clamp(min=1).long()
        return d * lengths_to_mask(lens, x.size(1))
