"""RNN-T head: loss vs brute force, a tiny training run, greedy and torchaudio beam search."""

from __future__ import annotations

import math

import pytest
import torch
import torchaudio

from stk.decode.rnnt import (
    rnnt_beam_search, rnnt_beam_search_hyps, rnnt_greedy, rnnt_greedy_hyps, rnnt_modified_beam_search_hyps,
)
from stk.modules.rnnt import RNNTHead, RNNTJoiner, RNNTPredictor, TorchaudioRNNT, make_rnnt_beam_search


def small_head(V=3, E=4, blank=0, seed=0):
    torch.manual_seed(seed)
    return RNNTHead(vocab_size=V, enc_dim=E, embed_dim=5, pred_dim=6, joint_dim=7, blank=blank)


def brute_force_nll(logp: torch.Tensor, y: list[int], blank: int) -> float:
    """-log P(y) summing every alignment path through the (T, U+1) lattice; logp (T, U+1, V)."""
    T, U1, _ = logp.shape
    U = len(y)

    def paths(t: int, u: int) -> float:
        if t == T - 1 and u == U:
            return math.exp(float(logp[t, u, blank]))  # the final blank ends the lattice
        total = 0.0
        if t < T - 1:
            total += math.exp(float(logp[t, u, blank])) * paths(t + 1, u)
        if u < U:
            total += math.exp(float(logp[t, u, y[u]])) * paths(t, u + 1)
        return total

    return -math.log(paths(0, 0))


@pytest.mark.parametrize("blank", [0, 2])
def test_loss_matches_brute_force(blank):
    head = small_head(V=3, blank=blank)
    y = [1, 1] if blank == 0 else [1, 0]
    enc = torch.randn(1, 3, 4)
    loss = head.loss(enc, torch.tensor([3]), torch.tensor([y]), torch.tensor([2]))
    logp = head.logits(enc, torch.tensor([y])).log_softmax(-1)[0].detach().double()
    loss = loss.detach()
    assert float(loss) == pytest.approx(brute_force_nll(logp, y, blank), rel=1e-5)


