"""``stk decode``: transcribe or translate a wav.scp with a packaged model."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from stk.decode import DecodeMethod as Method

log = logging.getLogger("stk.decode")




def register(app: typer.Typer) -> None:
    app.command()(decode)


def decode(
    source: Annotated[Path, typer.Argument(help="A Kaldi wav.scp, or a data dir (wav.scp + optional segments).")],
    model: Annotated[str, typer.Option(help="Package directory, or a name in the model store ($STK_MODEL_STORE, default ~/.cache/stk/models).")],
    out: Annotated[Path | None, typer.Option(help="Write `utt-id text` lines here (default: stdout).")] = None,
    method: Annotated[Method | None, typer.Option(help="Search: attention (joint CTC/attention beam), ctc_greedy, ctc_beam, rnnt_greedy, rnnt_beam. Default: the package's.")] = None,
    beam_size: Annotated[int | None, typer.Option(help="Beam size.")] = None,
    ctc_weight: Annotated[float | None, typer.Option(help="CTC weight in joint attention decoding.")] = None,
    length_penalty: Annotated[float | None, typer.Option(help="Length bonus per token (attention search).")] = None,
    batch_frames: Annotated[int, typer.Option(help="Padded feature frames per batch.")] = 20000,
    allow_pipes: Annotated[bool, typer.Option(help="Run wav.scp pipe commands (`cmd |`). Off by default: they execute shell commands.")] = False,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """Decode every utterance of SOURCE and write `utt-id text` lines, in sorted id order.

    Examples:\n
      stk decode --model maestro data/test/wav.scp\n
      stk decode --model exp/asr/package data/test --method ctc_greedy --out hyp.txt
    """
    from stk.config import ConfigError
    from stk.data.audio import AudioError
    from stk.data.kaldi import DataDirError, write_kv
    from stk.inference import decode_scp
    from stk.package import load_package, override_decode
    from stk.utils import set_threads

    set_threads()
    try:
        lm = load_package(model, device=device)
        opts = override_decode(lm.meta.decode, method=method.value if method else None, beam_size=beam_size,
                               ctc_weight=ctc_weight, length_penalty=length_penalty)
        hyps = decode_scp(lm, source, opts, batch_frames=batch_frames, allow_pipes=allow_pipes,
                          progress=sys.stderr.isatty())
    except (ConfigError, DataDirError, AudioError, ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    if out is not None:
        write_kv(out, hyps)
        log.info("%d hypotheses -> %s", len(hyps), out)
    else:
        for u in sorted(hyps, key=lambda s: s.encode()):
            sys.stdout.write(f"{u} {hyps[u]}\n")
