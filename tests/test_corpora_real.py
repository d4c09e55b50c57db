"""CoVoST 2 and VoxPopuli preparation on tiny fixtures in the corpora's real layouts
(tests/fixtures/{covost2,voxpopuli}; audio is generated here, in the real formats: 48 kHz mp3
for Common Voice, 16 kHz Ogg Vorbis for VoxPopuli), the CLI, and the recipes' data stages."""

from __future__ import annotations

import csv
import logging
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from stk.cli import app
from stk.corpora.covost2 import prepare_covost2
from stk.corpora.voxpopuli import prepare_voxpopuli
from stk.data.kaldi import read_kv, validate_data_dir

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
CV_MISSING = {"common_voice_fr_17299411.mp3"}
CV_BROKEN = {"common_voice_de_18955321.mp3"}
VP_MISSING = {"20120612-0900-PLENARY-3-fr_20120612-09:12:33_2"}
ALICE = "408b27d3097eea5a"  # start of the fixture's first Common Voice client_id


def _signal(seconds: float, rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * (180 + 40 * seed) * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def _tsv_column(path: Path, column: str) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        return [r[column] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]


@pytest.fixture(scope="module")
def covost_root(tmp_path_factory) -> Path:
    """A copy of the CoVoST 2 fixture with 48 kHz mp3 clips (one missing, one unreadable)."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("covost2")
    shutil.copytree(FIXTURES / "covost2", root, dirs_exist_ok=True)
    for lang_dir in sorted((root / "cv").iterdir()):
        clips = {p for p in _tsv_column(lang_dir / "validated.tsv", "path")}
        for tsv in (root / "tsv").glob(f"covost_v2.{lang_dir.name}_en*.tsv"):
            clips |= set(_tsv_column(tsv, "path"))
        (lang_dir / "clips").mkdir()
        for i, name in enumerate(sorted(clips - CV_MISSING)):
            path = lang_dir / "clips" / name
            if name in CV_BROKEN:
                path.write_bytes(b"\x00not an mp3" * 10)
            else:
                sf.write(path, _signal(0.8 + 0.1 * (i % 4), 48000, i), 48000, format="MP3", subtype="MPEG_LAYER_III")
    return root


@pytest.fixture(scope="module")
def voxpopuli_root(tmp_path_factory) -> Path:
    """A copy of the VoxPopuli fixture with 16 kHz Ogg Vorbis segments (one missing)."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("voxpopuli")
    shutil.copytree(FIXTURES / "voxpopuli", root, dirs_exist_ok=True)
    for tsv in sorted(root.glob("transcribed_data/*/asr_*.tsv")):
        for i, seg in enumerate(_tsv_column(tsv, "id")):
            if seg not in VP_MISSING:
                path = tsv.parent / seg[:4] / f"{seg}.ogg"
                path.parent.mkdir(exist_ok=True)
                sf.write(path, _signal(0.7 + 0.2 * i, 16000, i), 16000, format="OGG", subtype="VORBIS")
    return root


@pytest.fixture(scope="module")
def covost_out(covost_root, tmp_path_factory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("covost2_out")
    rows = prepare_covost2(covost_root / "cv", out, src_langs=["fr", "de"], tsv_dir=covost_root / "tsv")
    return out, rows


def test_covost2_data_dirs(covost_out):
    out, rows = covost_out
    assert [(r.name, r.utts, r.speakers, r.langs) for r in rows] == [
        ("train", 6, 3, "de,fr"), ("dev", 2, 2, "de,fr"), ("test", 2, 2, "de,fr")]
    assert rows[0].skipped == {"no line in validated.tsv": 1, "empty translation": 1, "empty transcript": 1}
    assert rows[1].skipped == {"missing audio": 1} and rows[2].skipped == {"unreadable audio": 1}
    for r in rows:
        d = validate_data_dir(out / r.name, expected_rate=16000)  # sorted, consistent, 16 kHz audio
        assert sorted(d.utt_ids, key=str.encode) == d.utt_ids
        for name in ("text.en", "utt2dur", "spk2utt"):
            assert (out / r.name / name).is_file()
    train = out / "train"
    text, en, lang, spk = (read_kv(train / n) for n in ("text", "text.en", "utt2lang", "utt2spk"))
    utt = f"{[s for s in set(spk.values()) if s.startswith(ALICE)][0]}-common_voice_fr_17299396"
    assert text[utt] == "Il a dit « bonjour » à tout le monde." and en[utt] == "He said “hello” to everyone."
    assert lang[utt] == "fr" and utt.startswith(spk[utt] + "-")
    # train_covost rows belong to train; TSV quotes are literal, `\"` of get_covost_splits is unescaped
    assert "We will leave tomorrow morning." in en.values()
    assert "C'est une \"belle\" journée." in text.values() and 'He said "hello".' in en.values()
    assert sorted(lang.values()) == ["de", "de", "fr", "fr", "fr", "fr"]
    wav = read_kv(train / "wav.scp")
    assert all(v.endswith(".wav") and Path(v).is_absolute() and Path(v).parent.parent == out / "wav" for v in wav.values())
    dur = read_kv(train / "utt2dur")
    assert all(0.7 < float(v) < 1.3 for v in dur.values())


def test_covost2_reuses_wavs_and_lists_mp3_without_convert(covost_root, covost_out, tmp_path):
    out, _ = covost_out
    wav = out / "wav" / "fr" / "common_voice_fr_17299396.wav"
    mtime = wav.stat().st_mtime_ns
    prepare_covost2(covost_root / "cv", out, src_langs=["fr"], splits=["train"], tsv_dir=covost_root / "tsv")
    assert wav.stat().st_mtime_ns == mtime  # not converted again
    assert set(read_kv(out / "train" / "utt2lang").values()) == {"fr"}  # rewritten: no stale de rows
    rows = prepare_covost2(covost_root / "cv", tmp_path, src_langs=["de"], splits=["test"],
                           tsv_dir=covost_root / "tsv", convert=False)
    assert rows[0].utts == 1
    (spec,) = read_kv(tmp_path / "test" / "wav.scp").values()
    assert spec.endswith("clips/common_voice_de_18955320.mp3")
    validate_data_dir(tmp_path / "test", expected_rate=48000)  # libsndfile reads the mp3 itself
    # prepare_covost2 was reusing the module's output: restore the full train dir for other tests
    prepare_covost2(covost_root / "cv", out, src_langs=["fr", "de"], splits=["train"], tsv_dir=covost_root / "tsv")


def test_covost2_logs_skipped_ids(covost_root, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="stk.corpora.covost2"):
        prepare_covost2(covost_root / "cv", tmp_path, src_langs=["fr"], splits=["dev"], tsv_dir=covost_root / "tsv")
    assert "skipped 1 row(s) with missing audio: fr/common_voice_fr_17299411.mp3" in caplog.text


def test_covost2_errors_name_the_file(covost_root, tmp_path):
    cv, tsv = covost_root / "cv", covost_root / "tsv"
    (tmp_path / "cv_es" / "es" / "clips").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"covost_v2\.es_en\.train\.tsv.*covost_v2\.es_en\.tsv"):
        prepare_covost2(tmp_path / "cv_es", tmp_path, src_langs=["es"], tsv_dir=tsv)
    with pytest.raises(ValueError, match=r"it/clips: Common Voice clips dir not found"):
        prepare_covost2(cv, tmp_path, src_langs=["it"], tsv_dir=tsv)
    with pytest.raises(ValueError, match="nowhere: Common Voice root"):
        prepare_covost2(tmp_path / "nowhere", tmp_path, src_langs=["fr"], tsv_dir=tsv)
    with pytest.raises(ValueError, match="CoVoST 2 TSV dir not found"):
        prepare_covost2(cv, tmp_path, src_langs=["fr"], tsv_dir=tmp_path / "no_tsv")
    with pytest.raises(ValueError, match=r"validated\.tsv: file not found"):  # release TSV needs validated.tsv
        shutil.copytree(cv / "fr", tmp_path / "cv" / "fr", ignore=shutil.ignore_patterns("validated.tsv"))
        prepare_covost2(tmp_path / "cv", tmp_path / "out", src_langs=["fr"], tsv_dir=tsv)
    bad = tmp_path / "bad_tsv"
    bad.mkdir()
    (bad / "covost_v2.fr_en.tsv").write_text("path\tsplit\nx.mp3\ttrain\n")
    with pytest.raises(ValueError, match=r"covost_v2\.fr_en\.tsv: missing column\(s\) translation"):
        prepare_covost2(cv, tmp_path, src_langs=["fr"], tsv_dir=bad)


@pytest.fixture(scope="module")
def voxpopuli_out(voxpopuli_root, tmp_path_factory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("voxpopuli_out")
    return out, prepare_voxpopuli(voxpopuli_root, out, langs=["de", "fr"])


def test_voxpopuli_data_dirs(voxpopuli_out, caplog):
    out, rows = voxpopuli_out
    assert [(r.name, r.utts, r.speakers, r.langs) for r in rows] == [
        ("train", 4, 3, "de,fr"), ("dev", 2, 2, "de,fr"), ("test", 2, 2, "de,fr")]
    assert rows[0].skipped == {"empty transcript": 1, "missing audio": 1}
    for r in rows:
        validate_data_dir(out / r.name, expected_rate=16000)
    text, spk, gender = (read_kv(out / "train" / n) for n in ("text", "utt2spk", "utt2gender"))
    utt = "de_28229-20180313-0900-PLENARY-16-de_20180313-20:08:11_1"
    assert text[utt] == "herr präsident meine damen und herren" and spk[utt] == "de_28229"
    assert gender[utt] == "male"
    wav = read_kv(out / "train" / "wav.scp")[utt]
    assert wav.endswith("transcribed_data/de/2018/20180313-0900-PLENARY-16-de_20180313-20:08:11_1.ogg")
    test_spk = read_kv(out / "test" / "utt2spk")
    assert "de_unknown" in test_spk.values() and "unk" in read_kv(out / "test" / "utt2gender").values()


def test_voxpopuli_raw_text_and_logging(voxpopuli_root, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="stk.corpora.voxpopuli"):
        rows = prepare_voxpopuli(voxpopuli_root, tmp_path, langs=["fr"], splits=["train", "dev"], text_field="raw_text")
    assert [r.utts for r in rows] == [1, 1]
    assert "missing audio: fr/20120612-0900-PLENARY-3-fr_20120612-09:12:33_2" in caplog.text
    assert 'C\'est une "question" essentielle.' in read_kv(tmp_path / "dev" / "text").values()


def test_voxpopuli_errors_name_the_file(voxpopuli_root, tmp_path):
    with pytest.raises(ValueError, match=r"transcribed_data/es: language dir not found"):
        prepare_voxpopuli(voxpopuli_root, tmp_path, langs=["es"])
    with pytest.raises(ValueError, match=r"nowhere: VoxPopuli root"):
        prepare_voxpopuli(tmp_path / "nowhere", tmp_path, langs=["de"])
    shutil.copytree(voxpopuli_root / "transcribed_data" / "de", tmp_path / "vp" / "transcribed_data" / "de",
                    ignore=shutil.ignore_patterns("asr_dev.tsv"))
    with pytest.raises(ValueError, match=r"de/asr_dev\.tsv: file not found"):
        prepare_voxpopuli(tmp_path / "vp", tmp_path / "out", langs=["de"])


def test_kaldi_dataset_loads_prepared_dirs(covost_out, voxpopuli_out):
    from stk.data.dataset import KaldiDataset

    def tokenize(s: str) -> list[int]:
        return [3 + ord(c) % 60 for c in s]

    st = KaldiDataset(covost_out[0] / "train", targets={"text": "text", "text_en": "text.en"}, tokenize=tokenize)
    asr = KaldiDataset(voxpopuli_out[0] / "train", targets={"text": "text"}, tokenize=tokenize)
    assert len(st) == 6 and len(asr) == 4
    batch = st.collate([st[i] for i in range(len(st))])
    assert batch["feats"].shape[0] == 6 and batch["feats"].shape[2] == 80 and "text_en_lens" in batch
    assert asr[0]["feats"].shape[1] == 80 and asr.langs is not None


runner = CliRunner()


def test_cli_corpus_commands(covost_root, voxpopuli_root, tmp_path):
    res = runner.invoke(app, ["corpus", "covost2", "--corpus-dir", str(covost_root / "cv"), "--tsv-dir",
                              str(covost_root / "tsv"), "--out", str(tmp_path / "st"), "--src-langs", "fr,de",
                              "--splits", "dev,test", "--nj", "1"])
    assert res.exit_code == 0, res.output
    assert "dev" in res.output and (tmp_path / "st" / "test" / "text.en").is_file()
    res = runner.invoke(app, ["corpus", "voxpopuli", "--corpus-dir", str(voxpopuli_root), "--out",
                              str(tmp_path / "asr"), "--langs", "de", "--splits", "train"])
    assert res.exit_code == 0, res.output
    assert len(read_kv(tmp_path / "asr" / "train" / "text")) == 3
    for cmd in (["covost2", "--corpus-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x"), "--src-langs", "fr"],
                ["voxpopuli", "--corpus-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x"), "--langs", "de"]):
        res = runner.invoke(app, ["corpus", *cmd])
        assert res.exit_code == 1 and "error:" in res.output and "nowhere" in res.output
    for cmd in ("covost2", "voxpopuli"):
        res = runner.invoke(app, ["corpus", cmd, "--help"])
        assert res.exit_code == 0 and "--corpus-dir" in res.output


