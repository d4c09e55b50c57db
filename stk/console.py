"""The terminal: one rich console on stderr for log lines and progress bars.

Log lines and bars share :func:`console`, so a bar redraws below the log lines instead of running
into them (rich's ``Progress`` and ``RichHandler`` on the same console). When stderr is not a
terminal (a log file, a pipe, ``run.pl``) there are no bars and log lines are plain
``time LEVEL module: message`` lines, unwrapped.
"""

from __future__ import annotations

import logging
import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_CONSOLE = None
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def console():
    """The process's stderr :class:`rich.console.Console` (created on first use)."""
    global _CONSOLE
    if _CONSOLE is None or _CONSOLE.file is not sys.stderr:  # pytest/CliRunner swap sys.stderr
        from rich.console import Console

        _CONSOLE = Console(file=sys.stderr)
    return _CONSOLE


def is_tty() -> bool:
    """Whether stderr is an interactive terminal (bars are drawn only then)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr: through a ``RichHandler`` on :func:`console` on a terminal, else plain lines.
    Does nothing to a root logger that already has handlers except set the level."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if root.handlers:
        return
    if is_tty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=console(), show_path=False, log_time_format="%H:%M:%S")
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
    root.addHandler(handler)


def progress(*, transient: bool = True, enabled: bool = True):
    """A rich ``Progress`` on :func:`console` (description, bar, n/total, elapsed, remaining);
    disabled when stderr is not a terminal or ``enabled`` is false."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console(), transient=transient, disable=not (enabled and is_tty()))


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a bar (none off a terminal)."""
    with progress() as bar:
        task = bar.add_task(description, total=total if total is not None else len(items))  # type: ignore[arg-type]
        for x in items:
            yield x
            bar.advance(task)
