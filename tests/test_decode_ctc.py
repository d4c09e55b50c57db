"""CTC greedy and prefix beam search, checked against brute-force sums over alignments."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from stk.decode.ctc import ctc_greedy, ctc_prefix_beam_search, ctc_prefix_beam_search_nbest


def collapse(path, blank=0):
    out, prev = [], None
    for c in path:
        if c != prev and c != blank:
            out.append(c)
        prev = c
    return tuple(out)


def brute_force_label_probs(lp: torch.Tensor, blank: int = 0) -> dict[tuple[int, ...], float]:
    """log P(label sequence) for every sequence, summing all V^T alignments of (T, V) log-probs."""
    T, V = lp.shape
    probs: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(V), repeat=T):
        p = math.exp(sum(float(lp[t, c]) for t, c in enumerate(path)))
        key = collapse(path, blank)
        probs[key] = probs.get(key, 0.0) + p
    return {k: math.log(v) for k, v in probs.items() if v > 0}


def peaked(seq_frames: list[int], V: int, peak: float = 0.95) -> torch.Tensor:
    p = torch.full((len(seq_frames), V), (1 - peak) / (V - 1))
    p[torch.arange(len(seq_frames)), torch.tensor(seq_frames)] = peak
    return p.log()


def test_greedy_collapses_and_respects_lengths():
    lp = torch.stack([peaked([1, 1, 0, 1, 2, 2, 0, 3], 4), peaked([2, 0, 2, 2, 1, 3, 3, 3], 4)])
    out = ctc_greedy(lp, torch.tensor([8, 5]))
    assert out == [[1, 1, 2, 3], [2, 2, 1]]


def test_peaked_beam_agrees_with_greedy():
    torch.manual_seed(0)
    frames = torch.randint(0, 5, (3, 12))
    lp = torch.stack([peaked(f.tolist(), 5) for f in frames])
    lens = torch.tensor([12, 9, 4])
    assert ctc_prefix_beam_search(lp, lens, beam_size=8) == ctc_greedy(lp, lens)


def test_prefix_beam_beats_greedy_on_total_probability():
    # Each frame: blank 0.6, "a" 0.4. Best path is blank-blank (""), P("") = 0.36,
    # but "a" collects aa + a_ + _a = 0.16 + 0.24 + 0.24 = 0.64.
    lp = torch.tensor([[0.6, 0.4], [0.6, 0.4]]).log()[None]
    lens = torch.tensor([2])
    greedy = ctc_greedy(lp, lens)[0]
    beam = ctc_prefix_beam_search(lp, lens, beam_size=4)[0]
    ref = brute_force_label_probs(lp[0])
    assert greedy == [] and beam == [1]
    assert ref[tuple(beam)] > ref[tuple(greedy)]
    assert math.isclose(math.exp(ref[(1,)]), 0.64, rel_tol=1e-6)


def test_random_case_scores_are_exact_sums_over_alignments():
    torch.manual_seed(1)
    T, V = 5, 3
    lp = torch.randn(1, T, V, dtype=torch.float64).mul(2).log_softmax(-1)
    ref = brute_force_label_probs(lp[0])
    # Beam large enough that nothing is pruned: scores are exact and the best is the true best.
    hyps = ctc_prefix_beam_search_nbest(lp, torch.tensor([T]), beam_size=64, nbest=5)[0]
    best_ref = sorted(ref.items(), key=lambda kv: kv[1], reverse=True)[:5]
    assert [tuple(h.tokens) for h in hyps] == [k for k, _ in best_ref]
    for h in hyps:
        assert h.score == pytest.approx(ref[tuple(h.tokens)], abs=1e-9)
        nll = torch.nn.functional.ctc_loss(
            lp[0][:, None], torch.tensor([h.tokens or [0]]), torch.tensor([T]),
            torch.tensor([len(h.tokens)]), blank=0, reduction="none",
        )
        assert -float(nll) == pytest.approx(h.score, abs=1e-9)


def test_small_beam_still_finds_sequence_better_than_greedy():
    torch.manual_seed(3)
    T, V = 6, 3
    ref = None
    for _ in range(200):  # find a case where best path and best labelling differ
        lp = torch.randn(1, T, V, dtype=torch.float64).log_softmax(-1)
        ref = brute_force_label_probs(lp[0])
        if max(ref, key=ref.get) != tuple(ctc_greedy(lp, torch.tensor([T]))[0]):
            break
    g = tuple(ctc_greedy(lp, torch.tensor([T]))[0])
    b = tuple(ctc_prefix_beam_search(lp, torch.tensor([T]), beam_size=3)[0])
    assert ref[b] > ref[g]


def test_bad_args():
    lp = torch.zeros(1, 3, 4)
    with pytest.raises(ValueError):
        ctc_greedy(lp[0], torch.tensor([3]))
    with pytest.raises(ValueError):
        ctc_greedy(lp, torch.tensor([4]))
    with pytest.raises(ValueError):
        ctc_prefix_beam_search(lp, torch.tensor([3]), beam_size=0)
    with pytest.raises(ValueError):
        ctc_prefix_beam_search_nbest(lp, torch.tensor([3]), beam_size=2, nbest=3)
    with pytest.raises(ValueError):
        ctc_greedy(lp, torch.tensor([3]), blank=4)


# --- torchaudio's flashlight decoder and the ARPA writer -------------------------------------

class CharTokenizer:
    """What flashlight_decoder needs of a Tokenizer: pieces by id, vocab size, word spelling."""

    PIECES = ["<blank>", "<unk>", "<sos/eos>", "▁", "a", "b", "c", "d", "e"]

    def __init__(self) -> None:
        self.vocab_size = len(self.PIECES)
        self.sp = self

    def id_to_piece(self, i: int) -> str:
        return self.PIECES[i]

    def pieces(self, word: str) -> list[str]:
        return ["▁", *word]


def spell(words: list[str]) -> list[int]:
    return [CharTokenizer.PIECES.index(p) for w in words for p in ["▁", *w]]


def test_flashlight_without_lm_is_best_path_where_stk_sums_alignments():
    """Two frames, P(blank) = 0.6, P(a) = 0.4: the best path is "" (0.36), but "a" has three
    alignments (0.16 + 0.24 + 0.24 = 0.64). stk's prefix search finds "a"; flashlight without an LM
    merges hypotheses by (LM state, last token), keeps the best alignment, and returns "" (greedy's)."""
    from stk.decode.ctc import ctc_beam_search_flashlight

    tok = CharTokenizer()
    a = CharTokenizer.PIECES.index("a")
    p = torch.full((1, 2, tok.vocab_size), 1e-9)
    p[0, :, 0], p[0, :, a] = 0.6, 0.4
    lp, lens = (p / p.sum(-1, keepdim=True)).log(), torch.tensor([2])
    assert ctc_prefix_beam_search(lp, lens, beam_size=4) == [[a]]
    assert ctc_greedy(lp, lens) == [[]]
    assert ctc_beam_search_flashlight(lp, lens, tok, beam_size=4) == [[]]
    # on peaky posteriors, as a trained head gives, the two agree
    torch.manual_seed(11)
    B, T, V = 6, 30, tok.vocab_size
    path = torch.where(torch.rand(B, T) < 0.5, 0, torch.randint(3, V, (B, T)))
    x = torch.randn(B, T, V) * 1.5
    x.scatter_add_(2, path[..., None], torch.full((B, T, 1), 5.0))
    x[..., 1:3] = -40.0  # <unk>, <sos/eos>: never emitted by an stk CTC head
    x, lens = x.log_softmax(-1), torch.tensor([30, 25, 20, 12, 30, 7])
    assert ctc_beam_search_flashlight(x, lens, tok, beam_size=8) == ctc_prefix_beam_search(x, lens, beam_size=8)


def test_arpa_sums_to_one_through_kenlm(tmp_path):
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import Dictionary

    from stk.decode.ngram import build_arpa

    sents = [s.split() for s in ["a b c", "a b d", "b c a", "c c", "a b c d e", "e e a b"]]
    lm = build_arpa(sents, tmp_path / "lm.arpa", order=3)
    d = Dictionary()
    for w in lm.vocab + ["<s>"]:
        d.add_entry(w)
    k = KenLM(str(tmp_path / "lm.arpa"), d)
    for ctx in [[], ["a"], ["a", "b"], ["e", "e"], ["d", "a"], ["<unk>"]]:
        st = k.start(0)
        for w in ctx:
            st, _ = k.score(st, d.get_index(w))
        probs = {w: 10 ** k.score(st, d.get_index(w))[1] for w in lm.vocab}
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5), ctx
        for w in ["a", "c", "</s>", "<unk>"]:  # KenLM's backoff = the estimate's interpolation
            assert probs[w] == pytest.approx(lm.backoff_prob(("<s>", *ctx, w)), rel=1e-4), (ctx, w)
    with pytest.raises(ValueError, match="no sentences"):
        build_arpa([], tmp_path / "x.arpa")
    with pytest.raises(ValueError, match="reserved"):
        build_arpa([["a", "</s>"]], tmp_path / "x.arpa")


