"""MInDS-14 (spoken intent detection, e-banking, 14 intents, 14 language varieties) as Kaldi data dirs.

Layout (PolyAI's ``MInDS-14.zip``, as the HF ``PolyAI/minds14`` and ``google/xtreme_s`` loading
scripts read it: ``audio.zip`` and ``text.zip`` inside, each extracted into its own dir)::

    ROOT/text/<locale>.csv                         filepath, text_asr, text_translated, intent
    ROOT/audio/<locale>~<INTENT>/<name>.wav        8 kHz telephone speech

``<locale>`` is one of :data:`LOCALES` (``en-US``, ``fr-FR``…). The CSVs are comma-separated
with a header and double-quote quoting; ``filepath`` is relative to the audio dir
(``en-AU~PAY_BILL/response_4.wav``: file names repeat across intents, so the utterance id keeps
the intent dir). ``text_asr`` is the transcript, ``text_translated`` its English translation;
``intent`` is lower-cased (``pay_bill``), as the loading scripts do.

MInDS-14 ships no splits. Each (locale, intent) group is ordered by a hash of the utterance ids
and cut into ``train``/``dev``/``test`` by ``fractions`` (default 30/20/50 %), so the split is
stable and every intent is in every split; it is stk's split, not a published list.

Output: ``OUT/<split>``: wav.scp, text (transcript), text.en (translation), utt2intent,
utt2lang (the locale), utt2spk/spk2utt (MInDS-14 has no speaker ids: each utterance is its own
speaker), utt2dur. Utterance ids are ``<locale>-<INTENT>_<name>`` (``en_US-PAY_BILL_response_4``).
Audio: stk computes features at 16 kHz and does not resample, so by default the wavs are
resampled once to 16 kHz under ``OUT/wav/minds14/<locale>/`` (``convert=False`` lists the 8 kHz
originals). Rows with an empty transcript or intent, a missing or unreadable
wav, or a duplicate path are skipped, counted and logged with their paths.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from stk.corpora.asterisk import ProgressFn, no_progress, run_jobs
from stk.corpora.covost2 import PreparedDir, clean_text, report_skipped, safe_id
from stk.data.kaldi import validate_data_dir, write_data_dir

log = logging.getLogger(__name__)

LOCALES: tuple[str, ...] = (
    "cs-CZ", "de-DE", "en-AU", "en-GB", "en-US", "es-ES", "fr-FR", "it-IT", "ko-KR", "nl-NL", "pl-PL", "pt-PT",
    "ru-RU", "zh-CN",
)  # fmt: skip
INTENTS: tuple[str, ...] = (
    "abroad", "address", "app_error", "atm_limit", "balance", "business_loan", "card_issues", "cash_deposit",
    "direct_debit", "freeze", "high_value_payment", "joint_account", "latest_transactions", "pay_bill",
)  # fmt: skip
SPLITS: tuple[str, ...] = ("train", "dev", "test")
_OWN_FILES = ("wav.scp", "text", "text.en", "utt2spk", "spk2utt", "utt2lang", "utt2intent", "utt2dur")


def read_minds14_csv(path: Path) -> list[tuple[int, list[str]]]:
    """``(line number, [filepath, text_asr, text_translated, intent])`` of a ``text/<locale>.csv``.

    Raises ValueError naming the file when it is missing or empty, or the line of a row with fewer
    than 4 fields."""
    if not path.is_file():
        raise ValueError(f"{path}: file not found (expected ROOT/text/<locale>.csv; unzip MInDS-14/text.zip -d text)")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=",", skipinitialspace=True)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file (expected a header: filepath,text_asr,text_translated,intent)")
        rows = []
        for fields in reader:
            if not fields or all(not x.strip() for x in fields):
                continue
            if len(fields) < 4:
                raise ValueError(f"{path}:{reader.line_num}: {len(fields)} field(s), expected 4 "
                                 "(filepath,text_asr,text_translated,intent)")
            rows.append((reader.line_num, [x.strip() for x in fields[:4]]))
    return rows


def split_by_hash(ids: Sequence[str], fractions: Sequence[float]) -> list[str]:
    """The split (:data:`SPLITS`) of each id: ids ordered by SHA-1, cut by cumulative ``fractions``."""
    order = sorted(range(len(ids)), key=lambda i: hashlib.sha1(ids[i].encode()).hexdigest())
    out = [""] * len(ids)
    bounds, acc = [], 0.0
    for f in fractions:
        acc += f
        bounds.append(int(acc * len(ids) + 0.5))
    for rank, i in enumerate(order):
        out[i] = SPLITS[next(k for k, b in enumerate(bounds) if rank < b or k == len(bounds) - 1)]
    return out


def prepare_minds14(
    corpus_dir: str | Path,
    out_dir: str | Path,
    *,
    locales: Sequence[str] | None = None,
    fractions: Sequence[float] = (0.3, 0.2, 0.5),
    convert: bool = True,
    sample_rate: int = 16000,
    nj: int = 1,
    progress: ProgressFn = no_progress,
) -> list[PreparedDir]:
    """Write ``out_dir/{train,dev,test}`` from MInDS-14 ``locales``.

    Args:
        corpus_dir: the ``MInDS-14`` dir holding ``text/<locale>.csv`` and ``audio/``.
        out_dir: where the data dirs (and, with ``convert``, ``wav/minds14/``) go.
        locales: among :data:`LOCALES`; ``None`` takes every ``text/<locale>.csv`` present.
        fractions: train, dev, test shares (>= 0, summing to 1).
        convert: resample to ``sample_rate`` 16-bit wavs (default) instead of listing the 8 kHz files.
        sample_rate: rate of the converted wavs.
        nj: parallel conversion jobs (threads).
        progress: progress callback (see :data:`stk.corpora.asterisk.ProgressFn`).

    Returns one :class:`~stk.corpora.covost2.PreparedDir` per split (rows are skipped before the
    split, so the first one carries the skipped counts). Raises ValueError naming the missing file
    or dir, or a split left with no utterance.
    """
    from stk.corpora.covost2 import _convert  # one resampling writer for every corpus
    from stk.data.audio import AudioError, read_audio_info

    root, out_dir = Path(corpus_dir), Path(out_dir)
    text_dir, audio_dir = root / "text", root / "audio"
    for d in (root, text_dir, audio_dir):
        if not d.is_dir():
            raise ValueError(f"{d}: not found (expected MInDS-14/text/<locale>.csv and MInDS-14/audio/; "
                             "unzip MInDS-14/audio.zip -d audio and text.zip -d text)")
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be 3 shares (train, dev, test) >= 0 summing to 1, got {list(fractions)}")
    if locales is None:
        locales = [loc for loc in LOCALES if (text_dir / f"{loc}.csv").is_file()]
        if not locales:
            raise ValueError(f"{text_dir}: no <locale>.csv for any of {', '.join(LOCALES)}")
    bad = [loc for loc in locales if loc not in LOCALES]
    if bad or not locales:
        raise ValueError(f"unknown locale(s) {bad or '(none)'}; choose from {', '.join(LOCALES)}")
    skipped: dict[str, list[str]] = defaultdict(list)
    rows: dict[str, dict[str, str]] = {}  # utt -> fields
    for loc in locales:
        csv_path = text_dir / f"{loc}.csv"
        for line, (rel, transcript, translation, intent) in read_minds14_csv(csv_path):
            where = f"{loc}.csv:{line} {rel}"
            src = audio_dir / rel
            stem = Path(rel).with_suffix("").as_posix()
            utt = f"{safe_id(loc)}-{safe_id(stem[len(loc) + 1:] if stem.startswith(loc + '~') else stem)}"
            if not rel or not src.is_file():
                skipped["missing audio"].append(where)
            elif not clean_text(transcript):
                skipped["empty transcript"].append(where)
            elif not intent:
                skipped["empty intent"].append(where)
            elif utt in rows:
                skipped["duplicate path"].append(where)
            else:
                rows[utt] = {"src": str(src), "text": clean_text(transcript), "en": clean_text(translation),
                             "intent": safe_id(intent.lower()), "lang": loc, "where": where}
    unknown = sorted({r["intent"] for r in rows.values()} - set(INTENTS))
    if unknown:
        log.warning("minds14: intent(s) outside the 14 of MInDS-14: %s", ", ".join(unknown))
    # audio: 16 kHz copies (or the originals) and durations
    seconds: dict[str, tuple[str, float] | None] = {}

    def one(utt: str) -> None:
        src = Path(rows[utt]["src"])
        try:
            if convert:
                dst = out_dir / "wav" / "minds14" / rows[utt]["lang"] / f"{utt}.wav"
                seconds[utt] = (str(dst.resolve()), _convert((src, dst, sample_rate)) / sample_rate)
            else:
                rate, frames = read_audio_info(str(src))
                seconds[utt] = (str(src.resolve()), frames / rate) if frames > 0 else None
        except AudioError as e:
            log.debug("%s", e)
            seconds[utt] = None

    run_jobs(one, sorted(rows), nj, progress, "minds14: wavs" + (f" -> {sample_rate // 1000} kHz" if convert else ""))
    for utt in sorted(rows):
        if seconds.get(utt) is None:
            skipped["unreadable audio"].append(rows.pop(utt)["where"])
    counts = report_skipped("minds14", skipped, log)
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for utt, r in rows.items():
        groups[r["lang"], r["intent"]].append(utt)
    split_of: dict[str, str] = {}
    for utts in groups.values():
        split_of.update(zip(utts, split_by_hash(utts, fractions)))
    results = []
    for split in SPLITS:
        utts = [u for u in rows if split_of[u] == split]
        if not utts:
            if fractions[SPLITS.index(split)] == 0:
                continue
            raise ValueError(f"minds14 {split}: no utterance (usable: {len(rows)}, skipped: {counts})")
        d = out_dir / split
        for name in _OWN_FILES:
            (d / name).unlink(missing_ok=True)
        got = {u: seconds[u] for u in utts}
        write_data_dir(d, wav_scp={u: g[0] for u, g in got.items() if g}, text={u: rows[u]["text"] for u in utts},
                       utt2spk={u: u for u in utts}, utt2lang={u: rows[u]["lang"] for u in utts},
                       extra={"text.en": {u: rows[u]["en"] for u in utts if rows[u]["en"]},
                              "utt2intent": {u: rows[u]["intent"] for u in utts},
                              "utt2dur": {u: f"{g[1]:.3f}" for u, g in got.items() if g}})
        validate_data_dir(d, check_audio=False)
        hours = sum(g[1] for g in got.values() if g) / 3600
        langs = ",".join(sorted({rows[u]["lang"] for u in utts}))
        results.append(PreparedDir(split, langs, len(utts), len(utts), hours, {} if results else counts))
        log.info("minds14 %s: %d utterances, %d intents, %.2f h -> %s", split, len(utts),
                 len({rows[u]["intent"] for u in utts}), hours, d)
    return results
