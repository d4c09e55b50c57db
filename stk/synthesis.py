"""Speech as an output: the writer of generated-speech data dirs and the data-dir drivers of the
vocoders (:mod:`stk.vocoders`, re-exported here).

Every stk command that produces speech writes a Kaldi data dir (:func:`write_wav_data_dir`)::

    OUT/wav/<utt>.wav   16 kHz, 16-bit PCM, mono
    OUT/wav.scp         utt /abs/path/OUT/wav/<utt>.wav   (written last: its presence means complete)
    OUT/utt2spk, OUT/spk2utt, OUT/text (when known)

so ``stk data validate``, ``stk judge`` and ``stk score`` read generated speech like any other.

Vocoders (:data:`VOCODERS`):

- ``griffin-lim``: log-mel (:class:`stk.features.mel.MelConfig`) -> linear magnitude by
  ``torchaudio.transforms.InverseMelScale`` (least squares, ``driver="gelsd"``) -> Griffin-Lim
  phase reconstruction (32 iterations, momentum 0.99). No training.
- ``world``: WORLD analysis–synthesis (pyworld: F0 by DIO + StoneMask or Harvest, CheapTrick
  envelope, D4C aperiodicity). A parametric path that starts from a waveform, not from a mel.

Both are checked by ``tests/test_synthesis.py``; HiFi-GAN (``stk/models/hifigan.py``) plugs in as a
mel vocoder the same way. :class:`UnitVocoder` / :func:`synthesize_units` resynthesise speech from
discrete units: a packaged ``unit_vocoder`` (``stk/models/unit_vocoder.py``, units -> log-mel)
followed by one of these mel vocoders.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import re
from pathlib import Path
from typing import Iterable, Literal, Mapping

import numpy as np

from stk.features.mel import MelConfig
from stk.utils import atomic_write
from stk.vocoders import (SAMPLE_RATE, VOCODERS, GriffinLimVocoder, HifiGanVocoder, MelVocoder,  # noqa: F401
                          UnitVocoder, WorldVocoder, check_mel, import_pyworld, world_analysis)

log = logging.getLogger("stk.synthesis")

_UTT_RE = re.compile(r"^[^\s/\\]+$")


class SynthesisError(ValueError):
    """Generated speech is unusable (wrong rate, silent, clipped, missing); the message names the utterance."""


# --------------------------------------------------------------------------- writing a wav data dir


def _check_utt(utt: str) -> None:
    if not _UTT_RE.match(utt) or utt in (".", ".."):
        raise SynthesisError(f"utterance id {utt!r} cannot name a file (no spaces or slashes)")


def wav_bytes(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """``(N,)`` float samples in [-1, 1] -> a 16-bit PCM WAV file's bytes (values outside are clipped)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def write_wav_data_dir(
    out_dir: str | Path,
    waves: Iterable[tuple[str, np.ndarray, int]],
    *,
    utt2spk: Mapping[str, str] | None = None,
    text: Mapping[str, str] | None = None,
    extra: Mapping[str, Mapping[str, str]] | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> Path:
    """Write generated speech ``(utt, samples (N,) float in [-1, 1], rate)`` as a Kaldi data dir.

    Each wav is written atomically; ``wav.scp`` (absolute paths) comes last, so a dir with a
    ``wav.scp`` is complete. A wave at another rate is resampled to ``sample_rate`` (logged);
    samples beyond ±1 are clipped (counted and logged per utterance). ``utt2spk`` defaults to
    each utterance being its own speaker (Kaldi's convention); ``text`` and ``extra`` files keep only
    the written utterances. Raises :class:`SynthesisError` on an empty wave or a bad utterance id.
    """
    from stk.data.kaldi import write_data_dir

    out = Path(out_dir).resolve()
    wav_dir = out / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    scp: dict[str, str] = {}
    for utt, wave, rate in waves:
        _check_utt(utt)
        if utt in scp:
            raise SynthesisError(f"utterance {utt!r} generated twice")
        w = np.asarray(wave, dtype=np.float32).reshape(-1)
        if w.size == 0:
            raise SynthesisError(f"utterance {utt!r}: the generated wave is empty")
        if not np.all(np.isfinite(w)):
            raise SynthesisError(f"utterance {utt!r}: the generated wave has NaN/inf samples")
        if rate != sample_rate:
            w = resample(w, rate, sample_rate)
            log.debug("%s: resampled %d -> %d Hz", utt, rate, sample_rate)
        n_clip = int(np.sum(np.abs(w) > 1.0))
        if n_clip:
            log.warning("%s: %d sample(s) beyond ±1 clipped", utt, n_clip)
        path = wav_dir / f"{utt}.wav"
        data = wav_bytes(w, sample_rate)
        atomic_write(path, lambda f, d=data: f.write(d))
        scp[utt] = str(path)
    if not scp:
        raise SynthesisError(f"{out}: no utterance to write")
    spk = {u: (utt2spk or {}).get(u, u) for u in scp}
    kept_text = {u: t for u, t in (text or {}).items() if u in scp} if text is not None else None
    kept_extra = {name: {u: v for u, v in m.items() if u in scp} for name, m in (extra or {}).items()}
    write_data_dir(out, text=kept_text, utt2spk=spk, extra=kept_extra)
    write_data_dir(out, wav_scp=scp)  # last
    return out


