"""`stk data validate` rejects what Kaldi's validate_data_dir.sh rejects, naming file and line
(Kaldi's wording quoted so users can search for it)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from conftest import make_data_dir
from stk.cli import app
from stk.data.kaldi import DataDirError, read_kv, validate_data_dir, write_kv

runner = CliRunner()


@pytest.fixture
def d(tmp_path):
    return make_data_dir(tmp_path, n=4)


def _fails(d, pattern: str, **kw) -> None:
    with pytest.raises(DataDirError, match=pattern):
        validate_data_dir(d, check_audio=False, **kw)
    r = runner.invoke(app, ["data", "validate", "--no-audio", str(d)] + (["--no-spk-sort"] if kw.get("spk_sort") is False else []))
    assert r.exit_code == 1 and "error:" in r.output


def _feats(d):
    utts = list(read_kv(d / "utt2spk"))
    return {u: f"{d}/feats.ark:{10 + 100 * i}" for i, u in enumerate(utts)}


def test_clean_dir_with_every_optional_file_passes(d):
    write_kv(d / "feats.scp", _feats(d))
    write_kv(d / "utt2dur", {u: "0.61" for u in read_kv(d / "utt2spk")})
    write_kv(d / "utt2num_frames", {u: "59" for u in read_kv(d / "utt2spk")})
    write_kv(d / "spk2gender", {"spk0": "f", "spk1": "m"})
    write_kv(d / "cmvn.scp", {"spk0": "cmvn.ark:5", "spk1": "cmvn.ark:90"})
    assert len(validate_data_dir(d, check_audio=False).utt_ids) == 4
    r = runner.invoke(app, ["data", "validate", "--no-audio", str(d)])
    assert r.exit_code == 0 and "OK (4 utterances)" in r.output


def test_speaker_not_prefix_of_utterance(d):
    spk = read_kv(d / "utt2spk")
    # spk0-utt000 -> speaker "zed": sorted by utterance, but not when sorted first on speaker-id
    spk["spk0-utt000"] = "zed"
    write_kv(d / "utt2spk", spk)
    from stk.data.kaldi import spk2utt_from_utt2spk

    write_kv(d / "spk2utt", spk2utt_from_utt2spk(spk))
    _fails(d, r"utt2spk:1: utterance 'spk0-utt000' of speaker 'zed'.*not in sorted order when sorted first on "
              r"speaker-id.*prefixes of utt-ids")
    validate_data_dir(d, check_audio=False, spk_sort=False)  # Kaldi's --no-spk-sort
    assert runner.invoke(app, ["data", "validate", "--no-audio", "--no-spk-sort", str(d)]).exit_code == 0


@pytest.mark.parametrize("sym", ["<s>", "</s>", "#0"])
def test_illegal_symbol_in_text(d, sym):
    text = read_kv(d / "text")
    text["spk0-utt002"] = f"{sym} the cat sat"
    write_kv(d / "text", text)
    _fails(d, rf"text:2: utterance 'spk0-utt002': text contains illegal symbol {sym}")


def test_feats_scp_missing_an_utterance(d):
    feats = _feats(d)
    del feats["spk1-utt003"]
    write_kv(d / "feats.scp", feats)
    _fails(d, r"feats.scp: utterance 'spk1-utt003' \(from wav.scp\) is missing \(utterance lists extracted from "
              r"wav.scp and feats.scp differ\)")


def test_feats_scp_with_an_unknown_utterance(d):
    feats = _feats(d) | {"spk9-utt999": "x.ark:1"}
    write_kv(d / "feats.scp", feats)
    _fails(d, r"feats.scp:5: utterance 'spk9-utt999' is not in wav.scp")


@pytest.mark.parametrize("bad, line", [({"spk0": "f", "spk1": "male"}, 2), ({"spk0": "f m", "spk1": "m"}, 1)])
def test_malformed_spk2gender(d, bad, line):
    write_kv(d / "spk2gender", bad)
    _fails(d, rf"spk2gender:{line}: speaker .*expected m or f \(Kaldi: Mal-formed spk2gender file\)")


def test_spk2gender_with_wrong_speakers(d):
    write_kv(d / "spk2gender", {"spk0": "f"})
    _fails(d, r"spk2gender: speaker 'spk1' \(from spk2utt\) is missing")


@pytest.mark.parametrize("value", ["0", "-1.5", "abc", "0.5 1"])
def test_bad_utt2dur(d, value):
    durs = {u: "0.6" for u in read_kv(d / "utt2spk")}
    durs["spk1-utt001"] = value
    write_kv(d / "utt2dur", durs)
    _fails(d, rf"utt2dur:3: utterance 'spk1-utt001'.*not a positive duration.*Bad line utt2dur:3")


def test_crlf_line_endings(d):
    raw = (d / "text").read_bytes().split(b"\n")
    raw[1] = raw[1] + b"\r"
    (d / "text").write_bytes(b"\n".join(raw))
    _fails(d, r"text:2: CR character \(Windows CRLF line ending\)")


def test_missing_final_newline(d):
    (d / "utt2lang").write_bytes((d / "utt2lang").read_bytes().rstrip(b"\n"))
    _fails(d, r"utt2lang:4: no newline at the end of the file")


@pytest.mark.parametrize("value", ["59.5", "1e2", "x", "0"])
def test_non_integer_utt2num_frames(d, value):
    frames = {u: "59" for u in read_kv(d / "utt2spk")}
    frames["spk0-utt002"] = value
    write_kv(d / "utt2num_frames", frames)
    _fails(d, r"utt2num_frames:2: utterance 'spk0-utt002'.*not a positive integer frame count")


def test_cmvn_scp_with_wrong_speakers(d):
    write_kv(d / "cmvn.scp", {"spk0": "cmvn.ark:5", "spk2": "cmvn.ark:90"})
    _fails(d, r"cmvn.scp:2: speaker 'spk2' is not in spk2utt \(speaker lists extracted from spk2utt and cmvn.scp "
              r"differ\)")
    write_kv(d / "cmvn.scp", {"spk0": "cmvn.ark:5"})
    _fails(d, r"cmvn.scp: speaker 'spk1' \(from spk2utt\) is missing")
