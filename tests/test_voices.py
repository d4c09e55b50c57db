"""Tests of the extra training voices (voices_train: flite/Festival reading synth_train sentences):
voice turns, ids, no Pico voice in training, the skip message, and a real flite build if installed."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from stk.corpora import heldout, voices
from stk.data.kaldi import read_kv, validate_data_dir

HAVE_FLITE = shutil.which("flite") is not None and shutil.which("sox") is not None


def _fake_corpus(root: Path, n: int = 8) -> Path:
    src = root / "synth_train"
    src.mkdir(parents=True)
    rows = []
    for i in range(n):
        sid = f"w{i:010x}"
        rows.append((f"en-m1-{sid}", "en", f"The orcs are coming {i}!", f"The orcs are coming {i}!"))
        rows.append((f"it-f2-{sid}", "it", f"Gli orchi arrivano {i}, è così!", f"The orcs are coming {i}!"))
        rows.append((f"de-m3-{sid}", "de", f"Die Orks kommen {i}!", f"The orcs are coming {i}!"))
    rows.sort()
    for name, col in (("text", 2), ("text.en", 3), ("utt2lang", 1)):
        (src / name).write_text("".join(f"{r[0]} {r[col]}\n" for r in rows), encoding="utf-8")
    return root


def test_voices_take_turns_and_ids(tmp_path: Path) -> None:
    corpus = _fake_corpus(tmp_path)
    utts = voices.voices_utts(corpus, voices.EXTRA_VOICES)
    assert {u.lang for u in utts} == {"en", "it"}  # no extra engine for German
    en = [u for u in utts if u.lang == "en"]
    assert len(en) == 8 and sorted({u.spk for u in en}) == ["en-flawb", "en-flkal", "en-flrms", "en-flslt"]
    assert all(sum(u.spk == s for u in en) == 2 for s in {u.spk for u in en})  # balanced
    it = [u for u in utts if u.lang == "it"]
    assert sorted({u.spk for u in it}) == ["it-felp", "it-fepc"]
    u = next(x for x in it if x.utt_id.endswith("w0000000003"))
    assert u.text == "Gli orchi arrivano 3, è così!" and u.text_en == "The orcs are coming 3!"
    assert u.utt_id == f"{u.spk}-w0000000003" and u.wav.parent == corpus / "wav" / "voices" / "it"
    assert voices.voices_utts(corpus, voices.EXTRA_VOICES) == utts  # deterministic


def test_held_out_engine_is_not_a_training_voice() -> None:
    assert all(v.engine in ("flite", "festival") for v in voices.EXTRA_VOICES)
    held = {s.engine for s in heldout.HELDOUT_SETS}
    assert held == {"pico"} and not held & {v.engine for v in voices.EXTRA_VOICES}


def test_skipped_without_engines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    corpus = _fake_corpus(tmp_path)
    monkeypatch.setattr(voices.shutil, "which", lambda tool: None)
    with caplog.at_level(logging.INFO, logger="stk.corpora.voices"):
        assert voices.build_voices(corpus) == {}
    assert "voices_train skipped" in caplog.text and "apt-get install -y flite" in caplog.text


@pytest.mark.skipif(not HAVE_FLITE, reason="flite not installed")
def test_build_with_flite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = _fake_corpus(tmp_path, n=2)
    monkeypatch.setattr(voices, "EXTRA_VOICES", tuple(v for v in voices.EXTRA_VOICES if v.engine == "flite"))
    written = voices.build_voices(corpus, nj=1)
    assert set(written) == {"voices_train", "voices_train_en"}
    validate_data_dir(corpus / "voices_train")
    assert all(0.5 < float(d) < 10 for d in read_kv(corpus / "voices_train" / "utt2dur").values())
    assert voices.build_voices(corpus, nj=1) == {}  # marker: not rebuilt


def test_festival_text_keeps_words_drops_quotes() -> None:
    assert voices.festival_text("Divertente, e perché il «sacco d’ossa» vi — fatti?") == "Divertente, e perché il sacco d'ossa vi fatti?"
