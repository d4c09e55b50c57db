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
    from stk.data.kaldi import read_kv
    from stk.tokenizer import train_tokenizer

    texts: list[str] = []
    for f in text_files:
        if plain:
            texts += f.read_text(encoding="utf-8").splitlines()
        else:
            texts += list(read_kv(f).values())
    path = train_tokenizer(texts, out, vocab_size=vocab_size, model_type=model_type.value)
    typer.echo(str(path))
