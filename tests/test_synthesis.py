"""Speech out: the wav data-dir writer, Griffin-Lim and WORLD vocoders, `stk synth`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stk.features.mel import MelConfig, log_mel
from stk.synthesis import (
    GriffinLimVocoder,
    SynthesisError,
    WorldVocoder,
    check_wav,
    read_wav_data_dir,
    resynthesize_data_dir,
    write_wav_data_dir,
)

SR = 16000


def tone(f0: float = 220.0, seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    """A harmonic tone (5 partials, falling amplitudes) with a short fade in/out."""
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)
    return (0.3 * x * fade / np.max(np.abs(x))).astype(np.float32)


def magnitude(x: np.ndarray, n: int) -> torch.Tensor:
    w = torch.as_tensor(x[:n])
    return torch.stft(w, 1024, 256, window=torch.hann_window(1024), return_complex=True).abs()


def spectral_convergence(ref: np.ndarray, est: np.ndarray) -> float:
    n = min(len(ref), len(est))
    s, s_hat = magnitude(ref, n), magnitude(est, n)
    return float(torch.linalg.norm(s - s_hat) / torch.linalg.norm(s))


def test_log_mel_shape_and_rate_check():
    conf = MelConfig()
    x = tone()
    m = log_mel(x, SR, conf)
    assert m.shape == (conf.num_frames(len(x)), 80)
    with pytest.raises(ValueError, match="22050 Hz"):
        log_mel(x, 22050, conf)
    with pytest.raises(ValueError, match="f_max"):
        MelConfig(f_max=9000.0)


def test_griffin_lim_round_trip_tone():
    torch.manual_seed(0)
    x = tone()
    gl = GriffinLimVocoder()
    y = gl(log_mel(x, SR).numpy())
    assert abs(len(y) - len(x)) <= 256
    sc = spectral_convergence(x, y)
    # measured 0.20 on this tone; white noise scores 1.11
    assert sc < 0.3, sc
    noise = np.random.default_rng(0).normal(0, 0.1, len(x)).astype(np.float32)
    assert spectral_convergence(x, noise) > 0.9


def test_griffin_lim_rejects_wrong_mel_dim():
    gl = GriffinLimVocoder()
    with pytest.raises(ValueError, match=r"\(T, 80\).*64 bins vs the vocoder's 80"):
        gl(np.zeros((20, 64), np.float32))


def test_world_resynthesis_tone():
    x = tone(f0=200.0)
    y = WorldVocoder()(x)
    assert abs(len(y) - len(x)) < 0.01 * SR
    assert spectral_convergence(x, y) < 0.3  # measured 0.12
    import pyworld  # noqa: F401  (core dependency)
    from stk.vocoders import world_analysis

    f0, sp, ap = world_analysis(x, SR)
    voiced = f0[f0 > 0]
    assert len(voiced) > 0.8 * len(f0) and abs(np.median(voiced) - 200.0) < 5.0


def test_write_wav_data_dir(tmp_path):
    from stk.data.kaldi import read_kv, validate_data_dir

    x = tone()
    x22 = np.interp(np.arange(int(len(x) * 22050 / SR)) * SR / 22050, np.arange(len(x)), x).astype(np.float32)
    out = write_wav_data_dir(tmp_path / "gen", [("u2", x, SR), ("u1", x22, 22050)],
                             utt2spk={"u1": "s1", "u2": "s1"}, text={"u1": "hello", "u2": "world", "u3": "unused"})
    validate_data_dir(out, expected_rate=SR)
    assert read_kv(out / "text") == {"u1": "hello", "u2": "world"}
    assert read_kv(out / "spk2utt") == {"s1": "u1 u2"}
    got = {u: (w, r) for u, w, r in read_wav_data_dir(out)}
    assert set(got) == {"u1", "u2"} and got["u1"][1] == SR
    assert abs(len(got["u1"][0]) - len(x)) <= 2
    assert np.max(np.abs(got["u2"][0] - x)) < 1e-4  # 16-bit PCM
    with pytest.raises(SynthesisError, match="cannot name a file"):
        write_wav_data_dir(tmp_path / "bad", [("a/b", x, SR)])
    with pytest.raises(SynthesisError, match="'e'.*empty"):
        write_wav_data_dir(tmp_path / "bad", [("e", np.zeros(0, np.float32), SR)])


def test_check_wav_names_problems(tmp_path):
    x = tone()
    check_wav("ok", x, SR)
    with pytest.raises(SynthesisError, match="'u'.*8000 Hz"):
        check_wav("u", x, 8000)
    with pytest.raises(SynthesisError, match="'s'.*silent"):
        check_wav("s", np.zeros(SR, np.float32), SR)
    with pytest.raises(SynthesisError, match="'c'.*clipped"):
        check_wav("c", np.clip(10 * x, -1, 1), SR)
    out = write_wav_data_dir(tmp_path / "gen", [("u1", x, SR)])
    (out / "wav" / "u1.wav").unlink()
    with pytest.raises(SynthesisError, match="'u1'.*not found"):
        list(read_wav_data_dir(out))


def _src_dir(tmp_path):
    import soundfile as sf

    from stk.data.kaldi import write_data_dir

    src = tmp_path / "src"
    src.mkdir()
    scp = {}
    for i, f0 in enumerate((150.0, 250.0)):
        p = src / f"u{i}.wav"
        sf.write(p, tone(f0, 0.6, 8000), 8000, subtype="PCM_16")  # 8 kHz like the asterisk prompts
        scp[f"u{i}"] = str(p)
    return write_data_dir(src, wav_scp=scp, text={"u0": "a", "u1": "b"}, utt2spk={"u0": "s", "u1": "s"})


@pytest.mark.parametrize("vocoder", ["griffin-lim", "world"])
def test_resynthesize_data_dir(tmp_path, vocoder):
    from stk.data.kaldi import read_kv, validate_data_dir

    src = _src_dir(tmp_path)
    st = resynthesize_data_dir(src, tmp_path / vocoder, vocoder=vocoder)
    assert st["utts"] == 2 and st["rtf"] > 0
    validate_data_dir(tmp_path / vocoder, expected_rate=SR)
    assert read_kv(tmp_path / vocoder / "text") == {"u0": "a", "u1": "b"}


def test_cli_synth(tmp_path):
    from typer.testing import CliRunner

    from stk.cli import app

    src = _src_dir(tmp_path)
    r = CliRunner().invoke(app, ["synth", "resynth", str(src), str(tmp_path / "gl"), "--json", str(tmp_path / "rtf.json")])
    assert r.exit_code == 0, r.output
    assert "RTF" in r.output and (tmp_path / "gl" / "wav.scp").exists()
    r = CliRunner().invoke(app, ["synth", "mels", str(src), str(tmp_path / "mel")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["synth", "vocode", str(tmp_path / "mel" / "mel.scp"), str(tmp_path / "voc"),
                                 "--data-dir", str(src)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "voc" / "text").read_text() == "u0 a\nu1 b\n"
    r = CliRunner().invoke(app, ["synth", "resynth", str(tmp_path / "nope"), str(tmp_path / "x")])
    assert r.exit_code == 1 and "not found" in r.output


def test_cli_report_and_plot(tmp_path):
    import json

    from typer.testing import CliRunner

    from stk.cli import app

    exp = tmp_path / "exp"
    for sys_, wer, mcd in (("original", 5.0, None), ("griffin-lim", 6.5, 4.7)):
        d = exp / sys_ / "real"
        d.mkdir(parents=True)
        (d / "judge_wer.json").write_text(json.dumps({"wer": wer, "cer": 2.0}))
        if mcd is not None:
            (d / "mcd.json").write_text(json.dumps({"mean": mcd, "ci95": 0.2}))
            (d / "rtf.json").write_text(json.dumps({"rtf": 0.08}))
    r = CliRunner().invoke(app, ["synth", "report", str(exp), "--systems", "original,griffin-lim", "--sets", "real",
                                 "--out", str(tmp_path / "R.md")])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "R.md").read_text()
    assert "| original | 5.0 | 2.0 | – | – | – | – |" in text
    assert "| griffin-lim | 6.5 | 2.0 | 4.70 ± 0.20 | – | – | 0.080 |" in text and "c0 excluded" in text
    src = _src_dir(tmp_path)
    resynthesize_data_dir(src, tmp_path / "gl")
    r = CliRunner().invoke(app, ["synth", "plot", str(tmp_path / "s.png"), f"original={src}", f"gl={tmp_path / 'gl'}"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "s.png").stat().st_size > 1000


@pytest.mark.recipe
def test_vocoder_recipe(tmp_path):
    """egs/mini/vocoder end to end on the tiny corpus (judges off: tests/test_judges.py covers them)."""
    import os
    import shutil
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    work = tmp_path / "vocoder"
    shutil.copytree(root / "egs/mini/vocoder", work, symlinks=True,
                    ignore=shutil.ignore_patterns("data", "dump", "exp", "RESULTS.md"))
    (work / "utils").unlink()
    (work / "utils").symlink_to(root / "utils")
    env = dict(os.environ, STK_ROOT=str(root), STK_MODEL_STORE=str(tmp_path / "store"), OMP_NUM_THREADS="2")
    proc = subprocess.run(
        ["bash", "run.sh", "--size", "tiny", "--corpus-dir", str(tmp_path / "corpus"), "--use-judges", "false",
         "--hifigan-config", "conf/hifigan_tiny.yaml", "--xvector-config", "conf/xvector_tiny.yaml",
         "--unit-vocoder-config", "conf/unit_vocoder_tiny.yaml", "--units-k", "20", "--eval-utts", "4"],
        cwd=work, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (work / "exp/RESULTS.md").read_text()
    import re

    for v in ("griffin-lim", "world", "hifigan", "unit-vocoder"):
        assert re.search(rf"\| {v} \| – \| – \| [\d.]+ ± [\d.]+ \|", text), text
    for x in ("synth_test_en", "real_test_en"):
        assert (work / f"exp/spectrogram_{x}.png").stat().st_size > 1000
    for name in ("mini-hifigan", "mini-xvector", "mini-unit-vocoder"):
        assert (tmp_path / f"store/{name}/model.yaml").exists(), name
    assert "mfcc:k20:units.json-sha256=" in text  # the units the unit vocoder was trained on
    assert "+ the source's F0" in text and (work / "data/real_test_en/f0bins").exists()  # its F0 input
    assert not (work / "RESULTS.md").exists()  # a tiny run never writes the committed RESULTS.md


def test_segmented_data_dir_is_refused(data_dir, tmp_path):
    """wav.scp of a segmented dir is keyed by recording: no reader may emit recording-level output."""
    from stk.synthesis import SynthesisError, dump_mels, dump_wave_frames, read_wav_data_dir, resynthesize_data_dir

    rec = next(iter(line.split()[0] for line in (data_dir / "wav.scp").read_text().splitlines()))
    (data_dir / "segments").write_text(f"{rec}-seg0 {rec} 0.0 0.3\n")
    for call in (lambda: list(read_wav_data_dir(data_dir)), lambda: dump_mels(data_dir, tmp_path / "mel"),
                 lambda: dump_wave_frames(data_dir, tmp_path / "frames"),
                 lambda: resynthesize_data_dir(data_dir, tmp_path / "gl", vocoder="griffin-lim")):
        with pytest.raises(SynthesisError, match="segments are not supported"):
            call()
