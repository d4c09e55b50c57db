"""``stk corpus``: build corpora from offline sources.

``stk corpus mini --out data/mini --size small`` builds the mini corpus (real Asterisk prompts,
espeak-ng Wesnoth sentences, Wesnoth text) from Debian packages; see ``egs/mini/README.md``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import ExitStack
from enum import Enum
from pathlib import Path
from typing import Callable, Optional

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
    from rich.console import Console
    from rich.logging import RichHandler
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from stk.corpora.mini import build_mini

    lang_list = _parse_langs(langs)
    err = Console(stderr=True)
    root = logging.getLogger()
    # log to stderr through rich (so progress bars stay intact) unless logging is already set up
    handler = None if root.handlers else RichHandler(console=err, show_path=False, log_time_format="%H:%M:%S")
    if handler is not None:
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    t0 = time.time()
    try:
        with ExitStack() as stack:
            progress = stack.enter_context(
                Progress(
                    TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=False,
                )
            )

            def track(description: str, total: int) -> Callable[[int], None]:
                if total == 0:
                    return lambda n: None
                task = progress.add_task(description, total=total)
                return lambda n: progress.advance(task, n)

            rows = build_mini(out, size.value, cache, lang_list, nj=nj, progress=track)
    except (ValueError, RuntimeError) as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    finally:
        if handler is not None:
            root.removeHandler(handler)
    _print_summary(rows, f"mini corpus ({size.value}) in {out}: {time.time() - t0:.1f} s")


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


def register(app: typer.Typer) -> None:
    """Add the ``corpus`` command group (``stk corpus mini``) to ``app``."""
    corpus_app = typer.Typer(help="Build corpora from offline sources (Debian packages).", no_args_is_help=True)
    corpus_app.command("mini")(mini)
    app.add_typer(corpus_app, name="corpus")
