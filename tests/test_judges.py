"""Measures of generated speech (MCD, DTW, PESQ/STOI) and the judges (Whisper, resemblyzer).

The Whisper / resemblyzer / PESQ / STOI tests need the judges extra (``bash tools/install_judges.sh``)
and are skipped, with that reason, where it is not installed; DTW and MCD are core and always run.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import subprocess

import numpy as np
import pytest

from stk.metrics_speech import dtw, mcd, mcd_from_cepstra

SR = 16000
JUDGES = "judges extra not installed (bash tools/install_judges.sh)"


def has(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


def voiced(f0: float = 140.0, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """A vowel-like signal: a glottal-ish pulse train through two resonances, plus a little noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    src = np.zeros(n)
    src[:: int(SR / f0)] = 1.0
    from scipy.signal import lfilter

    y = src
    for fc, bw in ((700.0, 130.0), (1200.0, 70.0)):
        r = math.exp(-math.pi * bw / SR)
        y = lfilter([1.0], [1.0, -2 * r * math.cos(2 * math.pi * fc / SR), r * r], y)
    y = y / np.max(np.abs(y)) * 0.5 + rng.normal(0, 1e-3, n)
    return y.astype(np.float32)


def test_dtw_known_alignment():
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([[0.0], [1.0], [1.0], [2.0], [3.0]])
    i, j, cost = dtw(x, y)
    assert list(zip(i.tolist(), j.tolist())) == [(0, 0), (1, 1), (1, 2), (2, 3), (3, 4)]
    assert cost == 0.0
    i, j, cost = dtw(np.array([[0.0], [5.0]]), np.array([[1.0], [1.0], [4.0]]))
    assert (i[0], j[0], i[-1], j[-1]) == (0, 0, 1, 2) and cost == pytest.approx(1 + 1 + 1)
    with pytest.raises(ValueError, match="same D"):
        dtw(np.zeros((3, 2)), np.zeros((3, 3)))


def test_mcd_formula():
    a = np.zeros((10, 25))
    b = a.copy()
    b[:, 0] = 7.0  # c0 (energy) is excluded
    assert mcd_from_cepstra(a, b) == 0.0
    b[:, 3] = 1.0
    assert mcd_from_cepstra(a, b, align=False) == pytest.approx(10 / math.log(10) * math.sqrt(2))


def test_mcd_self_zero_shifted_positive():
    x = voiced()
    assert mcd(x, x) == 0.0
    delayed = np.concatenate([np.zeros(40, np.float32), x[:-40]])  # 2.5 ms, half a frame
    noisy = x + np.random.default_rng(1).normal(0, 0.05, len(x)).astype(np.float32)
    d_delay, d_noise = mcd(x, delayed), mcd(x, noisy)
    assert 0.0 < d_delay < d_noise, (d_delay, d_noise)


@pytest.mark.skipif(not (has("pesq") and has("pystoi")), reason=JUDGES)
def test_pesq_stoi_order():
    from stk.metrics_speech import pesq_wb, stoi

    x = voiced(seconds=2.0)
    noisy = x + np.random.default_rng(2).normal(0, 0.1, len(x)).astype(np.float32)
    assert stoi(x, x) > 0.99 and stoi(x, noisy) < stoi(x, x)
    assert pesq_wb(x, x) > 4.0 and pesq_wb(x, noisy) < pesq_wb(x, x)


def test_missing_judge_names_install_command():
    from stk.judges import JudgeNotInstalled, require

    with pytest.raises(JudgeNotInstalled, match="install_judges.sh"):
        require("stk_no_such_judge_package", "the test judge")


def _espeak(tmp_path, text: str, voice: str, name: str) -> np.ndarray:
    import soundfile as sf

    from stk.synthesis import resample

    p = tmp_path / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(p), "--", text], check=True, capture_output=True)
    w, rate = sf.read(p, dtype="float32")
    return resample(w, rate, SR)


