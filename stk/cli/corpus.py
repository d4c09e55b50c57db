"""``stk corpus``: build corpora from offline sources, or prepare downloaded ones.

``stk corpus mini --out data/mini --size small`` builds the mini corpus (real Asterisk prompts,
espeak-ng Wesnoth sentences, Wesnoth text) from Debian packages; see ``egs/mini/README.md``.
``stk corpus covost2``, ``voxpopuli``, ``librispeech``, ``minds14`` and ``fleurs`` turn a downloaded
corpus tree into Kaldi data dirs (``stk.corpora.<name>``'s ``prepare_<name>``).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer


class Size(str, Enum):
    """Mini corpus sizes."""

    tiny = "tiny"
    small = "small"
    full = "full"


def _parse_langs(value: str) -> list[str]:
    from stk.corpora.mini import DEFAULT_LANGS

    langs = [x.strip() for x in value.split(",") if x.strip()]
    bad = [x for x in langs if x not in DEFAULT_LANGS]
    if not langs or bad:
        raise typer.BadParameter(f"unsupported language(s) {bad or '(none)'}; choose from {','.join(DEFAULT_LANGS)}")
    return langs


def mini(
    out: Path = typer.Option(..., "--out", help="Output dir: Kaldi data dirs and OUT/wav/ (16 kHz wavs)."),
    size: Size = typer.Option(Size.small, "--size", help="tiny (CI), small (recipes' default) or full."),
    cache: Optional[Path] = typer.Option(
        None, "--cache", help="Cache for downloaded .deb files and extracted packages (default: $STK_CACHE or ~/.cache/stk)."
    ),
    langs: str = typer.Option("en,de,es,fr,it,ru", "--langs", help="Comma-separated languages (en,de,es,fr,it,ru)."),
    nj: int = typer.Option(
        min(2, os.cpu_count() or 1), "--nj", min=1, help="Parallel jobs for sox resampling and espeak-ng synthesis."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Build the offline mini corpus (asterisk + espeak-ng + Wesnoth) from Debian packages."""
    from stk.corpora.mini import build_mini

    lang_list = _parse_langs(langs)
    _run_prepare(verbose, lambda s: f"mini corpus ({size.value}) in {out}: {s:.1f} s",
                 lambda track: build_mini(out, size.value, cache, lang_list, nj=nj, progress=track))


