"""SentencePiece tokenizers (char, BPE, unigram) with stk's fixed special ids.

Every stk tokenizer reserves: ``0 = <blank>`` (CTC/RNN-T blank, also padding), ``1 = <unk>``,
``2 = <sos/eos>`` (attention decoder start and end). Pieces follow from id 3.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

log = logging.getLogger("stk.tokenizer")

BLANK, UNK, SOS_EOS = 0, 1, 2


class Tokenizer:
    """A trained SentencePiece model: ``encode(text) -> list[int]``, ``decode(ids) -> str``."""

    def __init__(self, model_path: str | Path) -> None:
        import sentencepiece as spm

        self.path = Path(model_path)
        if not self.path.exists():
            raise FileNotFoundError(f"tokenizer model not found: {self.path}")
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
        except (RuntimeError, OSError) as e:
            raise ValueError(f"{self.path}: not a sentencepiece model ({' '.join(str(e).split())})") from None
        if self.sp.piece_to_id("<blank>") != BLANK or self.sp.eos_id() != SOS_EOS:
            raise ValueError(f"{self.path} was not trained by `stk tokenizer train` (special ids differ)")

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([i for i in ids if i > SOS_EOS])

    def pieces(self, text: str) -> list[str]:
        return self.sp.encode(text, out_type=str)


def train_tokenizer(
    texts: Iterable[str],
    model_prefix: str | Path,
    *,
    vocab_size: int = 500,
    model_type: str = "bpe",
    character_coverage: float = 1.0,
    user_defined_symbols: list[str] | None = None,
) -> Path:
    """Train a SentencePiece model on ``texts`` and write ``{model_prefix}.model``/``.vocab``.

    ``model_type`` is ``char``, ``bpe`` or ``unigram``. For a tiny corpus the vocabulary size is a
    soft limit (``hard_vocab_limit=False``): a model smaller than ``vocab_size`` is logged as a warning.
    ``ValueError`` when there is no non-empty line of text.
    """
    import sentencepiece as spm

    if model_type not in ("char", "bpe", "unigram"):
        raise ValueError(f"model_type must be char, bpe or unigram, got {model_type!r}")
    lines = [t.strip() for t in texts if t.strip()]
    if not lines:
        raise ValueError("no text to train the tokenizer on (every line is empty)")
    prefix = Path(model_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        pad_id=BLANK,
        pad_piece="<blank>",
        unk_id=UNK,
        bos_id=-1,
        eos_id=SOS_EOS,
        eos_piece="<sos/eos>",
        user_defined_symbols=user_defined_symbols or [],
        hard_vocab_limit=False,
        minloglevel=2,
        num_threads=1,
    )
    path = Path(f"{prefix}.model")
    got = spm.SentencePieceProcessor(model_file=str(path)).get_piece_size()
    if got < vocab_size:  # a char model has as many pieces as the text has characters: only a note
        note = log.info if model_type == "char" else log.warning
        note("%s: asked for --vocab-size %d but the text only supports %d pieces (sentencepiece's soft limit on "
             "small data); the model has %d", path, vocab_size, got, got)
    return path
