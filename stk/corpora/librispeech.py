"""LibriSpeech (read English audiobooks, 16 kHz flac) as Kaldi data dirs.

Layout (openslr.org/12; lhotse ``recipes/librispeech.py``, Kaldi ``egs/librispeech/s5/local/data_prep.sh``)::

    ROOT/LibriSpeech/SPEAKERS.TXT                              ID | SEX | SUBSET | MINUTES | NAME
    ROOT/LibriSpeech/<part>/<spk>/<chapter>/<spk>-<chapter>.trans.txt
    ROOT/LibriSpeech/<part>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac

``<part>`` is one of :data:`PARTS` (``train-clean-100`` … ``test-other``). A transcript line is
``<spk>-<chapter>-<utt> TEXT`` (upper case, apostrophes, no other punctuation). ``SPEAKERS.TXT``
has ``;`` comment lines; the name field may itself contain ``|`` (speaker 60 is ``|CBW|Simon``).
``corpus_dir`` may be ``ROOT/LibriSpeech`` or ``ROOT``.

Output: ``OUT/<part with _>`` (``dev_clean``, ``train_clean_100`` as in Kaldi and ESPnet): wav.scp
(the flac files, read by libsndfile, no conversion), text, utt2spk, spk2utt (the speaker is the
reader id, as in lhotse), utt2dur, and spk2gender/utt2gender (``m``/``f``) when SPEAKERS.TXT
names every reader of the part. Lines with an empty transcript, a malformed or misplaced id, a
duplicate id, or a missing or unreadable flac are skipped, counted and logged with their ids; so
are flac files that no transcript lists.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from stk.corpora.asterisk import ProgressFn, no_progress, run_jobs
from stk.corpora.covost2 import PreparedDir, clean_text, report_skipped
from stk.data.kaldi import validate_data_dir, write_data_dir

log = logging.getLogger(__name__)

PARTS: tuple[str, ...] = (
    "dev-clean", "dev-other", "test-clean", "test-other", "train-clean-100", "train-clean-360", "train-other-500",
)  # fmt: skip
#: the Mini LibriSpeech parts (openslr.org/31), same layout
MINI_PARTS: tuple[str, ...] = ("dev-clean-2", "train-clean-5")
_OWN_FILES = ("wav.scp", "text", "utt2spk", "spk2utt", "utt2dur", "spk2gender", "utt2gender", "utt2lang")
_UTT_ID = re.compile(r"^(\d+)-(\d+)-(\d+)$")


def find_root(corpus_dir: str | Path) -> Path:
    """The ``LibriSpeech`` dir: ``corpus_dir`` itself or its ``LibriSpeech/`` child."""
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise ValueError(f"{corpus_dir}: LibriSpeech corpus dir not found")
    nested = corpus_dir / "LibriSpeech"
    return nested if nested.is_dir() else corpus_dir


def read_speakers(path: str | Path) -> dict[str, str]:
    """Reader id -> ``m``/``f`` from ``SPEAKERS.TXT`` (empty if the file is missing).

    Raises ValueError naming the line for a row without an ``ID | SEX`` pair or an unknown sex."""
    path = Path(path)
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        fields = [f.strip() for f in line.split("|", 4)]  # the name (last field) may contain '|'
        if len(fields) < 2 or not fields[0].isdigit():
            raise ValueError(f"{path}:{i}: expected 'ID | SEX | SUBSET | MINUTES | NAME', got {line!r}")
        sex = fields[1].lower()
        if sex not in ("m", "f"):
            raise ValueError(f"{path}:{i}: reader {fields[0]}: sex must be M or F, got {fields[1]!r}")
        out[fields[0]] = sex
    return out


def _part_rows(part_dir: Path, skipped: dict[str, list[str]]) -> dict[str, tuple[Path, str]]:
    """utt -> (flac, transcript) of one part; skipped lines go to ``skipped``."""
    rows: dict[str, tuple[Path, str]] = {}
    listed: set[Path] = set()
    for trans in sorted(part_dir.glob("*/*/*.trans.txt")):
        chapter_dir = trans.parent
        prefix = f"{chapter_dir.parent.name}-{chapter_dir.name}-"
        for i, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            utt, words = parts[0], clean_text(parts[1]) if len(parts) > 1 else ""
            where = f"{trans.name}:{i} {utt}"
            if not _UTT_ID.match(utt) or not utt.startswith(prefix):
                skipped["malformed or misplaced id"].append(where)
                continue
            flac = chapter_dir / f"{utt}.flac"
            listed.add(flac)
            if not words:
                skipped["empty transcript"].append(utt)
            elif utt in rows:
                skipped["duplicate id"].append(where)
            elif not flac.is_file():
                skipped["missing audio"].append(utt)
            else:
                rows[utt] = (flac, words)
    unlisted = [p.stem for p in sorted(part_dir.glob("*/*/*.flac")) if p not in listed]
    skipped["no transcript line"].extend(unlisted)
    return rows


def prepare_librispeech(
    corpus_dir: str | Path,
    out_dir: str | Path,
    *,
    parts: Sequence[str] | None = None,
    nj: int = 1,
    progress: ProgressFn = no_progress,
) -> list[PreparedDir]:
    """Write ``out_dir/<part>`` (``-`` -> ``_``) for every LibriSpeech part.

    Args:
        corpus_dir: the ``LibriSpeech`` dir (holding ``<part>/`` and ``SPEAKERS.TXT``) or its parent.
        out_dir: where the data dirs go.
        parts: among :data:`PARTS` and :data:`MINI_PARTS`; ``None`` takes every one present.
        nj: threads reading the flac headers (durations).
        progress: progress callback (see :data:`stk.corpora.asterisk.ProgressFn`).

    Returns one :class:`~stk.corpora.covost2.PreparedDir` per part. Raises ValueError naming the
    missing dir, an unknown part, or a part with no usable utterance.
    """
    root, out_dir = find_root(corpus_dir), Path(out_dir)
    known = PARTS + MINI_PARTS
    if parts is None:
        parts = [p for p in known if (root / p).is_dir()]
        if not parts:
            raise ValueError(f"{root}: no LibriSpeech part found (expected {root}/<part>/ for a part among "
                             f"{', '.join(known)})")
    bad = [p for p in parts if p not in known]
    if bad or not parts:
        raise ValueError(f"unknown part(s) {bad or '(none)'}; choose from {', '.join(known)}")
    for p in parts:
        if not (root / p).is_dir():
            raise ValueError(f"{root / p}: part dir not found (expected {root}/<part>/<spk>/<chapter>/)")
    genders = read_speakers(root / "SPEAKERS.TXT")
    if not genders:
        log.warning("%s: not found or empty: no spk2gender/utt2gender", root / "SPEAKERS.TXT")
    results = []
    for part in parts:
        skipped: dict[str, list[str]] = defaultdict(list)
        rows = _part_rows(root / part, skipped)
        seconds: dict[str, float | None] = {}

        def one(utt: str) -> None:
            from stk.data.audio import AudioError, read_audio_info

            try:
                rate, frames = read_audio_info(str(rows[utt][0]))
                seconds[utt] = frames / rate if frames > 0 else None
            except AudioError:
                seconds[utt] = None

        run_jobs(one, sorted(rows), nj, progress, f"librispeech {part}: flac headers")
        wav, text, spk, dur = {}, {}, {}, {}
        for utt, (flac, words) in rows.items():
            if seconds.get(utt) is None:
                skipped["unreadable audio"].append(utt)
                continue
            wav[utt], text[utt], spk[utt] = str(flac.resolve()), words, utt.split("-")[0]
            dur[utt] = f"{seconds[utt]:.3f}"
        counts = report_skipped(f"librispeech {part}", skipped, log)
        if not wav:
            raise ValueError(f"librispeech {part}: no usable utterance in {root / part} (skipped: {counts})")
        readers = sorted(set(spk.values()))
        extra: dict[str, dict[str, str]] = {"utt2dur": dur}
        unknown = [r for r in readers if r not in genders]
        if not unknown:
            extra["spk2gender"] = {r: genders[r] for r in readers}
            extra["utt2gender"] = {u: genders[s] for u, s in spk.items()}
        elif genders:
            log.warning("librispeech %s: %d reader(s) not in SPEAKERS.TXT (%s): no spk2gender/utt2gender",
                        part, len(unknown), ", ".join(unknown[:5]))
        d = out_dir / part.replace("-", "_")
        for name in _OWN_FILES:
            (d / name).unlink(missing_ok=True)
        write_data_dir(d, wav_scp=wav, text=text, utt2spk=spk, utt2lang={u: "en" for u in wav}, extra=extra)
        validate_data_dir(d, check_audio=False)
        hours = sum(float(v) for v in dur.values()) / 3600
        results.append(PreparedDir(d.name, "en", len(wav), len(readers), hours, counts))
        log.info("librispeech %s: %d utterances, %d speakers, %.2f h -> %s", part, len(wav), len(readers), hours, d)
    return results