def resample(wave: np.ndarray, orig: int, new: int) -> np.ndarray:
    """Band-limited resampling (torchaudio's windowed sinc) of ``(N,)`` samples."""
    if orig == new:
        return wave
    import torch
    import torchaudio

    return torchaudio.functional.resample(torch.as_tensor(wave, dtype=torch.float32), orig, new).numpy()


@dataclasses.dataclass
class WaveCheck:
    """Thresholds of :func:`check_wav`: what counts as silent or clipped generated speech."""

    sample_rate: int = SAMPLE_RATE
    silent_peak: float = 1e-3  # peak |x| below this: silent
    clip_level: float = 0.999  # |x| at or above this counts as a clipped sample
    max_clipped_fraction: float = 0.01


def check_wav(utt: str, wave: np.ndarray, rate: int, conf: WaveCheck | None = None) -> None:
    """Raise :class:`SynthesisError` naming ``utt`` if the wave has the wrong rate, is silent or clipped."""
    conf = conf or WaveCheck()
    if rate != conf.sample_rate:
        raise SynthesisError(f"utterance {utt!r}: sample rate {rate} Hz, expected {conf.sample_rate} Hz")
    if wave.size == 0:
        raise SynthesisError(f"utterance {utt!r}: the wav is empty")
    peak = float(np.max(np.abs(wave)))
    if peak < conf.silent_peak:
        raise SynthesisError(f"utterance {utt!r}: the wav is silent (peak {peak:.2e} < {conf.silent_peak})")
    frac = float(np.mean(np.abs(wave) >= conf.clip_level))
    if frac > conf.max_clipped_fraction:
        raise SynthesisError(f"utterance {utt!r}: the wav is clipped ({100 * frac:.1f} % of samples at full scale)")


def refuse_segments(data_dir: str | Path) -> None:
    """These readers take each ``wav.scp`` entry as one utterance: a data dir with ``segments``
    (wav.scp keyed by recording) is an error, never recording-level output under recording ids."""
    if (Path(data_dir) / "segments").exists():
        raise SynthesisError(f"{data_dir}: segments are not supported here; extract the segments first "
                             "(one wav per utterance)")


def read_wav_data_dir(data_dir: str | Path, *, check: bool = True,
                      conf: WaveCheck | None = None) -> Iterable[tuple[str, np.ndarray, int]]:
    """Yield ``(utt, samples, rate)`` of a data dir's ``wav.scp``; with ``check`` every wav is checked
    (:func:`check_wav` with ``conf``); a missing or unreadable file is a :class:`SynthesisError` naming it."""
    from stk.data.audio import AudioError, read_audio
    from stk.data.kaldi import read_kv

    refuse_segments(data_dir)
    scp_path = Path(data_dir) / "wav.scp"
    if not scp_path.exists():
        raise SynthesisError(f"{data_dir}: no wav.scp (is this a data dir of speech?)")
    for utt, spec in read_kv(scp_path).items():
        try:
            wave, rate = read_audio(spec)
        except AudioError as e:
            raise SynthesisError(f"{scp_path}: utterance {utt!r}: {e}") from None
        if check:
            check_wav(utt, wave, rate, conf)
        yield utt, wave, rate


