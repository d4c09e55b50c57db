"""mSLAM pre-training (Bapna et al., 2022): one Conformer for speech and character text.

Losses, chosen by what a batch holds (``feats`` and/or the ``text`` target):

- **speech** (w2v-BERT): spans of feature-encoder frames are replaced by a learned mask vector;
  the contrastive block's output at masked frames must pick its Gumbel-quantized target among
  ``K`` distractors from the same utterance (+ codebook diversity), and the MLM block predicts the
  quantizer ids there.
- **text** (SpanBERT-style): spans of characters (``text_span``, 20 in the paper) are masked and
  predicted from the final output.
- **paired**: CTC from the (unmasked) speech output to the character transcript, and TLM: speech
  and transcript joined in one sequence, both span-masked, masked quantizer ids and characters
  predicted.

``variant`` reproduces the paper's comparison: ``w2v-bert`` (speech only), ``mslam-tlm`` (speech,
text, TLM), ``mslam-ctc`` (speech, text, TLM + CTC). Training batches from a paired stream get the
paired losses only (the paper's use of paired data); in evaluation every enabled loss the batch
supports is computed. Total: ``speech_weight·L_speech + text_weight·L_text + paired_weight·(L_ctc + L_tlm)``.
A warm-up (``paired_warmup_steps`` > 0, off by default) uses ``paired_warmup_weight`` instead of
``paired_weight`` for the first training updates, so that a small model's paired CTC leaves its
all-blank start before the paper's small weight takes over.
Fine-tuning reuses ``encoder.*`` (``{name: mslam}`` encoder in any speech model) via ``init``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from stk.losses.contrastive import masked_contrastive
from stk.losses.masking import concat_padded, span_mask
from stk.models import ENCODERS, MODELS, StkModel
from stk.modules.conformer import lengths_to_mask
from stk.modules.mslam_encoder import SPEECH, TEXT, MslamEncoder
from stk.modules.quantizer import GumbelQuantizer
from stk.tokenizer import BLANK

ENCODERS.register("mslam")(MslamEncoder)

Variant = Literal["w2v-bert", "mslam-tlm", "mslam-ctc"]


@MODELS.register("mslam")
class MslamModel(StkModel):
    """Args:
        vocab_size, input_dim: from the (character) tokenizer and features.
        encoder: keyword arguments of :class:`~stk.modules.mslam_encoder.MslamEncoder`.
        quantizer: keyword arguments of :class:`~stk.modules.quantizer.GumbelQuantizer`
            (``input_dim``/``output_dim`` are set to the encoder's width).
        variant: which losses are on (see the module docstring).
        speech_mask_ratio, speech_span: frame masking (share of frames covered, span in frames
            after subsampling).
        text_mask_ratio, text_span: character span masking.
        num_negatives, temperature: contrastive distractors per masked frame, and κ.
        mask_identical_negatives: drop distractors equal to the positive (wav2vec 2.0); see
            :func:`~stk.losses.contrastive.contrastive_loss` for why it is off by default.
        mlm_weight, diversity_weight: w2v-BERT's MLM and codebook-diversity terms.
        speech_weight, text_weight, paired_weight: the paper's 1.0 / 0.3 / 0.03.
        ctc_weight, tlm_weight: the two paired losses inside ``paired_weight``.
        paired_warmup_steps, paired_warmup_weight: for the first ``paired_warmup_steps`` training-mode
            forward calls (updates, without gradient accumulation) the paired losses are weighted
            ``paired_warmup_weight``, then ``paired_weight``. The clock is a buffer (``paired_clock``,
            only when ``paired_warmup_steps`` > 0), so it is checkpointed and a resumed run goes on.
        text_target: batch key of the character sequence.
    """

    def __init__(
        self, *, vocab_size: int, input_dim: int, encoder: dict[str, Any] | None = None,
        quantizer: dict[str, Any] | None = None, variant: Variant = "mslam-ctc",
        speech_mask_ratio: float = 0.4, speech_span: int = 10, text_mask_ratio: float = 0.15, text_span: int = 20,
        num_negatives: int = 50, temperature: float = 0.1, mask_identical_negatives: bool = False, mlm_weight: float = 1.0, diversity_weight: float = 0.1,
        speech_weight: float = 1.0, text_weight: float = 0.3, paired_weight: float = 0.03,
        ctc_weight: float = 1.0, tlm_weight: float = 1.0, text_target: str = "text",
        paired_warmup_steps: int = 0, paired_warmup_weight: float = 1.0,
    ) -> None:
        super().__init__()
        from stk.config import check_call_kwargs

        if variant not in ("w2v-bert", "mslam-tlm", "mslam-ctc"):
            raise ValueError(f"variant must be w2v-bert, mslam-tlm or mslam-ctc, got {variant!r}")
        for name, w in dict(mlm_weight=mlm_weight, diversity_weight=diversity_weight, speech_weight=speech_weight,
                            text_weight=text_weight, paired_weight=paired_weight, ctc_weight=ctc_weight,
                            tlm_weight=tlm_weight, paired_warmup_weight=paired_warmup_weight).items():
            if w < 0:
                raise ValueError(f"{name} must be >= 0, got {w}")
        if paired_warmup_steps < 0:
            raise ValueError(f"paired_warmup_steps must be >= 0, got {paired_warmup_steps}")
        enc_conf = check_call_kwargs(MslamEncoder, dict(encoder or {}), "model.conf.encoder")
        self.encoder = MslamEncoder(input_dim=input_dim, vocab_size=vocab_size, **enc_conf)
        d = self.encoder.output_dim
        q_conf = check_call_kwargs(GumbelQuantizer, {"code_dim": d, **(quantizer or {})}, "model.conf.quantizer")
        self.quantizer = GumbelQuantizer(input_dim=d, **{**q_conf, "output_dim": d})
        self.speech_mask = nn.Parameter(torch.empty(d).uniform_())
        self.text_mask = nn.Parameter(torch.randn(d) * 0.02)
        self.context_proj = nn.Linear(d, d)
        self.speech_mlm_head = nn.Linear(d, self.quantizer.g * self.quantizer.v)
        self.text_mlm_head = nn.Linear(d, vocab_size)
        self.ctc = nn.Linear(d, vocab_size) if variant == "mslam-ctc" else None
        self.variant = variant
        self.use_text = variant != "w2v-bert"
        self.speech_mask_ratio, self.speech_span = speech_mask_ratio, speech_span
        self.text_mask_ratio, self.text_span = text_mask_ratio, text_span
        self.num_negatives, self.temperature = num_negatives, temperature
        self.mask_identical = mask_identical_negatives
        self.mlm_weight, self.diversity_weight = mlm_weight, diversity_weight
        self.speech_weight, self.text_weight, self.paired_weight = speech_weight, text_weight, paired_weight
        self.ctc_weight, self.tlm_weight = ctc_weight, tlm_weight
        self.text_target = text_target
        self.paired_warmup_steps, self.paired_warmup_weight = int(paired_warmup_steps), float(paired_warmup_weight)
        if self.paired_warmup_steps > 0:  # training-mode forward calls so far (the warm-up clock)
            self.register_buffer("paired_clock", torch.zeros((), dtype=torch.long))

    def current_paired_weight(self) -> float:
        """The paired losses' weight now: ``paired_warmup_weight`` during the warm-up, else ``paired_weight``."""
        if self.paired_warmup_steps > 0 and int(self.paired_clock) < self.paired_warmup_steps:
            return self.paired_warmup_weight
        return self.paired_weight

    def min_input_length(self) -> int:
        return self.encoder.min_input_length()

    # -- pieces -----------------------------------------------------------------------------------

    def _masked_speech(self, feats: torch.Tensor, lens: torch.Tensor, front=None):
        """Feature encoder (or its given output ``front``), quantizer targets and span-masked input."""
        x, lens = front if front is not None else self.encoder.speech_features(feats, lens)
        valid = lengths_to_mask(lens, x.size(1))
        q, ids, div = self.quantizer(x, valid)
        m = span_mask(lens, ratio=self.speech_mask_ratio, span=self.speech_span, max_len=x.size(1)) & valid
        xm = torch.where(m[..., None], self.speech_mask.to(x.dtype), x)
        return xm, lens, q, ids, div, m

    def _masked_text(self, ids: torch.Tensor, lens: torch.Tensor):
        emb = self.encoder.text_features(ids)
        m = span_mask(lens, ratio=self.text_mask_ratio, span=self.text_span, max_len=ids.size(1))
        m &= lengths_to_mask(lens, ids.size(1))
        return torch.where(m[..., None], self.text_mask.to(emb.dtype), emb), m

    def _speech_mlm(self, out: torch.Tensor, ids: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Mean CE of the quantizer ids (every codebook) at masked frames."""
        logits = self.speech_mlm_head(out[m]).view(-1, self.quantizer.g, self.quantizer.v)
        return F.cross_entropy(logits.transpose(1, 2), ids[m], reduction="mean") if m.any() else out.sum() * 0

    def _text_mlm(self, out: torch.Tensor, ids: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, float]:
        if not m.any():
            return out.sum() * 0, 0.0
        logits = self.text_mlm_head(out[m])
        acc = (logits.argmax(-1) == ids[m]).float().mean().item()
        return F.cross_entropy(logits, ids[m], reduction="mean"), acc

    # -- losses -----------------------------------------------------------------------------------

    def speech_loss(self, feats: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        xm, lens, q, ids, div, m = self._masked_speech(feats, lens)
        c, out = self.encoder.layers(self.encoder.add_modality(xm, SPEECH), lens)
        con, acc = masked_contrastive(self.context_proj(c), q, m, self.num_negatives, self.temperature,
                                      self.mask_identical)
        mlm = self._speech_mlm(out, ids, m)
        loss = con + self.mlm_weight * mlm + self.diversity_weight * div
        return loss, {"contrastive": con.item(), "speech_mlm": mlm.item(), "diversity": div.item(),
                      "contrastive_acc": acc, "masked_frames": m.float().mean().item()}

    def text_loss(self, ids: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        emb, m = self._masked_text(ids, lens)
        _, out = self.encoder.layers(self.encoder.add_modality(emb, TEXT), lens)
        loss, acc = self._text_mlm(out, ids, m)
        return loss, {"text_mlm": loss.item(), "text_acc": acc}

    def ctc_loss(self, feats: torch.Tensor, lens: torch.Tensor, ys: torch.Tensor, ylens: torch.Tensor,
                 front=None) -> torch.Tensor:
        """CTC of the unmasked speech output against the characters, summed per utterance / B."""
        x, enc_lens = front if front is not None else self.encoder.speech_features(feats, lens)
        enc = self.encoder.layers(self.encoder.add_modality(x, SPEECH), enc_lens)[1]
        lp = torch.log_softmax(self.ctc(enc), -1).transpose(0, 1)
        return F.ctc_loss(lp, ys.clamp(min=0), enc_lens, ylens, blank=BLANK, reduction="sum",
                          zero_infinity=True) / feats.size(0)

    def tlm_loss(self, feats: torch.Tensor, lens: torch.Tensor, ys: torch.Tensor, ylens: torch.Tensor, front=None):
        """Speech + transcript in one masked sequence; predict masked quantizer ids and characters."""
        xm, slens, _, qids, _, m = self._masked_speech(feats, lens, front)
        temb, tm = self._masked_text(ys, ylens)
        xs = self.encoder.add_modality(xm, SPEECH)
        xt = self.encoder.add_modality(temb, TEXT)
        joint, jlens, where_text = concat_padded(xs, slens, xt, ylens)
        _, out = self.encoder.layers(joint, jlens)
        speech_out = out[:, : xm.size(1)]
        text_out = out[torch.arange(out.size(0), device=out.device)[:, None], where_text]
        s = self._speech_mlm(speech_out, qids, m)
        t, acc = self._text_mlm(text_out, ys.clamp(min=0), tm)
        return s + t, {"tlm_speech": s.item(), "tlm_text": t.item(), "tlm_text_acc": acc}

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        has_speech = "feats" in batch
        has_text = self.text_target in batch
        if has_text and not has_speech and not self.use_text:
            raise ValueError(f"variant {self.variant!r} trains on speech only, but a text-only batch arrived "
                             f"(stream {batch.get('stream')!r})")
        paired = has_speech and has_text and self.use_text
        loss = None
        stats: dict[str, float] = {}

        def add(term: torch.Tensor, w: float) -> None:
            nonlocal loss
            loss = w * term if loss is None else loss + w * term

        pw = self.current_paired_weight()
        if self.training and self.paired_warmup_steps > 0:
            self.paired_clock += 1
        feats, lens = batch.get("feats"), batch.get("feats_lens")
        ys, ylens = batch.get(self.text_target), batch.get(f"{self.text_target}_lens")
        if has_speech and not (paired and self.training):
            ls, st = self.speech_loss(feats, lens)
            add(ls, self.speech_weight)
            stats.update(st, speech=ls.item())
        if has_text and self.use_text and (not has_speech or not self.training):
            lt, st = self.text_loss(ys, ylens)
            add(lt, self.text_weight)
            stats.update(st, text=lt.item())
        if paired:
            front = self.encoder.speech_features(feats, lens)  # shared by CTC and TLM (no dropout in it)
            if self.ctc is not None and self.ctc_weight > 0:
                lc = self.ctc_loss(feats, lens, ys, ylens, front)
                add(lc, pw * self.ctc_weight)
                stats["ctc"] = lc.item()
            if self.tlm_weight > 0:
                lt, st = self.tlm_loss(feats, lens, ys, ylens, front)
                add(lt, pw * self.tlm_weight)
                stats.update(st, tlm=lt.item())
            if self.paired_warmup_steps > 0:
                stats["paired_weight"] = pw
        if loss is None:
            raise ValueError(f"batch of stream {batch.get('stream')!r} has neither feats nor {self.text_target!r}")
        stats["loss"] = loss.item()
        b = (feats if feats is not None else ys).size(0)
        return {"loss": loss, "stats": stats, "weight": float(b)}
