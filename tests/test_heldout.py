"""Tests of the held-out-engine test set (pico_test): ids, text from synth_test, the skip when the
engine is missing, and (where pico2wave is installed) a real build that is reproducible."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import pytest

from stk.corpora import heldout
from stk.data.kaldi import read_kv, validate_data_dir

HAVE_PICO = shutil.which("pico2wave") is not None and shutil.which("sox") is not None


def _fake_corpus(root: Path) -> Path:
    src = root / "synth_test"
    src.mkdir(parents=True)
    rows = [
        ("de-f1-w0d2f4625fa", "de", "Halt! Wer da?", "Halt! Who goes there?"),
        ("en-m3-w0d2f4625fa", "en", "Halt! Who goes there?", "Halt! Who goes there?"),
        ("ru-f1-w0d2f4625fa", "ru", "Стой! Кто идёт?", "Halt! Who goes there?"),
        ("it-f2-w1947f4d4c2", "it", "Legioni di non morti ci hanno cacciato.", "Legions of undead drove us out."),
    ]
    for name, col in (("text", 2), ("text.en", 3), ("utt2lang", 1)):
        (src / name).write_text("".join(f"{r[0]} {r[col]}\n" for r in rows), encoding="utf-8")
    return root


def test_sentence_id() -> None:
    assert heldout.sentence_id("de-f1-w0d2f4625fa", "de") == "w0d2f4625fa"
    with pytest.raises(ValueError, match="not <lang>-<voice>"):
        heldout.sentence_id("de-f1-w0d2f4625fa", "fr")
    with pytest.raises(ValueError, match="not <lang>-<voice>"):
        heldout.sentence_id("w0d2f4625fa", "de")


def test_heldout_utts_ids_text_and_no_russian(tmp_path: Path) -> None:
    corpus = _fake_corpus(tmp_path)
    utts = heldout.heldout_utts(corpus, heldout.HELDOUT_SETS[0])
    assert [u.utt_id for u in utts] == ["de-pico-w0d2f4625fa", "en-pico-w0d2f4625fa", "it-pico-w1947f4d4c2"]
    assert [u.spk for u in utts] == ["de-pico", "en-pico", "it-pico"]
    assert utts[0].text == "Halt! Wer da?" and utts[0].text_en == "Halt! Who goes there?"
    assert utts[2].wav == corpus / "wav" / "pico" / "it" / "it-pico-w1947f4d4c2.wav"
    assert [u.lang for u in heldout.heldout_utts(corpus, heldout.HELDOUT_SETS[0], langs=["it", "ru"])] == ["it"]


def test_missing_source_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synth_test: no text"):
        heldout.heldout_utts(tmp_path, heldout.HELDOUT_SETS[0])


def test_skipped_with_a_message_without_pico(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    corpus = _fake_corpus(tmp_path)
    monkeypatch.setattr(heldout.shutil, "which", lambda tool: None)
    with caplog.at_level(logging.INFO, logger="stk.corpora.heldout"):
        assert heldout.build_heldout(corpus) == {}
    assert "pico_test skipped: pico2wave not found" in caplog.text and "install_pico.sh" in caplog.text
    assert not (corpus / "pico_test").exists()


def test_no_russian_voice() -> None:
    with pytest.raises(ValueError, match="no voice for 'ru'"):
        heldout.synthesize_pico("Стой!", "ru", Path("/nonexistent/x.wav"))


@pytest.mark.skipif(not HAVE_PICO, reason="pico2wave not installed (egs/mini/asr/local/install_pico.sh)")
def test_build_real_and_reproducible(tmp_path: Path) -> None:
    corpus = _fake_corpus(tmp_path)
    written = heldout.build_heldout(corpus, nj=1)
    assert set(written) == {"pico_test", "pico_test_de", "pico_test_en", "pico_test_it"}
    validate_data_dir(corpus / "pico_test")
    durs = {k: float(v) for k, v in read_kv(corpus / "pico_test" / "utt2dur").items()}
    assert all(0.5 < d < 10 for d in durs.values()), durs
    wav = corpus / "wav" / "pico" / "de" / "de-pico-w0d2f4625fa.wav"
    digest = hashlib.sha1(wav.read_bytes()).hexdigest()
    assert heldout.build_heldout(corpus, nj=1) == {}  # marker: not rebuilt
    wav.unlink()
    (corpus / ".done.pico_test").unlink()
    heldout.build_heldout(corpus, nj=1)
    assert hashlib.sha1(wav.read_bytes()).hexdigest() == digest  # byte-identical rebuild
