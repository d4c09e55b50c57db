"""Kaldi data directories: read, write and validate.

A data dir holds ``id value`` text files, sorted by id (C locale, i.e. byte order):

- ``wav.scp``: ``utt path`` (or ``utt cmd |`` pipe, only with opt-in; or ``utt ark:offset``)
- ``segments`` (optional): ``seg rec start end`` — then ``wav.scp`` is keyed by recording
- ``text``: transcript; ``text.<lang>``: translations (e.g. ``text.en``)
- ``utt2spk``, ``spk2utt``, ``utt2lang``, ``utt2dur``, ``utt2intent`` …

Speech-only dirs have no ``text``; text-only dirs have ``text`` but no ``wav.scp``.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping

from stk.utils import atomic_write_text


class DataDirError(ValueError):
    """A data dir is malformed; the message names the file, line and utterance."""


def read_kv(path: str | Path, allow_empty_value: bool = True) -> dict[str, str]:
    """Read an ``id value`` file into an ordered dict (value may contain spaces or be empty)."""
    path = Path(path)
    out: dict[str, str] = {}
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataDirError(f"{path}: file not found") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line_no = raw[: e.start].count(b"\n") + 1
        raise DataDirError(f"{path}:{line_no}: not valid UTF-8 ({e.reason})") from None
    for i, line in enumerate(text.splitlines(), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        key = parts[0]
        value = parts[1].strip() if len(parts) > 1 else ""
        if not value and not allow_empty_value:
            raise DataDirError(f"{path}:{i}: utterance {key!r} has an empty value")
        if key in out:
            raise DataDirError(f"{path}:{i}: duplicate id {key!r}")
        out[key] = value
    return out


def write_kv(path: str | Path, mapping: Mapping[str, str]) -> None:
    """Write ``id value`` lines sorted by id (byte order, like ``LC_ALL=C sort``)."""
    lines = [f"{k} {mapping[k]}".rstrip() + "\n" for k in sorted(mapping, key=lambda s: s.encode())]
    atomic_write_text(path, "".join(lines))


def spk2utt_from_utt2spk(utt2spk: Mapping[str, str]) -> dict[str, str]:
    groups: dict[str, list[str]] = defaultdict(list)
    for utt in sorted(utt2spk, key=lambda s: s.encode()):
        groups[utt2spk[utt]].append(utt)
    return {spk: " ".join(utts) for spk, utts in groups.items()}


def write_data_dir(
    out_dir: str | Path,
    *,
    wav_scp: Mapping[str, str] | None = None,
    text: Mapping[str, str] | None = None,
    utt2spk: Mapping[str, str] | None = None,
    utt2lang: Mapping[str, str] | None = None,
    segments: Mapping[str, str] | None = None,
    extra: Mapping[str, Mapping[str, str]] | None = None,
) -> Path:
    """Write a data dir; ``spk2utt`` is derived from ``utt2spk``.

    ``extra`` holds more ``id value`` files by name, e.g. ``{"text.en": {...}, "utt2dur": {...}}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"wav.scp": wav_scp, "text": text, "utt2spk": utt2spk, "utt2lang": utt2lang, "segments": segments}
    files.update(extra or {})
    for name, mapping in files.items():
        if mapping is not None:
            write_kv(out / name, mapping)
    if utt2spk is not None:
        write_kv(out / "spk2utt", spk2utt_from_utt2spk(utt2spk))
    return out


@dataclasses.dataclass
class DataDir:
    """A loaded data dir. Missing optional files are ``None``."""

    path: Path
    wav_scp: dict[str, str] | None
    text: dict[str, str] | None
    utt2spk: dict[str, str] | None
    utt2lang: dict[str, str] | None
    segments: dict[str, tuple[str, float, float]] | None

    @property
    def utt_ids(self) -> list[str]:
        """Utterance ids: from segments, else wav.scp, else text."""
        src = self.segments or self.wav_scp or self.text or {}
        return list(src)

    def read(self, name: str) -> dict[str, str] | None:
        """Read another ``id value`` file (``text.en``, ``utt2intent``…) if it exists."""
        p = self.path / name
        return read_kv(p) if p.exists() else None


def load_data_dir(path: str | Path) -> DataDir:
    """Load a data dir (no audio checks; see :func:`validate_data_dir`)."""
    path = Path(path)
    if not path.is_dir():
        raise DataDirError(f"{path}: data dir not found")

    def opt(name: str) -> dict[str, str] | None:
        p = path / name
        return read_kv(p) if p.exists() else None

    wav_scp, text = opt("wav.scp"), opt("text")
    if wav_scp is None and text is None:
        raise DataDirError(f"{path}: neither wav.scp nor text exists")
    segments = None
    raw_seg = opt("segments")
    if raw_seg is not None:
        segments = {}
        for utt, v in raw_seg.items():
            parts = v.split()
            try:
                rec, start, end = parts[0], float(parts[1]), float(parts[2])
            except (IndexError, ValueError):
                raise DataDirError(f"{path}/segments: utterance {utt!r}: expected 'rec start end', got {v!r}") from None
            if end <= start:
                raise DataDirError(f"{path}/segments: utterance {utt!r}: end {end} <= start {start}")
            segments[utt] = (rec, start, end)
    return DataDir(path, wav_scp, text, opt("utt2spk"), opt("utt2lang"), segments)


