"""Real speech: the Asterisk core sound prompts (Debian ``asterisk-core-sounds-<lang>[-wav]``).

One professional speaker per language reads the same telephone prompts; the prompt id
(``vm-intro``, ``digits/7``…) is shared across languages, so the set is a 5-way parallel speech
and text corpus. Transcripts live in ``usr/share/doc/asterisk-core-sounds-<lang>/core-sounds-
<lang>.txt.gz`` (lines ``id: text``), audio in ``usr/share/asterisk/sounds/<voice>/<id>.wav``
(8 kHz, converted here to 16 kHz with sox). Licenses: CC-BY-SA-3.0 (en/es/fr), CC-BY-3.0 (it/ru).

This module also holds the helpers the synthetic corpus shares: :class:`Utt`,
:func:`run_jobs`, :func:`wav_duration` and :func:`write_speech_dirs`.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, TypeVar

from stk.data.kaldi import write_data_dir

log = logging.getLogger(__name__)

ASTERISK_LANGS: tuple[str, ...] = ("en", "es", "fr", "it", "ru")
SPLITS: tuple[str, ...] = ("train", "dev", "test")
#: intent labels with enough prompts; other prefixes become ``other``
INTENTS: tuple[str, ...] = (
    "agent", "conf", "demo", "dictate", "digits", "dir", "followme", "letters",
    "phonetic", "privacy", "queue", "spy", "vm",
)  # fmt: skip
_INTENT_ALIASES = {"confbridge": "conf", "priv": "privacy"}

#: ``progress(description, total)`` returns an ``advance(n)`` callback
ProgressFn = Callable[[str, int], Callable[[int], None]]
T = TypeVar("T")


def no_progress(description: str, total: int) -> Callable[[int], None]:
    """A :data:`ProgressFn` that reports nothing."""
    return lambda n: None


@dataclasses.dataclass(frozen=True)
class Utt:
    """One utterance of a speech data dir (``text`` is ``None`` for speech-only data)."""

    utt_id: str
    spk: str
    lang: str
    wav: Path
    text: str | None
    text_en: str | None = None
    intent: str | None = None


def run_jobs(fn: Callable[[T], None], jobs: Sequence[T], nj: int, progress: ProgressFn, description: str) -> None:
    """Run ``fn`` over ``jobs`` on ``nj`` threads (each job runs subprocesses), reporting progress.

    The first failure is re-raised after the pool stops.
    """
    advance = progress(description, len(jobs))
    if not jobs:
        return
    with ThreadPoolExecutor(max_workers=max(1, nj)) as pool:
        futures = [pool.submit(fn, job) for job in jobs]
        try:
            for fut in as_completed(futures):
                fut.result()
                advance(1)
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def sox_to_16k(src: Path, dst: Path) -> None:
    """Convert ``src`` to 16 kHz 16-bit mono ``dst`` with sox, without dither (so the output is
    reproducible bit for bit); atomic: a temp file, then a rename."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.{os.getpid()}.tmp.wav")
    cmd = ["sox", "-q", "-D", str(src), "-r", "16000", "-b", "16", "-c", "1", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"sox failed on {src}: {proc.stderr.decode(errors='replace').strip()[-300:]}")
    os.replace(tmp, dst)


def wav_duration(path: Path) -> float:
    """Duration of a wav file in seconds (from its header)."""
    import soundfile as sf

    info = sf.info(str(path))
    return info.frames / float(info.samplerate)


def write_speech_dirs(out_dir: Path, name: str, utts: Sequence[Utt], langs: Sequence[str]) -> dict[str, Path]:
    """Write ``<name>`` (all languages) and ``<name>_<lang>`` data dirs with ``utt2dur``.

    Files: wav.scp (absolute paths), utt2spk, spk2utt, utt2lang, utt2dur, plus text, text.en and
    utt2intent where the utterances carry them. Returns ``{dir name: path}``.
    """
    durs = {u.utt_id: f"{wav_duration(u.wav):.3f}" for u in utts}
    written: dict[str, Path] = {}
    groups: list[tuple[str, Sequence[Utt]]] = [(name, utts)]
    groups += [(f"{name}_{lang}", [u for u in utts if u.lang == lang]) for lang in langs]
    for dir_name, group in groups:
        if not group:
            continue
        extra: dict[str, Mapping[str, str]] = {"utt2dur": {u.utt_id: durs[u.utt_id] for u in group}}
        has_text = group[0].text is not None
        if has_text:
            extra["text.en"] = {u.utt_id: u.text_en or "" for u in group}
        if group[0].intent is not None:
            extra["utt2intent"] = {u.utt_id: u.intent or "other" for u in group}
        written[dir_name] = write_data_dir(
            out_dir / dir_name,
            wav_scp={u.utt_id: str(u.wav.resolve()) for u in group},
            text={u.utt_id: u.text or "" for u in group} if has_text else None,
            utt2spk={u.utt_id: u.spk for u in group},
            utt2lang={u.utt_id: u.lang for u in group},
            extra=extra,
        )
    return written


