"""RNN-T decoding: batched greedy search, a batched modified beam search, and torchaudio's beam search.

``rnnt_beam_search`` (``stk decode --method rnnt_beam``) runs :func:`rnnt_modified_beam_search_hyps`
by default: icefall's "modified beam search" (at most one symbol per frame, hypotheses of equal
token sequences merged), batched over utterances and hypotheses (one joiner and one predictor
call per frame for the whole batch), with optional shallow fusion of an external LM
(:class:`~stk.decode.lm.LMScorer`). ``algorithm="torchaudio"`` runs torchaudio's
``RNNTBeamSearch`` (Graves-style, several symbols per frame) one utterance at a time.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from stk.decode.beam_search import Hyp
from stk.modules.rnnt import RNNTHead, make_rnnt_beam_search

__all__ = ["rnnt_greedy", "rnnt_greedy_hyps", "rnnt_beam_search", "rnnt_beam_search_hyps",
           "rnnt_modified_beam_search_hyps"]

_P1, _P2, _M = 1_000_003, 999_983, 2_147_483_647  # rolling hashes of token sequences (mod a 31-bit prime)


def _check(head: RNNTHead, enc: Tensor, enc_lens: Tensor) -> None:
    if enc.dim() != 3 or enc.size(-1) != head.enc_dim:
        raise ValueError(f"enc must be (B, T, {head.enc_dim}), got {tuple(enc.shape)}")
    if enc_lens.shape != (enc.size(0),):
        raise ValueError(f"enc_lens must be ({enc.size(0)},), got {tuple(enc_lens.shape)}")
    if enc.size(0) and (int(enc_lens.min()) < 0 or int(enc_lens.max()) > enc.size(1)):
        raise ValueError(f"enc_lens must be in [0, {enc.size(1)}], got {enc_lens.tolist()}")


@torch.no_grad()
def rnnt_greedy_hyps(head: RNNTHead, enc: Tensor, enc_lens: Tensor, max_symbols_per_step: int = 5) -> list[Hyp]:
    """Batched greedy transducer search.

    At each frame every utterance emits its arg-max symbol until it picks blank (or has emitted
    ``max_symbols_per_step`` symbols on this frame), then moves to the next frame. The predictor
    runs once per symbol step for the whole batch; rows that did not emit keep their state.

    Args:
        head: the RNN-T head.
        enc: (B, T, E) encoder output.
        enc_lens: (B,) valid frames.
        max_symbols_per_step: cap on symbols per frame (>= 1).

    Returns:
        One :class:`Hyp` per utterance; ``score`` is the log-probability of the greedy path.
    """
    _check(head, enc, enc_lens)
    if max_symbols_per_step < 1:
        raise ValueError(f"max_symbols_per_step must be >= 1, got {max_symbols_per_step}")
    B = enc.size(0)
    blank = head.blank
    device = enc.device
    enc_lens = enc_lens.to(device)
    enc_p = head.joiner.project_enc(enc)  # (B, T, J)
    tokens = torch.full((B, 1), blank, dtype=torch.long, device=device)
    pred, state = head.predictor(tokens)
    pred_p = head.joiner.project_pred(pred[:, 0])  # (B, J)
    scores = torch.zeros(B, dtype=torch.float64, device=device)
    out: list[list[int]] = [[] for _ in range(B)]
    t_max = int(enc_lens.max()) if B else 0
    for t in range(t_max):
        going = t < enc_lens  # (B,) rows still on frame t
        for _ in range(max_symbols_per_step):
            logp = torch.log_softmax(head.joiner.joint(enc_p[:, t], pred_p).float(), dim=-1)
            best_lp, best = logp.max(dim=-1)
            scores += torch.where(going, best_lp.double(), torch.zeros_like(scores))
            emit = going & (best != blank)
            if not bool(emit.any()):
                break
            for b in emit.nonzero().flatten().tolist():
                out[b].append(int(best[b]))
            new_pred, new_state = head.predictor.step(best, state)
            keep = emit.view(1, B, 1)
            state = (torch.where(keep, new_state[0], state[0]), torch.where(keep, new_state[1], state[1]))
            pred_p = torch.where(emit.unsqueeze(1), head.joiner.project_pred(new_pred), pred_p)
            going = emit
    return [Hyp(tokens=out[b], score=float(scores[b])) for b in range(B)]


def rnnt_greedy(head: RNNTHead, enc: Tensor, enc_lens: Tensor, max_symbols_per_step: int = 5) -> list[list[int]]:
    """Batched greedy search; (B, T, E), (B,) -> token ids per utterance (see :func:`rnnt_greedy_hyps`)."""
    return [h.tokens for h in rnnt_greedy_hyps(head, enc, enc_lens, max_symbols_per_step)]


@torch.no_grad()
def rnnt_beam_search_hyps(
    head: RNNTHead,
    enc: Tensor,
    enc_lens: Tensor,
    beam_size: int = 4,
    *,
    nbest: int = 1,
    step_max_tokens: int = 100,
    length_normalise: bool = False,
) -> list[list[Hyp]]:
    """Transducer beam search with ``torchaudio.models.RNNTBeamSearch``, one utterance at a time.

    Args:
        head: the RNN-T head.
        enc: (B, T, E) encoder output.
        enc_lens: (B,) valid frames.
        beam_size: beam width (capped at V - 1: torchaudio's first expansion needs that many
            non-blank symbols).
        nbest: hypotheses returned per utterance (<= beam_size).
        step_max_tokens: cap on symbols per frame.
        length_normalise: rank by length-normalised log-probability (see ``make_rnnt_beam_search``).

    Returns:
        Per utterance, up to ``nbest`` :class:`Hyp`, best first; ``score`` is torchaudio's
        hypothesis log-probability (paths of equal token sequences merged).
    """
    _check(head, enc, enc_lens)
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if not 1 <= nbest <= beam_size:
        raise ValueError(f"nbest must be in [1, beam_size={beam_size}], got {nbest}")
    beam_size = min(beam_size, head.vocab_size - 1)
    nbest = min(nbest, beam_size)
    search = make_rnnt_beam_search(head, step_max_tokens=step_max_tokens, length_normalise=length_normalise)
    model = search.model
    results: list[list[Hyp]] = []
    for b in range(enc.size(0)):
        n = int(enc_lens[b])
        if n == 0:
            results.append([Hyp(tokens=[], score=0.0)])
            continue
        hypos = search(enc[b, :n], torch.tensor(n, device=enc.device), beam_size)
        # torchaudio already returns them best first under the sort key.
        results.append([Hyp(tokens=model.to_stk_tokens(h[0]), score=float(h[3])) for h in hypos[:nbest]])
    return results


@torch.no_grad()
def rnnt_modified_beam_search_hyps(
    head: RNNTHead,
    enc: Tensor,
    enc_lens: Tensor,
    beam_size: int = 4,
    *,
    nbest: int = 1,
    length_normalise: bool = False,
    lm: Any | None = None,
    lm_weight: float = 0.0,
) -> list[list[Hyp]]:
    """Modified beam search (icefall's), batched over utterances: at most one symbol per frame.

    At each frame every hypothesis is extended by blank or by one token; of the ``beam_size × V``
    extensions of an utterance's hypotheses the ``beam_size`` best (by log-probability, plus
    ``lm_weight`` × the LM's log-probability on tokens) are kept, and kept extensions with the
    same token sequence are merged (their probabilities added). The joiner runs once per frame on
    all (B × beam) hypotheses, the predictor once per frame on those that emitted a token.

    Args:
        head: the RNN-T head (eval mode).
        enc: (B, T, E) encoder output.
        enc_lens: (B,) valid frames.
        beam_size: hypotheses kept per utterance.
        nbest: hypotheses returned per utterance (<= beam_size).
        length_normalise: rank hypotheses (the per-frame beam and the final list) by
            ``score / (tokens + 1)`` instead of ``score``; hypotheses with equal token sequences have
            equal lengths, so merging is unaffected.
        lm: an :class:`~stk.decode.lm.LMScorer` over the same vocabulary, or None.
        lm_weight: shallow-fusion weight (>= 0) of ``lm`` on token (non-blank) extensions.

    Returns:
        Per utterance, up to ``nbest`` :class:`Hyp`, best first; ``score`` is the fused log-score
        (the RNN-T log-probability when there is no LM), before length normalisation.
    """
    _check(head, enc, enc_lens)
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if not 1 <= nbest <= beam_size:
        raise ValueError(f"nbest must be in [1, beam_size={beam_size}], got {nbest}")
    if lm_weight < 0:
        raise ValueError(f"lm_weight must be >= 0, got {lm_weight}")
    V, blank, K, B = head.vocab_size, head.blank, beam_size, enc.size(0)
    if lm is not None and lm_weight > 0 and lm.vocab_size != V:
        raise ValueError(f"the LM's vocabulary ({lm.vocab_size}) differs from the RNN-T head's ({V})")
    use_lm = lm is not None and lm_weight > 0
    if B == 0:
        return []
    dev = enc.device
    N = B * K
    enc_lens = enc_lens.to(dev)
    enc_p = head.joiner.project_enc(enc)  # (B, T, J)
    pred, (h, c) = head.predictor(torch.full((N, 1), blank, dtype=torch.long, device=dev))
    pred_p = head.joiner.project_pred(pred[:, 0])  # (N, J)
    scores = torch.full((B, K), float("-inf"), dtype=torch.float64, device=dev)
    scores[:, 0] = 0.0
    h1 = torch.zeros(B, K, dtype=torch.long, device=dev)
    h2, length = torch.zeros_like(h1), torch.zeros_like(h1)
    lm_state = lm.init_state(N) if use_lm else None
    token_mask = torch.ones(V, dtype=torch.bool, device=dev)
    token_mask[blank] = False
    ar = torch.arange(K, device=dev)
    offs = (torch.arange(B, device=dev) * K)[:, None]  # (B, 1)
    back: list[tuple[Tensor, Tensor]] = []  # per frame: (source slot, emitted token or -1), each (B, K)
    for t in range(int(enc_lens.max())):
        active = (t < enc_lens)[:, None]  # (B, 1)
        logits = head.joiner.joint(enc_p[:, t, None, :], pred_p.view(B, K, -1))  # (B, K, V)
        lp = torch.log_softmax(logits.float(), dim=-1).double()
        if use_lm:
            lp = lp + torch.where(token_mask, lm_weight * lm.score(lm_state).view(B, K, V).double(), 0.0)
        cand = (scores[:, :, None] + lp).view(B, K * V)
        if length_normalise:  # rank by score / (tokens + 1), as torchaudio's search does per frame
            key = cand / (length[:, :, None] + token_mask.long() + 1).view(B, K * V)
            idx = key.topk(K, dim=1).indices  # sorted, best first
            top = cand.gather(1, idx)
        else:
            top, idx = cand.topk(K, dim=1)
        src, tok = idx // V, idx % V
        src = torch.where(active, src, ar)
        top = torch.where(active, top, scores)
        emit = active & (tok != blank) & torch.isfinite(top)
        tok = torch.where(emit, tok, -1)
        # token-sequence identity: two rolling hashes and the length
        n1 = torch.where(emit, (h1.gather(1, src) * _P1 + tok + 1) % _M, h1.gather(1, src))
        n2 = torch.where(emit, (h2.gather(1, src) * _P2 + tok + 1) % _M, h2.gather(1, src))
        nlen = length.gather(1, src) + emit.long()
        same = (n1[:, :, None] == n1[:, None, :]) & (n2[:, :, None] == n2[:, None, :]) & (
            nlen[:, :, None] == nlen[:, None, :])  # (B, K, K)
        first = same.long().argmax(-1) == ar  # the best member of its group (top is sorted)
        merged = torch.logsumexp(torch.where(same, top[:, None, :], float("-inf")), dim=-1)
        scores = torch.where(first, merged, float("-inf"))
        h1, h2, length = n1, n2, nlen
        back.append((src, tok))
        flat = (offs + src).view(-1)  # (N,) new slot <- old slot
        h, c, pred_p = h[:, flat], c[:, flat], pred_p[flat]
        e = emit.view(-1).nonzero().flatten()
        if e.numel():
            out, (he, ce) = head.predictor.step(tok.view(-1)[e], (h[:, e], c[:, e]))
            h, c = h.index_copy(1, e, he), c.index_copy(1, e, ce)
            pred_p = pred_p.index_copy(0, e, head.joiner.project_pred(out))
        if use_lm:
            lm_state = lm.advance(lm.select(lm_state, flat), tok.view(-1))
    # backtrace every slot
    cur = ar.expand(B, K)
    toks = []
    for src, tok in reversed(back):
        toks.append(tok.gather(1, cur))
        cur = src.gather(1, cur)
    seqs = torch.stack(toks[::-1], dim=-1).cpu().tolist() if toks else [[[] for _ in range(K)] for _ in range(B)]
    sc = scores.cpu().tolist()
    results: list[list[Hyp]] = []
    for b in range(B):
        hyps = [Hyp(tokens=[x for x in seqs[b][k] if x >= 0], score=sc[b][k]) for k in range(K) if sc[b][k] > float("-inf")]
        key = (lambda hy: hy.score / (len(hy.tokens) + 1)) if length_normalise else (lambda hy: hy.score)
        results.append(sorted(hyps, key=key, reverse=True)[:nbest])
    return results


def rnnt_beam_search(
    head: RNNTHead, enc: Tensor, enc_lens: Tensor, beam_size: int = 4, *, length_normalise: bool = False,
    algorithm: str = "modified", lm: Any | None = None, lm_weight: float = 0.0,
) -> list[list[int]]:
    """Best token ids per utterance.

    ``algorithm``: ``"modified"`` (:func:`rnnt_modified_beam_search_hyps`, batched, optional LM
    fusion) or ``"torchaudio"`` (:func:`rnnt_beam_search_hyps`, one utterance at a time, no LM).
    """
    if algorithm == "modified":
        hyps = rnnt_modified_beam_search_hyps(head, enc, enc_lens, beam_size, length_normalise=length_normalise,
                                              lm=lm, lm_weight=lm_weight)
    elif algorithm == "torchaudio":
        if lm is not None and lm_weight > 0:
            raise ValueError("LM fusion needs algorithm='modified'")
        hyps = rnnt_beam_search_hyps(head, enc, enc_lens, beam_size, length_normalise=length_normalise)
    else:
        raise ValueError(f"algorithm must be 'modified' or 'torchaudio', got {algorithm!r}")
    return [h[0].tokens if h else [] for h in hyps]
