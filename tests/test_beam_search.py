"""Batched joint CTC/attention beam search with a tiny incrementally cached Transformer decoder."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from stk.decode.beam_search import CTCPrefixScorer, Hyp, batch_beam_search

V, D = 8, 16
BLANK, SOS, EOS = 0, V - 1, V - 1


class TinyLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(D, 2, batch_first=True)
        self.src_attn = nn.MultiheadAttention(D, 2, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(D, 32), nn.ReLU(), nn.Linear(32, D))
        self.n1, self.n2, self.n3 = nn.LayerNorm(D), nn.LayerNorm(D), nn.LayerNorm(D)

    def forward(self, q, kv, self_mask, memory, memory_mask):
        """q (N, Lq, D) queries over kv (N, L, D) (pre-norm), cross-attention to memory."""
        h = self.n1(kv)
        hq = h[:, -q.size(1):]
        x = q + self.self_attn(hq, h, h, attn_mask=self_mask, need_weights=False)[0]
        h = self.n2(x)
        x = x + self.src_attn(h, memory, memory, key_padding_mask=~memory_mask, need_weights=False)[0]
        return x + self.ff(self.n3(x))


class TinyDecoder(nn.Module):
    """2-layer causal Transformer decoder implementing ``score_step`` with real caching."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(V, D)
        self.pos = nn.Parameter(torch.randn(64, D) * 0.3)
        self.layers = nn.ModuleList([TinyLayer(), TinyLayer()])
        self.out = nn.Linear(D, V)
        self.calls = 0

    def forward_full(self, ys, memory, memory_mask):
        """Uncached reference: (N, L) -> (N, L, V) log-probs."""
        L = ys.size(1)
        x = self.embed(ys) + self.pos[:L]
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool), 1)
        for layer in self.layers:
            x = layer(x, x, causal, memory, memory_mask)
        return self.out(x).log_softmax(-1)

    def score_step(self, ys, memory, memory_mask, cache):
        self.calls += 1
        L = ys.size(1)
        assert (cache is None) == (L == 1)
        x = self.embed(ys) + self.pos[:L]
        new_cache = []
        for i, layer in enumerate(self.layers):
            last = layer(x[:, -1:], x, None, memory, memory_mask)  # the last query sees the whole prefix
            x = last if cache is None else torch.cat([cache[i], last], dim=1)
            new_cache.append(x)
        return self.out(x[:, -1]).log_softmax(-1), new_cache


def make(B=3, T=9, seed=0):
    torch.manual_seed(seed)
    dec = TinyDecoder().eval()
    with torch.no_grad():
        dec.out.bias[EOS] -= 2.0  # random weights favour stopping at once; make outputs longer
    memory = torch.randn(B, T, D)
    ctc = (torch.randn(B, T, V) * 2).log_softmax(-1)
    return dec, memory, ctc


def greedy_reference(dec, memory, T, maxlen):
    """Arg-max decoding with the uncached decoder; eos is forced after ``maxlen`` tokens."""
    ys, score = [SOS], 0.0
    mask = torch.ones(1, T, dtype=torch.bool)
    with torch.no_grad():
        for step in range(maxlen + 1):
            lp = dec.forward_full(torch.tensor([ys]), memory[None, :T], mask)[0, -1]
            tok = EOS if step == maxlen else int(lp.argmax())
            score += float(lp[tok])
            if tok == EOS:
                break
            ys.append(tok)
    return ys[1:], score


def test_cached_step_matches_full_decoder():
    dec, memory, _ = make(B=2)
    mask = torch.ones(2, 9, dtype=torch.bool)
    ys = torch.randint(1, V - 1, (2, 5))
    ys[:, 0] = SOS
    full = dec.forward_full(ys, memory, mask)
    cache = None
    for L in range(1, 6):
        lp, cache = dec.score_step(ys[:, :L], memory, mask, cache)
        torch.testing.assert_close(lp, full[:, L - 1], atol=1e-5, rtol=1e-5)


def test_beam_one_without_ctc_is_greedy():
    dec, memory, _ = make()
    lens = torch.tensor([9, 6, 4])
    out = batch_beam_search(dec, memory, lens, sos=SOS, eos=EOS, beam_size=1, ctc_weight=0.0, maxlen=6)
    for b in range(3):
        toks, score = greedy_reference(dec, memory[b], int(lens[b]), 6)
        assert out[b][0].tokens == toks
        assert out[b][0].score == pytest.approx(score, abs=1e-4)


