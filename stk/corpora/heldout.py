"""Held-out-engine test sets: the mini corpus's test sentences spoken by a TTS engine it never trains on.

The synthetic part of the mini corpus is all espeak-ng; its ``synth_test`` voice is unseen, but
its engine is not. ``pico_test`` says how a model does on a voice from another engine: the same
sentences as ``synth_test`` (same text domain, so only the voice changes), read by SVOX Pico
(``pico2wave``, Debian non-free ``libttspico-utils``) in en/de/es/fr/it (Pico has no Russian).
It is a test set only: no recipe trains on it.

The set is built only when ``pico2wave`` is installed (``egs/mini/asr/local/install_pico.sh``
installs it from Debian non-free without changing the system's apt sources); otherwise the
builder logs why it skipped it. Speaker ids are ``<lang>-pico``, utterance ids
``<lang>-pico-<sentence id>`` (the sentence id of the ``synth_test`` utterance, so a pico
utterance and its espeak-ng twin share the suffix).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

from stk.corpora.asterisk import ProgressFn, Utt, no_progress, run_jobs, write_speech_dirs
from stk.corpora.synth import tts_to_wav16k
from stk.data.kaldi import read_kv
from stk.utils import atomic_write_text

log = logging.getLogger(__name__)

#: pico2wave language per mini-corpus language (one voice each; en-US rather than en-GB)
PICO_LANGS: Mapping[str, str] = {"en": "en-US", "de": "de-DE", "es": "es-ES", "fr": "fr-FR", "it": "it-IT"}
PICO_INSTALL_HINT = (
    "pico2wave is in Debian non-free (libttspico-utils); `bash egs/mini/asr/local/install_pico.sh` "
    "installs it without changing the apt sources"
)


@dataclasses.dataclass(frozen=True)
class HeldoutSet:
    """A held-out-engine test set: ``name`` built from the corpus set ``source``."""

    name: str
    engine: str
    source: str


HELDOUT_SETS: tuple[HeldoutSet, ...] = (HeldoutSet("pico_test", "pico", "synth_test"),)


def pico_available() -> bool:
    """Whether ``pico2wave`` and ``sox`` are on ``PATH``."""
    return shutil.which("pico2wave") is not None and shutil.which("sox") is not None


def synthesize_pico(text: str, lang: str, dst: Path) -> None:
    """Speak ``text`` in ``lang`` (a mini language in :data:`PICO_LANGS`) with pico2wave into
    16 kHz 16-bit mono ``dst`` (atomically; sox without dither, so the file is reproducible)."""
    if lang not in PICO_LANGS:
        raise ValueError(f"pico2wave has no voice for {lang!r}; it speaks {sorted(PICO_LANGS)}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="stk-pico-") as tmp_dir:
        raw = Path(tmp_dir) / "out.wav"  # pico2wave needs a name ending in .wav
        proc = subprocess.run(["pico2wave", "-l", PICO_LANGS[lang], "-w", str(raw), "--", text], capture_output=True)
        if proc.returncode != 0 or not raw.exists() or raw.stat().st_size <= 44:
            raise RuntimeError(
                f"pico2wave -l {PICO_LANGS[lang]} failed on {text[:60]!r}: "
                f"{proc.stderr.decode(errors='replace').strip()[-300:]}"
            )
        tts_to_wav16k(raw, dst, "pico2wave")


def sentence_id(utt_id: str, lang: str) -> str:
    """The sentence id of a synthetic utterance id ``<lang>-<voice>-<sentence id>``."""
    parts = utt_id.split("-")
    if len(parts) < 3 or parts[0] != lang:
        raise ValueError(f"utterance {utt_id!r} is not <lang>-<voice>-<sentence id> with lang {lang!r}")
    return "-".join(parts[2:])


def heldout_utts(corpus_dir: str | Path, spec: HeldoutSet, langs: Sequence[str] | None = None) -> list[Utt]:
    """The utterances of ``spec`` for the sentences of ``corpus_dir/<spec.source>`` in ``langs``
    (default: every language of the source the engine speaks), sorted by id."""
    corpus_dir = Path(corpus_dir)
    src = corpus_dir / spec.source
    for f in ("text", "text.en", "utt2lang"):
        if not (src / f).exists():
            raise ValueError(f"{src}: no {f}; build the mini corpus first (stk corpus mini)")
    text, text_en, utt2lang = read_kv(src / "text"), read_kv(src / "text.en"), read_kv(src / "utt2lang")
    want = set(PICO_LANGS) if langs is None else set(langs) & set(PICO_LANGS)
    utts = []
    for utt, lang in utt2lang.items():
        if lang not in want:
            continue
        spk = f"{lang}-{spec.engine}"
        new = f"{spk}-{sentence_id(utt, lang)}"
        wav = corpus_dir / "wav" / spec.engine / lang / f"{new}.wav"
        utts.append(Utt(new, spk, lang, wav, text[utt], text_en.get(utt)))
    return sorted(utts, key=lambda u: u.utt_id)


def build_heldout(
    corpus_dir: str | Path, *, nj: int = 2, progress: ProgressFn = no_progress, sets: Sequence[HeldoutSet] = HELDOUT_SETS,
) -> dict[str, Path]:
    """Add the held-out-engine test sets to a built mini corpus, in place; returns what was written.

    Skipped (with a log line saying why) when the engine is not installed. Existing sets are not
    touched; a set whose ``.done.<name>`` marker matches its source is not rebuilt, and wavs
    already present are reused.
    """
    corpus_dir = Path(corpus_dir)
    written: dict[str, Path] = {}
    for spec in sets:
        if spec.engine != "pico":
            raise ValueError(f"unknown held-out engine {spec.engine!r}")
        if not pico_available():
            log.info("%s skipped: pico2wave not found (%s)", spec.name, PICO_INSTALL_HINT)
            continue
        utts = heldout_utts(corpus_dir, spec)
        if not utts:
            log.info("%s skipped: %s has no language pico2wave speaks", spec.name, spec.source)
            continue
        stamp = f"{spec.engine} {spec.source} {len(utts)} {utts[0].utt_id} {utts[-1].utt_id}"
        marker = corpus_dir / f".done.{spec.name}"
        if marker.exists() and marker.read_text().strip() == stamp:
            log.info("%s is already built in %s", spec.name, corpus_dir)
            continue
        marker.unlink(missing_ok=True)
        jobs = [(u.text, u.lang, u.wav) for u in utts if not u.wav.exists()]
        run_jobs(lambda job: synthesize_pico(*job), jobs, nj, progress, f"{spec.name}: pico2wave")
        keep = {u.wav.name for u in utts}
        for old in (corpus_dir / "wav" / spec.engine).glob("*/*.wav"):
            if old.name not in keep:  # from an earlier build of another size
                old.unlink()
        langs = sorted({u.lang for u in utts})
        written.update(write_speech_dirs(corpus_dir, spec.name, utts, langs))
        atomic_write_text(marker, stamp + "\n")
        log.info("%s: %d utterances in %s (%d synthesized now)", spec.name, len(utts), langs, len(jobs))
    return written