def _check_sorted(path: Path, keys: Iterable[str]) -> None:
    prev = None
    for k in keys:
        if prev is not None and k.encode() <= prev.encode():
            raise DataDirError(f"{path}: ids not sorted (C locale): {prev!r} before {k!r}; run `stk data fix`")
        prev = k


def validate_data_dir(
    path: str | Path,
    *,
    check_audio: bool = True,
    allow_pipes: bool = False,
    expected_rate: int | None = None,
    allow_empty_text: bool = False,
) -> DataDir:
    """Check a data dir like Kaldi's ``validate_data_dir.sh``; raise :class:`DataDirError` on a problem.

    Checks: every ``id value`` file sorted and unique; ``text``/``utt2spk``/``utt2lang``/``text.*``
    ids equal to the utterance ids of ``wav.scp``/``segments``; ``spk2utt`` consistent; no empty
    transcript (unless allowed); and, with ``check_audio``, every recording readable, non-empty and
    at ``expected_rate``.
    """
    path = Path(path)
    d = load_data_dir(path)
    for f in sorted(path.iterdir()):
        if f.is_file() and (f.name in ("wav.scp", "text", "utt2spk", "spk2utt", "utt2lang", "segments", "utt2dur")
                            or f.name.startswith("text.") or f.name.startswith("utt2")):
            _check_sorted(f, read_kv(f))
    utts = d.utt_ids
    utt_set = set(utts)
    if d.segments is not None:
        if d.wav_scp is None:
            raise DataDirError(f"{path}: segments given but wav.scp is missing")
        for utt, (rec, _, _) in d.segments.items():
            if rec not in d.wav_scp:
                raise DataDirError(f"{path}/segments: utterance {utt!r} names recording {rec!r} not in wav.scp")
    named = {"text": d.text, "utt2spk": d.utt2spk, "utt2lang": d.utt2lang}
    for f in sorted(path.glob("text.*")):
        named[f.name] = read_kv(f)
    for name, mapping in named.items():
        if mapping is None:
            continue
        if d.wav_scp is None and d.segments is None:
            continue  # text-only dir: text defines the ids
        extra_ids = [u for u in mapping if u not in utt_set]
        if extra_ids:
            src = "segments" if d.segments is not None else "wav.scp"
            raise DataDirError(f"{path}/{name}: utterance {extra_ids[0]!r} has no entry in {src}")
        missing = [u for u in utts if u not in mapping]
        if missing:
            raise DataDirError(f"{path}/{name}: utterance {missing[0]!r} (from wav.scp/segments) is missing")
    if d.text is not None and not allow_empty_text:
        for utt, t in d.text.items():
            if not t.strip():
                raise DataDirError(f"{path}/text: utterance {utt!r} has an empty transcript")
    spk2utt = path / "spk2utt"
    if d.utt2spk is not None and spk2utt.exists():
        if read_kv(spk2utt) != spk2utt_from_utt2spk(d.utt2spk):
            raise DataDirError(f"{path}/spk2utt: does not match utt2spk; run `stk data fix`")
    if check_audio and d.wav_scp is not None:
        from stk.data.audio import AudioError, read_audio_info

        for rec, spec in d.wav_scp.items():
            try:
                rate, frames = read_audio_info(spec, allow_pipes=allow_pipes)
            except AudioError as e:
                raise DataDirError(f"{path}/wav.scp: recording {rec!r}: {e}") from None
            if frames == 0:
                raise DataDirError(f"{path}/wav.scp: recording {rec!r}: audio is empty ({spec})")
            if expected_rate is not None and rate != expected_rate:
                raise DataDirError(
                    f"{path}/wav.scp: recording {rec!r}: sample rate {rate} Hz, expected {expected_rate} Hz ({spec})"
                )
    return d


def fix_data_dir(path: str | Path) -> None:
    """Sort every ``id value`` file, keep only utterances present in all of them, rebuild spk2utt."""
    path = Path(path)
    d = load_data_dir(path)
    keep = set(d.utt_ids)
    per_utt = [f for f in path.iterdir() if f.is_file() and (f.name == "text" or f.name.startswith(("text.", "utt2")))]
    for f in per_utt:
        if d.wav_scp is not None or d.segments is not None:
            keep &= set(read_kv(f))
    if d.segments is not None:
        write_kv(path / "segments", {u: v for u, v in read_kv(path / "segments").items() if u in keep})
    elif d.wav_scp is not None:
        write_kv(path / "wav.scp", {u: v for u, v in d.wav_scp.items() if u in keep})
    for f in per_utt:
        write_kv(f, {u: v for u, v in read_kv(f).items() if u in keep})
    if d.utt2spk is not None:
        write_kv(path / "spk2utt", spk2utt_from_utt2spk({u: s for u, s in d.utt2spk.items() if u in keep}))
