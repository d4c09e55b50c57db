"""CTC decoding: greedy (best path), stk's prefix beam search, and torchaudio's flashlight decoder
with a KenLM/ARPA word LM.

``stk decode --method ctc_beam`` runs :func:`ctc_prefix_beam_search` without an LM and
:func:`ctc_beam_search_flashlight` (torchaudio's ``ctc_decoder``, flashlight-text, C++) with
``--lm LM.arpa``: lexicon-constrained decoding, the lexicon spelled from the LM's words with the
model's tokenizer, ``--lm-weight`` and ``--word-score``.

Why stk keeps its own search: flashlight merges hypotheses that share (LM state, last token,
blank flag) and keeps the best one. With an n-gram LM the LM state carries the word history, so
different prefixes stay apart; without an LM (torchaudio's ``ZeroLM``) every hypothesis has the
same state, so all prefixes ending in the same token are merged and the lexicon-free decoder
returns the best path, i.e. greedy output (measured: bench/README.md; tested in
tests/test_decode_ctc.py). stk's prefix search adds up all alignments of each prefix in the beam
(Hannun et al., 2014), runs on any tensor (float64, any device) and needs no token strings.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from stk.decode.beam_search import Hyp

__all__ = ["ctc_greedy", "ctc_prefix_beam_search", "ctc_prefix_beam_search_nbest", "ctc_beam_search_flashlight",
           "flashlight_decoder"]

_NEG_INF = float("-inf")


def _check(log_probs: Tensor, lengths: Tensor, blank: int) -> None:
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be (B, T, V), got {tuple(log_probs.shape)}")
    B, T, V = log_probs.shape
    if lengths.shape != (B,):
        raise ValueError(f"lengths must be ({B},), got {tuple(lengths.shape)}")
    if B and (int(lengths.min()) < 0 or int(lengths.max()) > T):
        raise ValueError(f"lengths must be in [0, {T}], got {lengths.tolist()}")
    if not 0 <= blank < V:
        raise ValueError(f"blank={blank} outside [0, {V})")


def ctc_greedy(log_probs: Tensor, lengths: Tensor, blank: int = 0) -> list[list[int]]:
    """Best-path decoding: arg-max per frame, merge repeats, drop blanks.

    Args:
        log_probs: (B, T, V) log-posteriors (any monotone scores work).
        lengths: (B,) valid frames.
        blank: blank id.

    Returns:
        Token ids per utterance.
    """
    _check(log_probs, lengths, blank)
    best = log_probs.argmax(dim=-1).cpu()  # (B, T)
    out = []
    for b, n in enumerate(lengths.tolist()):
        path = torch.unique_consecutive(best[b, :n])
        out.append([int(i) for i in path.tolist() if i != blank])
    return out


def _lse(a: float, b: float) -> float:
    if a == _NEG_INF:
        return b
    if b == _NEG_INF:
        return a
    m = a if a > b else b
    return m + math.log1p(math.exp(-abs(a - b)))


def _prefix_beam_one(
    lp: list[list[float]], ids: list[list[int]], blank_lp: list[float], beam_size: int, blank: int
) -> list[tuple[tuple[int, ...], float]]:
    """Prefix beam search over one utterance given per-frame candidate tokens (no blank)."""
    # prefix -> [log P(prefix, ending in blank), log P(prefix, ending in non-blank)]
    beams: dict[tuple[int, ...], list[float]] = {(): [0.0, _NEG_INF]}
    for t in range(len(blank_lp)):
        new: dict[tuple[int, ...], list[float]] = {}

        def slot(prefix: tuple[int, ...]) -> list[float]:
            s = new.get(prefix)
            if s is None:
                s = new[prefix] = [_NEG_INF, _NEG_INF]
            return s

        pblank = blank_lp[t]
        for prefix, (pb, pnb) in beams.items():
            total = _lse(pb, pnb)
            s = slot(prefix)
            s[0] = _lse(s[0], total + pblank)  # stay on prefix through a blank
            last = prefix[-1] if prefix else None
            for c, p in zip(ids[t], lp[t]):
                if p == _NEG_INF:
                    continue
                ext = prefix + (c,)
                if c == last:
                    # "a a" collapses to "a" unless a blank separates the two.
                    s[1] = _lse(s[1], pnb + p)
                    e = slot(ext)
                    e[1] = _lse(e[1], pb + p)
                else:
                    e = slot(ext)
                    e[1] = _lse(e[1], total + p)
        ranked = sorted(new.items(), key=lambda kv: _lse(*kv[1]), reverse=True)
        beams = dict(ranked[:beam_size])
    final = [(prefix, _lse(*s)) for prefix, s in beams.items()]
    final = [kv for kv in final if kv[1] > _NEG_INF] or [((), _NEG_INF)]
    final.sort(key=lambda kv: kv[1], reverse=True)
    return final


def ctc_prefix_beam_search_nbest(
    log_probs: Tensor,
    lengths: Tensor,
    beam_size: int = 10,
    blank: int = 0,
    *,
    nbest: int = 1,
    token_beam: int | None = None,
) -> list[list[Hyp]]:
    """CTC prefix beam search (Hannun et al., 2014) in log space.

    Each prefix keeps the probability of the frames so far ending in blank / non-blank; paths
    that collapse to the same prefix are merged, so scores are sums over alignments (exact when
    nothing is pruned).

    Args:
        log_probs: (B, T, V) log-posteriors.
        lengths: (B,) valid frames.
        beam_size: prefixes kept after each frame.
        blank: blank id.
        nbest: hypotheses returned per utterance (<= beam_size).
        token_beam: non-blank tokens tried per frame (the most likely ones; default ``beam_size``).

    Returns:
        Per utterance up to ``nbest`` :class:`Hyp`, best first, ``score`` = log P(prefix) summed
        over the alignments kept in the beam.
    """
    _check(log_probs, lengths, blank)
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if not 1 <= nbest <= beam_size:
        raise ValueError(f"nbest must be in [1, beam_size={beam_size}], got {nbest}")
    V = log_probs.size(-1)
    token_beam = beam_size if token_beam is None else token_beam
    if token_beam < 1:
        raise ValueError(f"token_beam must be >= 1, got {token_beam}")
    k = min(V - 1, token_beam)
    lp_all = log_probs.detach().double().cpu()
    out: list[list[Hyp]] = []
    for b, n in enumerate(lengths.tolist()):
        lp = lp_all[b, :n]
        vals, ids = lp.index_fill(1, torch.tensor([blank]), _NEG_INF).topk(k, dim=-1)
        res = _prefix_beam_one(vals.tolist(), ids.tolist(), lp[:, blank].tolist(), beam_size, blank)
        out.append([Hyp(tokens=list(p), score=s) for p, s in res[:nbest]])
    return out


def ctc_prefix_beam_search(
    log_probs: Tensor, lengths: Tensor, beam_size: int = 10, blank: int = 0
) -> list[list[int]]:
    """Best label sequence per utterance from :func:`ctc_prefix_beam_search_nbest`."""
    return [hyps[0].tokens for hyps in ctc_prefix_beam_search_nbest(log_probs, lengths, beam_size, blank)]


def _arpa_words(path: Path) -> list[str]:
    """The 1-gram words of an ARPA file (a KenLM binary has no readable word list: give an ARPA)."""
    words: list[str] = []
    try:
        return _read_arpa_words(path, words)
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 ARPA file (a KenLM binary has no readable word list for the "
                         "lexicon: give the ARPA file it was built from)") from None


def _read_arpa_words(path: Path, words: list[str]) -> list[str]:
    with open(path, encoding="utf-8", errors="strict") as f:
        section = False
        for line in f:
            line = line.strip()
            if line == "\\1-grams:":
                section = True
                continue
            if section:
                if not line:
                    continue
                if line.startswith("\\"):
                    break
                parts = line.split("\t") if "\t" in line else line.split()
                if len(parts) >= 2:
                    words.append(parts[1].strip())
    if not words:
        raise ValueError(f"{path}: no \\1-grams: section (give an ARPA file; a KenLM binary has no word list)")
    return words


def flashlight_decoder(tokenizer, *, beam_size: int = 10, lm: str | Path | None = None, lm_weight: float = 0.5,
                       word_score: float = 0.0, nbest: int = 1, beam_threshold: float = 50.0,
                       workdir: str | Path | None = None):
    """torchaudio's ``ctc_decoder`` for an stk tokenizer (pieces as tokens, ``<blank>`` blank).

    Without ``lm``: lexicon-free, no LM (this gives the best path: use :func:`ctc_prefix_beam_search`
    instead). With ``lm`` (an ARPA word LM): a lexicon of
    the LM's words, each spelled with ``tokenizer.pieces(word)``; hypotheses are sequences of
    those words scored by ``lm_weight * ln p_lm + word_score`` per word. Words outside the LM's
    vocabulary cannot be recognised. The lexicon is written to ``workdir`` (a temporary dir
    by default).
    """
    import tempfile

    from torchaudio.models.decoder import ctc_decoder

    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    tokens = [tokenizer.sp.id_to_piece(i) for i in range(tokenizer.vocab_size)]
    if lm is None:  # lexicon-free with torchaudio's ZeroLM: best-path output (see the module docstring)
        return ctc_decoder(lexicon=None, tokens=tokens, lm=None, nbest=nbest, beam_size=beam_size,
                           beam_size_token=None, beam_threshold=beam_threshold, blank_token=tokens[0],
                           sil_token=tokens[1], sil_score=float("-inf"), unk_word=tokens[1])
    lm = Path(lm)
    words = [w for w in _arpa_words(lm) if w not in ("<s>", "</s>", "<unk>")]
    tmp = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="stk-lexicon-"))
    tmp.mkdir(parents=True, exist_ok=True)
    lex = tmp / "lexicon.txt"
    known = set(tokens)
    with open(lex, "w", encoding="utf-8") as f:
        for w in words:
            spelling = tokenizer.pieces(w)
            if spelling and all(p in known for p in spelling):
                f.write(f"{w} {' '.join(spelling)}\n")
    # sil_token: <unk> (a CTC model trained on stk targets never emits it, so no silence is inserted)
    return ctc_decoder(lexicon=str(lex), tokens=tokens, lm=str(lm), nbest=nbest, beam_size=beam_size,
                       beam_size_token=None, beam_threshold=beam_threshold, lm_weight=lm_weight,
                       word_score=word_score, unk_score=float("-inf"), sil_score=0.0, blank_token=tokens[0],
                       sil_token=tokens[1], unk_word="<unk>")


def ctc_beam_search_flashlight(log_probs: Tensor, lengths: Tensor, tokenizer, *, beam_size: int = 10,
                               lm: str | Path | None = None, lm_weight: float = 0.5, word_score: float = 0.0,
                               decoder=None) -> list[list[int]]:
    """Best token sequence per utterance from torchaudio's flashlight CTC decoder.

    Args:
        log_probs: (B, T, V) CTC log-posteriors (blank = 0).
        lengths: (B,) valid frames.
        tokenizer: the model's :class:`~stk.tokenizer.Tokenizer` (its pieces are the tokens).
        beam_size, lm, lm_weight, word_score: see :func:`flashlight_decoder`.
        decoder: a decoder from :func:`flashlight_decoder` to reuse (then the other options are ignored).

    Returns:
        Token ids (no blank) per utterance.
    """
    _check(log_probs, lengths, 0)
    if log_probs.size(-1) != tokenizer.vocab_size:
        raise ValueError(f"log_probs have {log_probs.size(-1)} classes, the tokenizer {tokenizer.vocab_size}")
    if decoder is None:
        decoder = flashlight_decoder(tokenizer, beam_size=beam_size, lm=lm, lm_weight=lm_weight, word_score=word_score)
    em = log_probs.detach().float().cpu().contiguous()
    out: list[list[int]] = []
    for hyps in decoder(em, lengths.cpu().to(torch.int32)):
        out.append([int(i) for i in hyps[0].tokens.tolist() if i > 1] if hyps else [])
    return out
