"""``stk align``: CTC forced alignment of a data dir's transcripts -> per-token durations."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

log = logging.getLogger("stk.align")


def register(app: typer.Typer) -> None:
    app.command()(align)


def align(
    data_dir: Annotated[Path, typer.Argument(help="Data dir with wav.scp (+ optional segments) and text.")],
    model: Annotated[str, typer.Option(help="Package directory, or a name in the model store, of a model with a CTC head.")] = ...,
    out: Annotated[Path | None, typer.Option(help="Durations file to write (default DATA_DIR/durations); OUT.info gets the JSON sidecar.")] = None,
    batch_frames: Annotated[int, typer.Option(min=1, help="Padded feature frames per batch.")] = 20000,
    allow_pipes: Annotated[bool, typer.Option(help="Run wav.scp pipe commands (`cmd |`). Off by default: they execute shell commands.")] = False,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """Force-align the transcripts of DATA_DIR with a CTC package into per-token durations (MAESTRO's upsampling).

    Durations are in encoder frames: `utt-id d1 d2 ... dN` lines, one
    duration per token of the transcript with the package tokenizer, summing to the encoder
    length. A token owns the frames from its first emitted frame to the next token's; leading
    blanks go to the first token. DURATIONS.info (JSON) records the encoder subsampling, the
    frame shift in ms and the tokenizer's sha256. Utterances that cannot be aligned (no or empty
    transcript, too short) are skipped and logged.

    Examples:\n
      stk align data/train --model exp/ctc/package\n
      stk align dump/train --model ctc_asr --out dump/train/durations --batch-frames 40000
    """
    from stk.align import align_data_dir, write_durations
    from stk.config import ConfigError
    from stk.data.audio import AudioError
    from stk.data.kaldi import DataDirError
    from stk.package import load_package
    from stk.utils import set_threads, setup_logging

    setup_logging()
    set_threads()
    out = out or data_dir / "durations"
    try:
        lm = load_package(model, device=device)
        res = align_data_dir(lm, data_dir, batch_frames=batch_frames, allow_pipes=allow_pipes,
                             progress=sys.stderr.isatty())
    except (ConfigError, DataDirError, AudioError, ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    if not res.durations:
        typer.echo(f"error: {data_dir}: no utterance could be aligned ({res.num_skipped} skipped)", err=True)
        raise typer.Exit(1)
    write_durations(out, res.durations, res.info)
    log.info("%d utterance(s) -> %s (skipped %d); %s.info: subsampling %d, %g ms per frame",
             len(res.durations), out, res.num_skipped, out.name, res.info["subsampling"], res.info["frame_shift_ms"])
