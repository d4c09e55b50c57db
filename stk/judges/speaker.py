"""An independent speaker-similarity judge: resemblyzer's d-vector encoder (weights inside the wheel).

``ResemblyzerJudge().embed(wave)`` gives an L2-normalised 256-d embedding of 16 kHz speech
(resemblyzer trims long silences with webrtcvad and normalises the volume first); the similarity of
two utterances is the cosine of their embeddings (:func:`stk.metrics_speech.cosine`).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from stk.judges import require

SAMPLE_RATE = 16000


class ResemblyzerJudge:
    """resemblyzer ``VoiceEncoder`` on the CPU."""

    def __init__(self) -> None:
        rz = require("resemblyzer", "the speaker-similarity judge")
        self._preprocess = rz.preprocess_wav
        with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded the voice encoder model ..."
            self.encoder = rz.VoiceEncoder(device="cpu", verbose=False)

    def embed(self, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """``(N,)`` samples -> ``(256,)`` unit-norm embedding. Raises ValueError on speech too short to embed."""
        w = self._preprocess(np.asarray(wave, dtype=np.float32), source_sr=sample_rate)
        if len(w) < SAMPLE_RATE // 10:
            raise ValueError(f"only {len(w)} samples of speech after silence trimming; too short to embed")
        return np.asarray(self.encoder.embed_utterance(w), dtype=np.float32)
