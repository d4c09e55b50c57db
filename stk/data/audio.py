"""Audio I/O for ``wav.scp`` entries: files (soundfile), Kaldi arks (kaldiio) and, only with an
explicit opt-in, pipe commands (``sox in.flac -t wav - |``).

Pipes execute a shell command taken from a data file, so they are refused unless the caller
passes ``allow_pipes=True`` (CLI: ``--allow-pipes``; environment: ``STK_ALLOW_PIPES=1``).

Every reader applies the same checks: a WAV shorter than its RIFF header announces is an
:class:`AudioError` ("truncated"); a segment ending more than :data:`MAX_OVERSHOOT` seconds past
the end of its recording is an error naming the utterance (less: cut, with a warning); multi-channel
audio is averaged to mono, logged once per data dir (see :func:`audio_source`).
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import os
import re
import subprocess
from typing import Iterator

import numpy as np

_ARK_RE = re.compile(r"^(.+\.ark):(\d+)(\[.*\])?$")
log = logging.getLogger("stk.data")
MAX_OVERSHOOT = 0.5  # seconds a segment may end past its recording (Kaldi extract-segments' --max-overshoot)
_source: contextvars.ContextVar[str] = contextvars.ContextVar("stk_audio_source", default="")
_downmix_noted: set[str] = set()


@contextlib.contextmanager
def audio_source(name: str) -> Iterator[None]:
    """Name the data dir being read (for the once-per-data-dir stereo-to-mono notice)."""
    token = _source.set(str(name))
    try:
        yield
    finally:
        _source.reset(token)


def _mono(data: np.ndarray, spec: str) -> np.ndarray:
    if data.shape[1] == 1:
        return np.ascontiguousarray(data[:, 0])
    where = _source.get()
    if where not in _downmix_noted:
        _downmix_noted.add(where)
        log.info("%s: %d-channel audio (e.g. %s) is averaged to mono", where or "audio input", data.shape[1], spec)
    return np.ascontiguousarray(data.mean(axis=1))


def _check_complete(spec: str, head: bytes | None = None, size: int | None = None) -> None:
    """AudioError if a WAV is shorter than the data chunk its RIFF header announces."""
    declared = _riff_data_end(spec, head)
    if size is None:
        size = os.path.getsize(spec)
    if declared is not None and size < declared:
        raise AudioError(f"audio file is truncated: {spec} (the RIFF header announces {declared} bytes, "
                         f"the file has {size})")


def _cut(wav: np.ndarray, rate: int, start: float, end: float, *, utt: str | None, spec: str) -> np.ndarray:
    """Samples ``[start, end)`` s of a decoded recording; an end past the recording: see MAX_OVERSHOOT."""
    _check_overshoot(len(wav), rate, start, end, utt=utt, spec=spec)
    return wav[int(start * rate) : int(end * rate)]


def _check_overshoot(frames: int, rate: int, start: float, end: float, *, utt: str | None, spec: str) -> None:
    over = end - frames / rate
    if over <= 0.01:
        return
    who = f"utterance {utt!r}: " if utt else ""
    msg = (f"{who}segment {start:g}-{end:g} s ends {over:.2f} s past the end of {spec} "
           f"({frames / rate:.2f} s)")
    if over > MAX_OVERSHOOT:
        raise AudioError(msg + f"; more than {MAX_OVERSHOOT} s: fix the segments file")
    log.warning("%s; cut at the end of the recording", msg)


class AudioError(ValueError):
    """Audio cannot be read; the message names the file."""


def pipes_allowed(allow_pipes: bool) -> bool:
    return allow_pipes or os.environ.get("STK_ALLOW_PIPES", "") == "1"


def _run_pipe(spec: str, allow_pipes: bool) -> bytes:
    if not pipes_allowed(allow_pipes):
        raise AudioError(
            f"wav.scp entry is a pipe command ({spec!r}); pipes run shell commands and are refused "
            "unless you opt in with --allow-pipes (or STK_ALLOW_PIPES=1)"
        )
    cmd = spec.rstrip()[:-1]
    proc = subprocess.run(cmd, shell=True, capture_output=True)
    if proc.returncode != 0:
        raise AudioError(f"pipe command failed ({proc.returncode}): {cmd}: {proc.stderr.decode(errors='replace')[-300:]}")
    return proc.stdout


def read_audio(spec: str, *, allow_pipes: bool = False) -> tuple[np.ndarray, int]:
    """Read one ``wav.scp`` value; return ``(samples float32 in [-1, 1], (T,) mono, sample_rate)``."""
    import soundfile as sf

    spec = spec.strip()
    try:
        if spec.endswith("|"):
            raw = _run_pipe(spec, allow_pipes)
            _check_complete(spec, raw[: 1 << 16], len(raw))
            data, rate = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
        elif _ARK_RE.match(spec):
            import kaldiio

            rate, arr = kaldiio.load_mat(spec)
            data = np.asarray(arr, dtype=np.float32)
            if np.issubdtype(arr.dtype, np.integer):
                data = data / 32768.0
            data = data.reshape(len(data), -1)
        else:
            if not os.path.exists(spec):
                raise AudioError(f"audio file not found: {spec}")
            _check_complete(spec)
            data, rate = sf.read(spec, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as e:  # soundfile/kaldiio raise many types for broken files
        raise AudioError(f"cannot read audio {spec}: {type(e).__name__}: {e}") from None
    if data.ndim != 2 or data.shape[0] == 0:
        raise AudioError(f"audio is empty: {spec}")
    return _mono(data, spec), int(rate)


def read_audio_info(spec: str, *, allow_pipes: bool = False) -> tuple[int, int]:
    """Return ``(sample_rate, num_frames)`` of a ``wav.scp`` value, checking the file is complete."""
    import soundfile as sf

    spec = spec.strip()
    if spec.endswith("|") or _ARK_RE.match(spec):
        data, rate = read_audio(spec, allow_pipes=allow_pipes)
        return rate, len(data)
    if not os.path.exists(spec):
        raise AudioError(f"audio file not found: {spec}")
    try:
        info = sf.info(spec)
    except Exception as e:
        raise AudioError(f"cannot read audio {spec}: {type(e).__name__}: {e}") from None
    if info.format == "WAV":
        _check_complete(spec)
    return int(info.samplerate), int(info.frames)


def _riff_data_end(path: str, head: bytes | None = None) -> int | None:
    """Byte offset where the RIFF ``data`` chunk ends according to the header (None if unknown)."""
    import struct

    if head is None:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(head):
        cid, size = head[pos : pos + 4], struct.unpack("<I", head[pos + 4 : pos + 8])[0]
        if cid == b"data":
            return None if size in (0, 0xFFFFFFFF) else pos + 8 + size
        pos += 8 + size + (size & 1)
    return None


def read_audio_slice(spec: str, start: float, end: float, *, allow_pipes: bool = False,
                     utt: str | None = None) -> tuple[np.ndarray, int]:
    """Samples ``[start, end)`` seconds of one ``wav.scp`` value. A plain file is read by seeking
    (soundfile reads only the slice); a pipe or ark is decoded whole (see :class:`RecordingCache`).
    ``utt`` names the segment in errors and warnings."""
    spec = spec.strip()
    if spec.endswith("|") or _ARK_RE.match(spec):
        wav, rate = read_audio(spec, allow_pipes=allow_pipes)
        return _cut(wav, rate, start, end, utt=utt, spec=spec), rate
    import soundfile as sf

    if not os.path.exists(spec):
        raise AudioError(f"audio file not found: {spec}")
    _check_complete(spec)
    try:
        info = sf.info(spec)
        rate = info.samplerate
    except Exception as e:
        raise AudioError(f"cannot read audio {spec}: {type(e).__name__}: {e}") from None
    _check_overshoot(int(info.frames), int(rate), start, end, utt=utt, spec=spec)
    try:
        data, rate = sf.read(spec, start=int(start * rate), stop=int(end * rate), dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(f"cannot read audio {spec}: {type(e).__name__}: {e}") from None
    if data.shape[0] == 0:
        raise AudioError(f"segment {start}-{end} s of {spec} is empty (past the end of the recording?)")
    return _mono(data, spec), int(rate)


class RecordingCache:
    """Decoded recordings of pipe and ark ``wav.scp`` entries, least recently used dropped first, so
    that the segments of one recording run its pipe once (random access: datasets). ``max_bytes``
    defaults to ``STK_RECORDING_CACHE_MB`` (256) MiB per process."""

    def __init__(self, max_bytes: int | None = None) -> None:
        from collections import OrderedDict

        self.max_bytes = max_bytes if max_bytes is not None else int(os.environ.get("STK_RECORDING_CACHE_MB", "256")) << 20
        self._items: "OrderedDict[str, tuple[np.ndarray, int]]" = OrderedDict()
        self._bytes = 0

    def get(self, spec: str, *, allow_pipes: bool = False) -> tuple[np.ndarray, int]:
        if spec in self._items:
            self._items.move_to_end(spec)
            return self._items[spec]
        wav, rate = read_audio(spec, allow_pipes=allow_pipes)
        self._items[spec] = (wav, rate)
        self._bytes += wav.nbytes
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, (old, _) = self._items.popitem(last=False)
            self._bytes -= old.nbytes
        return wav, rate


def load_segment(
    wav_scp: dict[str, str],
    utt: str,
    segments: dict[str, tuple[str, float, float]] | None,
    *,
    allow_pipes: bool = False,
    cache: RecordingCache | None = None,
) -> tuple[np.ndarray, int]:
    """Samples of utterance ``utt`` (a whole recording, or a ``segments`` slice of one: a plain file
    is read by seeking, a pipe/ark through ``cache`` when given)."""
    if segments is not None:
        rec, start, end = segments[utt]
        spec = wav_scp[rec].strip()
        if cache is not None and (spec.endswith("|") or _ARK_RE.match(spec)):
            wav, rate = cache.get(spec, allow_pipes=allow_pipes)
            return _cut(wav, rate, start, end, utt=utt, spec=spec), rate
        return read_audio_slice(spec, start, end, allow_pipes=allow_pipes, utt=utt)
    return read_audio(wav_scp[utt], allow_pipes=allow_pipes)


def iter_utterances(
    wav_scp: dict[str, str],
    utts: list[str],
    segments: dict[str, tuple[str, float, float]] | None,
    *,
    allow_pipes: bool = False,
) -> Iterator[tuple[str, np.ndarray, int]]:
    """``(utt, samples, rate)`` for every utterance of ``utts``, reading each recording once: the
    segments of a recording are cut from one read of it (one pipe run, one decode), recording by
    recording in the order of their first utterance."""
    if segments is None:
        for u in utts:
            wav, rate = read_audio(wav_scp[u], allow_pipes=allow_pipes)
            yield u, wav, rate
        return
    by_rec: dict[str, list[str]] = {}
    for u in utts:
        by_rec.setdefault(segments[u][0], []).append(u)
    for rec, group in by_rec.items():
        spec = wav_scp[rec].strip()
        if len(group) == 1 and not (spec.endswith("|") or _ARK_RE.match(spec)):
            _, start, end = segments[group[0]]
            wav, rate = read_audio_slice(spec, start, end, allow_pipes=allow_pipes, utt=group[0])
            yield group[0], wav, rate
            continue
        whole, rate = read_audio(spec, allow_pipes=allow_pipes)
        for u in group:
            _, start, end = segments[u]
            yield u, _cut(whole, rate, start, end, utt=u, spec=spec), rate