def _print_summary(rows: list, title: str) -> None:
    """The summary table (stdout): one row per data dir."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col, justify in (("dir", "left"), ("langs", "left"), ("utts", "right"), ("spk", "right"), ("hours", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(r.name, r.langs, str(r.utts), str(r.speakers), f"{r.hours:.3f}" if r.hours else "-")
    Console(file=sys.stdout).print(table)


def _split_list(value: str, what: str) -> list[str]:
    items = [x.strip() for x in value.split(",") if x.strip()]
    if not items:
        raise typer.BadParameter(f"no {what} given")
    return items


def _setup_logging(verbose: bool):
    """Log to stderr on stk's one console (plain lines off a terminal) unless logging is already set
    up; return (console, handler to remove)."""
    from stk.console import LOG_FORMAT, console, is_tty

    err = console()
    root = logging.getLogger()
    handler = None
    if not root.handlers:
        if is_tty():
            from rich.logging import RichHandler

            handler = RichHandler(console=err, show_path=False, log_time_format="%H:%M:%S")
        else:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    return err, handler


@contextmanager
def _progress_bars(err) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """A ``progress(description, total) -> advance(n)`` callback drawing bars on stk's console
    (none when stderr is not a terminal: log files get no bar frames)."""
    from stk.console import progress

    with progress(transient=False) as bars:

        def track(description: str, total: int) -> Callable[[int], None]:
            if total == 0:
                return lambda n: None
            task = bars.add_task(description, total=total)
            return lambda n: bars.advance(task, n)

        yield track


def _run_prepare(verbose: bool, title: Callable[[float], str], fn: Callable[..., list]) -> None:
    """Run a ``prepare_<corpus>`` call ``fn(track)`` with stk's logging and progress bars; print its
    summary table (``title(seconds)``), or the error naming the file and exit 1."""
    err, handler = _setup_logging(verbose)
    t0 = time.time()
    try:
        with _progress_bars(err) as track:
            rows = fn(track)
    except (ValueError, OSError, RuntimeError) as e:  # bad layout, unreadable file, failed sox/TTS run
        err.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(1) from None
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
    _print_summary(rows, title(time.time() - t0))


def covost2(
    corpus_dir: Path = typer.Option(
        ..., "--corpus-dir", help="Common Voice root: <dir>/<lang>/clips/*.mp3 and <dir>/<lang>/validated.tsv."
    ),
    out: Path = typer.Option(..., "--out", help="Output dir: OUT/<split> Kaldi data dirs and OUT/wav/<lang>/ (16 kHz wavs)."),
    src_langs: str = typer.Option(..., "--src-langs", help="Comma-separated source languages (Common Voice codes: fr,de,zh-CN…)."),
    tgt_lang: str = typer.Option("en", "--tgt-lang", help="Translation language (written to text.<tgt-lang>)."),
    tsv_dir: Optional[Path] = typer.Option(
        None, "--tsv-dir", help="Dir with covost_v2.<src>_<tgt>.tsv or its per-split files (default: --corpus-dir)."
    ),
    splits: str = typer.Option("train,dev,test", "--splits", help="Comma-separated splits (train,dev,test)."),
    convert: bool = typer.Option(
        True, "--convert/--no-convert", help="Write 16 kHz wavs (default), or list the 48 kHz mp3 clips in wav.scp."
    ),
    nj: int = typer.Option(min(2, os.cpu_count() or 1), "--nj", min=1, help="Parallel mp3 conversion jobs."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging (lists every skipped row)."),
) -> None:
    """CoVoST 2 speech translation (X -> en) from Common Voice clips and the CoVoST 2 TSVs."""
    from stk.corpora.covost2 import prepare_covost2

    src = _split_list(src_langs, "source language")
    split_list = _split_list(splits, "split")
    _run_prepare(verbose, lambda s: f"CoVoST 2 {','.join(src)}->{tgt_lang} in {out}: {s:.1f} s",
                 lambda track: prepare_covost2(corpus_dir, out, src_langs=src, tgt_lang=tgt_lang, splits=split_list,
                                               tsv_dir=tsv_dir, convert=convert, nj=nj, progress=track))


def voxpopuli(
    corpus_dir: Path = typer.Option(
        ..., "--corpus-dir", help="VoxPopuli root (get_asr_data's --root): <dir>/transcribed_data/<lang>/asr_<split>.tsv."
    ),
    out: Path = typer.Option(..., "--out", help="Output dir: OUT/<split> Kaldi data dirs (wav.scp lists the .ogg files)."),
    langs: str = typer.Option(..., "--langs", help="Comma-separated ASR languages (en,de,fr,es,pl,it,… or en_accented)."),
    splits: str = typer.Option("train,dev,test", "--splits", help="Comma-separated splits (train,dev,test)."),
    raw_text: bool = typer.Option(False, "--raw-text", help="Use raw_text (cased, punctuated) instead of normalized_text."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging (lists every skipped row)."),
) -> None:
    """VoxPopuli transcribed (ASR) data, as laid out by voxpopuli.get_asr_data."""
    from stk.corpora.voxpopuli import prepare_voxpopuli

    lang_list = _split_list(langs, "language")
    split_list = _split_list(splits, "split")
    _run_prepare(verbose, lambda s: f"VoxPopuli {','.join(lang_list)} in {out}: {s:.1f} s",
                 lambda track: prepare_voxpopuli(corpus_dir, out, langs=lang_list, splits=split_list,
                                                 text_field="raw_text" if raw_text else "normalized_text"))


def librispeech(
    corpus_dir: Path = typer.Option(
        ..., "--corpus-dir", help="LibriSpeech dir (or its parent): <dir>/<part>/<spk>/<chapter>/*.flac, SPEAKERS.TXT."
    ),
    out: Path = typer.Option(..., "--out", help="Output dir: OUT/<part> Kaldi data dirs (dev_clean, train_clean_100, ...)."),
    parts: Optional[str] = typer.Option(
        None, "--parts", help="Comma-separated parts (dev-clean,test-other,train-clean-100,...); default: all present."
    ),
    nj: int = typer.Option(min(2, os.cpu_count() or 1), "--nj", min=1, help="Threads reading flac headers."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging (lists every skipped row)."),
) -> None:
    """LibriSpeech ASR parts (flac, transcripts, SPEAKERS.TXT genders) as Kaldi data dirs."""
    from stk.corpora.librispeech import prepare_librispeech

    part_list = _split_list(parts, "part") if parts is not None else None
    _run_prepare(verbose, lambda s: f"LibriSpeech in {out}: {s:.1f} s",
                 lambda track: prepare_librispeech(corpus_dir, out, parts=part_list, nj=nj, progress=track))


def minds14(
    corpus_dir: Path = typer.Option(
        ..., "--corpus-dir", help="MInDS-14 dir: <dir>/text/<locale>.csv and <dir>/audio/<locale>~<INTENT>/*.wav."
    ),
    out: Path = typer.Option(..., "--out", help="Output dir: OUT/{train,dev,test} (utt2intent) and OUT/wav/minds14/."),
    locales: Optional[str] = typer.Option(
        None, "--locales", help="Comma-separated locales (en-US,fr-FR,...); default: all present."
    ),
    fractions: str = typer.Option("0.3,0.2,0.5", "--fractions", help="train,dev,test shares of each (locale, intent)."),
    convert: bool = typer.Option(
        True, "--convert/--no-convert", help="Resample the 8 kHz wavs to 16 kHz (default) or list them."
    ),
    nj: int = typer.Option(min(2, os.cpu_count() or 1), "--nj", min=1, help="Parallel resampling jobs."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging (lists every skipped row)."),
) -> None:
    """MInDS-14 spoken intent detection (14 intents, 14 locales) with utt2intent labels."""
    from stk.corpora.minds14 import prepare_minds14

    loc = _split_list(locales, "locale") if locales is not None else None
    try:
        shares = [float(x) for x in _split_list(fractions, "fraction")]
    except ValueError:
        raise typer.BadParameter(f"--fractions: expected three numbers, got {fractions!r}") from None
    _run_prepare(verbose, lambda s: f"MInDS-14 in {out}: {s:.1f} s",
                 lambda track: prepare_minds14(corpus_dir, out, locales=loc, fractions=shares, convert=convert,
                                               nj=nj, progress=track))


def fleurs(
    corpus_dir: Path = typer.Option(
        ..., "--corpus-dir", help="FLEURS data dir: <dir>/<lang>/<split>.tsv and <dir>/<lang>/audio/<split>/*.wav."
    ),
    out: Path = typer.Option(..., "--out", help="Output dir: OUT/<split> Kaldi data dirs (utt2lang for language ID)."),
    langs: Optional[str] = typer.Option(
        None, "--langs", help="Comma-separated FLEURS codes (en_us,fr_fr,...); default: all present."
    ),
    splits: str = typer.Option("train,dev,test", "--splits", help="Comma-separated splits (train,dev,test)."),
    raw_text: bool = typer.Option(False, "--raw-text", help="Use the raw transcription (cased, punctuated)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging (lists every skipped row)."),
) -> None:
    """FLEURS read speech (ASR text and language-ID labels in utt2lang)."""
    from stk.corpora.fleurs import prepare_fleurs

    lang_list = _split_list(langs, "language") if langs is not None else None
    split_list = _split_list(splits, "split")
    _run_prepare(verbose, lambda s: f"FLEURS in {out}: {s:.1f} s",
                 lambda track: prepare_fleurs(corpus_dir, out, langs=lang_list, splits=split_list,
                                              text_field="raw_transcription" if raw_text else "transcription"))


def register(app: typer.Typer) -> None:
    """Add the ``corpus`` command group (``stk corpus mini|covost2|voxpopuli|librispeech|minds14|fleurs``) to ``app``."""
    corpus_app = typer.Typer(
        help="Build corpora from offline sources (Debian packages) or prepare downloaded ones "
        "(CoVoST 2, VoxPopuli, LibriSpeech, MInDS-14, FLEURS).",
        no_args_is_help=True,
    )
    corpus_app.command("mini")(mini)
    corpus_app.command("covost2")(covost2)
    corpus_app.command("voxpopuli")(voxpopuli)
    corpus_app.command("librispeech")(librispeech)
    corpus_app.command("minds14")(minds14)
    corpus_app.command("fleurs")(fleurs)
    app.add_typer(corpus_app, name="corpus")
