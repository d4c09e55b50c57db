"""prepare_librispeech on a fixture built here in LibriSpeech's real layout (flac audio generated at
test time, nothing committed): counts, genders, skipped rows named, errors naming the file."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from stk.corpora.librispeech import prepare_librispeech, read_speakers
from stk.data.kaldi import read_kv, validate_data_dir

SENTENCES = (
    "ALSO A POPULAR CONTRIVANCE", "HARANGUE THE TIRESOME PRODUCT OF A TIRELESS TONGUE", "ANGOR PAIN PAINFUL TO HEAR",
    "HE HOPED THERE WOULD BE STEW FOR DINNER", "STUFF IT INTO YOU HIS BELLY COUNSELLED HIM",
    "AFTER EARLY NIGHTFALL THE YELLOW LAMPS WOULD LIGHT UP", "THE CHAOS IN WHICH HIS ARDOUR EXTINGUISHED ITSELF",
    "HELLO BERTIE ANY GOOD IN YOUR MIND", "NUMBER TEN FRESH NELLY IS WAITING ON YOU GOOD NIGHT HUSBAND",
    "IT IS NOT A GOOD THING TO BE ALONE", "SHE SAID IT WAS THE BEST DAY OF HER LIFE", "WE DIDN'T KNOW WHAT TO SAY",
)
#: part -> [(reader, chapter, number of utterances)]; readers 60 (name '|CBW|Simon') and 19 as in SPEAKERS.TXT
LAYOUT = {
    "train-clean-100": [("19", "198", 4), ("60", "121082", 3)],
    "train-clean-360": [("14", "208", 3)],
    "train-other-500": [("20", "205", 3)],
    "dev-clean": [("84", "121123", 2), ("174", "50561", 1)],
    "dev-other": [("116", "288045", 2)],
    "test-clean": [("1089", "134686", 2)],
    "test-other": [("1688", "142285", 2)],
}
SPEAKERS_TXT = """\
; Some of the speakers have been removed from the corpus, so not all the IDs are present.
;ID  |SEX| SUBSET           |MINUTES| NAME
14   | F | train-clean-360  | 25.03 | Kristin LeMoine
19   | F | train-clean-100  | 25.19 | Patricia Oakley
20   | F | train-other-500  | 30.07 | Jenny
60   | M | train-clean-100  | 20.18 | |CBW|Simon
84   | F | dev-clean        |  8.02 | Christie Nowak
116  | M | dev-other        |  8.02 | Steven Collins
174  | M | dev-clean        |  8.04 | Peter Eastman
1089 | M | test-clean       |  8.07 | Nelly
1688 | M | test-other       |  8.07 | Nick Gallant
"""


def tone_speech(words: str, rate: int, seed: int) -> np.ndarray:
    """A stand-in for speech: one tone per word (pitch from the word), short gaps, a little noise."""
    rng = np.random.default_rng(seed)
    out = []
    for w in words.split():
        n = int(rate * (0.05 + 0.02 * len(w)))
        t = np.arange(n) / rate
        f = 150.0 + 37.0 * (sum(map(ord, w)) % 17)
        out += [0.3 * np.sin(2 * np.pi * f * t) * np.hanning(n), np.zeros(int(0.03 * rate))]
    x = np.concatenate(out)
    return (x + 0.003 * rng.standard_normal(len(x))).astype(np.float32)


def make_librispeech(root: Path, *, bad_rows: bool = False) -> Path:
    """``root/LibriSpeech`` in the real layout (16 kHz flac, ``*.trans.txt``, ``SPEAKERS.TXT``).

    ``bad_rows`` adds to dev-clean: an empty transcript (174-50561-0001), a listed but missing flac
    (174-50561-0002), a misplaced id (999-1-0000, in 84/121123's transcript), a flac no transcript
    lists (84-121123-0009) and an unreadable flac (84-121123-0003)."""
    import soundfile as sf

    ls = root / "LibriSpeech"
    ls.mkdir(parents=True)
    (ls / "SPEAKERS.TXT").write_text(SPEAKERS_TXT)
    k = 0
    for part, chapters in LAYOUT.items():
        for spk, chapter, n in chapters:
            d = ls / part / spk / chapter
            d.mkdir(parents=True)
            lines = []
            for i in range(n):
                utt = f"{spk}-{chapter}-{i:04d}"
                text = SENTENCES[k % len(SENTENCES)]
                k += 1
                sf.write(d / f"{utt}.flac", tone_speech(text, 16000, k), 16000, subtype="PCM_16", format="FLAC")
                lines.append(f"{utt} {text}")
            if bad_rows and part == "dev-clean" and spk == "84":
                lines.append("999-1-0000 A LINE IN THE WRONG FILE")
                sf.write(d / f"{spk}-{chapter}-0009.flac", tone_speech("NOT LISTED", 16000, 0), 16000, format="FLAC")
                lines.append(f"{spk}-{chapter}-0003 A BROKEN FILE")
                (d / f"{spk}-{chapter}-0003.flac").write_bytes(b"fLaC not really")
            if bad_rows and part == "dev-clean" and spk == "174":
                lines += [f"{spk}-{chapter}-0001", f"{spk}-{chapter}-0002 NO AUDIO FOR THIS ONE"]
            (d / f"{spk}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_librispeech(tmp_path_factory.mktemp("ls"), bad_rows=True)


def test_prepare_all_parts(corpus, tmp_path):
    rows = prepare_librispeech(corpus, tmp_path / "data", nj=2)  # the parent of LibriSpeech/ is accepted
    by_name = {r.name: r for r in rows}
    assert sorted(by_name) == sorted(p.replace("-", "_") for p in LAYOUT)
    for part, chapters in LAYOUT.items():
        r = by_name[part.replace("-", "_")]
        want = sum(n for _, _, n in chapters)
        assert r.utts == want and r.speakers == len(chapters) and r.langs == "en", (part, r)
        d = tmp_path / "data" / r.name
        validate_data_dir(d)  # audio checked: the flac files are read
        assert len(read_kv(d / "wav.scp")) == want and all(v.endswith(".flac") for v in read_kv(d / "wav.scp").values())
    d = tmp_path / "data" / "train_clean_100"
    assert read_kv(d / "text")["60-121082-0000"] == SENTENCES[4]
    assert read_kv(d / "utt2spk")["60-121082-0002"] == "60"
    assert read_kv(d / "spk2gender") == {"19": "f", "60": "m"}  # 60's name field holds '|'
    assert set(read_kv(d / "utt2gender").values()) == {"f", "m"}
    assert 0.3 < float(read_kv(d / "utt2dur")["19-198-0000"]) < 5
    assert by_name["train_clean_100"].skipped == {}


def test_skipped_rows_counted_and_named(corpus, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="stk.corpora.librispeech"):
        rows = prepare_librispeech(corpus / "LibriSpeech", tmp_path, parts=["dev-clean"])
    (r,) = rows
    assert r.utts == 3  # 84-121123-0000/1 and 174-50561-0000
    assert r.skipped == {"malformed or misplaced id": 1, "empty transcript": 1, "missing audio": 1,
                         "no transcript line": 1, "unreadable audio": 1}
    for name in ("999-1-0000", "174-50561-0001", "174-50561-0002", "84-121123-0009", "84-121123-0003"):
        assert name in caplog.text
    assert sorted(read_kv(tmp_path / "dev_clean" / "text")) == ["174-50561-0000", "84-121123-0000", "84-121123-0001"]


def test_errors_name_the_file(corpus, tmp_path):
    with pytest.raises(ValueError, match="unknown part"):
        prepare_librispeech(corpus, tmp_path, parts=["train-clean-99"])
    with pytest.raises(ValueError, match="no LibriSpeech part found"):
        prepare_librispeech(tmp_path, tmp_path / "out")
    bad = tmp_path / "SPEAKERS.TXT"
    bad.write_text("14 | X | train-clean-360 | 1.0 | Someone\n")
    with pytest.raises(ValueError, match=r"SPEAKERS.TXT:1: reader 14"):
        read_speakers(bad)


def test_cli(corpus, tmp_path):
    from typer.testing import CliRunner

    from stk.cli import app

    res = CliRunner().invoke(app, ["corpus", "librispeech", "--corpus-dir", str(corpus), "--out", str(tmp_path),
                                   "--parts", "test-clean,test-other"])
    assert res.exit_code == 0, res.output
    assert "test_clean" in res.output and (tmp_path / "test_other" / "wav.scp").is_file()
    res = CliRunner().invoke(app, ["corpus", "librispeech", "--corpus-dir", str(tmp_path / "nope"),
                                   "--out", str(tmp_path)])
    assert res.exit_code == 1 and "corpus dir not found" in " ".join(res.output.split())
