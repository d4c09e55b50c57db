"""An independent speaker-similarity judge: resemblyzer's d-vector encoder (weights inside the wheel).

``ResemblyzerJudge().embed(wave)`` gives an L2-normalised 256-d embedding of 16 kHz speech
(resemblyzer trims long silences with webrtcvad and normalises the volume first); the similarity of
two utterances is the cosine of their embeddings (:func:`stk.metrics_speech.cosine`).
"""

from __future__ import annotations

import contextlib
import io
import logging

import numpy as np

from stk.judges import require

SAMPLE_RATE = 16000
log = logging.getLogger("stk.judges.speaker")


class ResemblyzerJudge:
    """resemblyzer ``VoiceEncoder`` on the CPU."""

    def __init__(self) -> None:
        import warnings

        with warnings.catch_warnings():  # webrtcvad imports the deprecated pkg_resources
            warnings.simplefilter("ignore")
            rz = require("resemblyzer", "the speaker-similarity judge")
        self._preprocess = rz.preprocess_wav
        self._normalize = rz.audio.normalize_volume
        self._dbfs = rz.hparams.audio_norm_target_dBFS
        with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded the voice encoder model ..."
            self.encoder = rz.VoiceEncoder(device="cpu", verbose=False)

    def embed(self, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """``(N,)`` samples -> ``(256,)`` unit-norm embedding. When the voice-activity detector finds
        (almost) no speech — a broken vocoder's output — the whole wave is embedded instead (logged).
        Raises ValueError on audio shorter than 0.1 s."""
        w = self._preprocess(np.asarray(wave, dtype=np.float32), source_sr=sample_rate)
        if len(w) < SAMPLE_RATE // 10:
            log.warning("resemblyzer: %d samples of speech after silence trimming; embedding the untrimmed audio", len(w))
            from stk.synthesis import resample

            w = self._normalize(resample(np.asarray(wave, dtype=np.float32), sample_rate, SAMPLE_RATE), self._dbfs,
                                increase_only=True)
            if len(w) < SAMPLE_RATE // 10:
                raise ValueError(f"only {len(w)} samples of audio; too short to embed")
        return np.asarray(self.encoder.embed_utterance(w), dtype=np.float32)