def _run_recipe(corpus: str, model: str, tmp_path: Path, *args: str) -> Path:
    """Copy egs/<corpus>/<model> to tmp_path (utils linked to the repo) and run stages 0-2."""
    work = tmp_path / model
    shutil.copytree(ROOT / "egs" / corpus / model, work, symlinks=True,
                    ignore=shutil.ignore_patterns("data", "dump", "exp"))
    (work / "utils").unlink()
    (work / "utils").symlink_to(ROOT / "utils")
    env = dict(os.environ, STK_ROOT=str(ROOT), OMP_NUM_THREADS="2")
    env.pop("COVOST2", None), env.pop("VOXPOPULI", None)
    proc = subprocess.run(["bash", "run.sh", "--stop-stage", "2", *args], cwd=work, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return work


@pytest.mark.recipe
def test_recipe_data_stages(covost_root, voxpopuli_root, tmp_path):
    work = _run_recipe("covost2", "mslam", tmp_path, "--corpus-dir", str(covost_root / "cv"),
                       "--tsv-dir", str(covost_root / "tsv"), "--src-langs", "fr,de")
    for x in ("train", "dev"):
        assert (work / "dump" / x / "feats.scp").is_file()
    assert (work / "dump" / "cmvn.json").is_file() and (work / "data" / "token" / "char.model").is_file()
    work = _run_recipe("voxpopuli", "maestro", tmp_path, "--corpus-dir", str(voxpopuli_root), "--langs", "de,fr",
                       "--vocab-size", "40")
    assert (work / "dump" / "train" / "feats.scp").is_file() and (work / "dump" / "cmvn.json").is_file()
    assert (work / "data" / "token" / "bpe40.model").is_file()


def test_recipe_needs_a_corpus_dir(tmp_path):
    work = tmp_path / "mslam"
    shutil.copytree(ROOT / "egs" / "covost2" / "mslam", work, symlinks=True,
                    ignore=shutil.ignore_patterns("data", "dump", "exp"))
    (work / "utils").unlink()
    (work / "utils").symlink_to(ROOT / "utils")
    env = {k: v for k, v in os.environ.items() if k not in ("COVOST2", "COVOST2_TSV")}
    proc = subprocess.run(["bash", "run.sh"], cwd=work, env=dict(env, STK_ROOT=str(ROOT)), capture_output=True, text=True)
    assert proc.returncode == 1 and "COVOST2" in proc.stderr and "db.sh" in proc.stderr
