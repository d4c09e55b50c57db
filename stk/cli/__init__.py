"""The ``stk`` command line. Each sub-command lives in its own module and imports torch lazily,
so ``stk --help`` answers at once."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="stk",
    help="stk: speech-text toolkit. Data prep, features, tokenizers, training, decoding and scoring.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# module name -> registers its commands on `app`
_COMMAND_MODULES = ["data", "corpus", "tokenizer", "train", "decode", "align", "score", "average", "table", "info", "ngram", "export", "synth", "units", "judge", "speaker"]

for _name in _COMMAND_MODULES:
    importlib.import_module(f"stk.cli.{_name}").register(app)


def main() -> None:
    app()
