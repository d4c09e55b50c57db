"""MAESTRO pre-training (Chen et al., 2022): matched speech–text representations for RNN-T.

Per batch kind (what the batch holds):

- **speech only** (``feats``): contrastive loss (wav2vec 2.0 / w2v-BERT style) on the speech
  encoder: spans of front-end frames are masked, the lower layers' output at masked frames must
  pick its Gumbel-quantized target among distractors (+ codebook diversity).
- **paired** (``feats`` + ``text`` + ``durations`` from ``stk align``): RNN-T loss of the speech
  path (speech encoder + shared encoder); text embeddings (extractor) repeated by the alignment
  durations and refined are matched to the speech-encoder output by **MSE** (modality matching);
  the duration model learns the durations; and the **aligned MLM**: the refined text, masked in
  time and frequency (SpecAugment-style), goes through the shared encoder and is trained with
  the RNN-T loss to predict the text.
- **text only** (``text``): aligned MLM with durations from the duration model.

``variant: speech-only`` keeps only the contrastive loss (the ablation's baseline); paired
and text batches are then rejected. Fine-tuning reuses ``encoder.*`` and ``rnnt.*``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from stk.features.fbank import SpecAugmentConfig, spec_augment
from stk.losses.contrastive import masked_contrastive
from stk.losses.masking import span_mask
from stk.models import ENCODERS, MODELS, StkModel
from stk.modules.conformer import ConformerLayers, lengths_to_mask
from stk.modules.maestro import DurationModel, MaestroEncoder, TextEmbeddingExtractor, upsample
from stk.modules.quantizer import GumbelQuantizer
from stk.modules.rnnt import RNNTHead
from stk.tokenizer import BLANK

ENCODERS.register("maestro")(MaestroEncoder)


@MODELS.register("maestro")
class MaestroModel(StkModel):
    """Args:
        vocab_size, input_dim: from the tokenizer and features.
        encoder: keyword arguments of :class:`~stk.modules.maestro.MaestroEncoder`.
        text_encoder: keyword arguments of :class:`~stk.modules.maestro.TextEmbeddingExtractor`
            (``vocab_size``/``d_model`` are set).
        refiner_layers: Conformer layers (self-attention + depthwise convolution) of the refiner.
        duration: keyword arguments of :class:`~stk.modules.maestro.DurationModel`.
        rnnt: keyword arguments of :class:`~stk.modules.rnnt.RNNTHead`.
        quantizer: keyword arguments of :class:`~stk.modules.quantizer.GumbelQuantizer`.
        variant: ``maestro`` or ``speech-only``.
        speech_mask_ratio, speech_span, num_negatives, temperature, diversity_weight: contrastive task.
        text_masking: SpecAugment settings of the aligned MLM's time/frequency masks.
        contrastive_weight, rnnt_weight, mm_weight, amlm_weight, duration_weight: loss weights.
        text_target, durations_key: batch keys.
    """

    def __init__(
        self, *, vocab_size: int, input_dim: int, encoder: dict[str, Any] | None = None,
        text_encoder: dict[str, Any] | None = None, refiner_layers: int = 2, duration: dict[str, Any] | None = None,
        rnnt: dict[str, Any] | None = None, quantizer: dict[str, Any] | None = None,
        variant: Literal["maestro", "speech-only"] = "maestro", speech_mask_ratio: float = 0.4,
        speech_span: int = 5, num_negatives: int = 50, temperature: float = 0.1, diversity_weight: float = 0.1,
        text_masking: dict[str, Any] | None = None, contrastive_weight: float = 1.0, rnnt_weight: float = 1.0,
        mm_weight: float = 1.0, amlm_weight: float = 1.0, duration_weight: float = 1.0,
        text_target: str = "text", durations_key: str = "durations",
    ) -> None:
        super().__init__()
        from stk.config import check_call_kwargs, from_dict

        if variant not in ("maestro", "speech-only"):
            raise ValueError(f"variant must be maestro or speech-only, got {variant!r}")
        for name, w in dict(contrastive_weight=contrastive_weight, rnnt_weight=rnnt_weight, mm_weight=mm_weight,
                            amlm_weight=amlm_weight, duration_weight=duration_weight).items():
            if w < 0:
                raise ValueError(f"{name} must be >= 0, got {w}")
        if refiner_layers < 1:
            raise ValueError(f"refiner_layers must be >= 1, got {refiner_layers}")
        enc_conf = check_call_kwargs(MaestroEncoder, dict(encoder or {}), "model.conf.encoder")
        self.encoder = MaestroEncoder(input_dim=input_dim, **enc_conf)
        d = self.encoder.output_dim
        q_conf = check_call_kwargs(GumbelQuantizer, {"code_dim": d, **(quantizer or {})}, "model.conf.quantizer")
        self.quantizer = GumbelQuantizer(input_dim=d, **{**q_conf, "output_dim": d})
        self.speech_mask = nn.Parameter(torch.empty(d).uniform_())
        self.context_proj = nn.Linear(d, d)
        head_conf = check_call_kwargs(RNNTHead, dict(rnnt or {}), "model.conf.rnnt")
        self.rnnt = RNNTHead(vocab_size=vocab_size, enc_dim=d, blank=BLANK, **head_conf)
        self.variant = variant
        if variant == "maestro":
            t_conf = check_call_kwargs(TextEmbeddingExtractor, dict(text_encoder or {}), "model.conf.text_encoder")
            self.text_encoder = TextEmbeddingExtractor(vocab_size=vocab_size, d_model=d, **t_conf)
            self.refiner = ConformerLayers(d_model=d, num_heads=enc_conf.get("num_heads", 4),
                                           ffn_dim=enc_conf.get("ffn_dim", 1024), num_layers=refiner_layers,
                                           kernel_size=enc_conf.get("kernel_size", 15),
                                           dropout=enc_conf.get("dropout", 0.1))
            dur_conf = check_call_kwargs(DurationModel, dict(duration or {}), "model.conf.duration")
            self.duration = DurationModel(d_model=d, **dur_conf)
        self.text_masking = from_dict(SpecAugmentConfig, text_masking or {"num_freq_masks": 2, "freq_mask_width": d // 8,
                                                                          "num_time_masks": 4, "time_mask_width": 20,
                                                                          "time_mask_max_ratio": 0.1},
                                      "model.conf.text_masking")
        self.speech_mask_ratio, self.speech_span = speech_mask_ratio, speech_span
        self.num_negatives, self.temperature, self.diversity_weight = num_negatives, temperature, diversity_weight
        self.w = dict(contrastive=contrastive_weight, rnnt=rnnt_weight, mm=mm_weight, amlm=amlm_weight,
                      duration=duration_weight)
        self.text_target, self.durations_key = text_target, durations_key

    def min_input_length(self) -> int:
        return self.encoder.min_input_length()

    # -- losses -----------------------------------------------------------------------------------

    def contrastive(self, feats: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        x, lens = self.encoder.features(feats, lens)
        valid = lengths_to_mask(lens, x.size(1))
        q, _, div = self.quantizer(x, valid)
        m = span_mask(lens, ratio=self.speech_mask_ratio, span=self.speech_span, max_len=x.size(1)) & valid
        c = self.encoder.speech(torch.where(m[..., None], self.speech_mask.to(x.dtype), x), lens)
        con, acc = masked_contrastive(self.context_proj(c), q, m, self.num_negatives, self.temperature)
        return con + self.diversity_weight * div, {"contrastive": con.item(), "diversity": div.item(),
                                                   "contrastive_acc": acc}

    def text_path(self, ids: torch.Tensor, lens: torch.Tensor, durations: torch.Tensor | None):
        """Text embeddings -> (durations) -> upsampled and refined ``(B, T, D)``; returns also the
        embeddings (for the duration model) and the frame lengths."""
        e = self.text_encoder(ids, lens)
        if durations is None:
            durations = self.duration.predict(e.detach(), lens)
        up, t_lens = upsample(e, durations, lens)
        return self.refiner(up, t_lens), e, t_lens

    def aligned_mlm(self, refined: torch.Tensor, t_lens: torch.Tensor, ys: torch.Tensor, ylens: torch.Tensor) -> torch.Tensor:
        """Masked (time + frequency) refined text -> shared encoder -> RNN-T loss on the text."""
        masked = spec_augment(refined, t_lens, self.text_masking) if self.training else refined
        return self.rnnt.loss(self.encoder.shared(masked, t_lens), t_lens, ys, ylens)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        has_speech, has_text = "feats" in batch, self.text_target in batch
        stats: dict[str, float] = {}
        terms: list[torch.Tensor] = []

        def add(name: str, value: torch.Tensor) -> None:
            terms.append(self.w[name] * value)
            stats[name] = value.item()

        if self.variant == "speech-only" or (has_speech and not has_text):
            if not has_speech:
                raise ValueError(f"variant 'speech-only' needs speech, got a text-only batch (stream {batch.get('stream')!r})")
            loss, st = self.contrastive(batch["feats"], batch["feats_lens"])
            add("contrastive", loss)
            stats.update({k: v for k, v in st.items() if k != "contrastive"})
        elif has_text:
            ys, ylens = batch[self.text_target], batch[f"{self.text_target}_lens"]
            if has_speech:
                if self.durations_key not in batch:
                    raise ValueError(f"paired batch without {self.durations_key!r}: run `stk align` on the paired "
                                     f"data dir and list it under the stream's int_seqs")
                durs = batch[self.durations_key]
                x, s_lens = self.encoder.features(batch["feats"], batch["feats_lens"])
                speech = self.encoder.speech(x, s_lens)
                add("rnnt", self.rnnt.loss(self.encoder.shared(speech, s_lens), s_lens, ys, ylens))
                refined, e, t_lens = self.text_path(ys, ylens, durs)
                t = min(refined.size(1), speech.size(1))
                both = lengths_to_mask(torch.minimum(s_lens, t_lens), t)
                add("mm", F.mse_loss(refined[:, :t][both], speech[:, :t][both]))
                add("duration", self.duration.loss(e.detach(), durs, ylens))
                stats["len_mismatch"] = (s_lens - t_lens).abs().float().mean().item()
            else:
                refined, _, t_lens = self.text_path(ys, ylens, None)
            add("amlm", self.aligned_mlm(refined, t_lens, ys, ylens))
        else:
            raise ValueError(f"batch of stream {batch.get('stream')!r} has neither feats nor {self.text_target!r}")
        loss = torch.stack(terms).sum()
        stats["loss"] = loss.item()
        b = (batch["feats"] if has_speech else batch[self.text_target]).size(0)
        return {"loss": loss, "stats": stats, "weight": float(b)}
