"""``stk score``: WER/CER (jiwer), BLEU/chrF (sacrebleu) or label accuracy of a hypothesis file,
with bootstrap intervals and paired comparisons; ``stk report``/``stk env``: RESULTS.md sections."""

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
    # speech out (stk/metrics_speech.py, judges extra): REF is a text file (asr-bleu, judge-wer) or a
    # reference wav data dir (mcd, pesq, stoi, spk-sim); HYP is a data dir of generated speech
    asr_bleu = "asr-bleu"
    judge_wer = "judge-wer"
    mcd = "mcd"
    pesq = "pesq"
    stoi = "stoi"
    spk_sim = "spk-sim"


class Norm(str, enum.Enum):
    jiwer = "jiwer"
    whisper_basic = "whisper_basic"
    whisper_english = "whisper_english"
    none = "none"


def register(app: typer.Typer) -> None:
    app.command()(score)
    app.command()(report)
    app.command()(env)


def _fmt_ci(ci: list[float]) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def _write_json(path: Path, res: dict) -> None:
    from stk.utils import atomic_write_text

    atomic_write_text(path, json.dumps(res, indent=1, ensure_ascii=False))


def score(
    ref: Annotated[Path, typer.Argument(help="Reference file (utt-id text), e.g. data/test/text; for acc `utt-id label`, e.g. data/test/utt2intent.")],
    hyp: Annotated[Path | None, typer.Argument(help="Hypothesis file (utt-id text) from `stk decode` (`--method classify` for acc). Not with --compare.")] = None,
    metric: Annotated[Metric, typer.Option(help="wer (WER and CER), bleu (BLEU and chrF) or acc (label accuracy: intent, language ID); speech out: asr-bleu / judge-wer (REF text, HYP a wav data dir transcribed by the Whisper judge), mcd / pesq / stoi / spk-sim (REF and HYP wav data dirs).")] = Metric.wer,
    normalizer: Annotated[Norm, typer.Option(help="WER: text normaliser of references and hypotheses: jiwer (lowercase, remove Unicode punctuation), whisper_basic / whisper_english (Whisper's, as in SeamlessM4T's ASR-BLEU; needs the whisper extra) or none. Its name goes into score.json.")] = Norm.jiwer,
    keep_case: Annotated[bool, typer.Option(help="WER, jiwer normaliser: do not lowercase.")] = False,
    keep_punct: Annotated[bool, typer.Option(help="WER, jiwer normaliser: do not strip punctuation.")] = False,
    strip_accents: Annotated[bool, typer.Option(help="WER: remove diacritics.")] = False,
    utt2lang: Annotated[Path | None, typer.Option(help="utt2lang file: also score each language.")] = None,
    bootstrap: Annotated[int, typer.Option(help="Resample the utterances N times for 95 % intervals (WER/CER; BLEU/chrF with sacrebleu's statistics); 0: none. With --compare: the samples of the paired test (default 1000).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap resampling.")] = 12345,
    compare: Annotated[tuple[Path, Path] | None, typer.Option(help="Paired comparison of two hypothesis files HYP_A HYP_B: A - B with its 95 % paired-bootstrap interval; 'no difference' when it contains 0.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the scores as JSON (WER: and a sclite-style result.txt beside it).")] = None,
    result_txt: Annotated[bool, typer.Option(help="WER with --json: write result.txt (sclite-style summary and per-utterance alignments) beside the JSON.")] = True,
    lang: Annotated[str | None, typer.Option(help="asr-bleu/judge-wer: language of the generated speech for the Whisper judge (default: HYP's utt2lang).")] = None,
) -> None:
    """Score hypotheses against references (or compare two systems); prints the scores.

    Examples:\n
      stk score data/test/text exp/asr/decode_test/hyp --utt2lang data/test/utt2lang --bootstrap 1000\n
      stk score --metric acc data/test/utt2intent exp/slu/decode_test/hyp --json exp/slu/decode_test/score.json\n
      stk score data/test/text --compare exp/a/decode_test/hyp exp/b/decode_test/hyp --json cmp.json
    """
    from stk.scoring import Normalizer, bootstrap as boot, compare_files, score_files, sclite_report

    if metric.value in ("asr-bleu", "judge-wer", "mcd", "pesq", "stoi", "spk-sim"):
        from stk.cli.judge import score_speech

        return score_speech(ref, hyp, metric.value, lang=lang, json_out=json_out,
                            norm=Normalizer(not keep_case, not keep_punct, strip_accents, name=normalizer.value))

    try:
        norm = Normalizer(not keep_case, not keep_punct, strip_accents, name=normalizer.value)
        if compare is not None:
            if hyp is not None:
                raise ValueError("give either HYP or --compare HYP_A HYP_B, not both")
            res = compare_files(ref, compare[0], compare[1], metric.value, bootstrap or 1000, norm=norm, seed=seed)
        else:
            if hyp is None:
                raise ValueError("no hypothesis file given (HYP, or --compare HYP_A HYP_B)")
            res = score_files(ref, hyp, metric.value, norm, utt2lang)
            if bootstrap:
                from stk.scoring import _paired

                utts, refs, hyps = _paired(ref, hyp)
                res["bootstrap"] = boot(refs, hyps, metric.value, bootstrap, norm=norm, seed=seed)
                if "by_lang" in res:
                    from stk.data.kaldi import read_kv

                    langs = read_kv(utt2lang)
                    for lang, lr in res["by_lang"].items():
                        ix = [i for i, u in enumerate(utts) if langs.get(u, "unk") == lang]
                        lr["bootstrap"] = boot([refs[i] for i in ix], [hyps[i] for i in ix], metric.value, bootstrap,
                                               norm=norm, seed=seed)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    if compare is not None:
        typer.echo(f"A = {compare[0]}\nB = {compare[1]}  ({res['n']} paired bootstrap samples)")
        for name, r in res.items():
            if isinstance(r, dict) and "diff" in r:
                typer.echo(f"{name.upper()} A {r['a']:.2f} B {r['b']:.2f} A-B {r['diff']:+.2f} "
                           f"95% CI {_fmt_ci(r['ci'])}: {r['verdict'].replace(str(compare[0]), 'A').replace(str(compare[1]), 'B')}"
                           + (f"; A/B {r['ratio']:.2f}x 95% CI {_fmt_ci(r['ratio_ci'])}" if "ratio" in r else ""))
        if json_out is not None:
            _write_json(json_out, res)
        return
    b = res.get("bootstrap", {})
    ci = lambda k: f" {_fmt_ci(b[k])}" if k in b else ""
    if metric is Metric.wer:
        typer.echo(f"WER {res['wer']:.2f}{ci('wer')} CER {res['cer']:.2f}{ci('cer')} ({res['sents']} sents, "
                   f"{res['words']} words; sub {res['sub']} del {res['del']} ins {res['ins']})")
        typer.echo(f"  normalizer: {res['normalizer']}")
    elif metric is Metric.acc:
        typer.echo(f"ACC {res['acc']:.2f}{ci('acc')} ({res['correct']}/{res['sents']} correct)")
        if res.get("unknown_hyp_labels"):
            typer.echo(f"  hypothesis labels not in the references: {', '.join(res['unknown_hyp_labels'])}")
    else:
        typer.echo(f"BLEU {res['bleu']:.2f}{ci('bleu')} chrF {res['chrf']:.2f}{ci('chrf')} ({res['sents']} sents)")
        typer.echo(f"  {res['bleu_signature']}\n  {res['chrf_signature']}")
    if b:
        typer.echo(f"  95% intervals: {b['n']} bootstrap samples over utterances, seed {b['seed']}")
    for lang, r in res.get("by_lang", {}).items():
        if metric is Metric.wer:
            typer.echo(f"  {lang}: WER {r['wer']:.2f} CER {r['cer']:.2f} ({r['sents']} sents)")
        elif metric is Metric.acc:
            typer.echo(f"  {lang}: ACC {r['acc']:.2f} ({r['correct']}/{r['sents']} correct)")
        else:
            typer.echo(f"  {lang}: BLEU {r['bleu']:.2f} chrF {r['chrf']:.2f} ({r['sents']} sents)")
    if json_out is not None:
        _write_json(json_out, res)
        if metric is Metric.wer and result_txt:
            from stk.utils import atomic_write_text

            spk = ref.parent / "utt2spk"
            atomic_write_text(json_out.parent / "result.txt",
                              sclite_report(ref, hyp, norm, utt2spk=spk if spk.exists() else None))


