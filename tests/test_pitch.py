"""F0 + voicing (pyworld) and per-speaker log-F0 normalisation; `stk data pitch`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stk.features.pitch import LogF0Stats, PitchConfig, compute_f0, normalise, speaker_stats

SR = 16000


def tone(f0: float, seconds: float = 0.5, sr: int = SR, silence: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
    x = (0.3 * x / np.max(np.abs(x))).astype(np.float32)
    return np.concatenate([x, np.zeros(int(silence * sr), np.float32)])


def test_f0_of_tone_and_silence():
    x = tone(180.0, 0.6, silence=0.4)
    f = compute_f0(x, SR)
    assert f.shape == (len(x) // 160 + 1, 2)
    voiced = f[:50]
    assert voiced[:, 1].mean() > 0.8
    assert abs(np.median(voiced[voiced[:, 1] > 0, 0]) - 180.0) < 4.0
    assert f[-30:, 1].sum() == 0 and np.all(f[-30:, 0] == 0)  # the silent tail is unvoiced
    with pytest.raises(ValueError, match="8000 Hz"):
        compute_f0(x, 8000)
    with pytest.raises(ValueError, match="dio or harvest"):
        PitchConfig(method="crepe")


def test_harvest_agrees():
    x = tone(220.0, 0.5)
    f = compute_f0(x, SR, PitchConfig(method="harvest"))
    assert abs(np.median(f[f[:, 1] > 0, 0]) - 220.0) < 4.0


def test_speaker_normalisation():
    a = np.array([[100.0, 1], [0.0, 0], [200.0, 1]], np.float32)
    st = speaker_stats([a])
    assert st.mean == pytest.approx(np.log(np.sqrt(2) * 100)) and st.voiced_frames == 2
    z = normalise(a, st)
    assert z.shape == (3, 3) and z[1, 2] == 0.0
    assert z[0, 2] == pytest.approx(-1.0) and z[2, 2] == pytest.approx(1.0)
    assert speaker_stats([np.zeros((4, 2), np.float32)]) == LogF0Stats(0.0, 1.0, 0)


def test_cli_data_pitch(tmp_path):
    import kaldiio
    import soundfile as sf
    from typer.testing import CliRunner

    from stk.cli import app
    from stk.data.kaldi import write_data_dir

    scp = {}
    for utt, f0 in (("lo-1", 120.0), ("lo-2", 130.0), ("hi-1", 240.0)):
        p = tmp_path / f"{utt}.wav"
        sf.write(p, tone(f0, 0.4, 8000), 8000, subtype="PCM_16")
        scp[utt] = str(p)
    d = write_data_dir(tmp_path / "d", wav_scp=scp, utt2spk={"lo-1": "lo", "lo-2": "lo", "hi-1": "hi"})
    r = CliRunner().invoke(app, ["data", "pitch", str(d)])
    assert r.exit_code == 0, r.output
    mats = dict(kaldiio.load_scp(str(d / "pitch.scp")).items())
    assert set(mats) == set(scp) and mats["hi-1"].shape[1] == 3
    stats = json.loads((d / "pitch_stats.json").read_text())
    assert stats["speakers"]["hi"]["mean"] - stats["speakers"]["lo"]["mean"] == pytest.approx(np.log(240 / 125), abs=0.05)
    hi = mats["hi-1"][mats["hi-1"][:, 1] > 0, 0]
    assert abs(np.median(hi) - 240.0) < 5.0
    # normalised per speaker: the lower-pitched utterance of "lo" is below 0, the higher above
    z1 = mats["lo-1"][mats["lo-1"][:, 1] > 0, 2].mean()
    z2 = mats["lo-2"][mats["lo-2"][:, 1] > 0, 2].mean()
    assert z1 < 0 < z2
    r = CliRunner().invoke(app, ["data", "pitch", str(tmp_path / "missing")])
    assert r.exit_code == 1 and "not found" in r.output