def resynthesize_data_dir(
    data_dir: str | Path, out_dir: str | Path, *, vocoder: str = "griffin-lim",
    mel_config: MelConfig | None = None, n_iter: int = 32, momentum: float = 0.99,
    f0_method: Literal["dio", "harvest"] = "dio", limit: int | None = None, model: str | None = None,
) -> dict[str, float]:
    """Copy synthesis: read every wav of ``data_dir`` (resampled to 16 kHz), pass it through
    ``vocoder`` (``griffin-lim`` or ``hifigan`` (a packaged ``model``) from its ground-truth log-mel,
    or ``world``), and write a wav data
    dir at ``out_dir`` with the source's ``text`` and ``utt2spk``. Returns ``{utts, audio_s, rtf}``."""
    import time

    from stk.data.audio import AudioError, read_audio
    from stk.data.kaldi import load_data_dir
    from stk.features.mel import log_mel

    conf = mel_config or MelConfig()
    if vocoder == "hifigan":
        if not model:
            raise ValueError("vocoder hifigan needs a packaged model (--model)")
        hg = HifiGanVocoder(model)
        conf = hg.mel_config
        run = lambda w: hg(log_mel(w, conf.sample_rate, conf).numpy())  # noqa: E731
    elif vocoder == "griffin-lim":
        gl = GriffinLimVocoder(mel_config=conf, n_iter=n_iter, momentum=momentum)
        run = lambda w: gl(log_mel(w, conf.sample_rate, conf).numpy())  # noqa: E731
    elif vocoder == "world":
        wv = WorldVocoder(sample_rate=conf.sample_rate, f0_method=f0_method)
        run = wv
    else:
        raise ValueError(f"vocoder must be one of {', '.join(VOCODERS)}, got {vocoder!r}")
    d = load_data_dir(data_dir)
    if d.wav_scp is None:
        raise SynthesisError(f"{data_dir}: no wav.scp to resynthesise")
    refuse_segments(data_dir)
    utts = list(d.wav_scp)[:limit] if limit else list(d.wav_scp)
    stats = {"utts": 0, "audio_s": 0.0, "compute_s": 0.0}

    def gen() -> Iterable[tuple[str, np.ndarray, int]]:
        for utt in utts:
            try:
                w, rate = read_audio(d.wav_scp[utt])
            except AudioError as e:
                raise SynthesisError(f"{data_dir}/wav.scp: utterance {utt!r}: {e}") from None
            w = resample(w, rate, conf.sample_rate)
            t0 = time.perf_counter()
            y = run(w)
            stats["compute_s"] += time.perf_counter() - t0
            stats["utts"] += 1
            stats["audio_s"] += len(w) / conf.sample_rate
            yield utt, y, conf.sample_rate

    write_wav_data_dir(out_dir, gen(), utt2spk=d.utt2spk, text=d.text,
                       extra={k: v for k in ("utt2lang",) if (v := d.read(k)) is not None})
    stats["rtf"] = stats["compute_s"] / max(stats["audio_s"], 1e-9)
    return stats


def vocode_feats(feats_scp: str | Path, out_dir: str | Path, vocoder: MelVocoder, *,
                 utt2spk: Mapping[str, str] | None = None, text: Mapping[str, str] | None = None) -> Path:
    """Vocode every log-mel matrix of a Kaldi ``feats.scp`` (kaldiio; e.g. a TTS model's output) into
    a wav data dir."""
    import kaldiio

    def gen() -> Iterable[tuple[str, np.ndarray, int]]:
        with kaldiio.ReadHelper(f"scp:{feats_scp}") as reader:
            for utt, mel in reader:
                try:
                    y = vocoder(np.asarray(mel))
                except ValueError as e:
                    raise SynthesisError(f"{feats_scp}: utterance {utt!r}: {e}") from None
                yield utt, y, vocoder.mel_config.sample_rate

    return write_wav_data_dir(out_dir, gen(), utt2spk=utt2spk, text=text)


