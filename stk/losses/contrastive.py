"""The wav2vec 2.0 / w2v-BERT contrastive task over masked positions.

For every masked frame, the context vector must identify its own quantized target among ``K``
distractors: the targets of other masked frames of the same utterance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sample_negatives(
    utt_of: torch.Tensor, num_negatives: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distractor indices for ``N`` masked positions, drawn from the same utterance.

    Args:
        utt_of: (N,) utterance index of each masked position, non-decreasing (the row-major order
            of ``mask.nonzero()``).
        num_negatives: K.

    Returns ``(neg (N, K), valid (N,))``: indices into the N positions, never the position
    itself (with replacement); ``valid`` is False for positions whose utterance has fewer than
    two masked frames (they get no distractors and should be left out of the loss).
    """
    n = utt_of.numel()
    if n == 0:
        return torch.zeros(0, num_negatives, dtype=torch.long), torch.zeros(0, dtype=torch.bool)
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    utt_of = utt_of.cpu()
    counts = torch.bincount(utt_of)
    offsets = torch.cumsum(counts, 0) - counts
    size = counts[utt_of]  # masked frames in this position's utterance
    local = torch.arange(n) - offsets[utt_of]
    r = (torch.rand(n, num_negatives, generator=generator) * (size - 1).clamp(min=1)[:, None]).long()
    r = r + (r >= local[:, None]).long()  # skip the position itself
    neg = offsets[utt_of][:, None] + r.clamp(max=(size - 1)[:, None])
    return neg, size >= 2


def contrastive_loss(
    context: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor, temperature: float = 0.1,
    mask_identical: bool = False, valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE over cosine similarities, summed over positions.

    Args:
        context: (N, D) projected context vectors at masked positions.
        targets: (N, D) quantized targets at the same positions.
        negatives: (N, K) indices into ``targets`` of each position's distractors.
        temperature: κ.
        valid: (N,) bool, positions to include (``sample_negatives``' second output); default all.

    ``mask_identical`` ignores distractors identical to the positive (same codevector), as
    wav2vec 2.0 does; off by default, because with small codebooks it makes a collapsed codebook
    (every frame the same code) a zero-loss solution, while unmasked identical distractors make
    collapse the *worst* case (loss log(1+K)).
    Returns ``(loss_sum, accuracy_count)`` where the count is how often the positive scored highest.
    """
    if context.shape != targets.shape:
        raise ValueError(f"context {tuple(context.shape)} and targets {tuple(targets.shape)} differ")
    negs = targets[negatives]  # (N, K, D)
    pos = targets
    if valid is not None:
        valid = valid.to(context.device)
        context, pos, negs = context[valid], pos[valid], negs[valid]
    cands = torch.cat([pos[:, None, :], negs], dim=1)  # (N, 1+K, D)
    logits = F.cosine_similarity(context[:, None, :].float(), cands.float(), dim=-1) / temperature
    if mask_identical:
        same = (negs == pos[:, None, :]).all(-1)
        logits[:, 1:] = logits[:, 1:].masked_fill(same, float("-inf"))
    loss = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device), reduction="sum")
    correct = (logits.argmax(-1) == 0).sum()
    return loss, correct


def masked_contrastive(
    context: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, num_negatives: int,
    temperature: float = 0.1, mask_identical: bool = False,
) -> tuple[torch.Tensor, float]:
    """The contrastive task of a span-masked batch: mean InfoNCE over masked frames and accuracy.

    Args:
        context: (B, T, D) projected context vectors.
        targets: (B, T, D) quantized targets.
        mask: (B, T) True at masked frames; distractors come from the same utterance's masked
            frames (:func:`sample_negatives`), utterances with fewer than two are left out.
    """
    neg, ok = sample_negatives(mask.nonzero()[:, 0], num_negatives)
    n = max(1, int(ok.sum()))
    loss, correct = contrastive_loss(context[mask], targets[mask], neg.to(context.device), temperature,
                                     mask_identical=mask_identical, valid=ok)
    return loss / n, correct.item() / n
