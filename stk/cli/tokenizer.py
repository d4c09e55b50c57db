"""``stk tokenizer``: train sentencepiece models."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="SentencePiece tokenizers (char, bpe, unigram).", no_args_is_help=True)


class ModelType(str, enum.Enum):
    char = "char"
    bpe = "bpe"
    unigram = "unigram"


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="tokenizer")


@app.command()
def train(
    text_files: Annotated[list[Path], typer.Argument(help="Kaldi `text`-style files (utt-id text) or plain text with --plain.")],
    out: Annotated[Path, typer.Option(help="Model prefix: writes OUT.model and OUT.vocab.")],
    vocab_size: Annotated[int, typer.Option(help="Vocabulary size (soft limit on tiny data).")] = 500,
    model_type: Annotated[ModelType, typer.Option(help="Segmentation model.")] = ModelType.bpe,
    plain: Annotated[bool, typer.Option(help="Inputs are plain text lines (no utterance id).")] = False,
) -> None:
    """Train a tokenizer with stk's special ids (0 <blank>, 1 <unk>, 2 <sos/eos>)."""
    from stk.data.kaldi import DataDirError, read_kv
    from stk.tokenizer import train_tokenizer
    from stk.utils import setup_logging

    setup_logging()
    texts: list[str] = []
    try:
        for f in text_files:
            if plain:
                try:
                    texts += f.read_text(encoding="utf-8").splitlines()
                except FileNotFoundError:
                    raise DataDirError(f"{f}: file not found") from None
                except UnicodeDecodeError as e:
                    raise DataDirError(f"{f}: not valid UTF-8 ({e.reason})") from None
            else:
                texts += list(read_kv(f).values())
        if not any(t.strip() for t in texts):
            raise ValueError(f"{', '.join(map(str, text_files))}: no text to train the tokenizer on (empty"
                             f"{'' if plain else ' transcripts; plain text lines need --plain'})")
        path = train_tokenizer(texts, out, vocab_size=vocab_size, model_type=model_type.value)
    except (DataDirError, ValueError, RuntimeError, OSError) as e:
        typer.echo(f"error: {' '.join(str(e).split())}", err=True)
        raise typer.Exit(1)
    typer.echo(str(path))
