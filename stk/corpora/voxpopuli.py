"""VoxPopuli transcribed (ASR) data as Kaldi data dirs.

Layout (from facebookresearch/voxpopuli ``README.md`` and ``voxpopuli/get_asr_data.py``, which
writes it from the raw session audio)::

    ROOT/transcribed_data/<lang>/asr_<split>.tsv          split: train, dev, test
    ROOT/transcribed_data/<lang>/<year>/<id>.ogg          Ogg Vorbis, 16 kHz mono, year = id[:4]

The TSVs are tab-separated with a header and no quoting, columns ``id raw_text normalized_text
speaker_id split gender`` (newer releases add ``is_gold_transcript accent``). Ids look like
``20180313-0900-PLENARY-16-de_20180313-20:08:11_1`` (session id, ``_``, segment number).
``<lang>`` is one of the 16 ASR languages, or ``en_accented`` (accented English, test only).

Output: one data dir per split, ``OUT/<split>`` (all languages together): wav.scp (the ogg files,
read directly by libsndfile), text (``normalized_text``, or ``raw_text`` on request), utt2spk,
spk2utt, utt2lang, utt2gender and utt2dur. Speakers are ``<lang>_<speaker_id>`` (``<lang>_unknown``
for ``None``); utterance ids ``<speaker>-<id>``. Rows with an empty transcript or a missing or
unreadable ogg are skipped, counted and logged with their ids.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from stk.corpora.covost2 import PreparedDir, clean_text, read_tsv, report_skipped, safe_id
from stk.data.kaldi import validate_data_dir, write_data_dir

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "dev", "test")
ASR_LANGS: tuple[str, ...] = (
    "en", "de", "fr", "es", "pl", "it", "ro", "hu", "cs", "nl", "fi", "hr", "sk", "sl", "et", "lt", "en_accented",
)  # fmt: skip
TEXT_FIELDS: tuple[str, ...] = ("normalized_text", "raw_text")
_OWN_FILES = ("wav.scp", "text", "utt2spk", "spk2utt", "utt2lang", "utt2gender", "utt2dur")


def read_asr_tsv(path: Path, text_field: str = "normalized_text") -> list[dict[str, str]]:
    """Rows of an ``asr_<split>.tsv`` (written with plain tab joins: no quoting, no escapes)."""
    return read_tsv(path, ("id", text_field, "speaker_id"), escapes=False,
                    hint=" (expected ROOT/transcribed_data/<lang>/asr_<split>.tsv)")


def _duration(path: Path) -> float | None:
    """Seconds of an audio file from its header, or None if it cannot be read or is empty."""
    from stk.data.audio import AudioError, read_audio_info

    try:
        rate, frames = read_audio_info(str(path))
    except AudioError:
        return None
    return frames / rate if frames > 0 else None


def prepare_voxpopuli(
    corpus_dir: str | Path,
    out_dir: str | Path,
    *,
    langs: Sequence[str],
    splits: Sequence[str] = SPLITS,
    text_field: str = "normalized_text",
) -> list[PreparedDir]:
    """Write ``out_dir/<split>`` for every split from VoxPopuli ASR data of ``langs``.

    Args:
        corpus_dir: the VoxPopuli root (the ``--root`` of ``voxpopuli.get_asr_data``), holding
            ``transcribed_data/<lang>/``.
        out_dir: where the data dirs go.
        langs: VoxPopuli ASR languages (``en``, ``de``… or ``en_accented``); ``utt2lang`` gets
            the language code before ``_`` (``en`` for ``en_accented``).
        splits: among ``train``, ``dev``, ``test``.
        text_field: ``normalized_text`` (lowercase, no punctuation; default) or ``raw_text``.

    Returns one :class:`~stk.corpora.covost2.PreparedDir` per split. Raises ValueError naming
    the missing file or dir.
    """
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    root = corpus_dir / "transcribed_data"
    if not corpus_dir.is_dir():
        raise ValueError(f"{corpus_dir}: VoxPopuli root (corpus dir) not found")
    if not root.is_dir():
        raise ValueError(f"{root}: not found (expected the layout of voxpopuli.get_asr_data: "
                         "ROOT/transcribed_data/<lang>/asr_<split>.tsv)")
    if not langs:
        raise ValueError("no language given")
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise ValueError(f"unknown split(s) {bad or '(none)'}; choose from {', '.join(SPLITS)}")
    if text_field not in TEXT_FIELDS:
        raise ValueError(f"unknown text field {text_field!r}; choose from {', '.join(TEXT_FIELDS)}")
    for lang in langs:
        if not (root / lang).is_dir():
            raise ValueError(f"{root / lang}: language dir not found")
    tables = {(lang, split): read_asr_tsv(root / lang / f"asr_{split}.tsv", text_field)
              for split in splits for lang in langs}
    results = []
    for split in splits:
        skipped: dict[str, list[str]] = defaultdict(list)
        wav, text, spk, utt2lang, gender, dur = {}, {}, {}, {}, {}, {}
        for lang in langs:
            for r in tables[lang, split]:
                seg = r["id"].strip()
                words = clean_text(r[text_field])
                audio = root / lang / seg[:4] / f"{seg}.ogg"
                sid = r["speaker_id"].strip()
                speaker = f"{safe_id(lang)}_{safe_id(sid) if sid not in ('', 'None') else 'unknown'}"
                utt = f"{speaker}-{'_'.join(seg.split())}"
                if not words:
                    skipped["empty transcript"].append(f"{lang}/{seg}")
                    continue
                if not audio.is_file():
                    skipped["missing audio"].append(f"{lang}/{seg}")
                    continue
                if utt in wav:
                    skipped["duplicate id"].append(f"{lang}/{seg}")
                    continue
                seconds = _duration(audio)
                if seconds is None:
                    skipped["unreadable audio"].append(f"{lang}/{seg}")
                    continue
                wav[utt], text[utt], spk[utt] = str(audio.resolve()), words, speaker
                utt2lang[utt] = lang.split("_")[0]
                sex = r.get("gender", "").strip().lower()
                gender[utt] = safe_id(sex) if sex not in ("", "none") else "unk"
                dur[utt] = f"{seconds:.3f}"
        counts = report_skipped(f"voxpopuli {split}", skipped, log)
        if not wav:
            raise ValueError(f"voxpopuli {split}: no usable utterance for {','.join(langs)} (skipped: {counts})")
        d = out_dir / split
        for name in _OWN_FILES:
            (d / name).unlink(missing_ok=True)
        write_data_dir(d, wav_scp=wav, text=text, utt2spk=spk, utt2lang=utt2lang,
                       extra={"utt2gender": gender, "utt2dur": dur})
        validate_data_dir(d, check_audio=False)
        hours = sum(float(v) for v in dur.values()) / 3600
        n_spk = len(set(spk.values()))
        results.append(PreparedDir(split, ",".join(sorted(set(utt2lang.values()))), len(wav), n_spk, hours, counts))
        log.info("voxpopuli %s: %d utterances, %d speakers, %.2f h -> %s", split, len(wav), n_spk, hours, d)
    return results