@pytest.mark.parametrize("ctc_weight", [0.0, 0.3])
def test_batched_equals_one_at_a_time(ctc_weight):
    dec, memory, ctc = make(B=4, T=10, seed=1)
    lens = torch.tensor([10, 7, 3, 9])
    kw = dict(sos=SOS, eos=EOS, beam_size=4, ctc_weight=ctc_weight, nbest=3, maxlen_ratio=0.8)
    batched = batch_beam_search(dec, memory, lens, ctc_log_probs=ctc, **kw)
    for b in range(4):
        n = int(lens[b])
        (alone,) = batch_beam_search(
            dec, memory[b : b + 1, :n], lens[b : b + 1], ctc_log_probs=ctc[b : b + 1, :n], **kw
        )
        assert [h.tokens for h in batched[b]] == [h.tokens for h in alone]
        for x, y in zip(batched[b], alone):
            assert x.score == pytest.approx(y.score, abs=1e-4)
        assert all(x.score >= y.score for x, y in zip(batched[b], batched[b][1:]))


def ctc_peaked_on(seq, T, peak=0.9):
    """CTC posterior (T, V) whose frames spell ``seq`` separated by blanks; eos never emitted."""
    frames = [BLANK] * T
    for i, tok in enumerate(seq):
        frames[1 + 2 * i] = tok
    p = torch.full((T, V), (1 - peak) / (V - 2))
    p[torch.arange(T), torch.tensor(frames)] = peak
    p[:, EOS] = 1e-6
    return (p / p.sum(-1, keepdim=True)).log()


@pytest.mark.parametrize("ctc_weight,beam", [(1.0, 4), (0.9, 6)])
def test_peaked_ctc_dominates(ctc_weight, beam):
    dec, memory, _ = make(B=2, T=10, seed=2)
    seqs = [[3, 5, 2, 2], [6, 1]]
    ctc = torch.stack([ctc_peaked_on(s, 10) for s in seqs])
    lens = torch.tensor([10, 10])
    out = batch_beam_search(dec if ctc_weight < 1 else None, memory, lens, sos=SOS, eos=EOS, beam_size=beam,
                            ctc_log_probs=ctc, ctc_weight=ctc_weight)
    assert [o[0].tokens for o in out] == seqs


def ctc_loglik(lp, tokens):
    """log P(tokens | x) from torch's ctc_loss; lp (T, V)."""
    T = lp.size(0)
    return -float(torch.nn.functional.ctc_loss(
        lp[:, None], torch.tensor([tokens or [1]]), torch.tensor([T]), torch.tensor([len(tokens)]),
        blank=BLANK, reduction="none",
    ))


def test_prefix_score_plus_eos_equals_ctc_loss():
    torch.manual_seed(3)
    T = 12
    lp = (torch.randn(2, T, V, dtype=torch.float64) * 2).log_softmax(-1)
    lens = torch.tensor([T, 8])
    seqs = [[3, 3, 5, 1, 2], [4, 2, 2]]
    scorer = CTCPrefixScorer(lp, lens, blank=BLANK, eos=EOS)
    state = scorer.initial_state(1)
    total = torch.zeros(2, dtype=torch.float64)
    for i in range(max(map(len, seqs)) + 1):
        tok = torch.tensor([s[i] if i < len(s) else EOS for s in seqs])
        psi = scorer.score(state, tok[:, None])[:, 0]
        done = torch.tensor([i > len(s) for s in seqs])
        total += torch.where(done, 0.0, psi - state.psi)
        state = scorer.extend(state, torch.arange(2), tok, psi)
    for b, s in enumerate(seqs):
        assert float(total[b]) == pytest.approx(ctc_loglik(lp[b, : int(lens[b])], s), abs=1e-9)


