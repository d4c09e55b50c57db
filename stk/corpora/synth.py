"""Synthetic paired speech: espeak-ng reading Wesnoth sentences in en/de/fr/es/it/ru.

Every language gets the same six voice variants (espeak-ng ``-v <lang>+<variant>`` with its
own speed and pitch): four are training voices, one appears only in dev and one only in test,
so the test set always has a voice never heard in training. The speaker id is the voice,
``<lang>-<variant>`` (e.g. ``de-m3``); utterance ids are ``<lang>-<variant>-<sentence id>``, so
the same sentence in two languages shares the suffix (a parallel pair). espeak-ng writes
22.05 kHz audio; sox turns it into 16 kHz 16-bit mono wav (no dither: reproducible bit for bit).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Mapping, Sequence

from stk.corpora.asterisk import ProgressFn, Utt, no_progress, run_jobs, write_speech_dirs
from stk.corpora.wesnoth import Sentence

log = logging.getLogger(__name__)

SYNTH_LANGS: tuple[str, ...] = ("en", "de", "fr", "es", "it", "ru")
#: espeak-ng base voice per language
ESPEAK_VOICES: Mapping[str, str] = {"en": "en-us", "de": "de", "fr": "fr-fr", "es": "es", "it": "it", "ru": "ru"}


@dataclasses.dataclass(frozen=True)
class Voice:
    """An espeak-ng voice variant with its speed (words/min) and pitch (0–99), and where it is used."""

    variant: str
    speed: int
    pitch: int
    role: str  # "train" (train, dev, test, speech-only), "dev" (dev only) or "test" (test only)

    def speaker(self, lang: str) -> str:
        """Speaker id ``<lang>-<variant>``."""
        return f"{lang}-{self.variant}"

    def espeak_args(self, lang: str) -> list[str]:
        """espeak-ng arguments selecting this voice for ``lang``."""
        return ["-v", f"{ESPEAK_VOICES[lang]}+{self.variant}", "-s", str(self.speed), "-p", str(self.pitch)]


VOICES: tuple[Voice, ...] = (
    Voice("m1", 165, 45, "train"),
    Voice("f2", 175, 62, "train"),
    Voice("m3", 150, 35, "train"),
    Voice("f4", 160, 72, "train"),
    Voice("m6", 170, 52, "dev"),
    Voice("f1", 145, 58, "test"),
)


def _unit_hash(key: str) -> float:
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:15], 16) / 16**15


def assign_voices(sids: Sequence[str], lang: str, split: str) -> dict[str, Voice]:
    """Deterministic, balanced voices for the sentences ``sids`` of one split in ``lang``.

    The sentences are ordered by a hash of (lang, id). ``train`` (and speech-only data) cycles
    through the four training voices; ``dev``/``test`` give every other sentence to their own
    held-out voice (unseen condition) and cycle the rest through the training voices (seen).
    """
    train = [v for v in VOICES if v.role == "train"]
    held = next((v for v in VOICES if v.role == split), None) if split in ("dev", "test") else None
    order = sorted(sids, key=lambda s: (_unit_hash(f"stk-synth-voice:{lang}:{s}"), s))
    out: dict[str, Voice] = {}
    for i, sid in enumerate(order):
        if held is not None:
            out[sid] = held if i % 2 == 0 else train[(i // 2) % len(train)]
        else:
            out[sid] = train[i % len(train)]
    return out


def check_tools() -> None:
    """Raise a clear error when espeak-ng or sox is missing."""
    for tool, pkg in (("espeak-ng", "espeak-ng"), ("sox", "sox")):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not found: install it with `apt-get install -y {pkg}`")


def synthesize(text: str, lang: str, voice: Voice, dst: Path) -> None:
    """Speak ``text`` with ``voice`` and write 16 kHz 16-bit mono ``dst`` (atomically)."""
    proc = subprocess.run(
        ["espeak-ng", *voice.espeak_args(lang), "-b", "1", "--stdin", "--stdout"],
        input=text.encode("utf-8"),
        capture_output=True,
    )
    if proc.returncode != 0 or len(proc.stdout) <= 44:
        raise RuntimeError(
            f"espeak-ng failed ({voice.espeak_args(lang)}) on {text[:60]!r}: "
            f"{proc.stderr.decode(errors='replace').strip()[-300:]}"
        )
    tts_to_wav16k(proc.stdout, dst, "espeak-ng")


def tts_to_wav16k(src: bytes | Path, dst: Path, engine: str) -> None:
    """A TTS engine's wav (its bytes, or a file) -> 16 kHz 16-bit mono ``dst``, atomically (sox
    without dither, so the file is reproducible bit for bit); ``engine`` names it in errors."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.{os.getpid()}.tmp.wav")
    source = ["-t", "wav", "-"] if isinstance(src, bytes) else [str(src)]
    sox = subprocess.run(["sox", "-q", "-D", *source, "-r", "16000", "-b", "16", "-c", "1", str(tmp)],
                         input=src if isinstance(src, bytes) else None, capture_output=True)
    if sox.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"sox failed converting {engine} output for {dst.name}: {sox.stderr.decode(errors='replace')[-300:]}")
    os.replace(tmp, dst)


