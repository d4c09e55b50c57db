"""CoVoST 2 speech translation (Common Voice speech, CoVoST 2 translations) as Kaldi data dirs.

Layout (from facebookresearch/covost ``README.md`` and ``get_covost_splits.py``, fairseq
``examples/speech_to_text/prep_covost_data.py``, ESPnet ``egs2/covost2/st1/local/data.sh``)::

    CV_ROOT/<src>/clips/<path>                    Common Voice 4 clips (mp3, 48 kHz mono)
    CV_ROOT/<src>/validated.tsv                   client_id, path, sentence, up_votes, ...
    TSV_DIR/covost_v2.<src>_<tgt>.tsv             path, translation, split (the CoVoST 2 release)
    TSV_DIR/covost_v2.<src>_<tgt>.<split>.tsv     path, sentence, translation, client_id
                                                  (written by CoVoST's get_covost_splits.py)

``path`` is the clip file name (``common_voice_fr_17299396.mp3``). All TSVs are tab-separated
with a header, no quoting and ``\\`` as escape character (as the official scripts read them).
For each (source language, split) the per-split TSV is used when present; otherwise the release
TSV is filtered like ``get_covost_splits.py`` does for version 2 (train = ``train`` +
``train_covost``; dev, test as named) and joined with ``validated.tsv`` on ``path`` for the
transcript and speaker (unless the release TSV itself has ``sentence``/``client_id``).

Output: ``OUT/<split>`` (all source languages): wav.scp, text (transcript), text.<tgt>, utt2spk,
spk2utt, utt2lang, utt2dur. Speakers are ``client_id``s; utterance ids ``<client_id>-<clip>``.

Audio: stk computes features at 16 kHz and does not resample, so by default the clips are decoded
(libsndfile reads mp3 since 1.1) and written once as 16 kHz 16-bit wavs under ``OUT/wav/<src>/``
(re-runs reuse them). ``convert=False`` lists the original mp3 files in wav.scp instead, for
features at 48 kHz (``stk data fbank --sample-rate 48000``) or your own conversion.
Rows with an empty transcript or translation, a missing or unreadable clip, or (release TSV) no
line in validated.tsv are skipped, counted and logged with their ids.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from stk.corpora.asterisk import ProgressFn, no_progress, run_jobs
from stk.data.kaldi import validate_data_dir, write_data_dir

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "dev", "test")
#: the 21 X->en source languages of CoVoST 2 (Common Voice locale codes)
XX_EN_LANGS: tuple[str, ...] = (
    "fr", "de", "es", "ca", "it", "ru", "zh-CN", "pt", "fa", "et", "mn",
    "nl", "tr", "ar", "sv-SE", "lv", "sl", "ta", "ja", "id", "cy",
)  # fmt: skip
_OWN_FILES = ("wav.scp", "text", "utt2spk", "spk2utt", "utt2lang", "utt2dur")


@dataclasses.dataclass
class PreparedDir:
    """One data dir written by a corpus preparation (the fields ``stk corpus`` prints)."""

    name: str
    langs: str
    utts: int
    speakers: int
    hours: float
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Row:
    lang: str
    clip: Path
    sentence: str
    translation: str
    client_id: str


def safe_id(value: str, fallback: str = "unknown") -> str:
    """An id usable as a Kaldi speaker prefix: only ``[A-Za-z0-9_.]``, all sorting after ``-``,
    so that ``<spk>-<utt>`` ids sort in the same order as their speakers."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", value.strip()) or fallback


def clean_text(value: str) -> str:
    """One line, single spaces."""
    return " ".join(value.split())


def report_skipped(where: str, skipped: dict[str, list[str]], logger: logging.Logger = log) -> dict[str, int]:
    """Log skipped rows per reason (the first ids at WARNING, all at DEBUG); return the counts."""
    for reason, ids in skipped.items():
        if ids:
            logger.warning("%s: skipped %d row(s) with %s: %s%s", where, len(ids), reason,
                        ", ".join(ids[:5]), " …" if len(ids) > 5 else "")
            logger.debug("%s: all rows skipped with %s: %s", where, reason, " ".join(ids))
    return {reason: len(ids) for reason, ids in skipped.items() if ids}


