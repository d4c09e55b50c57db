"""Batch decoding of a ``wav.scp`` (or data dir) with a packaged model, or of a ``text`` file
through a joint speech–text encoder's text input; utterance classification (``classify``)."""

from __future__ import annotations

import dataclasses
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

TEXT_MAXLEN_RATIO = 2.0  # text input: hypotheses up to 2x the encoded text length unless maxlen_ratio is set


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
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic in (b"RIFF", b"fLaC", b"OggS", b"FORM", b"NIST"):  # one audio file: its stem is the id
        return {p.stem: str(p)}, None
    return read_kv(p, allow_empty_value=False), None


def feature_input(wav_scp: dict[str, str]) -> dict[str, torch.Tensor] | None:
    """The matrices of a Kaldi ``feats.scp`` given as SOURCE (``utt ark:offset`` entries holding 2-D
    float matrices, not audio), else None."""
    import kaldiio

    first = next(iter(wav_scp.values()), "")
    if first.endswith("|") or ".ark:" not in first:
        return None
    try:
        m = kaldiio.load_mat(first)
    except Exception:
        return None
    if isinstance(m, tuple) or getattr(m, "ndim", 0) != 2 or not str(m.dtype).startswith("float"):
        return None  # an audio ark in a wav.scp
    out = {}
    for u, spec in wav_scp.items():
        try:
            out[u] = torch.from_numpy(kaldiio.load_mat(spec).copy()).float()
        except Exception as e:
            raise DataDirError(f"feats.scp: utterance {u!r}: cannot read {spec}: {type(e).__name__}: {e}") from None
    return out


def _device(model) -> torch.device:
    return next(model.parameters()).device


@dataclasses.dataclass
class Fusion:
    """An external LM for decoding (``stk decode --lm``).

    ``lm``: a loaded ``lm`` package (:class:`~stk.models.lm.TransformerLM`), shallow fusion in
    ``attention`` and ``rnnt_beam``; ``ngram``: a KenLM binary or ARPA word LM, for ``ctc_beam``
    (torchaudio's flashlight decoder, lexicon built from the LM's words); ``weight``: LM weight;
    ``word_score``: ``ctc_beam`` word insertion score.
    """

    weight: float = 0.0
    lm: LoadedModel | None = None
    ngram: Path | None = None
    word_score: float = 0.0

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"--lm-weight must be >= 0, got {self.weight}")


def load_fusion(asr: LoadedModel, lm: str | None, weight: float, word_score: float = 0.0, device: str = "cpu") -> Fusion | None:
    """``--lm`` (an ``lm`` package dir / store name, or a ``.arpa``/``.bin`` n-gram file) -> :class:`Fusion`.

    A Transformer LM must use the ASR model's tokenizer (same ``tokenizer.model`` bytes).
    """
    if lm is None:
        if weight:
            raise ValueError("--lm-weight needs --lm")
        return None
    p = Path(lm)
    if p.suffix in (".arpa", ".bin", ".gz") or p.is_file():
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such n-gram LM file")
        return Fusion(weight=weight, ngram=p, word_score=word_score)
    from stk.package import load_package

    pkg = load_package(lm, device=device)
    if pkg.meta.model.name != "lm":
        raise ValueError(f"--lm {lm}: a {pkg.meta.model.name!r} package, not an `lm` (Transformer LM) package")
    if (pkg.path / "tokenizer.model").read_bytes() != (asr.path / "tokenizer.model").read_bytes():
        raise ValueError(f"--lm {lm}: its tokenizer differs from the ASR model's ({asr.path}/tokenizer.model); "
                         "train the LM with the ASR model's tokenizer")
    return Fusion(weight=weight, lm=pkg, word_score=word_score)