def report(
    scores: Annotated[list[Path], typer.Argument(help="score.json files from `stk score --json`; the parent dir name (minus 'decode_') names the test set.")],
    metric: Annotated[Metric, typer.Option(help="Which scores the files hold.")] = Metric.wer,
    out: Annotated[Path | None, typer.Option(help="Write the markdown here (default: stdout).")] = None,
    title: Annotated[str, typer.Option(help="Heading of the section.")] = "Results",
    notes: Annotated[str, typer.Option(help="Text placed under the heading (model, config, decoding).")] = "",
    append: Annotated[bool, typer.Option(help="Append to OUT instead of replacing it.")] = False,
    env: Annotated[bool, typer.Option("--env/--no-env", help="Start with the environment block (date, stk git hash, torch/torchaudio, machine); default: on unless --append.")] = None,
) -> None:
    """Gather score.json files into a markdown results table (RESULTS.md)."""
    from stk.report import environment_block, results_table

    rows = []
    for f in scores:
        res = json.loads(f.read_text())
        rows.append((f.parent.name.removeprefix("decode_"), res))
    text = f"## {title}\n\n" + (f"{notes}\n\n" if notes else "") + results_table(rows, metric.value)
    sig = next((r.get("bleu_signature") for _, r in rows if "bleu_signature" in r), None)
    if sig:
        text += f"\nsacrebleu: BLEU `{sig}`, chrF `{rows[0][1]['chrf_signature']}`\n"
    if env if env is not None else not append:
        text = environment_block() + "\n" + text
    if out is None:
        typer.echo(text)
    else:
        prev = out.read_text() + "\n" if append and out.exists() else ""
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(prev + text)


def env(
    out: Annotated[Path | None, typer.Option(help="Write the block here (default: stdout).")] = None,
) -> None:
    """Print the environment block of a RESULTS.md: date, stk git hash, torch/torchaudio, machine."""
    from stk.report import environment_block

    text = environment_block()
    if out is None:
        typer.echo(text)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
