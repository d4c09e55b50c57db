"""Scoring like the papers: empty references count, a named kept normaliser, sclite-style
result.txt, bootstrap intervals and paired comparisons, the RESULTS.md environment block."""

from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

from stk.cli import app
from stk.report import environment_block
from stk.scoring import Normalizer, bootstrap, compare, error_rates

runner = CliRunner()


def _write(path, lines: dict[str, str]) -> None:
    path.write_text("".join(f"{k} {v}\n" for k, v in lines.items()), encoding="utf-8")


def test_empty_reference_counts_as_insertions():
    # Kaldi compute-wer: (S + D + I) / N with N = 2 reference words; the empty reference adds 2 insertions
    r = error_rates(["", "a b"], ["x y", "a b"])
    assert (r["wer"], r["ins"], r["words"], r["sents"]) == (100.0, 2, 2, 2)
    r = error_rates(["a b c d", ""], ["a b c d", "e"])
    assert r["wer"] == pytest.approx(25.0) and r["ins"] == 1
    with pytest.raises(ValueError, match="every reference is empty"):
        error_rates(["", "!"], ["a", "b"])


def test_normalizer_keeps_contractions_and_strips_cjk_punctuation():
    n = Normalizer()
    assert n("Don't STOP,  now!") == "dont stop now"
    assert n("你好，世界。") == "你好世界"
    assert n("«Ça» va?") == "ça va"
    assert "jiwer" in n.description and "RemovePunctuation" in n.description
    assert Normalizer(lowercase=False, remove_punct=False)("Don't") == "Don't"
    with pytest.raises(ValueError, match="normalizer must be one of"):
        Normalizer(name="mine")


def test_whisper_normalizers():
    pytest.importorskip("whisper_normalizer")  # the stk[whisper] extra (installed by tools/setup.sh)
    assert Normalizer(name="whisper_english")("Don't stop, it's twenty one") == "do not stop it is 21"
    assert Normalizer(name="whisper_basic")("Hello, World!") == "hello world"
    assert "EnglishTextNormalizer" in Normalizer(name="whisper_english").description


