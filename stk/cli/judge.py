"""``stk judge``: independent judges of generated speech (Whisper base ASR; an optional extra)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

log = logging.getLogger("stk.judge")
app = typer.Typer(help="Independent judges of generated speech (install: bash tools/install_judges.sh).",
                  no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="judge")


@app.command()
def asr(
    data_dir: Annotated[Path, typer.Argument(help="Data dir with a wav.scp of 16 kHz speech (e.g. from `stk synth`).")],
    out: Annotated[Path, typer.Option(help="Write the judge's transcripts here (utt-id text).")],
    lang: Annotated[str | None, typer.Option(help="Language code (en, es, fr, ...); default: the dir's utt2lang.")] = None,
    resample: Annotated[bool, typer.Option(help="Resample audio that is not at 16 kHz instead of refusing it.")] = False,
    threads: Annotated[int, typer.Option(help="CTranslate2 CPU threads.")] = 1,
) -> None:
    """Transcribe a wav.scp with Whisper base (faster-whisper, int8, beam 1) into a Kaldi text file.

    Examples:\n
      stk judge asr exp/vocoder/gl_real_test --lang en --out exp/vocoder/gl_real_test/judge_hyp\n
      stk score data/real_test/text exp/vocoder/gl_real_test/judge_hyp
    """
    from stk.data.kaldi import DataDirError, write_kv
    from stk.judges import JudgeNotInstalled
    from stk.judges.whisper import transcribe_data_dir
    from stk.utils import setup_logging

    setup_logging()
    try:
        hyps = transcribe_data_dir(data_dir, lang=lang, resample=resample, num_threads=threads)
    except (JudgeNotInstalled, ValueError, DataDirError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    write_kv(out, hyps)
    typer.echo(f"{out}: {len(hyps)} transcripts")


def score_speech(ref: Path, hyp: Path | None, metric: str, *, lang: str | None, json_out: Path | None, norm) -> None:
    """``stk score --metric asr-bleu|judge-wer|mcd|pesq|stoi|spk-sim`` (called from ``stk/cli/score.py``)."""
    import json

    from stk.data.kaldi import DataDirError
    from stk.judges import JudgeNotInstalled
    from stk.metrics_speech import JUDGE_METRICS, score_wav_dirs, score_with_judge
    from stk.utils import atomic_write_text, setup_logging

    setup_logging()
    try:
        if hyp is None:
            raise ValueError(f"--metric {metric} needs HYP: a data dir of generated speech (wav.scp)")
        if metric in JUDGE_METRICS:
            res = score_with_judge(ref, hyp, metric, lang=lang, norm=norm,
                                   hyp_out=(json_out.parent / "judge_hyp") if json_out is not None else None)
        else:
            res = score_wav_dirs(ref, hyp, metric)
    except (JudgeNotInstalled, ValueError, DataDirError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    if metric == "judge-wer":
        typer.echo(f"judge WER {res['wer']:.2f} CER {res['cer']:.2f} ({res['sents']} sents, {res['words']} words; "
                   f"sub {res['sub']} del {res['del']} ins {res['ins']}); {res['judge']}")
    elif metric == "asr-bleu":
        typer.echo(f"ASR-BLEU {res['bleu']:.2f} chrF {res['chrf']:.2f} ({res['sents']} sents); {res['judge']}")
        typer.echo(f"  {res['bleu_signature']}")
    else:
        typer.echo(f"{metric.upper()} {res['mean']:.3f} ± {res['ci95']:.3f} (95 % interval, {res['sents']} utts): {res['name']}")
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(res, indent=1, ensure_ascii=False))
