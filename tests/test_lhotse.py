"""lhotse interop: a data dir survives to-lhotse -> from-lhotse, translations and labels included."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from conftest import make_data_dir, make_wav
from stk.cli import app
from stk.data.kaldi import read_kv, validate_data_dir, write_kv

lhotse = pytest.importorskip("lhotse")  # the stk[lhotse] extra, installed by tools/setup.sh (CI)
runner = CliRunner()


def test_round_trip_keeps_lang_translations_and_labels(tmp_path):
    import torch

    assert torch.__version__.startswith("2.14.1")  # lhotse must not have pulled another torch
    d = make_data_dir(tmp_path, n=4)
    write_kv(d / "utt2intent", {u: f"intent{i % 2}" for i, u in enumerate(read_kv(d / "utt2spk"))})
    write_kv(d / "utt2lang", {u: ("en" if i < 2 else "fr") for i, u in enumerate(read_kv(d / "utt2spk"))})
    write_kv(d / "utt2dur", {u: f"{0.6 + 0.1 * i:.1f}" for i, u in enumerate(read_kv(d / "utt2spk"))})
    res = runner.invoke(app, ["data", "to-lhotse", str(d), str(tmp_path / "man")])
    assert res.exit_code == 0, res.output
    sups = lhotse.load_manifest(tmp_path / "man" / "supervisions.jsonl.gz")
    s = sups["spk1-utt001"]
    assert s.text == "good morning" and s.language == "fr" and s.speaker == "spk1"
    assert s.custom == {"text.en": "good morning", "utt2intent": "intent0"}
    recs = lhotse.load_manifest(tmp_path / "man" / "recordings.jsonl.gz")
    assert recs["spk1-utt003"].duration == pytest.approx(0.9) and recs["spk1-utt003"].sampling_rate == 16000

    res = runner.invoke(app, ["data", "from-lhotse", str(tmp_path / "man"), str(tmp_path / "back")])
    assert res.exit_code == 0, res.output
    back = tmp_path / "back"
    for name in ("text", "text.en", "utt2spk", "spk2utt", "utt2lang", "utt2intent"):
        assert read_kv(back / name) == read_kv(d / name), name
    assert validate_data_dir(back).utt_ids == list(read_kv(d / "utt2spk"))  # readable audio, segments whole


def test_from_lhotse_segmented_recordings(tmp_path):
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    wav = make_wav(tmp_path / "long.wav", 3.0)
    rec = Recording.from_file(wav, recording_id="rec1")
    sups = [SupervisionSegment(id=f"spkA-rec1-{k}", recording_id="rec1", start=1.0 * k, duration=0.9, speaker="spkA",
                               text=f"words {k}", language="de", custom={"text.en": f"english {k}"}) for k in range(3)]
    cuts = CutSet.from_manifests(recordings=RecordingSet.from_recordings([rec]),
                                 supervisions=SupervisionSet.from_segments(sups))
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    res = runner.invoke(app, ["data", "from-lhotse", str(tmp_path / "cuts.jsonl.gz"), str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    d = validate_data_dir(tmp_path / "d")
    assert d.segments["spkA-rec1-2"] == ("rec1", 2.0, 2.9)
    assert read_kv(tmp_path / "d" / "text.en")["spkA-rec1-1"] == "english 1"
    assert read_kv(tmp_path / "d" / "utt2lang") == {f"spkA-rec1-{k}": "de" for k in range(3)}
    res = runner.invoke(app, ["data", "from-lhotse", str(tmp_path / "cuts.jsonl.gz"), str(tmp_path / "d")])
    assert res.exit_code == 1 and "not empty" in res.output
    res = runner.invoke(app, ["data", "from-lhotse", str(tmp_path / "nosuch.jsonl.gz"), str(tmp_path / "e")])
    assert res.exit_code == 1 and "no such lhotse manifest" in res.output
