"""CTC forced alignment: per-token durations in encoder frames (MAESTRO's text upsampling).

MAESTRO (Chen et al., 2022) repeats each text token embedding by its duration so that the text
sequence lines up with the speech encoder output. For paired speech–text those durations come
from a CTC model trained on the paired data: :func:`ctc_token_durations` runs Viterbi forced
alignment (``torchaudio.functional.forced_align``) on one utterance's CTC log-probabilities and
turns the frame-level path into one duration per token:

- a token owns the frames from its first emitted frame up to the next token's first frame
  (its repeated frames and the blanks after it); leading blank frames go to the first token;
- so every frame belongs to exactly one token, every duration is ``>= 1`` and they sum to ``T``.

:func:`align_data_dir` does that for every utterance of a data dir with a packaged CTC model
(``stk align``), and :func:`write_durations` writes the Kaldi-style ``durations`` file
(``utt-id d1 d2 … dN``, N = tokens of the transcript with the package tokenizer) and its
``durations.info`` JSON sidecar (``subsampling``, ``frame_shift_ms``, ``tokenizer`` sha256 …) so a
consumer can check that the frame rate and the tokenizer match its own. Training streams load the
file with ``int_seqs: {durations: durations}`` (:class:`~stk.data.dataset.KaldiDataset`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import torch

from stk.data.kaldi import DataDirError, load_data_dir, write_kv
from stk.utils import atomic_write_text, file_sha256

log = logging.getLogger("stk.align")


def min_ctc_frames(tokens: Sequence[int]) -> int:
    """Frames a CTC path for ``tokens`` needs: one per token plus a blank between equal neighbours."""
    return len(tokens) + sum(1 for a, b in zip(tokens, tokens[1:]) if a == b)


def path_to_durations(path: Sequence[int], num_tokens: int, blank: int = 0) -> list[int]:
    """A frame-level CTC path (one label per frame, blanks included) -> one duration per token.

    A token starts at a non-blank frame whose previous frame has a different label (blank or
    another token): CTC collapses equal neighbours, so a repeated token is two tokens only with a
    blank between them. Token ``i`` owns frames ``[start_i, start_{i+1})``; the first token also
    owns the leading blanks and the last one the trailing frames.
    """
    starts = [t for t, lab in enumerate(path) if lab != blank and (t == 0 or path[t - 1] != lab)]
    if len(starts) != num_tokens:
        raise ValueError(f"the alignment path has {len(starts)} token(s), expected {num_tokens}")
    if not starts:
        return []
    bounds = [0, *starts[1:], len(path)]
    return [bounds[i + 1] - bounds[i] for i in range(num_tokens)]


def ctc_token_durations(log_probs: torch.Tensor, tokens: Sequence[int], blank: int = 0) -> list[int]:
    """Per-token durations (in frames of ``log_probs``) of the Viterbi CTC alignment of ``tokens``.

    Args:
        log_probs: ``(T, V)`` CTC log-probabilities of one utterance (no padding).
        tokens: the transcript's token ids (no blanks).
        blank: the blank id.

    Returns ``len(tokens)`` durations, each ``>= 1``, summing to ``T`` (see the module docstring for
    which frames a token owns). Raises ValueError when there are no tokens, a token is the blank or
    out of the vocabulary, or ``T`` is shorter than the tokens plus the blanks that repeated
    tokens need (the alignment is impossible).
    """
    import torchaudio.functional as AF

    if log_probs.dim() != 2:
        raise ValueError(f"log_probs must be (T, V), got shape {tuple(log_probs.shape)}")
    tokens = [int(t) for t in tokens]
    if not tokens:
        raise ValueError("cannot align an empty token sequence")
    t_len, vocab = log_probs.shape
    bad = [t for t in tokens if t == blank or not 0 <= t < vocab]
    if bad:
        raise ValueError(f"token id {bad[0]} is the blank ({blank}) or outside the vocabulary of {vocab}")
    need = min_ctc_frames(tokens)
    if t_len < need:
        raise ValueError(
            f"alignment impossible: {t_len} frame(s) for {len(tokens)} token(s) "
            f"(+{need - len(tokens)} blank(s) between repeated tokens) needs at least {need}")
    lp = log_probs.detach().float().cpu().unsqueeze(0)
    targets = torch.tensor([tokens], dtype=torch.int32)
    path, _ = AF.forced_align(lp, targets, blank=blank)
    return path_to_durations(path[0].tolist(), len(tokens), blank)


def encoder_subsampling(model: Any, input_dim: int = 80) -> int:
    """The encoder's time subsampling factor (``encoder.subsampling.factor``; otherwise measured
    by encoding a dummy input and comparing lengths)."""
    factor = getattr(getattr(getattr(model, "encoder", None), "subsampling", None), "factor", None)
    if isinstance(factor, int) and factor > 0:
        return factor
    dev = next(model.parameters()).device
    n = max(400, 8 * model.min_input_length())
    with torch.inference_mode():
        _, lens = model.encode(torch.zeros(1, n, input_dim, device=dev), torch.tensor([n], device=dev))
    return max(1, round(n / max(1, int(lens[0]))))


@dataclasses.dataclass
class AlignResult:
    """``durations``: ``{utt: [d1 … dN]}``; ``skipped``: ``{reason: [utt …]}``; ``info``: the sidecar."""

    durations: dict[str, list[int]]
    skipped: dict[str, list[str]]
    info: dict[str, Any]

    @property
    def num_skipped(self) -> int:
        return sum(len(v) for v in self.skipped.values())


def align_data_dir(
    lm: Any, data_dir: str | Path, *, batch_frames: int = 20000, allow_pipes: bool = False, progress: bool = False,
) -> AlignResult:
    """CTC durations for every utterance of a data dir (``wav.scp`` [+ ``segments``] and ``text``).

    ``lm`` is a :class:`~stk.package.LoadedModel` with a CTC head. Each transcript is tokenized
    with the package tokenizer; features are computed as ``stk decode`` does (fbank + the
    package's CMVN), batched longest first under ``batch_frames`` padded frames. Utterances with
    no or an empty transcript, too short for the encoder, or with fewer encoder frames than the
    alignment needs are skipped and logged by id, with a count.
    """
    from stk.console import progress as _bars

    from stk.data.audio import AudioError, RecordingCache, load_segment
    from stk.data.dataset import pad_list
    from stk.features.fbank import compute_fbank
    from stk.inference import _num_samples, group_by_length
    from stk.tokenizer import BLANK

    model = lm.model
    if getattr(model, "ctc", None) is None or not hasattr(model, "ctc_log_probs"):
        raise ValueError(f"{lm.path}: this model has no CTC head; alignment needs a CTC model (ctc_weight > 0)")
    d = load_data_dir(data_dir)
    if d.wav_scp is None:
        raise DataDirError(f"{data_dir}: no wav.scp")
    if d.text is None:
        raise DataDirError(f"{data_dir}: no text (transcripts to align)")
    utts = d.utt_ids
    skipped: dict[str, list[str]] = {
        "without a transcript line": [], "with an empty transcript": [], "too short for the encoder": [],
        "with fewer encoder frames than the alignment needs": [],
    }
    ids: dict[str, list[int]] = {}
    for u in utts:
        if u not in d.text:
            skipped["without a transcript line"].append(u)
            continue
        toks = lm.tokenizer.encode(d.text[u]) if d.text[u].strip() else []
        if not toks:
            skipped["with an empty transcript"].append(u)
            continue
        ids[u] = toks
    fb = lm.meta.fbank
    try:
        frames = {u: fb.num_frames(_num_samples(d.wav_scp, d.segments, u, allow_pipes, fb.sample_rate)) for u in ids}
    except AudioError as e:
        raise DataDirError(str(e)) from None
    except KeyError as e:
        raise DataDirError(f"{data_dir}: utterance {e.args[0]!r} is not in wav.scp") from None
    min_len = model.min_input_length()
    for u in [u for u in ids if frames[u] < min_len]:
        skipped["too short for the encoder"].append(u)
        del frames[u]
    dev = next(model.parameters()).device
    out: dict[str, list[int]] = {}
    recordings = RecordingCache()  # segments of one pipe/ark recording: one decode of it
    with _bars(enabled=progress) as bar:
        task = bar.add_task("aligning", total=len(frames))
        for batch in group_by_length(frames, batch_frames):
            feats = []
            for u in batch:
                wav, rate = load_segment(d.wav_scp, u, d.segments, allow_pipes=allow_pipes, cache=recordings)
                try:
                    f = compute_fbank(wav, rate, fb)
                except ValueError as e:
                    raise DataDirError(f"utterance {u!r}: {e}") from None
                feats.append(lm.cmvn(f) if lm.cmvn is not None else f)
            lens = torch.tensor([f.size(0) for f in feats])
            with torch.inference_mode():
                enc, enc_lens = model.encode(pad_list(feats, 0.0).to(dev), lens.to(dev))
                lp = model.ctc_log_probs(enc).float().cpu()
            for b, u in enumerate(batch):
                n = int(enc_lens[b])
                if n < min_ctc_frames(ids[u]):
                    skipped["with fewer encoder frames than the alignment needs"].append(u)
                    continue
                out[u] = ctc_token_durations(lp[b, :n], ids[u], blank=BLANK)
            bar.advance(task, len(batch))
    for what, us in skipped.items():
        if us:
            log.warning("%s: skipped %d utterance(s) %s: %s%s", data_dir, len(us), what,
                        ", ".join(us[:5]), " …" if len(us) > 5 else "")
    sub = encoder_subsampling(model, fb.num_mel_bins)
    info = {
        "subsampling": sub,
        "frame_shift_ms": fb.frame_shift_ms * sub,
        "tokenizer": file_sha256(lm.tokenizer.path),
        "tokenizer_path": str(lm.tokenizer.path),
        "model": str(lm.path),
        "num_utts": len(out),
        "num_skipped": sum(len(v) for v in skipped.values()),
    }
    log.info("%s: aligned %d utterance(s), skipped %d; durations in encoder frames of %g ms (subsampling %d)",
             data_dir, len(out), info["num_skipped"], info["frame_shift_ms"], sub)
    return AlignResult(out, {k: v for k, v in skipped.items() if v}, info)


def write_durations(path: str | Path, durations: dict[str, list[int]], info: dict[str, Any] | None = None) -> Path:
    """Write ``utt-id d1 … dN`` lines (sorted ids) to ``path`` and ``info`` as JSON to ``path.info``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_kv(path, {u: " ".join(map(str, ds)) for u, ds in durations.items()})
    if info is not None:
        atomic_write_text(path.with_name(path.name + ".info"), json.dumps(info, indent=2) + "\n")
    return path