def dump_mels(data_dir: str | Path, out_dir: str | Path, conf: MelConfig | None = None) -> int:
    """Write the vocoder log-mels (:func:`stk.features.mel.log_mel`) of every wav of ``data_dir`` to
    ``out_dir/mel.{ark,scp}`` (kaldiio) with the settings in ``out_dir/mel.json``; returns the count.

    These are the targets a TTS / unit-to-mel model learns and the input of ``stk synth vocode``.
    ``out_dir`` is also a training data dir: ``feats.scp`` (= ``mel.scp``), ``utt2num_frames`` and
    copies of the source's ``wav.scp`` (so ``stk units dump OUT`` works), ``utt2spk``, ``text`` …"""
    import json

    import kaldiio

    from stk.data.audio import AudioError, read_audio
    from stk.data.kaldi import load_data_dir
    from stk.features.mel import log_mel
    from stk.utils import atomic_write_text

    conf = conf or MelConfig()
    refuse_segments(data_dir)
    d = load_data_dir(data_dir)
    if d.wav_scp is None:
        raise SynthesisError(f"{data_dir}: no wav.scp")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp_ark, tmp_scp = out / ".mel.ark.tmp", out / ".mel.scp.tmp"
    n, num_frames = 0, {}
    with kaldiio.WriteHelper(f"ark,scp:{tmp_ark},{tmp_scp}") as writer:
        for utt, spec in d.wav_scp.items():
            try:
                w, rate = read_audio(spec)
            except AudioError as e:
                raise SynthesisError(f"{data_dir}/wav.scp: utterance {utt!r}: {e}") from None
            m = log_mel(resample(w, rate, conf.sample_rate), conf.sample_rate, conf).numpy()
            writer(utt, m)
            num_frames[utt] = str(m.shape[0])
            n += 1
    tmp_ark.replace(out / "mel.ark")
    scp = tmp_scp.read_text().replace(str(tmp_ark), str((out / "mel.ark").resolve()))
    atomic_write_text(out / "mel.scp", scp)
    tmp_scp.unlink()
    atomic_write_text(out / "mel.json", json.dumps(dataclasses.asdict(conf), indent=1))
    _as_data_dir(data_dir, out, scp, num_frames)
    return n


def _as_data_dir(src: str | Path, out: Path, feats_scp: str, num_frames: Mapping[str, str]) -> None:
    """Make a feature dump a data dir: ``feats.scp``, ``utt2num_frames`` and copies of the source's files."""
    import shutil

    from stk.data.kaldi import write_kv
    from stk.utils import atomic_write_text

    atomic_write_text(out / "feats.scp", feats_scp)
    write_kv(out / "utt2num_frames", dict(num_frames))
    for name in ("wav.scp", "utt2spk", "spk2utt", "text", "utt2lang"):
        if (Path(src) / name).exists():
            shutil.copyfile(Path(src) / name, out / name)


def load_mel_config(path: str | Path) -> MelConfig:
    """Read a ``mel.json`` written by :func:`dump_mels` (unknown keys are an error)."""
    import json

    from stk.config import from_dict

    return from_dict(MelConfig, json.loads(Path(path).read_text()), str(path))


def dump_wave_frames(data_dir: str | Path, out_dir: str | Path, *, hop_length: int = 256,
                     sample_rate: int = SAMPLE_RATE) -> int:
    """Write a vocoder-training data dir: ``out_dir/feats.{ark,scp}`` hold each waveform (resampled
    to ``sample_rate``) cut into ``(T, hop_length)`` float32 frames (the trailing partial frame
    dropped), beside copies of the source's ``utt2spk``/``spk2utt``/``text``/``utt2lang``. The
    ``hifigan`` model trains on these through the ordinary datasets. Returns the utterance count."""
    import shutil

    import kaldiio

    from stk.data.audio import AudioError, read_audio
    from stk.data.kaldi import load_data_dir
    from stk.utils import atomic_write_text

    if hop_length < 1:
        raise ValueError(f"hop_length must be >= 1, got {hop_length}")
    refuse_segments(data_dir)
    d = load_data_dir(data_dir)
    if d.wav_scp is None:
        raise SynthesisError(f"{data_dir}: no wav.scp")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp_ark, tmp_scp = out / ".feats.ark.tmp", out / ".feats.scp.tmp"
    n, skipped, num_frames = 0, [], {}
    with kaldiio.WriteHelper(f"ark,scp:{tmp_ark},{tmp_scp}") as writer:
        for utt, spec in d.wav_scp.items():
            try:
                w, rate = read_audio(spec)
            except AudioError as e:
                raise SynthesisError(f"{data_dir}/wav.scp: utterance {utt!r}: {e}") from None
            w = resample(w, rate, sample_rate)
            t = len(w) // hop_length
            if t == 0:
                skipped.append(utt)
                continue
            writer(utt, np.ascontiguousarray(w[: t * hop_length].reshape(t, hop_length), dtype=np.float32))
            num_frames[utt] = str(t)
            n += 1
    if skipped:
        log.warning("%s: %d utterance(s) shorter than one frame skipped, e.g. %s", data_dir, len(skipped), skipped[0])
    tmp_ark.replace(out / "feats.ark")
    atomic_write_text(out / "feats.scp", tmp_scp.read_text().replace(str(tmp_ark), str((out / "feats.ark").resolve())))
    tmp_scp.unlink()
    from stk.data.kaldi import write_kv

    write_kv(out / "utt2num_frames", num_frames)  # the datasets' length buckets read it
    for name in ("utt2spk", "spk2utt", "text", "utt2lang"):
        if (Path(data_dir) / name).exists():
            shutil.copyfile(Path(data_dir) / name, out / name)
    if skipped or (out / "utt2spk").exists():
        from stk.data.kaldi import fix_data_dir

        fix_data_dir(out)
    return n