def test_loss_handles_padding_and_reductions():
    head = small_head(V=5)
    enc = torch.randn(2, 6, 4)
    targets = torch.tensor([[1, 2, 3], [4, 1, -1]])
    lens, tlens = torch.tensor([6, 4]), torch.tensor([3, 2])
    per_utt = head.loss(enc, lens, targets, tlens, reduction="none")
    alone = [head.loss(enc[:1], lens[:1], targets[:1], tlens[:1]),
             head.loss(enc[1:, :4], lens[1:], targets[1:, :2], tlens[1:])]
    torch.testing.assert_close(per_utt, torch.stack(alone), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(head(enc, lens, targets, tlens), per_utt.mean())
    torch.testing.assert_close(head.loss(enc, lens, targets, tlens, reduction="sum"), per_utt.sum())


def test_two_column_lattice_matches_full_lattice_loss_and_gradients():
    """The head hands torchaudio only [blank, next token] log-probs; loss and every gradient must
    equal torchaudio's loss on the full (B, T, U + 1, V) lattice."""
    head = small_head(V=9, E=4)
    enc = torch.randn(3, 7, 4, requires_grad=True)
    targets = torch.tensor([[1, 2, 3, 8], [4, 1, 5, 0], [2, 0, 0, 0]])
    lens, tlens = torch.tensor([7, 5, 3]), torch.tensor([4, 3, 1])
    ours = head.loss(enc, lens, targets, tlens, reduction="sum")
    g_ours = torch.autograd.grad(ours, [enc, *head.parameters()])
    full = torchaudio.functional.rnnt_loss(head.logits(enc, targets), targets.int(), lens.int(), tlens.int(),
                                           blank=0, reduction="sum", clamp=-1)
    g_full = torch.autograd.grad(full, [enc, *head.parameters()])
    torch.testing.assert_close(ours, full, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_ours, g_full):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_bad_args():
    head = small_head(V=5)
    enc = torch.randn(2, 6, 4)
    ok = dict(enc_lens=torch.tensor([6, 5]), targets=torch.tensor([[1, 2], [3, 4]]), target_lens=torch.tensor([2, 2]))
    with pytest.raises(ValueError):
        head.loss(torch.randn(2, 6, 3), **ok)
    with pytest.raises(ValueError):
        head.loss(enc, **{**ok, "enc_lens": torch.tensor([7, 5])})
    with pytest.raises(ValueError):
        head.loss(enc, **{**ok, "targets": torch.tensor([[1, 0], [3, 4]])})  # blank inside
    with pytest.raises(ValueError):
        head.loss(enc, **{**ok, "target_lens": torch.tensor([3, 2])})
    with pytest.raises(ValueError):
        head.loss(enc, **ok, reduction="avg")
    with pytest.raises(ValueError):
        RNNTPredictor(vocab_size=5, embed_dim=4, hidden_dim=4, blank=5)
    with pytest.raises(ValueError):
        RNNTJoiner(enc_dim=0, pred_dim=4, joint_dim=4, vocab_size=5)
    with pytest.raises(ValueError):
        RNNTHead(vocab_size=5, enc_dim=4, clamp=0.0)
    with pytest.raises(ValueError):
        rnnt_greedy(head, enc, torch.tensor([6, 5]), max_symbols_per_step=0)


def toy_batch(n: int, codes: torch.Tensor, gen: torch.Generator):
    """Frames carry either a token's code or the 'nothing' code (row 0): 0 t1 0 t2 ... 0.

    The target is the token sequence; padded frames are zero.
    """
    V = codes.size(0)
    toks = []
    for _ in range(n):  # no immediate repeats: a frame code alone cannot tell "a a" from "a"
        seq = [int(torch.randint(1, V, (1,), generator=gen))]
        for _ in range(int(torch.randint(0, 3, (1,), generator=gen))):
            seq.append(1 + (seq[-1] - 1 + int(torch.randint(1, V - 1, (1,), generator=gen))) % (V - 1))
        toks.append(torch.tensor(seq))
    elen = torch.tensor([2 * len(t) + 1 for t in toks])
    tlen = torch.tensor([len(t) for t in toks])
    T, U = int(elen.max()), int(tlen.max())
    frames = torch.zeros(n, T, dtype=torch.long)
    tgt = torch.zeros(n, U, dtype=torch.long)
    for b, t in enumerate(toks):
        frames[b, 1 : 2 * len(t) : 2] = t
        tgt[b, : len(t)] = t
    enc = codes[frames]
    enc[torch.arange(T)[None, :] >= elen[:, None]] = 0.0
    return enc, elen, tgt, tlen


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    V, E = 5, 8
    codes = torch.randn(V, E, generator=torch.Generator().manual_seed(0)) * 2
    gen = torch.Generator().manual_seed(1)
    head = RNNTHead(vocab_size=V, enc_dim=E, embed_dim=8, pred_dim=16, joint_dim=16)
    opt = torch.optim.Adam(head.parameters(), lr=0.03)
    losses = []
    for _ in range(60):
        loss = head.loss(*toy_batch(16, codes, gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    head.eval()
    return head, losses, toy_batch(6, codes, gen)


def test_training_reduces_loss_and_decoders_agree(trained):
    head, losses, (enc, elen, tgt, tlen) = trained
    assert sum(losses[-5:]) / 5 < 0.3 * sum(losses[:5]) / 5
    refs = [tgt[b, : int(tlen[b])].tolist() for b in range(tgt.size(0))]
    greedy = rnnt_greedy(head, enc, elen)
    beam = rnnt_beam_search(head, enc, elen, beam_size=3)
    assert greedy == refs
    assert beam == greedy
    assert rnnt_beam_search(head, enc, elen, beam_size=3, length_normalise=True) == greedy
    assert rnnt_beam_search(head, enc, elen, beam_size=3, algorithm="torchaudio") == greedy


def test_length_normalised_ranking():
    head = small_head(V=6, E=4, seed=1).eval()
    enc, lens = torch.randn(2, 7, 4) * 2, torch.tensor([7, 5])
    for hyps in rnnt_beam_search_hyps(head, enc, lens, beam_size=4, nbest=4, length_normalise=True):
        # torchaudio's key: score / (len + 1), its token list holding the start symbol too
        keys = [h.score / (len(h.tokens) + 2) for h in hyps]
        assert keys == sorted(keys, reverse=True)


def test_beam_score_at_least_greedy_score():
    for seed in range(3):
        head = small_head(V=6, E=4, seed=seed).eval()
        enc = torch.randn(2, 7, 4) * 2
        lens = torch.tensor([7, 5])
        g = rnnt_greedy_hyps(head, enc, lens, max_symbols_per_step=3)
        b = rnnt_beam_search_hyps(head, enc, lens, beam_size=4, nbest=2)
        for gh, bh in zip(g, b):
            assert bh[0].score >= gh.score - 1e-5
            assert len(bh) == 2 and bh[0].score >= bh[1].score


def test_greedy_padding_invariance():
    head = small_head(V=6, E=4, seed=3).eval()
    enc = torch.randn(4, 9, 4) * 2
    lens = torch.tensor([9, 4, 7, 1])
    batched = rnnt_greedy_hyps(head, enc, lens)
    assert any(h.tokens for h in batched)
    for b in range(4):
        n = int(lens[b])
        (alone,) = rnnt_greedy_hyps(head, enc[b : b + 1, :n], lens[b : b + 1])
        assert alone.tokens == batched[b].tokens
        assert alone.score == pytest.approx(batched[b].score, abs=1e-5)


@pytest.mark.parametrize("blank", [0, 2, 5])
def test_torchaudio_adapter_permutes_blank_last(blank):
    head = small_head(V=6, E=4, blank=blank, seed=4).eval()
    model = TorchaudioRNNT(head)
    assert isinstance(model, torchaudio.models.RNNT)
    enc = torch.randn(1, 3, 4)
    tokens = torch.tensor([[model.search_blank, 0, 3]])
    pred, _, state = model.predict(tokens, torch.tensor([3]), None)
    stk_tokens = torch.tensor([[blank] + model.to_stk_tokens([0, 3])])
    ref_pred, _ = head.predictor(stk_tokens)
    torch.testing.assert_close(pred, ref_pred)
    assert len(state) == 1 and state[0][0].shape == (1, 6)
    joint, _, _ = model.join(enc, torch.tensor([3]), pred, torch.tensor([3]))
    ref = head.joiner(enc, ref_pred)
    torch.testing.assert_close(joint[..., -1], ref[..., blank])  # blank is last for torchaudio
    torch.testing.assert_close(joint[..., :-1], torch.cat([ref[..., :blank], ref[..., blank + 1 :]], -1))


def test_adapter_with_encoder_callable():
    head = small_head(V=6, E=4, seed=5).eval()
    proj = torch.nn.Linear(3, 4)
    feats = torch.randn(1, 6, 3)
    search = make_rnnt_beam_search(head, lambda x, n: (proj(x), n))
    with torch.no_grad():
        hyps = search(feats, torch.tensor(6), 3)
        direct = rnnt_beam_search(head, proj(feats), torch.tensor([6]), beam_size=3, algorithm="torchaudio")
    assert search.model.to_stk_tokens(hyps[0][0]) == direct[0]


# ------------------------------------------------------------------ batched modified beam search


@pytest.mark.parametrize("layers", [1, 2])
def test_predictor_step_equals_forward(layers):
    torch.manual_seed(0)
    p = RNNTPredictor(vocab_size=7, embed_dim=5, hidden_dim=6, num_layers=layers).eval()
    h0, c0 = torch.randn(layers, 4, 6), torch.randn(layers, 4, 6)
    tok = torch.tensor([0, 3, 6, 1])
    ref, (rh, rc) = p(tok[:, None], (h0, c0))
    out, (h, c) = p.step(tok, (h0, c0))
    torch.testing.assert_close(out, ref[:, 0])
    torch.testing.assert_close(h, rh)
    torch.testing.assert_close(c, rc)


def reference_modified_beam(head, enc, n, K, lm=None, lm_weight=0.0, norm=False):
    """One utterance, plain Python: icefall's modified beam search (<= 1 symbol per frame, merging)."""
    V, blank = head.vocab_size, head.blank
    hyps = {(): 0.0}
    for t in range(n):
        cands = []
        for seq, score in hyps.items():
            pred, _ = head.predictor(torch.tensor([[blank, *seq]]))
            lp = head.joiner(enc[None, None, t], pred[:, -1:]).log_softmax(-1).flatten().double()
            if lm is not None:
                lp = lp + lm_weight * lm.logp(seq) * (torch.arange(V) != blank)
            for v in range(V):
                cands.append((score + float(lp[v]), seq if v == blank else seq + (v,)))
        cands.sort(key=lambda c: -c[0] / (len(c[1]) + 1) if norm else -c[0])
        new: dict[tuple, float] = {}
        for score, seq in cands[:K]:
            new[seq] = float(torch.logaddexp(torch.tensor(new[seq]), torch.tensor(score))) if seq in new else score
        hyps = new
    return sorted(((s, list(q)) for q, s in hyps.items()), key=lambda x: -x[0] / (len(x[1]) + 1) if norm else -x[0])


class BigramLM:
    """A tiny fake LMScorer: next-token log-probs from the last token (a random bigram table)."""

    def __init__(self, V, seed=0):
        self.vocab_size = V
        self.table = torch.randn(V + 1, V, generator=torch.Generator().manual_seed(seed)).log_softmax(-1)

    def logp(self, seq):  # reference side
        return self.table[seq[-1] if seq else self.vocab_size]

    def init_state(self, batch_size):
        return torch.full((batch_size,), self.vocab_size, dtype=torch.long)

    def score(self, state):
        return self.table[state]

    def advance(self, state, tokens):
        return torch.where(tokens >= 0, tokens, state)

    def select(self, state, index):
        return state[index]


@pytest.mark.parametrize("with_lm,norm", [(False, False), (True, False), (False, True)])
def test_modified_beam_batched_equals_alone_and_reference(with_lm, norm):
    head = small_head(V=6, E=4, seed=7).eval()
    g = torch.Generator().manual_seed(3)
    enc = torch.randn(5, 9, 4, generator=g) * 2
    lens = torch.tensor([9, 4, 7, 1, 6])
    lm = BigramLM(6) if with_lm else None
    w = 0.5 if with_lm else 0.0
    batched = rnnt_modified_beam_search_hyps(head, enc, lens, beam_size=4, nbest=4, lm=lm, lm_weight=w,
                                             length_normalise=norm)
    assert any(h[0].tokens for h in batched)
    for b in range(5):
        n = int(lens[b])
        (alone,) = rnnt_modified_beam_search_hyps(head, enc[b : b + 1, :n], lens[b : b + 1], beam_size=4, nbest=4,
                                                  lm=lm, lm_weight=w, length_normalise=norm)
        assert [h.tokens for h in alone] == [h.tokens for h in batched[b]]
        assert [h.score for h in alone] == pytest.approx([h.score for h in batched[b]], abs=1e-5)
        with torch.no_grad():
            ref = reference_modified_beam(head, enc[b], n, 4, lm, w, norm)
        assert [h.tokens for h in batched[b]] == [q for _, q in ref]
        assert [h.score for h in batched[b]] == pytest.approx([s for s, _ in ref], abs=1e-4)


def test_modified_beam_lm_fusion_changes_the_search_and_bad_args():
    head = small_head(V=6, E=4, seed=8).eval()
    enc, lens = torch.randn(3, 8, 4) * 2, torch.tensor([8, 8, 5])
    plain = rnnt_modified_beam_search_hyps(head, enc, lens, beam_size=3)
    strong = rnnt_modified_beam_search_hyps(head, enc, lens, beam_size=3, lm=BigramLM(6, seed=1), lm_weight=5.0)
    assert [h[0].tokens for h in plain] != [h[0].tokens for h in strong]
    for kw in ({"beam_size": 0}, {"nbest": 5}, {"lm_weight": -1.0}):
        with pytest.raises(ValueError):
            rnnt_modified_beam_search_hyps(head, enc, lens, **{"beam_size": 3, **kw})
    with pytest.raises(ValueError):
        rnnt_modified_beam_search_hyps(head, enc, lens, lm=BigramLM(7), lm_weight=1.0)
    with pytest.raises(ValueError):
        rnnt_beam_search(head, enc, lens, algorithm="fast")


def test_modified_beam_with_stk_transformer_lm_scorer():
    """The real LMScorer (stk.models.lm): batched search = each utterance alone, and = the reference
    search scoring each hypothesis with the LM's full-sequence log-probabilities."""
    from stk.models.lm import TransformerLM

    torch.manual_seed(0)
    V = 6
    head = small_head(V=V, E=4, seed=9).eval()
    lm_model = TransformerLM(vocab_size=V, d_model=8, num_heads=2, ffn_dim=16, num_layers=1, dropout=0.0).eval()
    enc, lens = torch.randn(3, 7, 4) * 2, torch.tensor([7, 4, 6])
    batched = rnnt_modified_beam_search_hyps(head, enc, lens, beam_size=3, nbest=3, lm=lm_model.scorer(), lm_weight=0.7)
    for b in range(3):
        n = int(lens[b])
        (alone,) = rnnt_modified_beam_search_hyps(head, enc[b : b + 1, :n], lens[b : b + 1], beam_size=3, nbest=3,
                                                  lm=lm_model.scorer(), lm_weight=0.7)
        assert [h.tokens for h in alone] == [h.tokens for h in batched[b]]
        assert [h.score for h in alone] == pytest.approx([h.score for h in batched[b]], abs=1e-4)

    class FullLM:  # recomputes the LM over the whole prefix: no incremental state at all
        def logp(self, seq):
            from stk.tokenizer import SOS_EOS

            with torch.no_grad():
                return lm_model.logits(torch.tensor([[SOS_EOS, *seq]]))[0, -1].log_softmax(-1)

    with torch.no_grad():
        ref = reference_modified_beam(head, enc[0], 7, 3, FullLM(), 0.7)
    assert [h.tokens for h in batched[0]] == [q for _, q in ref]
    assert [h.score for h in batched[0]] == pytest.approx([s for s, _ in ref], abs=1e-4)
