"""Unit-to-mel model: discrete speech units -> 80-bin log-mel, the first half of a unit vocoder.

The cheap, non-autoregressive path of the speech-resynthesis papers (units -> spectrogram -> a mel
vocoder) instead of CodeHiFiGAN's units -> waveform: a unit embedding (+ an optional speaker
embedding), residual 1-D convolutions at the unit rate, an upsampling from the units' rate (50/s)
to the mel frame rate (16000 / 256 = 62.5/s) by nearest-frame indexing, more convolutions (and
optional Transformer layers) at the mel rate, and a linear layer to the log-mel bins of
:class:`stk.features.mel.MelConfig` (the features Griffin-Lim and HiFi-GAN read). Loss: L1 between
predicted and ground-truth log-mels over the valid frames (HiFi-GAN's mel-L1 on the same scale).

Frame units are not deduplicated: each unit covers 1/``unit_rate`` s, so no duration predictor is
needed (deduplicated units, ``units.dur``, would need one; not built). Optional F0 input (``f0_bins``
> 0), as in speech resynthesis from disentangled units (Polyak et al., 2021): one log-F0 bin per mel
frame (``stk data pitch DIR --frame-shift-ms 16 --bins-per-octave 24`` writes ``f0bins``; 0 =
unvoiced), embedded and added at the mel rate, so the model can place the harmonics that frame units
of spectral-envelope features (MFCC) do not carry. An optional postnet (``postnet_layers``, as in
Tacotron 2) adds a residual correction to the mel; the loss is then on both mels. Trained by ``stk train`` on a
data dir whose ``feats.scp`` holds the log-mels (``stk synth mels DATA_DIR OUT`` writes one) and
whose ``units`` file holds the frame units (``stk units dump OUT --model UNITS``)::

    model: {name: unit_vocoder, conf: {num_units: 100, speaker_label: spk}}
    data:
      tokenizer: data/token/char.model        # required by the toolkit, unused
      fbank: {num_mel_bins: 80}               # the mel bins: passed to the model as input_dim
      label_vocab: {spk: [spk1, spk2, ...]}   # only with speaker_label
      train: {uv: {data_dir: dump/uv_train, targets: {}, int_seqs: {units: units}, labels: {spk: utt2spk}}}

``stk synth units DATA_DIR --model PKG --out OUT`` turns a units file into a wav data dir
(:class:`stk.synthesis.UnitVocoder`: this model + Griffin-Lim or a packaged HiFi-GAN).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stk.features.mel import MelConfig
from stk.models import MODELS, StkModel
from stk.modules.conformer import lengths_to_mask


class ConvBlock(nn.Module):
    """Residual block: LayerNorm -> Conv1d (same length) -> GELU -> pointwise -> dropout, on
    ``(B, T, D)`` with padded frames zeroed before the convolution (so padding never leaks in)."""

    def __init__(self, dim: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2)
        self.point = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), mask (B, T) True on valid frames -> (B, T, D), zero on padded frames."""
        m = mask.unsqueeze(-1).to(x.dtype)
        y = self.norm(x) * m
        y = F.gelu(self.conv(y.transpose(1, 2)).transpose(1, 2))
        return (x + self.dropout(self.point(y))) * m