def search(lm: LoadedModel, enc: torch.Tensor, enc_lens: torch.Tensor, opts: DecodeOptions,
           fusion: Fusion | None = None) -> list[list[int]]:
    """Token ids of the best hypothesis per utterance from encoder output ``enc`` (B, T', D)."""
    from stk.decode.beam_search import batch_beam_search
    from stk.decode.ctc import ctc_greedy, ctc_prefix_beam_search

    model = lm.model
    ext = fusion.lm.model.scorer() if fusion is not None and fusion.lm is not None and fusion.weight > 0 else None
    lm_weight = fusion.weight if ext is not None else 0.0
    if fusion is not None and fusion.weight > 0:
        want = "ctc_beam" if fusion.ngram is not None else "attention or rnnt_beam"
        if (fusion.ngram is not None) != (opts.method == "ctc_beam") or opts.method not in ("ctc_beam", "attention", "rnnt_beam"):
            raise ValueError(f"this --lm is fused with --method {want}, not {opts.method}")
    if hasattr(model, "classify"):
        raise ValueError(f"this model is an utterance classifier; use --method classify, not {opts.method}")
    with torch.inference_mode():
        if opts.method in ("ctc_greedy", "ctc_beam"):
            lp = model.ctc_log_probs(enc)
            if opts.method == "ctc_greedy":
                return ctc_greedy(lp, enc_lens, blank=BLANK)
            if fusion is not None and fusion.ngram is not None and fusion.weight > 0:
                from stk.decode.ctc import ctc_beam_search_flashlight

                return ctc_beam_search_flashlight(lp, enc_lens, lm.tokenizer, beam_size=opts.beam_size,
                                                  lm=fusion.ngram, lm_weight=fusion.weight,
                                                  word_score=fusion.word_score)
            # without an LM, stk's prefix search: flashlight's lexicon-free decoder would give best-path output
            return ctc_prefix_beam_search(lp, enc_lens, beam_size=opts.beam_size, blank=BLANK)
        if opts.method == "attention":
            if getattr(model, "decoder", None) is None:
                raise ValueError("this model has no attention decoder; use --method ctc_greedy or ctc_beam")
            ctc_lp = model.ctc_log_probs(enc) if (model.ctc is not None and opts.ctc_weight > 0) else None
            hyps = batch_beam_search(
                model.decoder, enc, enc_lens, sos=SOS_EOS, eos=SOS_EOS, beam_size=opts.beam_size,
                ctc_log_probs=ctc_lp, ctc_weight=opts.ctc_weight if ctc_lp is not None else 0.0, blank=BLANK,
                maxlen_ratio=opts.maxlen_ratio, length_penalty=opts.length_penalty, lm=ext, lm_weight=lm_weight,
            )
            return [h[0].tokens for h in hyps]
        if opts.method in ("rnnt_greedy", "rnnt_beam"):
            from stk.decode.rnnt import rnnt_beam_search, rnnt_greedy

            head = getattr(model, "rnnt", None)
            if head is None:
                raise ValueError("this model has no RNN-T head")
            if opts.method == "rnnt_greedy":
                return rnnt_greedy(head, enc, enc_lens)
            kw = {}
            if ext is not None:
                import inspect

                if "lm" not in inspect.signature(rnnt_beam_search).parameters:
                    raise ValueError("rnnt_beam_search has no LM fusion yet")
                kw = {"lm": ext, "lm_weight": lm_weight}
            return rnnt_beam_search(head, enc, enc_lens, beam_size=opts.beam_size, length_normalise=opts.score_norm,
                                    algorithm=opts.rnnt_search, **kw)
    raise ValueError(f"unknown decoding method {opts.method!r}")


def decode_batch(lm: LoadedModel, feats: torch.Tensor, lens: torch.Tensor, opts: DecodeOptions,
                 fusion: Fusion | None = None) -> list[list[int]]:
    """Token ids of the best hypothesis per utterance. ``feats`` (B, T, F)."""
    dev = _device(lm.model)
    with torch.inference_mode():
        enc, enc_lens = lm.model.encode(feats.to(dev), lens.to(dev))
    return search(lm, enc, enc_lens, opts, fusion)


def classify_batch(lm: LoadedModel, feats: torch.Tensor, lens: torch.Tensor) -> list[str]:
    """Label strings (from the package's ``label_vocab``) predicted by a classifier. ``feats`` (B, T, F)."""
    model = lm.model
    if not hasattr(model, "classify"):
        raise ValueError("this model has no classifier head; --method classify needs a `classifier` model")
    names = lm.meta.label_vocab.get(model.label)
    if not names:
        raise ValueError(f"{lm.path}/model.yaml has no label_vocab.{model.label}: re-package it with `stk package`")
    dev = _device(model)
    with torch.inference_mode():
        ids = model.classify(feats.to(dev), lens.to(dev))
    return [names[i] for i in ids.tolist()]