def test_prefix_scores_match_brute_force():
    """psi(h) = sum of P(y) over every labelling y that starts with h (tiny T, 3 symbols)."""
    torch.manual_seed(4)
    T, W = 5, 3
    lp_small = (torch.randn(T, W, dtype=torch.float64) * 2).log_softmax(-1)
    lp = torch.full((1, T, V), float("-inf"), dtype=torch.float64)
    lp[0, :, :W] = lp_small
    prefix_mass: dict[tuple, float] = {}
    for path in itertools.product(range(W), repeat=T):
        p = math.exp(sum(float(lp_small[t, c]) for t, c in enumerate(path)))
        lab, prev = [], None
        for c in path:
            if c != prev and c != BLANK:
                lab.append(c)
            prev = c
        for k in range(len(lab) + 1):
            key = tuple(lab[:k])
            prefix_mass[key] = prefix_mass.get(key, 0.0) + p
    scorer = CTCPrefixScorer(lp, torch.tensor([T]), blank=BLANK, eos=EOS)
    for h in [(1,), (2, 2), (1, 2, 1), (2, 1, 2)]:
        state = scorer.initial_state(1)
        for tok in h:
            psi = scorer.score(state, torch.tensor([[tok]]))[0]
            state = scorer.extend(state, torch.tensor([0]), torch.tensor([tok]), psi)
        assert float(state.psi[0]) == pytest.approx(math.log(prefix_mass[h]), abs=1e-9)


def test_ctc_only_search_score_is_ctc_loglik():
    dec, memory, _ = make(B=2, T=7, seed=5)
    ctc = (torch.randn(2, 7, V, dtype=torch.float64) * 3).log_softmax(-1)
    ctc[..., EOS] = -30.0
    lens = torch.tensor([7, 5])
    out = batch_beam_search(None, memory, lens, sos=SOS, eos=EOS, beam_size=3, ctc_log_probs=ctc,
                            ctc_weight=1.0, nbest=3)
    for b in range(2):
        for h in out[b]:
            assert h.score == pytest.approx(ctc_loglik(ctc[b, : int(lens[b])], h.tokens), abs=1e-8)


def test_one_decoder_call_per_step_and_length_penalty():
    dec, memory, ctc = make(B=3, T=8, seed=6)
    lens = torch.tensor([8, 8, 5])
    dec.calls = 0
    out = batch_beam_search(dec, memory, lens, sos=SOS, eos=EOS, beam_size=3, ctc_log_probs=ctc, maxlen=4)
    assert dec.calls <= 5  # at most maxlen + 1 steps, all utterances and beams in one call each
    assert all(len(h.tokens) <= 4 for o in out for h in o)
    long = batch_beam_search(dec, memory, lens, sos=SOS, eos=EOS, beam_size=3, ctc_log_probs=ctc, maxlen=4,
                             length_penalty=5.0)
    assert sum(len(o[0].tokens) for o in long) >= sum(len(o[0].tokens) for o in out)
    for a, b in zip(out, long):
        if a[0].tokens == b[0].tokens:  # the bonus counts every token and eos
            assert b[0].score - a[0].score == pytest.approx(5.0 * (len(a[0].tokens) + 1), abs=1e-6)
    assert all(isinstance(h, Hyp) for o in long for h in o)


def test_bad_args():
    dec, memory, ctc = make(B=2)
    lens = torch.tensor([9, 9])
    kw = dict(sos=SOS, eos=EOS)
    with pytest.raises(ValueError):
        batch_beam_search(dec, memory, lens, ctc_weight=0.3, **kw)  # no ctc_log_probs
    with pytest.raises(ValueError):
        batch_beam_search(dec, memory, lens, ctc_log_probs=ctc, beam_size=2, nbest=3, **kw)
    with pytest.raises(ValueError):
        batch_beam_search(dec, memory, torch.tensor([10, 9]), ctc_weight=0.0, **kw)
    with pytest.raises(ValueError):
        batch_beam_search(None, memory, lens, ctc_log_probs=ctc, ctc_weight=0.5, **kw)
    with pytest.raises(ValueError):
        batch_beam_search(dec, memory, lens, ctc_log_probs=ctc, ctc_weight=1.5, **kw)
    with pytest.raises(ValueError):
        batch_beam_search(dec, memory, lens, ctc_log_probs=ctc, blank=EOS, **kw)


