"""``stk ngram``: estimate a word n-gram LM (ARPA) from Kaldi text files, for CTC beam search."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

log = logging.getLogger("stk.ngram")


def register(app: typer.Typer) -> None:
    app.command()(ngram)


def ngram(
    text: Annotated[list[Path], typer.Argument(help="Kaldi text files (`utt-id sentence`), already normalised like the ASR targets.")],
    out: Annotated[Path, typer.Option(help="ARPA file to write.")],
    order: Annotated[int, typer.Option(help="N-gram order.")] = 3,
) -> None:
    """Estimate an interpolated Kneser-Ney word n-gram LM and write it as ARPA.

    Words are the whitespace-separated fields after the utterance id. Decode with it:\n
      stk ngram data/lm_train/text --order 3 --out exp/lm/3gram.arpa\n
      stk decode data/test --model exp/asr/package --method ctc_beam --lm exp/lm/3gram.arpa --lm-weight 0.5
    """
    from stk.data.kaldi import DataDirError, read_kv
    from stk.decode.ngram import build_arpa

    sentences: list[list[str]] = []
    try:
        for f in text:
            sentences += [t.split() for t in read_kv(f).values() if t.strip()]
        lm = build_arpa(sentences, out, order=order)
    except (DataDirError, ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    log.info("%d sentences, %d words: %s -> %s", len(sentences), len(lm.vocab),
             ", ".join(f"{n}-grams {len(lm.prob[n])}" for n in range(1, order + 1)), out)
    typer.echo(str(out))