@MODELS.register("unit_vocoder")
class UnitVocoderModel(StkModel):
    """Frame units ``(B, U)`` -> log-mel ``(B, T, n_mels)`` with ``T ≈ U · mel_rate / unit_rate``.

    Args:
        vocab_size: set by the toolkit (unused: units are not text tokens).
        input_dim: set by the toolkit from ``data.fbank.num_mel_bins``: the mel bins of the training
            features; must equal ``mel.n_mels``.
        num_labels: set by the toolkit from ``data.label_vocab`` (speakers, with ``speaker_label``).
        num_units: the units model's k (unit ids are ``0 … num_units - 1``).
        unit_rate: unit frames per second (50 or 25).
        dim: hidden width.
        unit_layers / mel_layers: residual conv blocks before / after the upsampling.
        kernel: conv kernel size (odd).
        attention_layers, heads: Transformer encoder layers at the mel rate (0: none).
        f0_bins: number of log-F0 bin ids of the F0 input (``stk data pitch --bins-per-octave``'s
            ``f0bins.info`` ``n_bins``; 82 for 60–600 Hz at 24 per octave); 0: no F0 input.
        f0_key: batch key of the F0 bins (the stream's ``int_seqs`` key).
        postnet_layers: residual conv blocks of the postnet on the predicted mel (0: none).
        dropout: dropout in every block.
        speaker_label: batch key of speaker ids (a ``data.label_vocab`` key, e.g. ``spk``) to add a
            learned speaker embedding; ``None``: no speaker input. One extra "unknown speaker" row is
            trained by replacing the speaker with it at rate ``speaker_dropout``; speakers outside the
            training set use it at synthesis time.
        mel: :class:`stk.features.mel.MelConfig` fields of the target log-mels (default: stk's).
        units_key: batch key of the units (the stream's ``int_seqs`` key).
        units_model: free text kept in the package: which units model made the training units
            (its ``units.json`` sha256), so a user can check they synthesise from the same one.
        length_tolerance: largest accepted difference, in mel frames, between the mel length and
            the length the units imply (larger means the units and mels are of different audio).
    """

    def __init__(
        self, *, vocab_size: int, input_dim: int, num_labels: dict[str, int] | None = None, num_units: int,
        unit_rate: int = 50, dim: int = 192, unit_layers: int = 2, mel_layers: int = 3, kernel: int = 5,
        attention_layers: int = 0, heads: int = 2, f0_bins: int = 0, f0_key: str = "f0", postnet_layers: int = 0,
        dropout: float = 0.1, speaker_label: str | None = None,
        speaker_dim: int = 64, speaker_dropout: float = 0.1, mel: dict[str, Any] | None = None,
        units_key: str = "units", units_model: str = "", length_tolerance: int = 4,
    ) -> None:
        super().__init__()
        from stk.config import ConfigError, from_dict

        self.mel_config = from_dict(MelConfig, mel or {}, "model.conf.mel")
        if input_dim != self.mel_config.n_mels:
            raise ConfigError(
                f"unit_vocoder: the training features have {input_dim} bins (data.fbank.num_mel_bins) but the "
                f"model predicts {self.mel_config.n_mels}-bin log-mels (model.conf.mel.n_mels); train on "
                "`stk synth mels` dirs with num_mel_bins = n_mels")
        if num_units < 2:
            raise ConfigError(f"model.conf.num_units must be >= 2 (the units model's k), got {num_units}")
        if f0_bins < 0 or f0_bins == 1 or postnet_layers < 0:
            raise ConfigError(f"model.conf.f0_bins must be 0 (no F0) or >= 2, postnet_layers >= 0; got "
                              f"{f0_bins}, {postnet_layers}")
        if unit_rate <= 0 or dim <= 0 or unit_layers < 0 or mel_layers < 0 or attention_layers < 0:
            raise ConfigError("model.conf: unit_rate and dim must be > 0, the layer counts >= 0")
        if kernel < 1 or kernel % 2 == 0:
            raise ConfigError(f"model.conf.kernel must be odd, got {kernel}")
        if attention_layers and dim % heads:
            raise ConfigError(f"model.conf.dim {dim} is not divisible by heads {heads}")
        if not 0.0 <= speaker_dropout < 1.0 or not 0.0 <= dropout < 1.0:
            raise ConfigError("model.conf.dropout and speaker_dropout must be in [0, 1)")
        self.num_units, self.unit_rate, self.units_key = num_units, unit_rate, units_key
        self.units_model, self.length_tolerance = units_model, length_tolerance
        self.embed = nn.Embedding(num_units, dim)
        self.speaker_label = speaker_label
        self.num_speakers = 0
        if speaker_label is not None:
            if not num_labels or speaker_label not in num_labels:
                raise ConfigError(
                    f"model.conf.speaker_label {speaker_label!r}: data.label_vocab has "
                    f"{sorted(num_labels or {}) or 'no label sets'}; add data.label_vocab.{speaker_label}: [speaker ids] "
                    f"and the stream's labels: {{{speaker_label}: utt2spk}}")
            self.num_speakers = num_labels[speaker_label]
            self.speaker = nn.Embedding(self.num_speakers + 1, speaker_dim)  # last row: unknown speaker
            self.speaker_proj = nn.Linear(speaker_dim, dim)
        self.speaker_dropout = speaker_dropout
        self.unit_blocks = nn.ModuleList(ConvBlock(dim, kernel, dropout) for _ in range(unit_layers))
        self.mel_blocks = nn.ModuleList(ConvBlock(dim, kernel, dropout) for _ in range(mel_layers))
        self.attention = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout, batch_first=True, norm_first=True)
            for _ in range(attention_layers))
        self.f0_bins, self.f0_key = f0_bins, f0_key
        self.f0_embed = nn.Embedding(f0_bins, dim) if f0_bins else None
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, self.mel_config.n_mels)
        nn.init.constant_(self.out.bias, -5.0)  # about the mean log-mel of speech
        self.postnet_in = nn.Linear(self.mel_config.n_mels, dim) if postnet_layers else None
        self.postnet = nn.ModuleList(ConvBlock(dim, kernel, dropout) for _ in range(postnet_layers))
        self.postnet_out = nn.Linear(dim, self.mel_config.n_mels) if postnet_layers else None
        if self.postnet_out is not None:
            nn.init.zeros_(self.postnet_out.weight)  # the postnet starts as the identity
            nn.init.zeros_(self.postnet_out.bias)

    # ------------------------------------------------------------------ lengths

    @property
    def frames_per_unit(self) -> float:
        """Mel frames per unit frame (1.25 for 50/s units and hop 256 at 16 kHz)."""
        return self.mel_config.sample_rate / (self.mel_config.hop_length * self.unit_rate)

    def mel_lengths(self, units_lens: torch.Tensor) -> torch.Tensor:
        """(B,) unit counts -> (B,) mel frames of the same audio: ``round(U * frames_per_unit) + 2`` (the
        centred STFT's extra frame, and the ~25 ms analysis window the unit features leave over; measured:
        within ±1 frame of the real count for MFCC units)."""
        return torch.round(units_lens.double() * self.frames_per_unit).long() + 2

    def min_input_length(self) -> int:
        return 1

    # ------------------------------------------------------------------ forward

    def check_units(self, units: torch.Tensor, units_lens: torch.Tensor) -> None:
        """ValueError naming the bad id when a unit is outside ``0 … num_units - 1``."""
        mask = lengths_to_mask(units_lens, units.size(1))
        bad = (units < 0) | (units >= self.num_units)
        if bool((bad & mask).any()):
            v = int(units[bad & mask][0])
            raise ValueError(f"unit_vocoder: unit id {v} is outside 0..{self.num_units - 1}: this model was "
                             f"trained on k={self.num_units} units (units from another units model?)")

    def f0_features(self, f0: torch.Tensor | None, t: int) -> torch.Tensor:
        """F0 bins (B, T') long, one per mel frame (0 unvoiced) -> embeddings (B, t, dim): ``T'`` may
        differ from ``t`` by the analysis' edge frames (padded with the last frame, or cut)."""
        if f0 is None:
            raise ValueError(f"unit_vocoder: this model takes F0 input (f0_bins={self.f0_bins}): give the "
                             f"{self.f0_key!r} bins (`stk data pitch DIR --frame-shift-ms 16 --bins-per-octave 24`)")
        if f0.dim() != 2 or f0.size(1) == 0:
            raise ValueError(f"unit_vocoder: F0 bins must be (B, T) with T > 0, got shape {tuple(f0.shape)}")
        bad = f0 >= self.f0_bins
        if bool(bad.any()):
            raise ValueError(f"unit_vocoder: F0 bin {int(f0[bad][0])} is outside 0..{self.f0_bins - 1} "
                             "(F0 bins of other settings than the training data's f0bins.info?)")
        f0 = f0.clamp(min=0)  # -1: padding -> unvoiced
        if f0.size(1) < t:
            f0 = torch.cat([f0, f0[:, -1:].expand(-1, t - f0.size(1))], dim=1)
        assert self.f0_embed is not None
        return self.f0_embed(f0[:, :t])

    def generate(self, units: torch.Tensor, units_lens: torch.Tensor, speakers: torch.Tensor | None = None,
                 mel_lens: torch.Tensor | None = None, f0: torch.Tensor | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Units (B, U) long + lengths (B,) [+ speaker ids (B,), -1 or ``num_speakers`` = unknown]
        [+ F0 bins (B, T) with ``f0_bins``] -> log-mel (B, T, n_mels) (the postnet's, with one) and
        its lengths (B,) (``mel_lens``, default :meth:`mel_lengths`); frames past each length are zero."""
        _, mel, mel_lens = self.mels(units, units_lens, speakers, mel_lens, f0)
        return mel, mel_lens

    def mels(self, units: torch.Tensor, units_lens: torch.Tensor, speakers: torch.Tensor | None = None,
             mel_lens: torch.Tensor | None = None, f0: torch.Tensor | None = None,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`generate`'s arguments -> (the mel before the postnet (B, T, n_mels), the final mel
        (the same tensor without a postnet), lengths (B,))."""
        if units.dim() != 2:
            raise ValueError(f"unit_vocoder: units must be (B, U), got shape {tuple(units.shape)}")
        self.check_units(units, units_lens)
        u_mask = lengths_to_mask(units_lens, units.size(1))
        x = self.embed(units.clamp(0, self.num_units - 1)) * u_mask.unsqueeze(-1)
        if self.num_speakers:
            spk = torch.full_like(units_lens, self.num_speakers) if speakers is None else speakers.clone()
            spk[(spk < 0) | (spk > self.num_speakers)] = self.num_speakers
            x = x + self.speaker_proj(self.speaker(spk)).unsqueeze(1)
        for blk in self.unit_blocks:
            x = blk(x, u_mask)
        mel_lens = self.mel_lengths(units_lens) if mel_lens is None else mel_lens
        t = int(mel_lens.max())
        # nearest-frame upsampling: mel frame j (centred at j * hop / sr s) reads unit floor(j * unit_rate * hop / sr)
        idx = torch.floor(torch.arange(t, device=units.device, dtype=torch.float64) / self.frames_per_unit).long()
        idx = torch.minimum(idx.unsqueeze(0), (units_lens - 1).clamp(min=0).unsqueeze(1))  # (B, T)
        h = torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.size(-1)))
        if self.f0_embed is not None:
            h = h + self.f0_features(f0, t)
        m_mask = lengths_to_mask(mel_lens, t)
        h = h * m_mask.unsqueeze(-1)
        for blk in self.mel_blocks:
            h = blk(h, m_mask)
        for layer in self.attention:
            h = layer(h, src_key_padding_mask=~m_mask) * m_mask.unsqueeze(-1)
        coarse = mel = self.out(self.norm(h)) * m_mask.unsqueeze(-1)
        if self.postnet_in is not None and self.postnet_out is not None:
            p = self.postnet_in(coarse)
            for blk in self.postnet:
                p = blk(p, m_mask)
            mel = (coarse + self.postnet_out(p)) * m_mask.unsqueeze(-1)
        return coarse, mel, mel_lens

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        feats, feats_lens = batch["feats"], batch["feats_lens"]
        if feats.size(-1) != self.mel_config.n_mels:
            raise ValueError(f"unit_vocoder: the batch's mel features have {feats.size(-1)} bins, the model predicts "
                             f"{self.mel_config.n_mels} (use `stk synth mels` dirs of the model's mel settings)")
        if self.units_key not in batch:
            raise ValueError(f"unit_vocoder: the batch has no {self.units_key!r} (give the stream "
                             f"int_seqs: {{{self.units_key}: units}} from `stk units dump`)")
        units, units_lens = batch[self.units_key], batch[f"{self.units_key}_lens"]
        expected = self.mel_lengths(units_lens)
        off = (feats_lens - expected).abs()
        if bool((off > self.length_tolerance).any()):
            i = int(off.argmax())
            utt = batch.get("utt_ids", [None] * len(off))[i]
            raise ValueError(f"unit_vocoder: utterance {utt!r} has {int(feats_lens[i])} mel frames but its "
                             f"{int(units_lens[i])} units at {self.unit_rate}/s imply {int(expected[i])}: the units "
                             "and the mels are not of the same audio (or the unit rate is wrong)")
        speakers = None
        if self.num_speakers:
            speakers = batch.get(self.speaker_label)
            if speakers is None:
                raise ValueError(f"unit_vocoder: the batch has no {self.speaker_label!r} speaker ids "
                                 f"(give the stream labels: {{{self.speaker_label}: utt2spk}})")
            if self.training and self.speaker_dropout > 0:
                drop = torch.rand(speakers.shape, device=speakers.device) < self.speaker_dropout
                speakers = torch.where(drop, torch.full_like(speakers, self.num_speakers), speakers)
        f0 = None
        if self.f0_embed is not None:
            f0 = batch.get(self.f0_key)
            if f0 is None:
                raise ValueError(f"unit_vocoder: the batch has no {self.f0_key!r} F0 bins (give the stream "
                                 f"int_seqs: {{{self.f0_key}: f0bins}} from `stk data pitch --bins-per-octave`)")
            f0_lens = batch[f"{self.f0_key}_lens"]
            off = (f0_lens - feats_lens).abs()
            if bool((off > self.length_tolerance).any()):
                i = int(off.argmax())
                utt = batch.get("utt_ids", [None] * len(off))[i]
                raise ValueError(f"unit_vocoder: utterance {utt!r} has {int(feats_lens[i])} mel frames but "
                                 f"{int(f0_lens[i])} F0 frames (F0 needs --frame-shift-ms 16: one per mel frame)")
        coarse, mel, _ = self.mels(units, units_lens, speakers, mel_lens=feats_lens, f0=f0)
        mask = lengths_to_mask(feats_lens, feats.size(1)).unsqueeze(-1).to(mel.dtype)
        denom = mask.sum() * mel.size(-1)
        l1 = ((mel - feats).abs() * mask).sum() / denom
        stats = {"mel_l1": l1.item()}
        loss = l1
        if self.postnet_in is not None:
            c_l1 = ((coarse - feats).abs() * mask).sum() / denom
            loss = l1 + c_l1
            stats["coarse_l1"] = c_l1.item()
        stats["loss"] = loss.item()
        return {"loss": loss, "stats": stats, "weight": float(mask.sum())}