def group_by_length(lengths: dict[str, int], budget: int) -> list[list[str]]:
    """Ids, longest first, grouped so that ``longest length x batch size <= budget`` (at least one per group)."""
    batches: list[list[str]] = []
    for u in sorted(lengths, key=lambda u: -lengths[u]):
        if batches and lengths[batches[-1][0]] * (len(batches[-1]) + 1) <= budget:
            batches[-1].append(u)
        else:
            batches.append([u])
    return batches


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

    from stk.data.audio import iter_utterances

    utts = list(segments) if segments is not None else list(wav_scp)
    rate = lm.meta.fbank.sample_rate
    # feats.scp input, or segments: features up front, each recording read once (stk.data.audio.iter_utterances)
    ready = feature_input(wav_scp) if segments is None else None
    if ready is not None and ready and next(iter(ready.values())).size(1) != lm.meta.fbank.num_mel_bins:
        raise DataDirError(f"feats.scp has {next(iter(ready.values())).size(1)}-dim features; the model expects "
                           f"{lm.meta.fbank.num_mel_bins} fbank bins")
    try:
        if segments is not None:
            ready = {}
            for u, wav, r in iter_utterances(wav_scp, utts, segments, allow_pipes=allow_pipes):
                try:
                    ready[u] = compute_fbank(wav, r, lm.meta.fbank)
                except ValueError as e:
                    raise DataDirError(f"utterance {u!r}: {e}") from None
        frames = ({u: f.size(0) for u, f in ready.items()} if ready is not None else
                  {u: lm.meta.fbank.num_frames(_num_samples(wav_scp, segments, u, allow_pipes, rate)) for u in utts})
    except AudioError as e:
        raise DataDirError(str(e)) from None
    for batch in group_by_length(frames, batch_frames):
        feats = []
        for u in batch:
            if ready is not None:
                f = ready.pop(u)
            else:
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
    allow_pipes: bool = False, progress: bool = True, fusion: Fusion | None = None,
) -> dict[str, str]:
    """Decode every utterance of a ``wav.scp`` or data dir; returns ``{utt: text}`` (``{utt: label}``
    with ``opts.method == "classify"``); ``fusion``: an external LM (:func:`load_fusion`)."""
    from stk.console import progress as _bars

    wav_scp, segments = read_scp_input(source)
    n = len(segments) if segments is not None else len(wav_scp)
    out: dict[str, str] = {}
    with _bars(enabled=progress) as bar:
        task = bar.add_task("decoding", total=n)
        for utts, feats, lens in iter_batches(lm, wav_scp, segments, batch_frames=batch_frames, allow_pipes=allow_pipes):
            if opts.method == "classify":
                hyps = classify_batch(lm, feats, lens)
            else:
                hyps = [lm.tokenizer.decode(ids) for ids in decode_batch(lm, feats, lens, opts, fusion)]
            out.update(zip(utts, hyps))
            bar.advance(task, len(utts))
    return out


def decode_text(
    lm: LoadedModel, text_file: str | Path, opts: DecodeOptions, *, batch_tokens: int = 20000, progress: bool = True,
) -> dict[str, str]:
    """Decode a Kaldi ``text`` file (``utt-id sentence``) fed through the encoder's text input.

    Zero-shot cross-modal transfer: each sentence is tokenized with the package tokenizer, encoded
    by ``model.encode_text`` and searched by the same attention beam search as speech, without
    CTC (the CTC head was trained on speech frames). Hypotheses are at most ``opts.maxlen_ratio``
    (default :data:`TEXT_MAXLEN_RATIO`) times the encoded length. Returns ``{utt: text}``.
    """
    from stk.console import progress as _bars

    if opts.method != "attention":
        raise ValueError(f"text input is decoded with --method attention only, not {opts.method}")
    if opts.ctc_weight > 0:
        log.info("text input: CTC weight %g -> 0 (attention decoder only)", opts.ctc_weight)
        opts = dataclasses.replace(opts, ctc_weight=0.0)
    if opts.maxlen_ratio <= 0:  # by default the search stops at T' tokens: too short for text encodings
        opts = dataclasses.replace(opts, maxlen_ratio=TEXT_MAXLEN_RATIO)
    texts = read_kv(text_file)
    if not texts:
        raise DataDirError(f"{text_file}: no lines to decode")
    ids = {u: lm.tokenizer.encode(t) if t.strip() else [] for u, t in texts.items()}
    out = {u: "" for u, x in ids.items() if not x}
    if out:
        log.warning("%s: %d empty sentence(s) give empty hypotheses: %s", text_file, len(out), ", ".join(list(out)[:5]))
    dev = _device(lm.model)
    with _bars(enabled=progress) as bar:
        task = bar.add_task("decoding text", total=len(ids))
        for utts in group_by_length({u: len(x) for u, x in ids.items() if x}, batch_tokens):
            seqs = pad_list([torch.tensor(ids[u], dtype=torch.long) for u in utts], BLANK)
            lens = torch.tensor([len(ids[u]) for u in utts])
            with torch.inference_mode():
                enc, enc_lens = lm.model.encode_text(seqs.to(dev), lens.to(dev))
            out.update(zip(utts, (lm.tokenizer.decode(h) for h in search(lm, enc, enc_lens, opts))))
            bar.advance(task, len(utts))
    return out