class BigramLM:
    """A table LMScorer: state = last token (sos first)."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table  # (V, V) log-probs of the next token given the last
        self.vocab_size = table.size(0)

    def init_state(self, batch_size):
        return torch.full((batch_size,), SOS, dtype=torch.long)

    def score(self, state):
        return self.table[state]

    def advance(self, state, tokens):
        return tokens.clone()

    def select(self, state, index):
        return state[index]


def bigram(seed=5):
    torch.manual_seed(seed)
    return BigramLM((torch.randn(V, V) * 2).log_softmax(-1))


def test_lm_fusion_beam_one_is_greedy_on_the_fused_score():
    dec, memory, _ = make(B=2)
    lm = bigram()
    w = 0.7
    out = batch_beam_search(dec, memory, torch.tensor([9, 9]), sos=SOS, eos=EOS, beam_size=1, ctc_weight=0.0,
                            maxlen=6, lm=lm, lm_weight=w)
    mask = torch.ones(1, 9, dtype=torch.bool)
    for b in range(2):
        ys, score = [SOS], 0.0
        with torch.no_grad():
            for step in range(7):
                fused = dec.forward_full(torch.tensor([ys]), memory[b : b + 1], mask)[0, -1] + w * lm.table[ys[-1]]
                tok = EOS if step == 6 else int(fused.argmax())
                score += float(fused[tok])
                if tok == EOS:
                    break
                ys.append(tok)
        assert out[b][0].tokens == ys[1:]
        assert out[b][0].score == pytest.approx(score, abs=1e-4)


def test_lm_weight_zero_changes_nothing_and_a_strong_lm_decides():
    dec, memory, ctc = make(B=2, T=10, seed=6)
    lens = torch.tensor([10, 8])
    kw = dict(sos=SOS, eos=EOS, beam_size=4, ctc_log_probs=ctc, ctc_weight=0.3, nbest=2)
    plain = batch_beam_search(dec, memory, lens, **kw)
    zero = batch_beam_search(dec, memory, lens, lm=bigram(), lm_weight=0.0, **kw)
    assert [[h.tokens for h in o] for o in plain] == [[h.tokens for h in o] for o in zero]
    # an LM that spells 3 4 5 <eos> with certainty wins at a large weight
    table = torch.full((V, V), -30.0)
    for a, b in [(SOS, 3), (3, 4), (4, 5), (5, EOS)]:
        table[a, b] = 0.0
    out = batch_beam_search(dec, memory, lens, lm=BigramLM(table), lm_weight=5.0, **{**kw, "ctc_weight": 0.0})
    assert [o[0].tokens for o in out] == [[3, 4, 5], [3, 4, 5]]


def test_lm_fusion_batched_equals_one_at_a_time_with_transformer_lm():
    from stk.models.lm import TransformerLM

    torch.manual_seed(7)
    tlm = TransformerLM(vocab_size=V, d_model=16, num_heads=2, ffn_dim=32, num_layers=1, dropout=0.0).eval()
    dec, memory, ctc = make(B=3, T=10, seed=8)
    lens = torch.tensor([10, 6, 9])
    kw = dict(sos=SOS, eos=EOS, beam_size=3, ctc_weight=0.3, nbest=2, lm_weight=0.5)
    # (the LM's own <sos/eos> is id 2 and this decoder's V-1: the search only needs matching vocabularies)
    batched = batch_beam_search(dec, memory, lens, ctc_log_probs=ctc, lm=tlm.scorer(), **kw)
    for b in range(3):
        n = int(lens[b])
        (alone,) = batch_beam_search(dec, memory[b : b + 1, :n], lens[b : b + 1], ctc_log_probs=ctc[b : b + 1, :n],
                                     lm=tlm.scorer(), **kw)
        assert [h.tokens for h in batched[b]] == [h.tokens for h in alone]
        for x, y in zip(batched[b], alone):
            assert x.score == pytest.approx(y.score, abs=1e-4)
    with pytest.raises(ValueError, match="lm_weight > 0 needs an lm"):
        batch_beam_search(dec, memory, lens, ctc_log_probs=ctc, **kw)
    with pytest.raises(ValueError, match="LM vocabulary"):
        small = TransformerLM(vocab_size=V - 1, d_model=16, num_heads=2, ffn_dim=32, num_layers=1).eval()
        batch_beam_search(dec, memory, lens, ctc_log_probs=ctc, lm=small.scorer(), **kw)
