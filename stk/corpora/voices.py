"""More training voices for the mini corpus: the ``synth_train`` sentences read by other TTS engines.

espeak-ng's variants differ in pitch and speed but share one synthesizer, so a model trained on
them alone learns espeak-ng. ``voices_train`` reads the training sentences of the languages that
other offline engines in Debian main speak: English with four flite voices (awb, rms, slt, kal16)
and Italian with two Festival diphone voices (lp, pc). It is training data only; SVOX Pico, the
engine of the ``pico_test`` set (:mod:`stk.corpora.heldout`), is never used here, so that set
stays unheard.

Built only where the engines are installed (``apt-get install -y flite festival
festvox-italp16k festvox-itapc16k``, ~30 MB); otherwise skipped with a log line. Speaker ids are
``<lang>-<voice>`` (``en-flslt``, ``it-felp``), utterance ids ``<speaker>-<sentence id>``.
Every sentence is read once, the voices taking turns in a hashed order (as in
:func:`stk.corpora.synth.assign_voices`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

from stk.corpora.asterisk import ProgressFn, Utt, no_progress, run_jobs, write_speech_dirs
from stk.corpora.heldout import sentence_id
from stk.corpora.synth import tts_to_wav16k
from stk.data.kaldi import read_kv
from stk.utils import atomic_write_text

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EngineVoice:
    """One voice of an offline engine: ``engine`` (flite | festival), its ``voice`` name there,
    the mini language it reads and the short tag used in speaker ids."""

    engine: str
    voice: str
    lang: str
    tag: str

    def speaker(self) -> str:
        return f"{self.lang}-{self.tag}"


EXTRA_VOICES: tuple[EngineVoice, ...] = (
    EngineVoice("flite", "awb", "en", "flawb"),
    EngineVoice("flite", "rms", "en", "flrms"),
    EngineVoice("flite", "slt", "en", "flslt"),
    EngineVoice("flite", "kal16", "en", "flkal"),
    EngineVoice("festival", "lp_diphone", "it", "felp"),
    EngineVoice("festival", "pc_diphone", "it", "fepc"),
)
INSTALL_HINT = "apt-get install -y flite festival festvox-italp16k festvox-itapc16k"
_BINARY = {"flite": "flite", "festival": "text2wave"}


def engine_available(voice: EngineVoice) -> bool:
    """Whether the engine (and, for Festival, the voice's files) and sox are installed."""
    if shutil.which(_BINARY[voice.engine]) is None or shutil.which("sox") is None:
        return False
    if voice.engine == "festival":
        return any(Path("/usr/share/festival/voices").glob(f"*/{voice.voice}"))
    return True


def festival_text(text: str) -> str:
    """``text`` with what Festival's Italian letter-to-sound rules cannot read (quotes such as
    « » “ ”, dashes, symbols) turned into spaces: letters, digits, spaces and . , ; : ! ? ' stay."""
    return " ".join("".join(c if c.isalnum() or c in " .,;:!?'" else " " for c in text.replace("’", "'")).split())


def synthesize(text: str, voice: EngineVoice, dst: Path) -> None:
    """Speak ``text`` with ``voice`` into 16 kHz 16-bit mono ``dst`` (atomic; sox without dither)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="stk-tts-") as tmp_dir:
        raw = Path(tmp_dir) / "out.wav"
        if voice.engine == "flite":
            cmd = ["flite", "-voice", voice.voice, "-t", text, "-o", str(raw)]
        elif voice.engine == "festival":
            src = Path(tmp_dir) / "in.txt"  # Festival reads Latin-1
            src.write_bytes(festival_text(text).encode("latin-1", errors="replace") + b"\n")
            cmd = ["text2wave", "-eval", f"(voice_{voice.voice})", str(src), "-o", str(raw)]
        else:
            raise ValueError(f"unknown engine {voice.engine!r}")
        proc = subprocess.run(cmd, capture_output=True)
        if proc.returncode != 0 or not raw.exists() or raw.stat().st_size <= 44:
            raise RuntimeError(f"{voice.engine} ({voice.voice}) failed on {text[:60]!r}: "
                               f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
        tts_to_wav16k(raw, dst, voice.engine)


def _unit_hash(key: str) -> float:
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:15], 16) / 16**15


def voices_utts(corpus_dir: str | Path, voices: Sequence[EngineVoice], source: str = "synth_train") -> list[Utt]:
    """One utterance per sentence of ``corpus_dir/<source>`` in each language of ``voices``, the
    language's voices taking turns in a hashed sentence order; sorted by id."""
    corpus_dir = Path(corpus_dir)
    src = corpus_dir / source
    for f in ("text", "text.en", "utt2lang"):
        if not (src / f).exists():
            raise ValueError(f"{src}: no {f}; build the mini corpus first (stk corpus mini)")
    text, text_en, utt2lang = read_kv(src / "text"), read_kv(src / "text.en"), read_kv(src / "utt2lang")
    by_lang: dict[str, list[EngineVoice]] = {}
    for v in voices:
        by_lang.setdefault(v.lang, []).append(v)
    utts = []
    for lang, vs in by_lang.items():
        rows = sorted(((sentence_id(u, lang), u) for u, lg in utt2lang.items() if lg == lang),
                      key=lambda r: (_unit_hash(f"stk-voices:{lang}:{r[0]}"), r[0]))
        for i, (sid, u) in enumerate(rows):
            v = vs[i % len(vs)]
            new = f"{v.speaker()}-{sid}"
            utts.append(Utt(new, v.speaker(), lang, corpus_dir / "wav" / "voices" / lang / f"{new}.wav", text[u], text_en.get(u)))
    return sorted(utts, key=lambda u: u.utt_id)


def build_voices(
    corpus_dir: str | Path, *, name: str = "voices_train", source: str = "synth_train", nj: int = 2,
    progress: ProgressFn = no_progress,
) -> dict[str, Path]:
    """Add ``name`` (and ``name_<lang>``) to a built mini corpus with the installed extra voices.

    Skipped (logged) when no engine is installed; a language whose engine is missing is left out.
    A set whose ``.done.<name>`` marker matches is not rebuilt; present wavs are reused.
    """
    corpus_dir = Path(corpus_dir)
    have = [v for v in EXTRA_VOICES if engine_available(v)]
    missing = sorted({f"{v.engine} {v.voice}" for v in EXTRA_VOICES if v not in have})
    if missing:
        log.info("%s: no %s (%s)", name, ", ".join(missing), INSTALL_HINT)
    if not have:
        log.info("%s skipped: no extra TTS engine installed", name)
        return {}
    utts = voices_utts(corpus_dir, have, source)
    if not utts:
        log.info("%s skipped: %s has no language the installed engines speak", name, source)
        return {}
    stamp = f"{source} {' '.join(v.speaker() for v in have)} {len(utts)} {utts[0].utt_id} {utts[-1].utt_id}"
    marker = corpus_dir / f".done.{name}"
    if marker.exists() and marker.read_text().strip() == stamp:
        log.info("%s is already built in %s", name, corpus_dir)
        return {}
    marker.unlink(missing_ok=True)
    voice_of = {v.speaker(): v for v in have}
    jobs = [(u.text, voice_of[u.spk], u.wav) for u in utts if not u.wav.exists()]
    run_jobs(lambda job: synthesize(*job), jobs, nj, progress, f"{name}: flite/festival")
    keep = {u.wav.name for u in utts}
    for old in (corpus_dir / "wav" / "voices").glob("*/*.wav"):
        if old.name not in keep:
            old.unlink()
    langs = sorted({u.lang for u in utts})
    written = write_speech_dirs(corpus_dir, name, utts, langs)
    atomic_write_text(marker, stamp + "\n")
    log.info("%s: %d utterances, voices %s (%d synthesized now)", name, len(utts), sorted(voice_of), len(jobs))
    return written
