"""``stk score``: WER/CER (jiwer), BLEU/chrF (sacrebleu) or label accuracy of a hypothesis file."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated

import typer


class Metric(str, enum.Enum):
    wer = "wer"
    bleu = "bleu"
    acc = "acc"


def register(app: typer.Typer) -> None:
    app.command()(score)
    app.command()(report)


def score(
    ref: Annotated[Path, typer.Argument(help="Reference file (utt-id text), e.g. data/test/text; for acc `utt-id label`, e.g. data/test/utt2intent.")],
    hyp: Annotated[Path, typer.Argument(help="Hypothesis file (utt-id text) from `stk decode` (`--method classify` for acc).")],
    metric: Annotated[Metric, typer.Option(help="wer (WER and CER), bleu (BLEU and chrF) or acc (label accuracy: intent, language ID).")] = Metric.wer,
    keep_case: Annotated[bool, typer.Option(help="WER: do not lowercase.")] = False,
    keep_punct: Annotated[bool, typer.Option(help="WER: do not strip punctuation.")] = False,
    strip_accents: Annotated[bool, typer.Option(help="WER: remove diacritics.")] = False,
    utt2lang: Annotated[Path | None, typer.Option(help="utt2lang file: also score each language.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the scores as JSON.")] = None,
) -> None:
    """Score hypotheses against references; prints one line (and the sacrebleu signature).

    Examples:\n
      stk score data/test/text exp/asr/decode_test/hyp --utt2lang data/test/utt2lang\n
      stk score --metric acc data/test/utt2intent exp/slu/decode_test/hyp --json exp/slu/decode_test/score.json
    """
    from stk.scoring import Normalizer, score_files

    try:
        res = score_files(ref, hyp, metric.value, Normalizer(not keep_case, not keep_punct, strip_accents), utt2lang)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    if metric is Metric.wer:
        typer.echo(f"WER {res['wer']:.2f} CER {res['cer']:.2f} ({res['sents']} sents, {res['words']} words; "
                   f"sub {res['sub']} del {res['del']} ins {res['ins']})")
    elif metric is Metric.acc:
        typer.echo(f"ACC {res['acc']:.2f} ({res['correct']}/{res['sents']} correct)")
        if res.get("unknown_hyp_labels"):
            typer.echo(f"  hypothesis labels not in the references: {', '.join(res['unknown_hyp_labels'])}")
    else:
        typer.echo(f"BLEU {res['bleu']:.2f} chrF {res['chrf']:.2f} ({res['sents']} sents)")
        typer.echo(f"  {res['bleu_signature']}\n  {res['chrf_signature']}")
    for lang, r in res.get("by_lang", {}).items():
        if metric is Metric.wer:
            typer.echo(f"  {lang}: WER {r['wer']:.2f} CER {r['cer']:.2f} ({r['sents']} sents)")
        elif metric is Metric.acc:
            typer.echo(f"  {lang}: ACC {r['acc']:.2f} ({r['correct']}/{r['sents']} correct)")
        else:
            typer.echo(f"  {lang}: BLEU {r['bleu']:.2f} chrF {r['chrf']:.2f} ({r['sents']} sents)")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(res, indent=1, ensure_ascii=False))


def report(
    scores: Annotated[list[Path], typer.Argument(help="score.json files from `stk score --json`; the parent dir name (minus 'decode_') names the test set.")],
    metric: Annotated[Metric, typer.Option(help="Which scores the files hold.")] = Metric.wer,
    out: Annotated[Path | None, typer.Option(help="Write the markdown here (default: stdout).")] = None,
    title: Annotated[str, typer.Option(help="Heading of the section.")] = "Results",
    notes: Annotated[str, typer.Option(help="Text placed under the heading (model, config, decoding).")] = "",
    append: Annotated[bool, typer.Option(help="Append to OUT instead of replacing it.")] = False,
) -> None:
    """Gather score.json files into a markdown results table (RESULTS.md)."""
    from stk.scoring import results_table

    rows = []
    for f in scores:
        res = json.loads(f.read_text())
        rows.append((f.parent.name.removeprefix("decode_"), res))
    text = f"## {title}\n\n" + (f"{notes}\n\n" if notes else "") + results_table(rows, metric.value)
    sig = next((r.get("bleu_signature") for _, r in rows if "bleu_signature" in r), None)
    if sig:
        text += f"\nsacrebleu: BLEU `{sig}`, chrF `{rows[0][1]['chrf_signature']}`\n"
    if out is None:
        typer.echo(text)
    else:
        prev = out.read_text() + "\n" if append and out.exists() else ""
        out.write_text(prev + text)
