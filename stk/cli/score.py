"""``stk score``: WER/CER (jiwer) or BLEU/chrF (sacrebleu) of a hypothesis file."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated

import typer


class Metric(str, enum.Enum):
    wer = "wer"
    bleu = "bleu"


def register(app: typer.Typer) -> None:
    app.command()(score)


def score(
    ref: Annotated[Path, typer.Argument(help="Reference file (utt-id text), e.g. data/test/text.")],
    hyp: Annotated[Path, typer.Argument(help="Hypothesis file (utt-id text) from `stk decode`.")],
    metric: Annotated[Metric, typer.Option(help="wer (WER and CER) or bleu (BLEU and chrF).")] = Metric.wer,
    keep_case: Annotated[bool, typer.Option(help="WER: do not lowercase.")] = False,
    keep_punct: Annotated[bool, typer.Option(help="WER: do not strip punctuation.")] = False,
    strip_accents: Annotated[bool, typer.Option(help="WER: remove diacritics.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the scores as JSON.")] = None,
) -> None:
    """Score hypotheses against references; prints one line (and the sacrebleu signature)."""
    from stk.scoring import Normalizer, score_files

    try:
        res = score_files(ref, hyp, metric.value, Normalizer(not keep_case, not keep_punct, strip_accents))
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    if metric is Metric.wer:
        typer.echo(f"WER {res['wer']:.2f} CER {res['cer']:.2f} ({res['sents']} sents, {res['words']} words; "
                   f"sub {res['sub']} del {res['del']} ins {res['ins']})")
    else:
        typer.echo(f"BLEU {res['bleu']:.2f} chrF {res['chrf']:.2f} ({res['sents']} sents)")
        typer.echo(f"  {res['bleu_signature']}\n  {res['chrf_signature']}")
    if json_out is not None:
        json_out.write_text(json.dumps(res, indent=1))