def read_tsv(path: Path, required: Sequence[str], *, escapes: bool = True, hint: str = "") -> list[dict[str, str]]:
    """Rows of a headed TSV with no quoting: CoVoST / Common Voice (``\\`` escapes) or, with
    ``escapes=False``, VoxPopuli's plain tab joins.

    Raises ValueError naming the file if it is missing (``hint`` says where it should be), lacks
    a ``required`` column or has a line with more fields than the header."""
    if not path.is_file():
        raise ValueError(f"{path}: file not found{hint}")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\" if escapes else None)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file (expected a header line)")
        missing = [c for c in required if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (header: {' '.join(header)})")
        rows = []
        for fields in reader:
            if not fields or fields == [""]:
                continue
            if len(fields) > len(header):
                raise ValueError(f"{path}:{reader.line_num}: {len(fields)} fields, the header has {len(header)}")
            rows.append(dict(zip(header, fields + [""] * (len(header) - len(fields)))))
    return rows


def _split_rows(cv_dir: Path, tsv_dir: Path, src: str, tgt: str, split: str,
                skipped: dict[str, list[str]]) -> list[_Row]:
    """The rows of one (source language, split), from the per-split TSV or the release TSV."""
    per_split = tsv_dir / f"covost_v2.{src}_{tgt}.{split}.tsv"
    release = tsv_dir / f"covost_v2.{src}_{tgt}.tsv"
    if per_split.is_file():
        rows = read_tsv(per_split, ("path", "sentence", "translation", "client_id"))
    elif release.is_file():
        rows = read_tsv(release, ("path", "translation", "split"))
        wanted = {split, f"{split}_covost"} if split == "train" else {split}
        rows = [r for r in rows if r["split"] in wanted]
        if rows and not ("sentence" in rows[0] and "client_id" in rows[0]):
            cv = {r["path"]: r for r in read_tsv(cv_dir / "validated.tsv", ("client_id", "path", "sentence"))}
            skipped["no line in validated.tsv"] += [f"{src}/{r['path']}" for r in rows if r["path"] not in cv]
            rows = [dict(r, sentence=cv[r["path"]]["sentence"], client_id=cv[r["path"]]["client_id"])
                    for r in rows if r["path"] in cv]
    else:
        raise ValueError(f"no CoVoST 2 TSV for {src}->{tgt} {split}: neither {per_split} nor {release} exists")
    out = []
    for r in rows:
        name = r["path"].strip()
        clip = cv_dir / "clips" / name
        if not clip.suffix and not clip.exists():
            clip = clip.with_name(name + ".mp3")  # early Common Voice releases list the name without .mp3
        out.append(_Row(src, clip, clean_text(r["sentence"]), clean_text(r["translation"]), r["client_id"]))
    return out


def _convert(job: tuple[Path, Path, int]) -> int:
    """Decode ``src``, resample to ``rate`` and write a 16-bit wav ``dst`` (atomic, reused when
    already there); return its number of samples."""
    import numpy as np
    import soundfile as sf

    from stk.data.audio import AudioError, read_audio

    src, dst, rate = job
    if dst.is_file():
        try:
            info = sf.info(str(dst))
            if info.samplerate == rate and info.frames > 0:
                return int(info.frames)
        except Exception:  # a broken earlier output: convert again
            pass
    wav, sr = read_audio(str(src))
    if sr != rate:
        import torch
        import torchaudio.functional as AF

        wav = AF.resample(torch.from_numpy(wav), sr, rate).numpy()
    if len(wav) == 0:
        raise AudioError(f"audio is empty after resampling: {src}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.{os.getpid()}.tmp.wav")
    sf.write(str(tmp), np.clip(wav, -1.0, 1.0), rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, dst)
    return len(wav)


def _audio(rows: list[_Row], out_dir: Path, convert: bool, rate: int, nj: int,
           progress: ProgressFn) -> dict[Path, tuple[Path, float] | str]:
    """Clip -> (wav.scp path, seconds), or the reason it is unusable."""
    import soundfile as sf

    from stk.data.audio import AudioError, read_audio_info

    result: dict[Path, tuple[Path, float] | str] = {}
    todo = []
    for r in rows:
        if r.clip in result:
            continue
        if not r.clip.is_file():
            result[r.clip] = "missing audio"
        elif convert:
            todo.append((r.clip, out_dir / "wav" / r.lang / f"{r.clip.stem}.wav", rate))
        else:
            try:
                sr, frames = read_audio_info(str(r.clip))
                result[r.clip] = (r.clip.resolve(), frames / sr) if frames > 0 else "unreadable audio"
            except AudioError:
                result[r.clip] = "unreadable audio"
    if todo and "MP3" not in sf.available_formats():
        raise ValueError(f"libsndfile {sf.__libsndfile_version__} cannot read mp3 (needs >= 1.1): "
                         "upgrade soundfile, or convert the clips yourself and use convert=False")

    def one(job: tuple[Path, Path, int]) -> None:
        try:
            result[job[0]] = (job[1].resolve(), _convert(job) / rate)
        except AudioError as e:
            log.debug("%s", e)
            result[job[0]] = "unreadable audio"

    run_jobs(one, todo, nj, progress, f"covost2: mp3 -> {rate // 1000} kHz wav")
    return result


def prepare_covost2(
    corpus_dir: str | Path,
    out_dir: str | Path,
    *,
    src_langs: Sequence[str],
    tgt_lang: str = "en",
    splits: Sequence[str] = SPLITS,
    tsv_dir: str | Path | None = None,
    convert: bool = True,
    sample_rate: int = 16000,
    nj: int = 1,
    progress: ProgressFn = no_progress,
) -> list[PreparedDir]:
    """Write ``out_dir/<split>`` for every split from CoVoST 2 ``src_langs`` -> ``tgt_lang``.

    Args:
        corpus_dir: the Common Voice root holding ``<src>/clips/`` and ``<src>/validated.tsv``.
        out_dir: where the data dirs (and, with ``convert``, ``wav/<src>/*.wav``) go.
        src_langs: source languages (Common Voice codes: ``fr``, ``de``, ``zh-CN``…).
        tgt_lang: translation language; the translation is written to ``text.<tgt_lang>``.
        splits: among ``train``, ``dev``, ``test``.
        tsv_dir: the dir with the ``covost_v2.*.tsv`` files (default: ``corpus_dir``).
        convert: write 16 kHz wavs (default) instead of listing the 48 kHz mp3 clips.
        sample_rate: rate of the converted wavs.
        nj: parallel conversion jobs (threads).
        progress: progress callback (see :data:`stk.corpora.asterisk.ProgressFn`).

    Returns one :class:`PreparedDir` per split. Raises ValueError naming the missing file or dir.
    """
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    tsv_dir = Path(tsv_dir) if tsv_dir is not None else corpus_dir
    if not src_langs:
        raise ValueError("no source language given")
    for d, what in ((corpus_dir, "Common Voice root (corpus dir)"), (tsv_dir, "CoVoST 2 TSV dir")):
        if not d.is_dir():
            raise ValueError(f"{d}: {what} not found")
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise ValueError(f"unknown split(s) {bad or '(none)'}; choose from {', '.join(SPLITS)}")
    cv_dirs = {}
    for src in src_langs:
        if src == tgt_lang:
            raise ValueError(f"source language {src!r} equals the target language")
        cv_dirs[src] = corpus_dir / src
        if not (cv_dirs[src] / "clips").is_dir():
            raise ValueError(f"{cv_dirs[src] / 'clips'}: Common Voice clips dir not found "
                             f"(expected {corpus_dir}/<lang>/clips/*.mp3)")
    per_split: dict[str, tuple[list[_Row], dict[str, list[str]]]] = {}
    for split in splits:
        skipped: dict[str, list[str]] = defaultdict(list)
        rows = [r for src in src_langs for r in _split_rows(cv_dirs[src], tsv_dir, src, tgt_lang, split, skipped)]
        per_split[split] = (rows, skipped)
    usable = [r for rows, _ in per_split.values() for r in rows if r.sentence and r.translation]
    audio = _audio(usable, out_dir, convert, sample_rate, nj, progress)
    results = []
    for split, (rows, skipped) in per_split.items():
        wav, text, trans, spk, lang, dur = {}, {}, {}, {}, {}, {}
        for r in rows:
            speaker = safe_id(r.client_id)
            utt = f"{speaker}-{r.clip.stem}"
            got = audio.get(r.clip, "")
            reason = ("empty transcript" if not r.sentence else "empty translation" if not r.translation
                      else got if isinstance(got, str) else "duplicate clip" if utt in wav else None)
            if reason is not None:
                skipped[reason].append(f"{r.lang}/{r.clip.name}")
                continue
            assert not isinstance(got, str)
            wav[utt], dur[utt] = str(got[0]), f"{got[1]:.3f}"
            text[utt], trans[utt], spk[utt], lang[utt] = r.sentence, r.translation, speaker, r.lang
        counts = report_skipped(f"covost2 {split}", skipped)
        if not wav:
            raise ValueError(f"covost2 {split}: no usable utterance for {','.join(src_langs)} (skipped: {counts})")
        d = out_dir / split
        for name in _OWN_FILES + (f"text.{tgt_lang}",):
            (d / name).unlink(missing_ok=True)
        write_data_dir(d, wav_scp=wav, text=text, utt2spk=spk, utt2lang=lang,
                       extra={f"text.{tgt_lang}": trans, "utt2dur": dur})
        validate_data_dir(d, check_audio=False)
        hours, n_spk = sum(float(v) for v in dur.values()) / 3600, len(set(spk.values()))
        results.append(PreparedDir(split, ",".join(sorted(set(lang.values()))), len(wav), n_spk, hours, counts))
        log.info("covost2 %s: %d utterances, %d speakers, %.2f h -> %s", split, len(wav), n_spk, hours, d)
    return results
