"""Small shared helpers: atomic writes, logging, thread settings."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable, IO

log = logging.getLogger("stk")


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr (results go to stdout or files): ``time LEVEL module: message`` lines, or rich's
    handler on stk's one console in a terminal (:func:`stk.console.setup_logging`)."""
    from stk.console import setup_logging as _setup

    _setup(verbose)


def current_umask() -> int:
    """The process umask (from /proc where it is shown; else set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through a temporary file in the same directory, fsync, then rename.

    A reader (or a job killed half-way) never sees a half-written file. The file gets the mode a
    plain ``open(path, "w")`` would give (``0o666`` less the umask: 0644 under umask 022), not
    ``mkstemp``'s private 0600, so colleagues on shared storage can read it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def set_threads(num_threads: int | None = None) -> None:
    """Pin torch's intra-op threads (default: ``STK_NUM_THREADS`` or all cores, at most 4)."""
    import torch

    n = num_threads or int(os.environ.get("STK_NUM_THREADS", "0")) or min(4, os.cpu_count() or 1)
    torch.set_num_threads(n)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (records which model/tokenizer a file came from)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
