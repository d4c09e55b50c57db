"""RNN-T decoding: batched greedy search and torchaudio's beam search over an stk head."""

from __future__ import annotations

import torch
from torch import Tensor

from stk.decode.beam_search import Hyp
from stk.modules.rnnt import RNNTHead, make_rnnt_beam_search

__all__ = ["rnnt_greedy", "rnnt_greedy_hyps", "rnnt_beam_search", "rnnt_beam_search_hyps"]


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
            new_pred, new_state = head.predictor(best.unsqueeze(1), state)
            keep = emit.view(1, B, 1)
            state = (torch.where(keep, new_state[0], state[0]), torch.where(keep, new_state[1], state[1]))
            pred_p = torch.where(emit.unsqueeze(1), head.joiner.project_pred(new_pred[:, 0]), pred_p)
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


def rnnt_beam_search(
    head: RNNTHead, enc: Tensor, enc_lens: Tensor, beam_size: int = 4, *, length_normalise: bool = False
) -> list[list[int]]:
    """Best token ids per utterance from :func:`rnnt_beam_search_hyps`."""
    hyps = rnnt_beam_search_hyps(head, enc, enc_lens, beam_size, length_normalise=length_normalise)
    return [h[0].tokens for h in hyps]