def synthesize_units(data_dir: str | Path, out_dir: str | Path, vocoder: UnitVocoder, *,
                     units_file: str | Path | None = None, limit: int | None = None) -> dict[str, float]:
    """Unit resynthesis: every utterance of ``units_file`` (default ``data_dir/units``, from ``stk
    units dump``) through ``vocoder`` into a wav data dir at ``out_dir`` with ``data_dir``'s ``text``,
    ``utt2spk`` and ``utt2lang``. A units file of another k (its ``.info``) or a unit id outside the
    model's range is an error naming both; deduplicated units (a ``.dur`` beside the file) are refused.
    A vocoder with F0 input (``vocoder.f0_bins`` > 0) also reads ``f0bins`` beside the units file
    (``stk data pitch DATA_DIR --frame-shift-ms 16 --bins-per-octave 24``). Returns ``{utts, audio_s, compute_s, rtf}`` (audio seconds of the generated speech)."""
    import json
    import time

    from stk.data.kaldi import load_data_dir
    from stk.units import read_int_file

    path = Path(units_file) if units_file is not None else Path(data_dir) / "units"
    if not path.exists():
        raise SynthesisError(f"{path}: no units file (write one with `stk units dump {data_dir} --model UNITS`)")
    info_path = path.with_name(path.name + ".info")
    if info_path.exists():
        info = json.loads(info_path.read_text())
        if info.get("dedup"):
            raise SynthesisError(f"{path}: deduplicated units (units.dur); this unit vocoder reads frame units "
                                 "(dump without --dedup)")
        if info.get("k") is not None and int(info["k"]) != vocoder.num_units:
            raise SynthesisError(f"{path}: units of a k={info['k']} units model ({info.get('model')}), the unit "
                                 f"vocoder was trained on k={vocoder.num_units} units")
    seqs = read_int_file(path)
    f0s: dict[str, list[int]] = {}
    if getattr(vocoder, "f0_bins", 0):
        f0_path = path.with_name("f0bins")
        if not f0_path.exists():
            raise SynthesisError(f"{f0_path}: no F0 bins, and the unit vocoder takes F0 input (write them with "
                                 f"`stk data pitch {path.parent} --frame-shift-ms 16 --bins-per-octave 24`)")
        f0s = read_int_file(f0_path)
    d = load_data_dir(data_dir)
    utt2spk = d.utt2spk or {}
    utts = list(seqs)[:limit] if limit else list(seqs)
    stats = {"utts": 0, "audio_s": 0.0, "compute_s": 0.0}
    rate = vocoder.mel_config.sample_rate

    def gen() -> Iterable[tuple[str, np.ndarray, int]]:
        for utt in utts:
            t0 = time.perf_counter()
            try:
                if f0s and utt not in f0s:
                    raise ValueError("no line in f0bins")
                y = vocoder(seqs[utt], utt2spk.get(utt), f0s[utt]) if f0s else vocoder(seqs[utt], utt2spk.get(utt))
            except ValueError as e:
                raise SynthesisError(f"{path}: utterance {utt!r}: {e}") from None
            stats["compute_s"] += time.perf_counter() - t0
            stats["utts"] += 1
            stats["audio_s"] += len(y) / rate
            yield utt, y, rate

    write_wav_data_dir(out_dir, gen(), utt2spk=d.utt2spk, text=d.text,
                       extra={k: v for k in ("utt2lang",) if (v := d.read(k)) is not None})
    stats["rtf"] = stats["compute_s"] / max(stats["audio_s"], 1e-9)
    return stats