@pytest.mark.skipif(not has("faster_whisper"), reason=JUDGES)
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (tools/setup.sh installs it)")
def test_whisper_judge_and_score_cli(tmp_path):
    from typer.testing import CliRunner

    from stk.cli import app
    from stk.data.kaldi import read_kv, write_data_dir
    from stk.synthesis import write_wav_data_dir

    texts = {"u1": "the weather is very nice today", "u2": "please open the door"}
    gen = write_wav_data_dir(tmp_path / "gen", [(u, _espeak(tmp_path, t, "en-us", u), SR) for u, t in texts.items()],
                             text=texts, extra={"utt2lang": {u: "en" for u in texts}})
    r = CliRunner().invoke(app, ["judge", "asr", str(gen), "--out", str(tmp_path / "hyp")])
    assert r.exit_code == 0, r.output
    hyp = read_kv(tmp_path / "hyp")
    assert set(hyp) == set(texts)
    r = CliRunner().invoke(app, ["score", "--metric", "judge-wer", str(gen / "text"), str(gen), "--lang", "en",
                                 "--json", str(tmp_path / "jw" / "score.json")])
    assert r.exit_code == 0, r.output
    import json

    res = json.loads((tmp_path / "jw" / "score.json").read_text())
    assert res["wer"] < 50.0, (res, hyp)  # espeak-ng en measured ~22 % WER with this judge
    r = CliRunner().invoke(app, ["score", "--metric", "asr-bleu", str(gen / "text"), str(gen), "--lang", "en"])
    assert r.exit_code == 0 and "ASR-BLEU" in r.output, r.output
    # wrong rate is named
    import soundfile as sf

    sf.write(tmp_path / "r8k.wav", np.zeros(8000, np.float32) + 0.1, 8000)
    bad = write_data_dir(tmp_path / "bad", wav_scp={"x1": str(tmp_path / "r8k.wav")})
    r = CliRunner().invoke(app, ["judge", "asr", str(bad), "--lang", "en", "--out", str(tmp_path / "h2")])
    assert r.exit_code == 1 and "'x1'" in r.output and "8000 Hz" in r.output, r.output


@pytest.mark.skipif(not has("resemblyzer"), reason=JUDGES)
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (tools/setup.sh installs it)")
def test_resemblyzer_similarity(tmp_path):
    from stk.judges.speaker import ResemblyzerJudge
    from stk.metrics_speech import cosine

    j = ResemblyzerJudge()
    a1 = j.embed(_espeak(tmp_path, "one two three four five six", "en+m3", "a1"))
    a2 = j.embed(_espeak(tmp_path, "the house is on the hill by the river", "en+m3", "a2"))
    b = j.embed(_espeak(tmp_path, "the house is on the hill by the river", "en+f4", "b"))
    assert a1.shape == (256,) and abs(np.linalg.norm(a1) - 1) < 1e-3
    assert cosine(a1, a2) > cosine(a2, b), (cosine(a1, a2), cosine(a2, b))


def test_score_mcd_cli(tmp_path):
    from typer.testing import CliRunner

    from stk.cli import app
    from stk.synthesis import write_wav_data_dir

    x, y = voiced(140.0), voiced(180.0, seed=3)
    ref = write_wav_data_dir(tmp_path / "ref", [("u1", x, SR), ("u2", y, SR)])
    hyp = write_wav_data_dir(tmp_path / "hyp", [("u1", x, SR), ("u2", x, SR)])
    r = CliRunner().invoke(app, ["score", "--metric", "mcd", str(ref), str(hyp), "--json", str(tmp_path / "m.json")])
    assert r.exit_code == 0, r.output
    assert "MCD" in r.output and "c0 excluded" in r.output
    import json

    res = json.loads((tmp_path / "m.json").read_text())
    assert res["per_utt"]["u1"] < 0.05 < res["per_utt"]["u2"]  # 16-bit PCM rounding only vs another pitch
    one = write_wav_data_dir(tmp_path / "one", [("u1", x, SR)])
    r = CliRunner().invoke(app, ["score", "--metric", "mcd", str(ref), str(one)])
    assert r.exit_code == 1 and "'u2'" in r.output
