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
            raise DataDirError(f"{path}: ids not sorted (C locale): {prev!r} before {k!r}; run `stk data fix` "
                               "(Kaldi: file is not in sorted order or has duplicates)")
        prev = k


def _lines(path: Path) -> list[tuple[int, str, str]]:
    """``(line number, id, value)`` of every non-empty line; rejects CRLF line endings and a missing
    final newline (Kaldi: ``file has invalid newline``), naming the line."""
    raw = path.read_bytes()
    cr = raw.find(b"\r")
    if cr >= 0:
        line_no = raw[:cr].count(b"\n") + 1
        raise DataDirError(f"{path}:{line_no}: CR character (Windows CRLF line ending); Kaldi rejects it "
                           "(file has invalid newline): convert with `dos2unix` or `sed -i 's/\\r$//'`")
    if raw and not raw.endswith(b"\n"):
        last = raw.count(b"\n") + 1
        raise DataDirError(f"{path}:{last}: no newline at the end of the file "
                           "(Kaldi: file has invalid newline); run `stk data fix`")
    read_kv(path)  # UTF-8, duplicate ids
    out = []
    for i, line in enumerate(raw.decode("utf-8").split("\n"), 1):
        if line.strip():
            parts = line.split(maxsplit=1)
            out.append((i, parts[0], parts[1].strip() if len(parts) > 1 else ""))
    return out


def _same_ids(path: Path, what: str, got: list[tuple[int, str, str]], want: list[str], src: str) -> None:
    """``got``'s ids must equal ``want`` (Kaldi: ``<what> lists extracted from <src> and <file> differ``)."""
    want_set, got_ids = set(want), {k for _, k, _ in got}
    for i, k, _ in got:
        if k not in want_set:
            raise DataDirError(f"{path}:{i}: {what} {k!r} is not in {src} ({what} lists extracted from {src} "
                               f"and {path.name} differ)")
    for k in want:
        if k not in got_ids:
            raise DataDirError(f"{path}: {what} {k!r} (from {src}) is missing ({what} lists extracted from {src} "
                               f"and {path.name} differ)")


_ILLEGAL_TEXT = ("<s>", "</s>", "#0")
_KV_FILES = ("wav.scp", "text", "utt2spk", "spk2utt", "utt2lang", "segments", "utt2dur", "utt2num_frames",
             "feats.scp", "cmvn.scp", "spk2gender", "reco2dur", "utt2uniq")