def prepare_synth(
    partition: Mapping[str, Sequence[Sentence]],
    out_dir: str | Path,
    langs: Sequence[str] = SYNTH_LANGS,
    *,
    nj: int = 2,
    progress: ProgressFn = no_progress,
) -> dict[str, Path]:
    """Synthesize and write the synthetic data dirs under ``out_dir``.

    ``partition`` maps ``train``/``dev``/``test``/``speech_only`` to disjoint sentence lists.
    Writes ``synth_<split>`` and ``synth_<split>_<lang>`` (text = the sentence in ``lang``,
    text.en = the English original) and ``speech_only_train`` (no transcripts). Every sentence
    is spoken once per language. Wavs already present under ``out_dir/wav/synth`` are reused.
    """
    out_dir = Path(out_dir)
    bad = [lang for lang in langs if lang not in SYNTH_LANGS]
    if bad:
        raise ValueError(f"synth: unsupported language(s) {bad}; choose from {list(SYNTH_LANGS)}")
    unknown = set(partition) - {"train", "dev", "test", "speech_only"}
    if unknown:
        raise ValueError(f"synth: unknown partition name(s) {sorted(unknown)}")
    seen: dict[str, str] = {}
    for name, sents in partition.items():
        for s in sents:
            if seen.setdefault(s.sid, name) != name:
                raise ValueError(f"synth: sentence {s.sid} is in both {seen[s.sid]} and {name}")
    check_tools()
    groups: dict[str, list[Utt]] = {}
    jobs: list[tuple[str, str, Voice, Path]] = []
    for name, sents in partition.items():
        split = "train" if name == "speech_only" else name
        utts: list[Utt] = []
        for lang in langs:
            voices = assign_voices([s.sid for s in sents], lang, split)
            for s in sents:
                voice = voices[s.sid]
                spk = voice.speaker(lang)
                utt = f"{spk}-{s.sid}"
                dst = out_dir / "wav" / "synth" / lang / f"{utt}.wav"
                if not dst.exists():
                    jobs.append((s.text(lang), lang, voice, dst))
                text = None if name == "speech_only" else s.text(lang)
                utts.append(Utt(utt, spk, lang, dst, text, None if text is None else s.en))
        groups[name] = utts
    run_jobs(lambda job: synthesize(*job), jobs, nj, progress, "synth: espeak-ng")
    written: dict[str, Path] = {}
    for name, utts in groups.items():
        if name == "speech_only":
            written.update(write_speech_dirs(out_dir, "speech_only_train", utts, langs=()))
        else:
            written.update(write_speech_dirs(out_dir, f"synth_{name}", utts, langs))
    log.info(
        "synth: %s utterances in %s (%d synthesized now)",
        {n: len(u) for n, u in groups.items()}, list(langs), len(jobs),
    )
    return written
