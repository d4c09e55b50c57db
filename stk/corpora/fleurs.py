"""FLEURS (n-way parallel read speech in 102 languages; ASR and language ID) as Kaldi data dirs.

Layout (the ``google/fleurs`` dataset repository's ``data/`` dir, as its loading script reads it,
with each ``audio/<split>.tar.gz`` extracted in place)::

    ROOT/<lang>/{train,dev,test}.tsv
    ROOT/<lang>/audio/{train,dev,test}/<file>.wav       16 kHz mono

``<lang>`` is a FLEURS config code (``en_us``, ``cmn_hans_cn``…). The TSVs have no header and no
quoting; each line has 7 tab-separated fields: ``id`` (the FLoRes sentence id, shared by the
recordings of one sentence), ``file name``, ``raw transcription``, ``transcription`` (normalised),
``phonemes`` (unused), ``num samples`` and ``gender`` (``male``/``female``/``other``).
``corpus_dir`` may be ``ROOT`` or the repository dir holding ``data/``.

Output: ``OUT/<split>`` (all languages together): wav.scp (the wavs, no conversion), text
(``transcription``, or ``raw transcription`` on request), utt2lang (the FLEURS code: the labels of
language ID), utt2gender, utt2spk/spk2utt (FLEURS has no speaker ids: each utterance is its own
speaker), utt2dur. Utterance ids are ``<lang>-<file stem>``. Lines with the wrong number of
fields, an empty transcript, a missing or unreadable wav, or a duplicate file are skipped,
counted and logged with their ``<lang>/<split>.tsv:<line>``.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from stk.corpora.covost2 import PreparedDir, clean_text, report_skipped, safe_id
from stk.data.kaldi import validate_data_dir, write_data_dir

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "dev", "test")
TEXT_FIELDS: tuple[str, ...] = ("transcription", "raw_transcription")
_OWN_FILES = ("wav.scp", "text", "utt2spk", "spk2utt", "utt2lang", "utt2gender", "utt2dur")
_NUM_FIELDS = 7


def find_root(corpus_dir: str | Path) -> Path:
    """The dir of the ``<lang>/`` dirs: ``corpus_dir`` or its ``data/`` child."""
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise ValueError(f"{corpus_dir}: FLEURS corpus dir not found")
    return corpus_dir / "data" if (corpus_dir / "data").is_dir() else corpus_dir


def read_fleurs_tsv(path: Path) -> list[tuple[int, list[str]]]:
    """``(line number, fields)`` of every non-empty line of a FLEURS ``<split>.tsv`` (no header)."""
    if not path.is_file():
        raise ValueError(f"{path}: file not found (expected ROOT/<lang>/<split>.tsv)")
    with open(path, encoding="utf-8", newline="") as f:
        return [(i, line.rstrip("\r\n").split("\t")) for i, line in enumerate(f, 1) if line.strip()]


def prepare_fleurs(
    corpus_dir: str | Path,
    out_dir: str | Path,
    *,
    langs: Sequence[str] | None = None,
    splits: Sequence[str] = SPLITS,
    text_field: str = "transcription",
) -> list[PreparedDir]:
    """Write ``out_dir/<split>`` for every split from FLEURS ``langs``.

    Args:
        corpus_dir: the FLEURS ``data/`` dir (holding ``<lang>/``) or its parent.
        out_dir: where the data dirs go.
        langs: FLEURS codes (``en_us``, ``fr_fr``…); ``None`` takes every ``<lang>/`` dir with TSVs.
        splits: among ``train``, ``dev``, ``test``.
        text_field: ``transcription`` (normalised; default) or ``raw_transcription``.

    Returns one :class:`~stk.corpora.covost2.PreparedDir` per split. Raises ValueError naming the
    missing file or dir, or a split with no usable utterance.
    """
    from stk.data.audio import AudioError, read_audio_info

    root, out_dir = find_root(corpus_dir), Path(out_dir)
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise ValueError(f"unknown split(s) {bad or '(none)'}; choose from {', '.join(SPLITS)}")
    if text_field not in TEXT_FIELDS:
        raise ValueError(f"unknown text field {text_field!r}; choose from {', '.join(TEXT_FIELDS)}")
    if langs is None:
        langs = sorted(d.name for d in root.iterdir() if d.is_dir() and any((d / f"{s}.tsv").is_file() for s in SPLITS))
        if not langs:
            raise ValueError(f"{root}: no <lang>/<split>.tsv found (expected the google/fleurs data/ layout)")
    if not langs:
        raise ValueError("no language given")
    for lang in langs:
        if not (root / lang).is_dir():
            raise ValueError(f"{root / lang}: language dir not found")
    col = 2 if text_field == "raw_transcription" else 3
    results = []
    for split in splits:
        skipped: dict[str, list[str]] = defaultdict(list)
        wav, text, lang_of, gender, dur = {}, {}, {}, {}, {}
        for lang in langs:
            for line, fields in read_fleurs_tsv(root / lang / f"{split}.tsv"):
                where = f"{lang}/{split}.tsv:{line}"
                if len(fields) != _NUM_FIELDS:
                    skipped[f"not {_NUM_FIELDS} tab-separated fields"].append(where)
                    continue
                name, words = fields[1].strip(), clean_text(fields[col])
                audio = root / lang / "audio" / split / name
                utt = f"{safe_id(lang)}-{safe_id(Path(name).stem)}"
                if not words:
                    skipped["empty transcript"].append(where)
                    continue
                if not name or not audio.is_file():
                    skipped["missing audio"].append(f"{where} {name}")
                    continue
                if utt in wav:
                    skipped["duplicate file"].append(f"{where} {name}")
                    continue
                try:
                    rate, frames = read_audio_info(str(audio))
                except AudioError:
                    frames, rate = 0, 1
                if frames <= 0:
                    skipped["unreadable audio"].append(f"{where} {name}")
                    continue
                wav[utt], text[utt], lang_of[utt] = str(audio.resolve()), words, lang
                sex = fields[6].strip().lower()
                gender[utt] = safe_id(sex) if sex else "unk"
                dur[utt] = f"{frames / rate:.3f}"
        counts = report_skipped(f"fleurs {split}", skipped, log)
        if not wav:
            raise ValueError(f"fleurs {split}: no usable utterance for {','.join(langs)} (skipped: {counts})")
        d = out_dir / split
        for name in _OWN_FILES:
            (d / name).unlink(missing_ok=True)
        write_data_dir(d, wav_scp=wav, text=text, utt2spk={u: u for u in wav}, utt2lang=lang_of,
                       extra={"utt2gender": gender, "utt2dur": dur})
        validate_data_dir(d, check_audio=False)
        hours = sum(float(v) for v in dur.values()) / 3600
        results.append(PreparedDir(split, ",".join(sorted(set(lang_of.values()))), len(wav), len(wav), hours, counts))
        log.info("fleurs %s: %d utterances, %d languages, %.2f h -> %s", split, len(wav), len(set(lang_of.values())),
                 hours, d)
    return results