def validate_data_dir(
    path: str | Path,
    *,
    check_audio: bool = True,
    allow_pipes: bool = False,
    expected_rate: int | None = None,
    allow_empty_text: bool = False,
    spk_sort: bool = True,
) -> DataDir:
    """Check a data dir like Kaldi's ``validate_data_dir.sh``; raise :class:`DataDirError` on a problem,
    naming the file and line (Kaldi's wording in parentheses, to search for).

    Checks: LF line endings and a final newline; every ``id value`` file sorted and unique; with
    ``spk_sort``, ``utt2spk`` also sorted by speaker (speaker ids prefixes of utterance ids);
    ``text``/``utt2spk``/``utt2lang``/``text.*``/``utt2dur``/``utt2num_frames``/``feats.scp`` ids
    equal to the utterance ids of ``wav.scp``/``segments``; ``spk2utt`` consistent; ``spk2gender``
    and ``cmvn.scp`` keyed by exactly the speakers, ``spk2gender`` values ``m``/``f``; ``utt2dur``
    positive, ``utt2num_frames`` positive integers; no ``<s>``, ``</s>`` or ``#0`` in ``text``; no
    empty transcript (unless allowed); and, with ``check_audio``, every recording readable, non-empty
    and at ``expected_rate``.
    """
    path = Path(path)
    d = load_data_dir(path)
    lines: dict[str, list[tuple[int, str, str]]] = {}
    for f in sorted(path.iterdir()):
        if f.is_file() and (f.name in _KV_FILES or f.name.startswith(("text.", "utt2", "spk2"))):
            lines[f.name] = _lines(f)
            _check_sorted(f, [k for _, k, _ in lines[f.name]])
    utts = d.utt_ids
    utt_set = set(utts)
    if d.segments is not None:
        if d.wav_scp is None:
            raise DataDirError(f"{path}: segments given but wav.scp is missing "
                               "(Kaldi: segments file exists but no wav.scp)")
        for utt, (rec, _, _) in d.segments.items():
            if rec not in d.wav_scp:
                raise DataDirError(f"{path}/segments: utterance {utt!r} names recording {rec!r} not in wav.scp")
    has_audio = d.wav_scp is not None or d.segments is not None
    named = {"text": d.text, "utt2spk": d.utt2spk, "utt2lang": d.utt2lang}
    for f in sorted(path.glob("text.*")):
        named[f.name] = read_kv(f)
    for name, mapping in named.items():
        if mapping is None:
            continue
        if not has_audio:
            continue  # text-only dir: text defines the ids
        extra_ids = [u for u in mapping if u not in utt_set]
        if extra_ids:
            src = "segments" if d.segments is not None else "wav.scp"
            line = next(i for i, k, _ in lines[name] if k == extra_ids[0]) if name in lines else "?"
            raise DataDirError(f"{path}/{name}:{line}: utterance {extra_ids[0]!r} has no entry in {src}")
        missing = [u for u in utts if u not in mapping]
        if missing:
            raise DataDirError(f"{path}/{name}: utterance {missing[0]!r} (from wav.scp/segments) is missing")
    src = "segments" if d.segments is not None else "wav.scp" if d.wav_scp is not None else "text"
    if "feats.scp" in lines:
        _same_ids(path / "feats.scp", "utterance", lines["feats.scp"], utts, src)
    for name in ("utt2dur", "utt2num_frames"):
        if name not in lines:
            continue
        _same_ids(path / name, "utterance", lines[name], utts, src)
        for i, k, v in lines[name]:
            parts = v.split()
            ok = len(parts) == 1
            if ok:
                try:
                    x = float(parts[0])
                    ok = x > 0 and (name == "utt2dur" or (x == int(x) and parts[0].lstrip("+").isdigit()))
                except ValueError:
                    ok = False
            if not ok:
                want = "a positive duration in seconds" if name == "utt2dur" else "a positive integer frame count"
                raise DataDirError(f"{path}/{name}:{i}: utterance {k!r}: {v!r} is not {want} "
                                   f"(Kaldi: Bad line {name}:{i}:{k} {v})")
    if d.text is not None:
        for i, k, v in lines["text"]:
            for sym in _ILLEGAL_TEXT:
                if sym in v.split():
                    raise DataDirError(f"{path}/text:{i}: utterance {k!r}: text contains illegal symbol {sym} "
                                       "(reserved for sentence boundaries / disambiguation in Kaldi)")
    if d.text is not None and not allow_empty_text:
        for utt, t in d.text.items():
            if not t.strip():
                raise DataDirError(f"{path}/text: utterance {utt!r} has an empty transcript")
    if d.utt2spk is not None:
        for i, k, v in lines["utt2spk"]:
            if len(v.split()) != 1:
                raise DataDirError(f"{path}/utt2spk:{i}: utterance {k!r}: expected one speaker id, got {v!r} "
                                   "(Kaldi: utt2spk has wrong format)")
        if spk_sort:
            by_spk = sorted(lines["utt2spk"], key=lambda x: (x[2].encode(), x[1].encode()))
            for (i, k, v), (_, k2, v2) in zip(lines["utt2spk"], by_spk):
                if k != k2:
                    bad = next((x for x in lines["utt2spk"] if not x[1].startswith(x[2])), (i, k, v))
                    raise DataDirError(
                        f"{path}/utt2spk:{bad[0]}: utterance {bad[1]!r} of speaker {bad[2]!r}: utt2spk is not in "
                        "sorted order when sorted first on speaker-id (fix this by making speaker-ids prefixes "
                        "of utt-ids, e.g. `<spk>-<utt>`)")
    spk2utt = path / "spk2utt"
    if d.utt2spk is not None and spk2utt.exists():
        if read_kv(spk2utt) != spk2utt_from_utt2spk(d.utt2spk):
            raise DataDirError(f"{path}/spk2utt: does not match utt2spk (Kaldi: spk2utt and utt2spk do not "
                               "seem to match); run `stk data fix`")
    speakers = sorted(set(d.utt2spk.values()), key=str.encode) if d.utt2spk is not None else None
    for name in ("spk2gender", "cmvn.scp"):
        if name not in lines:
            continue
        if speakers is None:
            raise DataDirError(f"{path}/{name}: given but utt2spk is missing")
        if name == "spk2gender":
            for i, k, v in lines[name]:
                if v not in ("m", "f"):
                    raise DataDirError(f"{path}/spk2gender:{i}: speaker {k!r}: gender {v!r}, expected m or f "
                                       "(Kaldi: Mal-formed spk2gender file)")
        _same_ids(path / name, "speaker", lines[name], speakers, "spk2utt")
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