def test_word_lm_picks_the_lm_word_when_acoustics_are_ambiguous(tmp_path):
    """Frames spell "bad" or "bed" equally well; the LM has only seen "bad" after "a"."""
    from stk.decode.ctc import ctc_beam_search_flashlight
    from stk.decode.ngram import build_arpa

    build_arpa([["a", "bad"]] * 5 + [["bed"]] * 5 + [["a"]], tmp_path / "lm.arpa", order=2)
    tok = CharTokenizer()
    V = tok.vocab_size
    frames = ["▁", "a", "<blank>", "▁", "b", "?", "d", "<blank>"]
    lp = torch.full((len(frames), V), -12.0)
    for t, p in enumerate(frames):
        if p == "?":
            lp[t, CharTokenizer.PIECES.index("a")] = lp[t, CharTokenizer.PIECES.index("e")] = math.log(0.5)
        else:
            lp[t, CharTokenizer.PIECES.index(p)] = 0.0
    lp = lp.log_softmax(-1)[None]
    lens = torch.tensor([len(frames)])
    (with_lm,) = ctc_beam_search_flashlight(lp, lens, tok, beam_size=10, lm=tmp_path / "lm.arpa", lm_weight=1.0)
    assert with_lm == spell(["a", "bad"])
    lp2 = lp.clone()
    lp2[0, 5, CharTokenizer.PIECES.index("e")] += 0.01  # "bed" is a hair more likely acoustically
    (no_lm,) = ctc_beam_search_flashlight(lp2.log_softmax(-1), lens, tok, beam_size=10)
    assert no_lm == spell(["a", "bed"])
    (lm2,) = ctc_beam_search_flashlight(lp2.log_softmax(-1), lens, tok, beam_size=10, lm=tmp_path / "lm.arpa")
    assert lm2 == spell(["a", "bad"])


