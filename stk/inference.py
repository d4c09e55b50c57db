"""Batch decoding of a ``wav.scp`` (or data dir) with a packaged model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import torch

from stk.data.audio import load_segment
from stk.data.dataset import pad_list
from stk.data.kaldi import DataDirError, load_data_dir, read_kv
from stk.features.fbank import compute_fbank
from stk.package import DecodeOptions, LoadedModel
from stk.tokenizer import BLANK, SOS_EOS

log = logging.getLogger("stk.decode")


def read_scp_input(path: str | Path) -> tuple[dict[str, str], dict[str, tuple[str, float, float]] | None]:
    """``wav.scp`` (a file) or a data dir (its ``wav.scp`` and optional ``segments``)."""
    p = Path(path)
    if p.is_dir():
        d = load_data_dir(p)
        if d.wav_scp is None:
            raise DataDirError(f"{p}: no wav.scp")
        return d.wav_scp, d.segments
    if not p.exists():
        raise DataDirError(f"{p}: no such wav.scp or data dir")
    return read_kv(p, allow_empty_value=False), None


def decode_batch(lm: LoadedModel, feats: torch.Tensor, lens: torch.Tensor, opts: DecodeOptions) -> list[list[int]]:
    """Token ids of the best hypothesis per utterance. ``feats`` (B, T, F)."""
    from stk.decode.beam_search import batch_beam_search
    from stk.decode.ctc import ctc_greedy, ctc_prefix_beam_search

    model = lm.model
    with torch.inference_mode():
        enc, enc_lens = model.encode(feats, lens)
        if opts.method in ("ctc_greedy", "ctc_beam"):
            lp = model.ctc_log_probs(enc)
            if opts.method == "ctc_greedy":
                return ctc_greedy(lp, enc_lens, blank=BLANK)
            return ctc_prefix_beam_search(lp, enc_lens, beam_size=opts.beam_size, blank=BLANK)
        if opts.method == "attention":
            if model.decoder is None:
                raise ValueError("this model has no attention decoder; use --method ctc_greedy or ctc_beam")
            ctc_lp = model.ctc_log_probs(enc) if (model.ctc is not None and opts.ctc_weight > 0) else None
            hyps = batch_beam_search(
                model.decoder, enc, enc_lens, sos=SOS_EOS, eos=SOS_EOS, beam_size=opts.beam_size,
                ctc_log_probs=ctc_lp, ctc_weight=opts.ctc_weight if ctc_lp is not None else 0.0, blank=BLANK,
                maxlen_ratio=opts.maxlen_ratio, length_penalty=opts.length_penalty,
            )
            return [h[0].tokens for h in hyps]
        if opts.method in ("rnnt_greedy", "rnnt_beam"):
            from stk.decode.rnnt import rnnt_beam_search, rnnt_greedy

            head = getattr(model, "rnnt", None)
            if head is None:
                raise ValueError("this model has no RNN-T head")
            if opts.method == "rnnt_greedy":
                return rnnt_greedy(head, enc, enc_lens)
            return rnnt_beam_search(head, enc, enc_lens, beam_size=opts.beam_size)
    raise ValueError(f"unknown decoding method {opts.method!r}")


def _num_samples(wav_scp: dict[str, str], segments, utt: str, allow_pipes: bool, rate: int) -> int:
    from stk.data.audio import read_audio_info

    if segments is not None:
        _, s, e = segments[utt]
        return int((e - s) * rate)
    r, n = read_audio_info(wav_scp[utt], allow_pipes=allow_pipes)
    return int(n * rate / r)


def iter_batches(
    lm: LoadedModel, wav_scp: dict[str, str], segments, *, batch_frames: int, allow_pipes: bool
) -> Iterator[tuple[list[str], torch.Tensor, torch.Tensor]]:
    """Features of every utterance, longest first, grouped under a padded-frames budget."""
    from stk.data.audio import AudioError

    utts = list(segments) if segments is not None else list(wav_scp)
    rate = lm.meta.fbank.sample_rate
    try:
        frames = {u: lm.meta.fbank.num_frames(_num_samples(wav_scp, segments, u, allow_pipes, rate)) for u in utts}
    except AudioError as e:
        raise DataDirError(str(e)) from None
    order = sorted(utts, key=lambda u: -frames[u])
    batches: list[list[str]] = []
    for u in order:
        if batches and frames[batches[-1][0]] * (len(batches[-1]) + 1) <= batch_frames:
            batches[-1].append(u)
        else:
            batches.append([u])
    for batch in batches:
        feats = []
        for u in batch:
            wav, r = load_segment(wav_scp, u, segments, allow_pipes=allow_pipes)
            try:
                f = compute_fbank(wav, r, lm.meta.fbank)
            except ValueError as e:
                raise DataDirError(f"utterance {u!r}: {e}") from None
            if f.size(0) < lm.model.min_input_length():
                raise DataDirError(
                    f"utterance {u!r} has {f.size(0)} frames; the encoder needs at least {lm.model.min_input_length()}"
                )
            feats.append(lm.cmvn(f) if lm.cmvn is not None else f)
        yield batch, pad_list(feats, 0.0), torch.tensor([f.size(0) for f in feats])


def decode_scp(
    lm: LoadedModel, source: str | Path, opts: DecodeOptions, *, batch_frames: int = 20000,
    allow_pipes: bool = False, progress: bool = True,
) -> dict[str, str]:
    """Decode every utterance of a ``wav.scp`` or data dir; returns ``{utt: text}``."""
    from rich.progress import Progress

    wav_scp, segments = read_scp_input(source)
    n = len(segments) if segments is not None else len(wav_scp)
    out: dict[str, str] = {}
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("decoding", total=n)
        for utts, feats, lens in iter_batches(lm, wav_scp, segments, batch_frames=batch_frames, allow_pipes=allow_pipes):
            for u, ids in zip(utts, decode_batch(lm, feats, lens, opts)):
                out[u] = lm.tokenizer.decode(ids)
            bar.advance(task, len(utts))
    return out
