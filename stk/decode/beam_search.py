"""Batched attention beam search with joint CTC prefix scoring (hybrid CTC/attention decoding).

All ``B x beam`` hypotheses advance together: one decoder call per output step, one vectorised
CTC prefix-score computation per step. The score of extending hypothesis ``h`` by token ``c`` is

    (1 - ctc_weight) * log p_att(c | h, x) + ctc_weight * (psi(h c) - psi(h))
        + lm_weight * log p_lm(c | h) + length_penalty

where ``psi(h)`` is the CTC prefix probability (all label sequences starting with ``h``), and
``psi(h <eos>)`` the CTC probability of exactly ``h`` (Watanabe et al., 2017). Summed over a
finished hypothesis the CTC terms telescope to its CTC log-likelihood. The LM term is shallow
fusion with an external language model (an :class:`~stk.decode.lm.LMScorer`, e.g. a
:class:`~stk.models.lm.TransformerLM`; ``log p_lm(<eos> | h)`` ends a hypothesis).

Decoder protocol (``decoder.score_step``)::

    score_step(ys (N, L) long, memory (N, T, D), memory_mask (N, T) bool True=valid,
               cache: list[Tensor (N, L-1, D)] | None) -> (log_probs (N, V), new_cache: list[Tensor (N, L, D)])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from stk.decode.lm import LMScorer

__all__ = ["Hyp", "StepDecoder", "CTCPrefixState", "CTCPrefixScorer", "batch_beam_search"]

NEG_INF = float("-inf")


@dataclass(frozen=True)
class Hyp:
    """A decoded hypothesis: token ids (no sos/eos/blank) and its log-domain score."""

    tokens: list[int]
    score: float


class StepDecoder(Protocol):
    def score_step(
        self, ys: Tensor, memory: Tensor, memory_mask: Tensor, cache: list[Tensor] | None
    ) -> tuple[Tensor, list[Tensor]]: ...


@dataclass
class CTCPrefixState:
    """CTC forward variables of N prefixes that all hold ``length`` tokens.

    Attributes:
        r: (T, 2, N) log-probabilities that frames ``0..t`` produce the prefix, ending in a
            non-blank (index 0) or a blank (index 1).
        psi: (N,) prefix log-probability of each hypothesis.
        last: (N,) last token of each prefix (-1 for the empty prefix).
        length: number of tokens in every prefix.
    """

    r: Tensor
    psi: Tensor
    last: Tensor
    length: int

    def select(self, rows: Tensor, num_frames: int) -> "CTCPrefixState":
        """Keep ``rows`` and the first ``num_frames`` frames."""
        return CTCPrefixState(self.r[:num_frames].index_select(2, rows), self.psi[rows], self.last[rows], self.length)


class CTCPrefixScorer:
    """Vectorised CTC prefix scorer over hypotheses grouped by utterance.

    Rows of a state are grouped: with N = B * S rows, row ``n`` belongs to utterance ``n // S``.
    Frames past an utterance's length are padded so that they can only emit blank with
    probability one; every utterance can then be scored on the common time axis.

    Args:
        log_probs: (B, T, V) CTC log-posteriors.
        lengths: (B,) valid frames.
        blank: blank id.
        eos: end-of-sentence id; its score is the CTC probability of the full prefix.
    """

    def __init__(self, log_probs: Tensor, lengths: Tensor, *, blank: int = 0, eos: int) -> None:
        if log_probs.dim() != 3:
            raise ValueError(f"log_probs must be (B, T, V), got {tuple(log_probs.shape)}")
        B, T, V = log_probs.shape
        if lengths.shape != (B,):
            raise ValueError(f"lengths must be ({B},), got {tuple(lengths.shape)}")
        if not (0 <= blank < V and 0 <= eos < V) or blank == eos:
            raise ValueError(f"need distinct blank={blank} and eos={eos} in [0, {V})")
        lengths = lengths.to(log_probs.device)
        pad = torch.arange(T, device=log_probs.device)[None, :] >= lengths[:, None]  # (B, T)
        x = log_probs.masked_fill(pad.unsqueeze(-1), NEG_INF)
        x[..., blank] = x[..., blank].masked_fill(pad, 0.0)
        self.x = x  # (B, T, V)
        self.blank = blank
        self.eos = eos

    @property
    def num_frames(self) -> int:
        return self.x.size(1)

    def keep(self, utts: Tensor, num_frames: int) -> None:
        """Drop finished utterances (keep ``utts``, local indices) and frames past ``num_frames``."""
        self.x = self.x[:, :num_frames].index_select(0, utts)

    def initial_state(self, slots: int = 1) -> CTCPrefixState:
        """The empty prefix, ``slots`` rows per utterance."""
        B, T, _ = self.x.shape
        r_blank = self.x[:, :, self.blank].cumsum(dim=1).t().repeat_interleave(slots, dim=1)  # (T, N)
        r = torch.stack([torch.full_like(r_blank, NEG_INF), r_blank], dim=1)
        n = B * slots
        return CTCPrefixState(
            r, self.x.new_zeros(n), torch.full((n,), -1, dtype=torch.long, device=self.x.device), 0
        )

    def _gather(self, ids: Tensor) -> Tensor:
        """(N, K) token ids -> (T, N, K) log-posteriors of those tokens."""
        B, T, _ = self.x.shape
        N, K = ids.shape
        S = N // B
        g = self.x.gather(2, ids.reshape(B, 1, S * K).expand(B, T, S * K))
        return g.view(B, T, S, K).permute(1, 0, 2, 3).reshape(T, N, K)

    @staticmethod
    def _phi(r: Tensor, last: Tensor, ids: Tensor) -> Tensor:
        """Probability that frames ``0..t`` produce the prefix and allow ``ids`` next: (T, N, K)."""
        r_sum = torch.logaddexp(r[:, 0], r[:, 1])
        same = (ids == last[:, None]).unsqueeze(0)
        return torch.where(same, r[:, 1].unsqueeze(-1), r_sum.unsqueeze(-1))

    def score(self, state: CTCPrefixState, ids: Tensor) -> Tensor:
        """Prefix log-probabilities ``psi(h c)`` for candidates ``ids`` (N, K) -> (N, K).

        Blank gets -inf; eos gets the CTC log-likelihood of ``h`` itself.
        """
        T = self.num_frames
        L = state.length
        xc = self._gather(ids)
        phi = self._phi(state.r, state.last, ids)
        if L == 0:  # the empty prefix may start emitting at frame 0
            terms = torch.cat([xc[:1], phi[:-1] + xc[1:]], dim=0)
        else:  # a prefix of L tokens needs frames 0..L-1, so c starts at frame >= L
            terms = phi[L - 1 : T - 1] + xc[L:T]
        if terms.size(0) == 0:
            psi = torch.full(ids.shape, NEG_INF, dtype=xc.dtype, device=xc.device)
        else:
            psi = torch.logsumexp(terms, dim=0)
        full = torch.logaddexp(state.r[T - 1, 0], state.r[T - 1, 1])
        psi = torch.where(ids == self.eos, full.unsqueeze(-1), psi)
        return psi.masked_fill(ids == self.blank, NEG_INF)

    def extend(self, state: CTCPrefixState, src: Tensor, tokens: Tensor, psi: Tensor) -> CTCPrefixState:
        """Forward variables of ``prefix[src] + tokens``.

        Args:
            state: the parents' state.
            src: (N',) parent row of each new row (new rows grouped by utterance as well).
            tokens: (N',) appended token of each new row.
            psi: (N',) their prefix scores from :meth:`score`.
        """
        T = self.num_frames
        L = state.length
        r_par = state.r.index_select(2, src)
        phi = self._phi(r_par, state.last[src], tokens[:, None])[..., 0]  # (T, N')
        xc = self._gather(tokens[:, None])[..., 0]  # (T, N')
        xb = self._gather(torch.full_like(tokens[:, None], self.blank))[..., 0]
        rn = torch.full_like(phi, NEG_INF)
        rb = torch.full_like(phi, NEG_INF)
        if L == 0:
            rn[0] = xc[0]
        for t in range(max(L, 1), T):
            torch.add(torch.logaddexp(rn[t - 1], phi[t - 1]), xc[t], out=rn[t])
            torch.add(torch.logaddexp(rn[t - 1], rb[t - 1]), xb[t], out=rb[t])
        return CTCPrefixState(torch.stack([rn, rb], dim=1), psi, tokens, L + 1)


def _check_args(memory: Tensor, memory_lengths: Tensor, ctc_log_probs: Tensor | None, decoder: object | None,
                sos: int, eos: int, beam_size: int, ctc_weight: float, blank: int, maxlen_ratio: float,
                maxlen: int | None, nbest: int, lm: LMScorer | None = None, lm_weight: float = 0.0) -> None:
    if lm_weight < 0:
        raise ValueError(f"lm_weight must be >= 0, got {lm_weight}")
    if lm_weight > 0 and lm is None:
        raise ValueError("lm_weight > 0 needs an lm")
    if memory.dim() != 3:
        raise ValueError(f"memory must be (B, T, D), got {tuple(memory.shape)}")
    B, T, _ = memory.shape
    if memory_lengths.shape != (B,):
        raise ValueError(f"memory_lengths must be ({B},), got {tuple(memory_lengths.shape)}")
    if B and (int(memory_lengths.min()) < 1 or int(memory_lengths.max()) > T):
        raise ValueError(f"memory_lengths must be in [1, {T}], got {memory_lengths.tolist()}")
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if not 1 <= nbest <= beam_size:
        raise ValueError(f"nbest must be in [1, beam_size={beam_size}], got {nbest}")
    if not 0.0 <= ctc_weight <= 1.0:
        raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
    if ctc_weight > 0.0:
        if ctc_log_probs is None:
            raise ValueError("ctc_weight > 0 needs ctc_log_probs")
        if ctc_log_probs.dim() != 3 or ctc_log_probs.shape[:2] != (B, T):
            raise ValueError(f"ctc_log_probs must be ({B}, {T}, V), got {tuple(ctc_log_probs.shape)}")
        if blank in (sos, eos):
            raise ValueError(f"blank={blank} must differ from sos={sos} and eos={eos}")
    if ctc_weight < 1.0 and decoder is None:
        raise ValueError("ctc_weight < 1 needs a decoder")
    if maxlen_ratio < 0:
        raise ValueError(f"maxlen_ratio must be >= 0, got {maxlen_ratio}")
    if maxlen is not None and maxlen < 0:
        raise ValueError(f"maxlen must be >= 0, got {maxlen}")


@torch.no_grad()
def batch_beam_search(
    decoder: StepDecoder | None,
    memory: Tensor,
    memory_lengths: Tensor,
    *,
    sos: int,
    eos: int,
    beam_size: int = 10,
    ctc_log_probs: Tensor | None = None,
    ctc_weight: float = 0.3,
    blank: int = 0,
    maxlen_ratio: float = 0.0,
    maxlen: int | None = None,
    length_penalty: float = 0.0,
    nbest: int = 1,
    lm: LMScorer | None = None,
    lm_weight: float = 0.0,
) -> list[list[Hyp]]:
    """Joint CTC/attention beam search, batched over utterances and beams.

    Args:
        decoder: implements ``score_step`` (see module docstring); may be None if ``ctc_weight == 1``.
        memory: (B, T, D) encoder output.
        memory_lengths: (B,) valid frames.
        sos, eos: start / end symbols of the decoder (may be equal).
        beam_size: hypotheses kept per utterance.
        ctc_log_probs: (B, T, V) CTC log-posteriors on the same frames (needed if ``ctc_weight > 0``).
        ctc_weight: CTC weight in [0, 1]. When 0 < w < 1 the CTC prefix score is computed only for
            the ``int(1.5 * beam_size)`` best tokens by attention score of each hypothesis; when
            w == 1 every token is scored by CTC alone (memory T x B*beam x V).
        blank: CTC blank id (never emitted).
        maxlen_ratio: if > 0 (and ``maxlen`` is None), at most ``max(1, int(ratio * T_b))`` tokens.
        maxlen: at most this many tokens (eos excluded); by default ``T_b`` (ratio 0).
        length_penalty: added per emitted token, eos included (> 0 favours longer outputs).
        nbest: hypotheses returned per utterance.
        lm: external LM for shallow fusion (same token ids as the decoder; its ``eos`` is ``eos``).
        lm_weight: weight of the LM log-probability (0: no fusion). With an attention decoder the
            pre-beam ranks tokens by ``(1 - ctc_weight) * att + lm_weight * lm``.

    Returns:
        Per utterance up to ``nbest`` :class:`Hyp`, best first. Scores are the weighted sums above.
        An utterance whose every path scored -inf gets ``[Hyp([], -inf)]``.

    A hypothesis ends when eos is chosen among the ``beam_size`` best extensions of its utterance;
    at its maximum length only eos is allowed. An utterance is finished once it has ``beam_size``
    ended hypotheses, no live ones, or (with ``length_penalty <= 0``, where scores never grow) when
    its ``nbest`` best ended hypotheses all score at least its best live one. Finished utterances
    leave the batch.
    """
    _check_args(memory, memory_lengths, ctc_log_probs, decoder, sos, eos, beam_size, ctc_weight, blank,
                maxlen_ratio, maxlen, nbest, lm, lm_weight)
    B = memory.size(0)
    device = memory.device
    lengths = memory_lengths.to(device=device, dtype=torch.long)
    if maxlen is not None:
        max_tokens = torch.full((B,), maxlen, dtype=torch.long, device=device)
    elif maxlen_ratio > 0:
        max_tokens = (lengths.double() * maxlen_ratio).long().clamp(min=1)
    else:
        max_tokens = lengths.clone()
    use_att = ctc_weight < 1.0
    use_ctc = ctc_weight > 0.0
    pre_beam = int(1.5 * beam_size)
    ended: list[list[Hyp]] = [[] for _ in range(B)]
    if B == 0:
        return []

    num_frames = int(lengths.max())
    active = torch.arange(B, device=device)  # original ids of utterances still searched
    mem = memory[:, :num_frames]  # (Ba, T, D)
    mem_mask = torch.arange(num_frames, device=device)[None, :] < lengths[:, None]  # (Ba, T)
    scorer = state = None
    if use_ctc:
        scorer = CTCPrefixScorer(ctc_log_probs[:, :num_frames], lengths, blank=blank, eos=eos)
        state = scorer.initial_state(1)
    S = 1  # rows per utterance
    ys = torch.full((B, 1), sos, dtype=torch.long, device=device)
    scores = torch.zeros(B, dtype=torch.float64, device=device)
    cache: list[Tensor] | None = None
    mem_rows, mask_rows = mem, mem_mask
    use_lm = lm is not None and lm_weight > 0
    lm_state = lm.init_state(B) if use_lm else None

    step = 0
    while True:
        Ba = active.numel()
        N = Ba * S
        att = None
        if use_att:
            att, cache = decoder.score_step(ys, mem_rows, mask_rows, cache)
            V = att.size(-1)
            if use_ctc and V != scorer.x.size(-1):
                raise ValueError(f"decoder vocabulary {V} != CTC vocabulary {scorer.x.size(-1)}")
        else:
            V = scorer.x.size(-1)
        lm_lp = None
        if use_lm:
            lm_lp = lm.score(lm_state).to(device)
            if lm_lp.size(-1) != V:
                raise ValueError(f"LM vocabulary {lm_lp.size(-1)} != decoder vocabulary {V}")
        if use_att and use_ctc and pre_beam < V:
            pre = att if lm_lp is None else (1.0 - ctc_weight) * att + lm_weight * lm_lp
            cand = pre.topk(pre_beam, dim=-1).indices  # (N, K)
        else:
            cand = torch.arange(V, device=device).expand(N, V)
        forced = (max_tokens[active] <= step).repeat_interleave(S)  # (N,) only eos allowed
        cand = torch.where(forced[:, None], torch.full_like(cand, eos), cand)
        K = cand.size(1)

        cs = scores[:, None] + length_penalty
        if use_att:
            cs = cs + (1.0 - ctc_weight) * att.gather(1, cand).double()
        if use_lm:
            cs = cs + lm_weight * lm_lp.gather(1, cand).double()
        psi = None
        if use_ctc:
            psi = scorer.score(state, cand)
            cs = cs + ctc_weight * (psi - state.psi[:, None]).double()
        cs = cs.masked_fill(cs.isnan(), NEG_INF)
        if K > 1:
            cs[:, 1:] = cs[:, 1:].masked_fill(forced[:, None], NEG_INF)

        # Best extensions per utterance among its S * K candidates.
        S_new = min(beam_size, S * K)
        top_s, top_i = cs.view(Ba, S * K).topk(S_new, dim=1)
        src = (torch.arange(Ba, device=device)[:, None] * S + top_i // K).reshape(-1)
        tok = cand.reshape(Ba, S * K).gather(1, top_i).reshape(-1)
        top_s = top_s.reshape(-1)
        finite = torch.isfinite(top_s)
        is_eos = finite & (tok == eos)
        alive = finite & (tok != eos)

        for n in is_eos.nonzero().flatten().tolist():
            u = int(active[n // S_new])
            ended[u].append(Hyp(tokens=ys[src[n], 1:].tolist(), score=float(top_s[n])))

        scores = torch.where(alive, top_s, torch.full_like(top_s, NEG_INF))
        ys = torch.cat([ys.index_select(0, src), tok[:, None]], dim=1)
        if cache is not None:
            cache = [c.index_select(0, src) for c in cache]
        if use_ctc:
            psi_sel = psi.reshape(Ba, S * K).gather(1, top_i).reshape(-1)
            state = scorer.extend(state, src, tok, psi_sel)
        if use_lm:
            lm_state = lm.advance(lm.select(lm_state, src), tok)
        if S_new != S:
            S = S_new
            mem_rows = mem.repeat_interleave(S, dim=0)
            mask_rows = mem_mask.repeat_interleave(S, dim=0)
        step += 1

        # Which utterances are finished?
        best_live = scores.view(Ba, S).max(dim=1).values
        done = []
        for j in range(Ba):
            hyps = ended[int(active[j])]
            live = bool(torch.isfinite(best_live[j]))
            if len(hyps) >= beam_size or not live:
                done.append(True)
            elif length_penalty <= 0 and len(hyps) >= nbest:
                kth = sorted((h.score for h in hyps), reverse=True)[nbest - 1]
                done.append(kth >= float(best_live[j]))
            else:
                done.append(False)
        if all(done):
            break
        if any(done):
            keep = torch.tensor([not d for d in done], device=device).nonzero().flatten()
            rows = (keep[:, None] * S + torch.arange(S, device=device)).reshape(-1)
            active = active[keep]
            num_frames = int(lengths[active].max())
            mem, mem_mask = mem[keep, :num_frames], mem_mask[keep, :num_frames]
            mem_rows = mem.repeat_interleave(S, dim=0)
            mask_rows = mem_mask.repeat_interleave(S, dim=0)
            ys, scores = ys[rows], scores[rows]
            if cache is not None:
                cache = [c.index_select(0, rows) for c in cache]
            if use_ctc:
                scorer.keep(keep, num_frames)
                state = state.select(rows, num_frames)
            if use_lm:
                lm_state = lm.select(lm_state, rows)

    out: list[list[Hyp]] = []
    for hyps in ended:
        hyps = sorted(hyps, key=lambda h: h.score, reverse=True)[:nbest]
        out.append(hyps if hyps else [Hyp(tokens=[], score=NEG_INF)])
    return out
