"""Span masking for masked prediction (wav2vec 2.0 / w2v-BERT frames, SpanBERT characters).

:func:`span_mask` picks ``round(ratio * L / span)`` span starts per sequence (at least
``min_spans``), uniformly among the positions where a whole span fits, without replacement;
spans may overlap, so the masked fraction is at most ``ratio`` (about ``1 - exp(-ratio)`` for
long sequences with many spans, exactly ``min(1, n·span/L)`` when they do not overlap).
"""

from __future__ import annotations

import torch


def span_mask(
    lengths: torch.Tensor, *, ratio: float, span: int, min_spans: int = 1, max_len: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random span mask ``(B, T)`` (True = masked) inside each sequence's valid length.

    Args:
        lengths: (B,) valid lengths.
        ratio: target share of positions covered by spans (before overlaps), in [0, 1].
        span: span length (clipped to the sequence length).
        min_spans: spans per sequence at least (0 allows unmasked sequences).
        max_len: T (default ``lengths.max()``).
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    if span < 1 or min_spans < 0:
        raise ValueError(f"span must be >= 1 and min_spans >= 0, got {span}, {min_spans}")
    b = lengths.numel()
    t = int(max_len if max_len is not None else (lengths.max().item() if b else 0))
    mask = torch.zeros(b, t, dtype=torch.bool)
    lens = lengths.cpu().tolist()
    for i, n in enumerate(lens):
        if n <= 0:
            continue
        s = min(span, n)
        n_starts = n - s + 1
        k = min(n_starts, max(min_spans, int(round(ratio * n / s))))
        if k == 0:
            continue
        starts = torch.randperm(n_starts, generator=generator)[:k]
        idx = (starts[:, None] + torch.arange(s)[None, :]).reshape(-1)
        mask[i, idx] = True
    return mask.to(lengths.device)


def concat_padded(
    a: torch.Tensor, a_lens: torch.Tensor, b: torch.Tensor, b_lens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Join two padded batches per row: ``a`` (B, Ta, ...) then ``b`` (B, Tb, ...), valid parts only.

    Returns the joined batch ``(B, max(a_len + b_len), ...)`` (zero-padded), its lengths, and the
    index ``(B, Tb)`` where each position of ``b`` landed (for reading predictions back).
    """
    if a.size(0) != b.size(0) or a.shape[2:] != b.shape[2:]:
        raise ValueError(f"cannot join batches of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    lens = a_lens + b_lens
    bsz, tb = b.size(0), b.size(1)
    out = a.new_zeros((bsz, int(lens.max().item()), *a.shape[2:]))
    ta = a.size(1)
    pos_a = torch.arange(ta, device=a.device)[None, :].expand(bsz, ta)
    keep_a = pos_a < a_lens[:, None]
    rows = torch.arange(bsz, device=a.device)[:, None]
    out[rows.expand(bsz, ta)[keep_a], pos_a[keep_a]] = a[keep_a]
    pos_b = a_lens[:, None] + torch.arange(tb, device=a.device)[None, :]
    keep_b = torch.arange(tb, device=a.device)[None, :] < b_lens[:, None]
    out[rows.expand(bsz, tb)[keep_b], pos_b[keep_b]] = b[keep_b]
    return out, lens, pos_b.clamp(max=out.size(1) - 1)