def test_stk_ngram_cli(tmp_path):
    from typer.testing import CliRunner

    from stk.cli import app

    (tmp_path / "text").write_text("u1 a b c\nu2 a b\nu3 \n", encoding="utf-8")
    res = CliRunner().invoke(app, ["ngram", str(tmp_path / "text"), "--order", "2", "--out", str(tmp_path / "lm.arpa")])
    assert res.exit_code == 0, res.output
    arpa = (tmp_path / "lm.arpa").read_text(encoding="utf-8")
    assert "ngram 1=6" in arpa and "\\2-grams:" in arpa and "a b" in arpa


def test_a_kenlm_binary_or_garbage_lm_is_a_clear_error(tmp_path):
    from stk.decode.ctc import flashlight_decoder

    (tmp_path / "lm.bin").write_bytes(b"mmap lm http://kheafield.com/code format version 5\n\x00\xff\xfe\x80")
    with pytest.raises(ValueError, match="not a UTF-8 ARPA file"):
        flashlight_decoder(CharTokenizer(), lm=tmp_path / "lm.bin")
    (tmp_path / "empty.arpa").write_text("\\data\\\nngram 1=0\n\\end\\\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no .1-grams: section"):
        flashlight_decoder(CharTokenizer(), lm=tmp_path / "empty.arpa")