def parse_transcript(path: str | Path) -> dict[str, str]:
    """Read a ``core-sounds-<lang>.txt[.gz]`` file: ``{prompt id: raw text}``.

    Comment lines (``;``) and a byte-order mark are skipped; for a duplicated id the first line
    wins. Raises :class:`ValueError` naming the file if it cannot be read.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        text = raw.decode("utf-8-sig")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the asterisk transcript: {e}") from None
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(";") or ":" not in line:
            continue
        pid, value = line.split(":", 1)
        pid = pid.strip()
        if pid and " " not in pid:
            out.setdefault(pid, value.strip())
    return out


def clean_text(text: str, lang: str) -> str | None:
    """Spoken words of a prompt text, or ``None`` for a non-speech entry (``[beep]``, ``(silence)``).

    Stage directions in ``(…)`` and ``<…>`` are dropped, ``[…]`` brackets around spoken words are
    removed, whitespace is collapsed; in Italian a stray `` ? `` is the mis-encoded ``è``.
    """
    text = text.strip()
    if not text or text[0] in "[(<":
        return None
    text = re.sub(r"\([^)]*\)|<[^>]*>", " ", text)
    text = text.replace("[", " ").replace("]", " ")
    if lang == "it":
        text = re.sub(r"(?<=\w) \? (?=\w)", " è ", text)
    text = " ".join(text.split())
    text = re.sub(r" ([,.])", r"\1", text)
    return text or None


def intent_of(prompt_id: str) -> str:
    """Intent label of a prompt id: its functional prefix (``vm``, ``conf``, ``digits``…) or ``other``."""
    head = re.split(r"[/\-_]", prompt_id, maxsplit=1)[0].lower()
    head = _INTENT_ALIASES.get(head, head)
    return head if head in INTENTS else "other"


def _unit_hash(key: str) -> float:
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:15], 16) / 16**15


def split_of(prompt_id: str, dev: float = 0.1, test: float = 0.1) -> str:
    """Deterministic split of a prompt id (case-insensitive, so every language agrees)."""
    u = _unit_hash("stk-asterisk-split:" + prompt_id.lower())
    return "test" if u < test else "dev" if u < test + dev else "train"


def find_voice_dir(corpus_dir: str | Path, lang: str) -> Path:
    """The ``usr/share/asterisk/sounds/<lang>_*`` voice directory of ``lang``."""
    dirs = sorted(Path(corpus_dir).glob(f"usr/share/asterisk/sounds/{lang}_*"))
    dirs = [d for d in dirs if d.is_dir()]
    if len(dirs) != 1:
        raise ValueError(
            f"{corpus_dir}: expected one usr/share/asterisk/sounds/{lang}_* voice dir, found {len(dirs)} "
            f"(extract the Debian package asterisk-core-sounds-{lang}-wav there)"
        )
    return dirs[0]


def speaker_of(voice_dir: Path, lang: str) -> str:
    """Speaker id ``<lang>-<name>`` from a voice dir such as ``en_US_f_Allison``."""
    name = re.sub(r"[^a-z0-9]", "", voice_dir.name.split("_")[-1].lower()) or "spk"
    return f"{lang}-{name}"


def load_texts(corpus_dir: str | Path, lang: str) -> dict[str, str]:
    """Cleaned speech prompts of ``lang`` from the transcript: ``{prompt id: text}``."""
    path = Path(corpus_dir) / f"usr/share/doc/asterisk-core-sounds-{lang}/core-sounds-{lang}.txt.gz"
    if not path.exists():
        raise ValueError(f"{path} not found (extract the Debian package asterisk-core-sounds-{lang} there)")
    out = {}
    for pid, raw in parse_transcript(path).items():
        if pid.startswith("silence/"):
            continue
        text = clean_text(raw, lang)
        if text is not None:
            out[pid] = text
    return out


def load_prompts(corpus_dir: str | Path, lang: str) -> dict[str, tuple[str, Path]]:
    """Prompts of ``lang`` that have both a transcript and a wav: ``{prompt id: (text, wav)}``.

    The id is the wav's path below the voice dir without ``.wav`` (its case wins when the
    transcript's differs, e.g. ``letters/O`` → ``letters/o``).
    """
    voice = find_voice_dir(corpus_dir, lang)
    wavs: dict[str, list[str]] = {}
    for p in voice.rglob("*.wav"):
        rel = p.relative_to(voice).with_suffix("").as_posix()
        wavs.setdefault(rel.lower(), []).append(rel)
    out: dict[str, tuple[str, Path]] = {}
    missing = 0
    for pid, text in load_texts(corpus_dir, lang).items():
        cands = wavs.get(pid.lower(), [])
        rel = pid if pid in cands else cands[0] if len(cands) == 1 else None
        if rel is None:
            missing += 1
            continue
        out.setdefault(rel, (text, voice / f"{rel}.wav"))
    if missing:
        log.info("asterisk %s: %d transcript entries without a wav skipped", lang, missing)
    return out


def utt_id_of(spk: str, prompt_id: str) -> str:
    """Utterance id ``<lang>-<speaker>-<prompt id with / as _>``."""
    return f"{spk}-{prompt_id.replace('/', '_')}"


def select_prompts(
    prompt_ids: Iterable[str], max_per_split: Mapping[str, int] | None = None
) -> dict[str, str]:
    """``{prompt id: split}``; with ``max_per_split`` keep the first prompts of each split in hash order."""
    by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
    for pid in prompt_ids:
        by_split[split_of(pid)].append(pid)
    out: dict[str, str] = {}
    for split, pids in by_split.items():
        pids.sort(key=lambda p: (_unit_hash("stk-asterisk-order:" + p.lower()), p))
        if max_per_split is not None:
            pids = pids[: max_per_split.get(split, 0)]
        out.update({p: split for p in pids})
    return out


def prepare_asterisk(
    corpus_dir: str | Path,
    out_dir: str | Path,
    langs: Sequence[str] = ASTERISK_LANGS,
    *,
    max_per_split: Mapping[str, int] | None = None,
    max_chars: int | None = None,
    nj: int = 2,
    progress: ProgressFn = no_progress,
) -> dict[str, Path]:
    """Write ``real_{train,dev,test}`` and ``real_<split>_<lang>`` data dirs under ``out_dir``.

    ``corpus_dir`` holds the extracted ``asterisk-core-sounds-<lang>`` (always ``en``, for
    ``text.en``) and ``asterisk-core-sounds-<lang>-wav`` packages. Only prompts with an English
    counterpart are kept, so every utterance has ``text.en`` (the English prompt; its own text
    for English). With ``max_per_split`` (e.g. ``{"train": 24, "dev": 6, "test": 6}``) only
    prompts present in every language of ``langs`` whose English has at most ``max_chars``
    characters are used (a small, balanced subset). Wavs go to ``out_dir/wav/real/<lang>/``.
    """
    out_dir = Path(out_dir)
    bad = [lang for lang in langs if lang not in ASTERISK_LANGS]
    if bad:
        raise ValueError(f"asterisk: unsupported language(s) {bad}; choose from {list(ASTERISK_LANGS)}")
    english = {pid.lower(): text for pid, text in load_texts(corpus_dir, "en").items()}
    prompts = {lang: load_prompts(corpus_dir, lang) for lang in langs}
    voices = {lang: speaker_of(find_voice_dir(corpus_dir, lang), lang) for lang in langs}
    usable = {lang: {pid for pid in ps if pid.lower() in english} for lang, ps in prompts.items()}
    for lang in langs:
        dropped = len(prompts[lang]) - len(usable[lang])
        if dropped:
            log.info("asterisk %s: %d prompts without an English counterpart left out", lang, dropped)
    if max_per_split is not None:
        common = set.intersection(*({p.lower() for p in ids} for ids in usable.values())) if usable else set()
        if max_chars is not None:
            common = {p for p in common if len(english[p]) <= max_chars}
        chosen = select_prompts(sorted(common), max_per_split)
    else:
        chosen = select_prompts(sorted({p.lower() for ids in usable.values() for p in ids}))
    utts: dict[str, list[Utt]] = {s: [] for s in SPLITS}
    jobs: list[tuple[Path, Path]] = []
    seen: set[str] = set()
    for lang in langs:
        for pid in sorted(usable[lang]):
            split = chosen.get(pid.lower())
            if split is None:
                continue
            text, src = prompts[lang][pid]
            utt = utt_id_of(voices[lang], pid)
            if utt in seen:
                raise ValueError(f"asterisk {lang}: two prompts map to utterance id {utt!r}")
            seen.add(utt)
            dst = out_dir / "wav" / "real" / lang / f"{utt}.wav"
            if not dst.exists():
                jobs.append((src, dst))
            utts[split].append(
                Utt(utt, voices[lang], lang, dst, text, english[pid.lower()] if lang != "en" else text, intent_of(pid))
            )
    run_jobs(lambda job: sox_to_16k(*job), jobs, nj, progress, "real: resample 8k->16k")
    written: dict[str, Path] = {}
    for split in SPLITS:
        written.update(write_speech_dirs(out_dir, f"real_{split}", utts[split], langs))
    counts = {s: len(u) for s, u in utts.items()}
    log.info("asterisk: %s utterances in %s (%d converted now)", counts, list(langs), len(jobs))
    return written