def test_score_cli_writes_normalizer_result_txt_and_intervals(tmp_path):
    ref, hyp = tmp_path / "text", tmp_path / "hyp"
    _write(ref, {"u1": "Hello world", "u2": "Don't go", "u3": "a b c"})
    _write(hyp, {"u1": "hello word", "u2": "dont go", "u3": "a c"})
    _write(tmp_path / "utt2spk", {"u1": "s1", "u2": "s1", "u3": "s2"})
    out = tmp_path / "decode" / "score.json"
    r = runner.invoke(app, ["score", str(ref), str(hyp), "--bootstrap", "200", "--json", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["wer"] == pytest.approx(100 * 2 / 7) and res["sub"] == 1 and res["del"] == 1
    assert res["normalizer"].startswith("jiwer")
    lo, hi = res["bootstrap"]["wer"]
    assert lo <= res["wer"] <= hi and res["bootstrap"]["n"] == 200
    txt = (tmp_path / "decode" / "result.txt").read_text()
    for col in ("SPKR", "# Snt", "# Wrd", "Corr", "Sub", "Del", "Ins", "Err", "S.Err", "Sum/Avg", "s1", "s2"):
        assert col in txt
    assert "id: (u3)" in txt and "Scores: (#C #S #D #I) 2 0 1 0" in txt
    assert "REF: a b c" in txt and "HYP: a * c" in txt
    # the Sum/Avg row: 7 words, 5 correct, 2 of 3 sentences wrong
    row = next(line for line in txt.splitlines() if "Sum/Avg" in line)
    assert row.split("|")[2].split() == ["3", "7"] and row.split("|")[3].split()[-1] == "66.7"
    _write(tmp_path / "utt2lang", {"u1": "en", "u2": "en", "u3": "fr"})
    r = runner.invoke(app, ["score", str(ref), str(hyp), "--bootstrap", "100", "--utt2lang", str(tmp_path / "utt2lang"),
                            "--json", str(out)])
    assert r.exit_code == 0, r.output
    fr = json.loads(out.read_text())["by_lang"]["fr"]
    assert fr["wer"] == pytest.approx(100 / 3) and fr["bootstrap"]["wer"] == [pytest.approx(100 / 3)] * 2
    rep = runner.invoke(app, ["report", str(out)])
    assert rep.exit_code == 0 and "## Environment" in rep.output and "Normalizer: jiwer" in rep.output
    assert "95 % CI" in rep.output


def test_bootstrap_interval_is_seeded_and_narrows_with_data():
    rng = random.Random(0)
    words = "a b c d e f g h".split()
    refs = [" ".join(rng.choices(words, k=6)) for _ in range(200)]
    hyps = [" ".join(w if rng.random() > 0.2 else "x" for w in r.split()) for r in refs]
    full = bootstrap(refs, hyps, "wer", 300)
    assert full == bootstrap(refs, hyps, "wer", 300)  # seeded
    small = bootstrap(refs[:20], hyps[:20], "wer", 300)
    assert (full["wer"][1] - full["wer"][0]) < (small["wer"][1] - small["wer"][0])
    wer = error_rates(refs, hyps)["wer"]
    assert full["wer"][0] < wer < full["wer"][1]


def test_compare_says_no_difference_or_which_is_better():
    rng = random.Random(1)
    refs = [" ".join(rng.choices("a b c d e".split(), k=5)) for _ in range(60)]
    good = list(refs)
    bad = [" ".join("x" if rng.random() < 0.5 else w for w in r.split()) for r in refs]
    res = compare(refs, good, bad, "wer", 300, names=("good", "bad"))
    assert res["wer"]["diff"] < 0 and res["wer"]["ci"][1] < 0 and res["wer"]["verdict"] == "good better"
    same = compare(refs, bad, bad, "wer", 300)
    assert same["wer"]["ci"] == [0.0, 0.0] and same["wer"]["verdict"] == "no difference"
    # nearly equal systems: one substitution apart over 60 utterances -> the interval holds 0
    close = list(good)
    close[0] = "x " + close[0].split(" ", 1)[1]
    assert compare(refs, good, close, "wer", 300)["wer"]["verdict"] == "no difference"
    # error-rate ratio A / B with its paired interval: bad / close around the point ratio; none when B is 0
    r = compare(refs, bad, close, "wer", 300)["wer"]
    assert r["ratio"] == r["a"] / r["b"] and r["ratio_ci"][0] < r["ratio"] < r["ratio_ci"][1]
    assert "ratio" not in compare(refs, bad, good, "wer", 300)["wer"]


def test_bleu_bootstrap_and_paired_comparison(tmp_path):
    rng = random.Random(2)
    vocab = "the cat sat on a mat with dog and bird".split()
    refs = [" ".join(rng.choices(vocab, k=8)) for _ in range(80)]
    noisy = [" ".join(w if rng.random() > 0.3 else "zz" for w in r.split()) for r in refs]
    worse = [" ".join(w if rng.random() > 0.7 else "zz" for w in r.split()) for r in refs]
    b = bootstrap(refs, noisy, "bleu", 200)
    import sacrebleu

    score = sacrebleu.corpus_bleu(noisy, [refs]).score
    assert b["bleu"][0] < score < b["bleu"][1] and b["chrf"][0] < b["chrf"][1]
    res = compare(refs, noisy, worse, "bleu", 200, names=("noisy", "worse"))
    assert res["bleu"]["diff"] > 0 and res["bleu"]["ci"][0] > 0 and res["bleu"]["verdict"] == "noisy better"
    _write(tmp_path / "ref", {f"u{i:03d}": r for i, r in enumerate(refs)})
    _write(tmp_path / "a", {f"u{i:03d}": r for i, r in enumerate(noisy)})
    _write(tmp_path / "b", {f"u{i:03d}": r for i, r in enumerate(worse)})
    r = runner.invoke(app, ["score", str(tmp_path / "ref"), "--metric", "bleu", "--compare", str(tmp_path / "a"),
                            str(tmp_path / "b"), "--bootstrap", "200", "--json", str(tmp_path / "cmp.json")])
    assert r.exit_code == 0, r.output
    assert "BLEU A" in r.output and "A better" in r.output
    assert json.loads((tmp_path / "cmp.json").read_text())["bleu"]["verdict"].endswith("better")
    r = runner.invoke(app, ["score", str(tmp_path / "ref"), "--metric", "bleu", "--compare", str(tmp_path / "a"),
                            str(tmp_path / "a")])
    assert r.exit_code == 0 and "no difference" in r.output


def test_environment_block():
    import torch

    block = environment_block()
    assert block.startswith("## Environment")
    assert f"torch: {torch.__version__}" in block
    for key in ("date:", "stk:", "git", "torchaudio:", "machine:", "cores"):
        assert key in block
    r = runner.invoke(app, ["env"])
    assert r.exit_code == 0 and "torchaudio" in r.output


def test_table_names_the_normalizer(tmp_path):
    ref, hyp = tmp_path / "text", tmp_path / "hyp"
    _write(ref, {"u1": "Hello, world"})
    _write(hyp, {"u1": "hello world"})
    assert runner.invoke(app, ["score", str(ref), str(hyp), "--json", str(tmp_path / "d" / "score.json")]).exit_code == 0
    r = runner.invoke(app, ["table", f"A|WER|wer|{tmp_path}/d/score.json"])
    assert r.exit_code == 0 and "| A | 0.0 |" in r.output and "Normalizer (WER/CER): jiwer" in r.output
