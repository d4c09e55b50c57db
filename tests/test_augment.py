"""Tests of data-dir augmentation (stk.data.augment, ``stk data perturb-speed`` / ``add-noise``):
Kaldi's ids, durations x 1/f, segments, labels carried over, SNR, determinism, bad input named."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from stk.data import augment
from stk.data.kaldi import DataDirError, read_kv, validate_data_dir, write_data_dir

RATE = 16000


def _tone(freq: float, seconds: float, amp: float = 0.1) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _data_dir(root: Path, segments: bool = False) -> Path:
    """3 speakers x 2 utterances of tones (440-690 Hz), with text, text.en, utt2lang, utt2dur."""
    wav_dir = root / "wavs"
    wav_dir.mkdir(parents=True)
    scp, text, spk, lang, dur = {}, {}, {}, {}, {}
    for i, s in enumerate(["de-m1", "en-f2", "fr-m3"]):
        for j in range(2):
            u = f"{s}-w{i}{j}"
            x = _tone(440 + 50 * (2 * i + j), 1.0 + 0.25 * j)
            path = wav_dir / f"{u}.wav"
            sf.write(str(path), x, RATE, subtype="PCM_16")
            scp[u], text[u], spk[u], lang[u], dur[u] = str(path), f"satz {i} {j}", s, s[:2], f"{len(x) / RATE:.3f}"
    d = root / "data"
    extra = {"text.en": {u: f"sentence {u}" for u in text}, "utt2dur": dur}
    if segments:  # one recording per speaker: both its utterances as segments of it
        recs, seg = {}, {}
        for s in ["de-m1", "en-f2", "fr-m3"]:
            parts = [sf.read(scp[u], dtype="float32")[0] for u in sorted(scp) if spk[u] == s]
            path = wav_dir / f"rec-{s}.wav"
            sf.write(str(path), np.concatenate(parts), RATE, subtype="PCM_16")
            recs[f"{s}-rec"] = str(path)
            t = 0.0
            for u, p in zip([u for u in sorted(scp) if spk[u] == s], parts):
                seg[u] = f"{s}-rec {t:.3f} {t + len(p) / RATE:.3f}"
                t += len(p) / RATE
        scp = recs
        extra["segments"] = seg
        del extra["utt2dur"]
    write_data_dir(d, wav_scp=scp, text=text, utt2spk=spk, utt2lang=lang, extra=extra)
    validate_data_dir(d)
    return d


def _peak_hz(path: str) -> float:
    x, rate = sf.read(path, dtype="float32")
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def test_perturb_speed_ids_durations_and_pitch(tmp_path: Path) -> None:
    src = _data_dir(tmp_path)
    out = augment.perturb_speed(src, tmp_path / "sp", (0.9, 1.0, 1.1))
    validate_data_dir(out)  # sorted, speakers prefixes of utterances, audio readable at 16 kHz
    spk = read_kv(out / "utt2spk")
    assert len(spk) == 18
    assert spk["sp0.9-de-m1-w00"] == "sp0.9-de-m1" and spk["de-m1-w00"] == "de-m1" and spk["sp1.1-fr-m3-w21"] == "sp1.1-fr-m3"
    assert set(read_kv(out / "spk2utt")) == {f"{p}{s}" for p in ("", "sp0.9-", "sp1.1-") for s in ("de-m1", "en-f2", "fr-m3")}
    text, en, lang = read_kv(out / "text"), read_kv(out / "text.en"), read_kv(out / "utt2lang")
    assert text["sp0.9-en-f2-w11"] == text["en-f2-w11"] == "satz 1 1" and en["sp1.1-en-f2-w11"] == "sentence en-f2-w11"
    assert lang["sp0.9-fr-m3-w20"] == "fr"
    dur, scp = read_kv(out / "utt2dur"), read_kv(out / "wav.scp")
    for f in (0.9, 1.1):
        u = f"sp{f:g}-de-m1-w01"  # 1.25 s
        assert float(dur[u]) == pytest.approx(1.25 / f, abs=2e-3)
        assert sf.info(scp[u]).frames == pytest.approx(1.25 * RATE / f, abs=2)
        # speed, like sox's `speed`: tempo and pitch together (a 490 Hz tone moves to 490 f Hz)
        assert _peak_hz(scp[u]) == pytest.approx(490 * f, abs=3)
    assert scp["de-m1-w01"] == read_kv(src / "wav.scp")["de-m1-w01"]  # 1.0: the original audio
    assert dur["de-m1-w01"] == "1.250"


def test_perturb_speed_segments(tmp_path: Path) -> None:
    src = _data_dir(tmp_path, segments=True)
    out = augment.perturb_speed(src, tmp_path / "sp", (0.9, 1.0, 1.1))
    validate_data_dir(out)
    seg, scp = read_kv(out / "segments"), read_kv(out / "wav.scp")
    assert set(scp) == {f"{p}{s}-rec" for p in ("", "sp0.9-", "sp1.1-") for s in ("de-m1", "en-f2", "fr-m3")}
    rec, start, end = seg["sp1.1-en-f2-w11"].split()
    assert rec == "sp1.1-en-f2-rec"
    assert float(start) == pytest.approx(1.0 / 1.1, abs=2e-3) and float(end) == pytest.approx(2.25 / 1.1, abs=2e-3)
    assert float(end) <= sf.info(scp[rec]).duration  # never past the perturbed recording
    assert float(read_kv(out / "utt2dur")["sp0.9-en-f2-w11"]) == pytest.approx(1.25 / 0.9, abs=2e-3)


def test_perturb_speed_deterministic(tmp_path: Path) -> None:
    src = _data_dir(tmp_path)
    a = augment.perturb_speed(src, tmp_path / "a", (0.9,))
    b = augment.perturb_speed(src, tmp_path / "b", (0.9,))
    wa, wb = read_kv(a / "wav.scp"), read_kv(b / "wav.scp")
    assert list(wa) == list(wb) and all(Path(wa[u]).read_bytes() == Path(wb[u]).read_bytes() for u in wa)


def test_perturb_speed_bad_input(tmp_path: Path) -> None:
    src = _data_dir(tmp_path)
    with pytest.raises(ValueError, match="outside"):
        augment.perturb_speed(src, tmp_path / "o", (0.9, 3.0))
    with pytest.raises(ValueError, match="repeated"):
        augment.perturb_speed(src, tmp_path / "o", (1.1, 1.1))
    with pytest.raises(ValueError, match="not a whole sample rate"):
        augment.perturb_speed(src, tmp_path / "o", (0.90001,))
    with pytest.raises(ValueError, match="is the input"):
        augment.perturb_speed(src, src, (0.9,))
    (src / "utt2spk").unlink()
    with pytest.raises(DataDirError, match="no utt2spk"):
        augment.perturb_speed(src, tmp_path / "o", (0.9,))
    with pytest.raises(DataDirError, match="not found"):
        augment.perturb_speed(tmp_path / "missing", tmp_path / "o", (0.9,))


def _snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    n = noisy - clean
    return float(10 * np.log10(np.sum(clean.astype(np.float64) ** 2) / np.sum(n.astype(np.float64) ** 2)))


@pytest.mark.parametrize("noise", ["white", "pink", "brown", "babble"])
def test_add_noise_ids_snr_and_labels(tmp_path: Path, noise: str) -> None:
    src = _data_dir(tmp_path)
    out = augment.add_noise(src, tmp_path / "n", noise=noise, snr=(10.0, 12.0), seed=3)
    validate_data_dir(out)
    scp, spk = read_kv(out / "wav.scp"), read_kv(out / "utt2spk")
    assert spk[f"{noise}-de-m1-w00"] == f"{noise}-de-m1" and len(scp) == 6
    assert read_kv(out / "text")[f"{noise}-fr-m3-w21"] == "satz 2 1"
    assert read_kv(out / "utt2dur")[f"{noise}-de-m1-w01"] == "1.250"
    clean_scp = read_kv(src / "wav.scp")
    for u in ("de-m1-w00", "fr-m3-w21"):
        clean, _ = sf.read(clean_scp[u], dtype="float32")
        noisy, _ = sf.read(scp[f"{noise}-{u}"], dtype="float32")
        assert len(noisy) == len(clean)
        assert 9.7 <= _snr_db(clean, noisy) <= 12.3  # 16-bit rounding of the mix adds a little noise


def test_add_noise_deterministic_per_seed(tmp_path: Path) -> None:
    src = _data_dir(tmp_path)

    def digest(d: Path) -> str:
        return hashlib.sha1(b"".join(Path(p).read_bytes() for p in read_kv(d / "wav.scp").values())).hexdigest()

    a = augment.add_noise(src, tmp_path / "a", noise="babble", seed=1)
    b = augment.add_noise(src, tmp_path / "b", noise="babble", seed=1)
    c = augment.add_noise(src, tmp_path / "c", noise="babble", seed=2)
    assert digest(a) == digest(b) != digest(c)


def test_add_noise_from_a_noise_dir(tmp_path: Path) -> None:
    src = _data_dir(tmp_path)
    nd = tmp_path / "noises"
    nd.mkdir()
    sf.write(str(nd / "hum.wav"), _tone(50, 0.3, 0.5), RATE, subtype="PCM_16")  # shorter than the speech: looped
    (nd / "wav.scp").write_text(f"hum {nd / 'hum.wav'}\n")
    out = augment.add_noise(src, tmp_path / "n", noise=str(nd), snr=(0.0, 0.0), prefix="hum-")
    validate_data_dir(out)
    assert "hum-en-f2-w10" in read_kv(out / "wav.scp")


def test_add_noise_bad_input(tmp_path: Path) -> None:
    src = _data_dir(tmp_path)
    with pytest.raises(ValueError, match="bad SNR range"):
        augment.add_noise(src, tmp_path / "o", snr=(20.0, 5.0))
    with pytest.raises(ValueError, match="neither one of"):
        augment.add_noise(src, tmp_path / "o", noise=str(tmp_path / "nowhere"))
    one = tmp_path / "one"
    write_data_dir(one, wav_scp=dict(list(read_kv(src / "wav.scp").items())[:2]), utt2spk={"de-m1-w00": "de-m1", "de-m1-w01": "de-m1"})
    with pytest.raises(DataDirError, match="at least 2 speakers"):
        augment.add_noise(one, tmp_path / "o", noise="babble")
    with pytest.raises(ValueError, match="unknown noise"):
        augment.colored_noise("blue", 10, np.random.default_rng(0))


def test_colored_noise_spectra() -> None:
    rng = np.random.default_rng(0)
    powers = {}
    for kind in ("white", "pink", "brown"):
        x = augment.colored_noise(kind, 1 << 15, rng)
        assert np.sqrt(np.mean(x**2)) == pytest.approx(1.0, rel=1e-3)
        p = np.abs(np.fft.rfft(x)) ** 2
        powers[kind] = p[len(p) // 2 :].sum() / p[1 : len(p) // 16].sum()  # high band over low band
    assert powers["white"] > 5 * powers["pink"] > 25 * powers["brown"]


def test_cli(tmp_path: Path) -> None:
    from stk.cli import app

    src = _data_dir(tmp_path)
    r = CliRunner().invoke(app, ["data", "perturb-speed", str(src), "--out", str(tmp_path / "sp"), "--factors", "0.9,1.0,1.1"])
    assert r.exit_code == 0, r.output
    assert "18 utterances" in r.output
    r = CliRunner().invoke(app, ["data", "add-noise", str(tmp_path / "sp"), "--out", str(tmp_path / "n"), "--snr", "5:15", "--noise", "pink"])
    assert r.exit_code == 0, r.output
    assert "18 utterances" in r.output and "pink-sp0.9-de-m1-w00" in read_kv(tmp_path / "n" / "utt2spk")
    r = CliRunner().invoke(app, ["data", "perturb-speed", str(src), "--out", str(tmp_path / "x"), "--factors", "0.9,fast"])
    assert r.exit_code == 1 and "not a comma-separated list" in r.output
    r = CliRunner().invoke(app, ["data", "add-noise", str(src), "--out", str(tmp_path / "x"), "--snr", "5"])
    assert r.exit_code == 1 and "LOW:HIGH" in r.output
