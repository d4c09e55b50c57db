"""Conformer transducer (RNN-T) with an optional auxiliary CTC head.

The joint network's loss is torchaudio's ``rnnt_loss`` on the full lattice or on a pruned band
(``rnnt: {loss: pruned}``, :mod:`stk.modules.rnnt_pruned`); decoding is ``rnnt_greedy`` (batched) or
``rnnt_beam`` (a batched modified beam search, optionally with LM fusion) through ``stk decode``.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F

from stk.models import MODELS
from stk.models.speech import SpeechEncoderModel
from stk.modules.rnnt import RNNTHead
from stk.tokenizer import BLANK


@MODELS.register("transducer")
class TransducerModel(SpeechEncoderModel):
    """Speech encoder + RNN-T head (+ CTC).

    Args:
        vocab_size, input_dim: set by the toolkit.
        encoder: ``{name, conf}`` of a registered encoder.
        rnnt: keyword arguments of :class:`~stk.modules.rnnt.RNNTHead` (sizes of predictor and joiner;
            ``loss: pruned`` with ``prune_range``, ``simple_loss_scale``, ``warm_steps`` for k2's pruned
            RNN-T loss; stats then add ``rnnt_simple`` and ``rnnt_pruned``, and ``rnnt`` is their
            warm-up weighted sum in training, the full loss in validation).
        ctc_weight: weight of an auxiliary CTC loss on the encoder output (0 disables it); both losses
            are per utterance (summed over tokens, averaged over the batch).
        target: batch key of the transcript.
        specaug: SpecAugment settings, or None.
    """

    def __init__(
        self, *, vocab_size: int, input_dim: int, encoder: dict[str, Any] | None = None,
        rnnt: dict[str, Any] | None = None, ctc_weight: float = 0.0, target: str = "text",
        specaug: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        from stk.config import check_call_kwargs

        if not 0.0 <= ctc_weight < 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1), got {ctc_weight}")
        d = self._build_front(input_dim=input_dim, vocab_size=vocab_size, encoder=encoder, specaug=specaug,
                              with_ctc=ctc_weight > 0)
        head_conf = check_call_kwargs(RNNTHead, dict(rnnt or {}), "model.conf.rnnt")
        self.rnnt = RNNTHead(vocab_size=vocab_size, enc_dim=d, blank=BLANK, **head_conf)
        self.decoder = None
        self.ctc_weight, self.target = ctc_weight, target

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        enc, enc_lens = self.encode(batch["feats"], batch["feats_lens"])
        ys, ylens = batch[self.target], batch[f"{self.target}_lens"]
        terms = self.rnnt.loss_terms(enc, enc_lens, ys, ylens)
        rnnt = terms["rnnt"]
        loss = (1.0 - self.ctc_weight) * rnnt
        stats = {k: v.item() for k, v in terms.items()}
        if self.ctc is not None:
            lp = self.ctc_log_probs(enc).transpose(0, 1)
            ctc = F.ctc_loss(lp, ys.clamp(min=0), enc_lens, ylens, blank=BLANK, reduction="sum", zero_infinity=True) / enc.size(0)
            loss = loss + self.ctc_weight * ctc
            stats["ctc"] = ctc.item()
        stats["loss"] = loss.item()
        return {"loss": loss, "stats": stats, "weight": float(enc.size(0))}
