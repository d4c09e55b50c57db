"""``stk decode``: transcribe, translate or classify a wav.scp with a packaged model (or decode a
text file through a joint speech–text encoder)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from stk.decode import DecodeMethod as Method
from stk.decode import RnntSearch

log = logging.getLogger("stk.decode")


def register(app: typer.Typer) -> None:
    app.command()(decode)


def decode(
    source: Annotated[Path | None, typer.Argument(help="A Kaldi wav.scp, a data dir (wav.scp + optional segments), a feats.scp (fbank matrices from `stk data fbank`, CMVN applied here) or one audio file (its name is the id). Not with --text.")] = None,
    model: Annotated[str, typer.Option(help="Package directory, or a name in the model store ($STK_MODEL_STORE, default ~/.cache/stk/models).")] = ...,
    text: Annotated[Path | None, typer.Option(help="Decode a Kaldi text file (`utt-id sentence`) instead of audio: each sentence goes through the encoder's text input (joint speech-text encoders, e.g. mSLAM) and the attention decoder, without CTC.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write `utt-id text` lines (`utt-id label` with classify) here (default: stdout).")] = None,
    method: Annotated[Method | None, typer.Option(help="Search: attention (joint CTC/attention beam), ctc_greedy, ctc_beam, rnnt_greedy, rnnt_beam; classify for utterance classifiers. Default: the package's.")] = None,
    beam_size: Annotated[int | None, typer.Option(help="Beam size.")] = None,
    ctc_weight: Annotated[float | None, typer.Option(help="CTC weight in joint attention decoding (0 with --text).")] = None,
    length_penalty: Annotated[float | None, typer.Option(help="Length bonus per token (attention search).")] = None,
    score_norm: Annotated[bool | None, typer.Option("--score-norm/--no-score-norm", help="rnnt_beam: rank hypotheses by length-normalised log-probability (torchaudio's default) or by raw log-probability, which favours short, deleting hypotheses. Default: the package's.")] = None,
    rnnt_search: Annotated[RnntSearch | None, typer.Option(help="rnnt_beam: modified (stk's modified beam search, batched over utterances, one symbol per frame; LM fusion) or torchaudio (RNNTBeamSearch, one utterance at a time). Default: the package's (modified).")] = None,
    maxlen_ratio: Annotated[float | None, typer.Option(help="Attention search: at most RATIO x encoder length tokens (0: the encoder length; with --text 0 means 2.0).")] = None,
    batch_frames: Annotated[int, typer.Option(help="Padded feature frames per batch (padded tokens with --text).")] = 20000,
    allow_pipes: Annotated[bool, typer.Option(help="Run wav.scp pipe commands (`cmd |`). Off by default: they execute shell commands.")] = False,
    lm: Annotated[str | None, typer.Option(help="External LM: an `lm` package dir or store name (Transformer LM: shallow fusion in attention and rnnt_beam), or an ARPA word n-gram file (ctc_beam, e.g. from `stk ngram`).")] = None,
    lm_weight: Annotated[float, typer.Option(help="LM weight (log-probability scale) with --lm.")] = 0.0,
    word_score: Annotated[float, typer.Option(help="ctc_beam with an n-gram --lm: score added per word (word insertion bonus).")] = 0.0,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """Decode every utterance of SOURCE (or sentence of --text FILE) into `utt-id text` lines.

    Lines come in sorted id order. With --method classify a classifier writes `utt-id label`.

    Examples:\n
      stk decode --model maestro data/test/wav.scp\n
      stk decode --model exp/asr/package data/test --method ctc_greedy --out hyp.txt\n
      stk decode --model exp/slu/package data/test --method classify --out hyp.intent\n
      stk decode --model exp/st/package --text data/test/text --out hyp.en   (zero-shot text input)\n
      stk decode --model exp/asr/package data/test --method attention --lm exp/lm/package --lm-weight 0.3\n
      stk decode --model exp/asr/package data/test --method ctc_beam --lm lm.arpa --lm-weight 0.5 --word-score 1
    """
    from stk.config import ConfigError
    from stk.data.audio import AudioError
    from stk.data.kaldi import DataDirError, write_kv
    from stk.inference import decode_scp, decode_text, load_fusion
    from stk.package import load_package, override_decode
    from stk.utils import set_threads

    if (source is None) == (text is None):
        typer.echo("error: give either SOURCE (a wav.scp or data dir) or --text FILE (a Kaldi text file), "
                   + ("not both" if source is not None else "none was given"), err=True)
        raise typer.Exit(1)
    set_threads()
    try:
        asr = load_package(model, device=device)
        opts = override_decode(asr.meta.decode, method=method.value if method else None, beam_size=beam_size,
                               ctc_weight=ctc_weight, length_penalty=length_penalty, maxlen_ratio=maxlen_ratio,
                               score_norm=score_norm, rnnt_search=rnnt_search.value if rnnt_search else None)
        fusion = load_fusion(asr, lm, lm_weight, word_score, device=device)
        if text is not None:
            if fusion is not None:
                raise ValueError("--lm is not used with --text")
            hyps = decode_text(asr, text, opts, batch_tokens=batch_frames, progress=sys.stderr.isatty())
        else:
            hyps = decode_scp(asr, source, opts, batch_frames=batch_frames, allow_pipes=allow_pipes,
                              progress=sys.stderr.isatty(), fusion=fusion)
    except (ConfigError, DataDirError, AudioError, ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    if out is not None:
        write_kv(out, hyps)
        log.info("%d hypotheses -> %s", len(hyps), out)
    else:
        for u in sorted(hyps, key=lambda s: s.encode()):
            sys.stdout.write(f"{u} {hyps[u]}\n")
