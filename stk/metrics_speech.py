"""Measures of generated speech: MCD, PESQ, STOI, speaker similarity, ASR-BLEU and judge WER.

**One MCD** (:data:`MCD_NAME`), the classic mel-cepstral distortion in dB::

    MCD = 10 / ln 10 * sqrt(2 * sum_{d=1..24} (c_d - c'_d)^2)      averaged over DTW-aligned frames

over SPTK mel-cepstra (``pysptk.sp2mc`` of the WORLD CheapTrick envelope, order 24, all-pass
α 0.42 for 16 kHz, 5 ms frames), c0 (energy) excluded, frames aligned by DTW on the same
cepstra, silences kept. fairseq's "MCD" (an RMS over 13 MFCCs) is a different number: never mix them.

PESQ (wide band, ``pesq``) and STOI (``pystoi``) compare a degraded signal with its reference;
speaker similarity is the cosine of resemblyzer embeddings (:mod:`stk.judges.speaker`). ASR-BLEU and
judge WER transcribe generated speech with the Whisper judge (:mod:`stk.judges.whisper`) and score
the transcripts with sacrebleu / jiwer (:mod:`stk.scoring`). The judges are an optional extra.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger("stk.metrics_speech")

SAMPLE_RATE = 16000
MCD_ORDER, MCD_ALPHA, MCD_FRAME_MS = 24, 0.42, 5.0
MCD_NAME = "MCD dB (SPTK mel-cepstrum order 24, α 0.42, c0 excluded, DTW)"
WAV_METRICS = ("mcd", "pesq", "stoi", "spk-sim")
JUDGE_METRICS = ("asr-bleu", "judge-wer")


# --------------------------------------------------------------------------- DTW and MCD


def dtw(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Dynamic time warping of ``x (N, D)`` and ``y (M, D)`` under Euclidean frame distance, steps
    (1,0), (0,1), (1,1). Returns the aligned index pairs ``(i (L,), j (L,))`` from (0, 0) to
    (N-1, M-1) and the total cost. Vectorised over anti-diagonals (O(N·M) memory)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or len(x) == 0 or len(y) == 0:
        raise ValueError(f"dtw: expects non-empty (N, D) and (M, D) with the same D, got {x.shape} and {y.shape}")
    n, m = len(x), len(y)
    cost = np.sqrt(np.maximum(((x**2).sum(1)[:, None] + (y**2).sum(1)[None, :] - 2 * x @ y.T), 0.0))
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for s in range(2, n + m + 1):  # cells with i + j = s (1-based)
        i = np.arange(max(1, s - m), min(n, s - 1) + 1)
        j = s - i
        best = np.minimum(np.minimum(acc[i - 1, j - 1], acc[i - 1, j]), acc[i, j - 1])
        acc[i, j] = cost[i - 1, j - 1] + best
    i, j = n, m
    path = [(i - 1, j - 1)]
    while i > 1 or j > 1:
        steps = ((acc[i - 1, j - 1], i - 1, j - 1), (acc[i - 1, j], i - 1, j), (acc[i, j - 1], i, j - 1))
        _, i, j = min(steps, key=lambda t: t[0])
        path.append((i - 1, j - 1))
    p = np.asarray(path[::-1])
    return p[:, 0], p[:, 1], float(acc[n, m])


def mel_cepstrum(wave: np.ndarray, sample_rate: int = SAMPLE_RATE, *, order: int = MCD_ORDER,
                 alpha: float = MCD_ALPHA, frame_period_ms: float = MCD_FRAME_MS) -> np.ndarray:
    """``(N,)`` samples -> SPTK mel-cepstra ``(T, order + 1)`` (c0 first) of the WORLD envelope."""
    import warnings

    from stk.vocoders import world_analysis

    with warnings.catch_warnings():  # pysptk 1.0.1 imports the deprecated pkg_resources
        warnings.simplefilter("ignore", UserWarning)
        import pysptk

    _, sp, _ = world_analysis(wave, sample_rate, frame_period_ms=frame_period_ms)
    return pysptk.sp2mc(sp, order=order, alpha=alpha)


def mcd_from_cepstra(ref: np.ndarray, syn: np.ndarray, *, align: bool = True) -> float:
    """MCD in dB of two mel-cepstrum sequences ``(N, D)``, ``(M, D)`` (c0 in column 0, excluded);
    DTW-aligned when ``align`` (else the first min(N, M) frames are paired)."""
    a, b = np.asarray(ref, np.float64)[:, 1:], np.asarray(syn, np.float64)[:, 1:]
    if align:
        i, j, _ = dtw(a, b)
        a, b = a[i], b[j]
    else:
        k = min(len(a), len(b))
        a, b = a[:k], b[:k]
    return float(np.mean(10.0 / math.log(10.0) * np.sqrt(2.0 * ((a - b) ** 2).sum(1))))


def mcd(ref: np.ndarray, syn: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """:data:`MCD_NAME` of a synthesised wave against its reference (both ``(N,)`` at ``sample_rate``)."""
    return mcd_from_cepstra(mel_cepstrum(ref, sample_rate), mel_cepstrum(syn, sample_rate))


# --------------------------------------------------------------------------- PESQ, STOI, similarity


def _trim(ref: np.ndarray, deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = min(len(ref), len(deg))
    return np.asarray(ref[:k], np.float64), np.asarray(deg[:k], np.float64)


def pesq_wb(ref: np.ndarray, deg: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Wide-band PESQ (ITU-T P.862.2, ``pesq``) of ``deg`` against ``ref`` (16 kHz)."""
    from stk.judges import require

    pesq = require("pesq", "--metric pesq")
    if sample_rate != 16000:
        raise ValueError(f"wide-band PESQ needs 16 kHz, got {sample_rate} Hz")
    return float(pesq.pesq(sample_rate, *_trim(ref, deg), "wb"))


def stoi(ref: np.ndarray, deg: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Short-time objective intelligibility (``pystoi``, classic, not extended) in [0, 1]."""
    from stk.judges import require

    pystoi = require("pystoi", "--metric stoi")
    return float(pystoi.stoi(*_trim(ref, deg), sample_rate, extended=False))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    den = np.linalg.norm(a) * np.linalg.norm(b)
    if den == 0:
        raise ValueError("cosine of a zero vector")
    return float(a @ b / den)


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its normal-approximation 95 % interval (1.96 standard errors)."""
    if not values:
        raise ValueError("no values")
    v = np.asarray(values, np.float64)
    half = 1.96 * v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else float("nan")
    return float(v.mean()), float(half)


# --------------------------------------------------------------------------- data dirs


def _load_16k(data_dir: Path, check: bool) -> dict[str, np.ndarray]:
    from stk.synthesis import SynthesisError, check_wav, read_wav_data_dir, resample

    out = {}
    for utt, wave, rate in read_wav_data_dir(data_dir, check=False):
        wave = resample(wave, rate, SAMPLE_RATE)
        if check:
            try:
                check_wav(utt, wave, SAMPLE_RATE)
            except SynthesisError as e:
                log.warning("%s: %s", data_dir, e)
        out[utt] = wave
    return out


def score_wav_dirs(ref_dir: str | Path, hyp_dir: str | Path, metric: str) -> dict:
    """Compare generated speech (``hyp_dir``) with reference speech (``ref_dir``), utterance by
    utterance (both data dirs with a ``wav.scp``; any rate, resampled to 16 kHz): ``mcd``, ``pesq``,
    ``stoi`` or ``spk-sim`` (resemblyzer cosine). Every hypothesis needs a reference; references
    without a hypothesis are an error too (a missing output must not improve the mean).
    Returns ``{metric, name, mean, ci95, sents, per_utt}``."""
    ref_dir, hyp_dir = Path(ref_dir), Path(hyp_dir)
    if metric not in WAV_METRICS:
        raise ValueError(f"metric must be one of {', '.join(WAV_METRICS)}, got {metric!r}")
    refs, hyps = _load_16k(ref_dir, check=False), _load_16k(hyp_dir, check=True)
    missing = [u for u in refs if u not in hyps]
    if missing:
        raise ValueError(f"{hyp_dir}/wav.scp: {len(missing)} utterance(s) of {ref_dir} have no generated wav, "
                         f"e.g. {missing[0]!r}")
    extra = [u for u in hyps if u not in refs]
    if extra:
        raise ValueError(f"{hyp_dir}/wav.scp: utterance {extra[0]!r} has no reference in {ref_dir}")
    one: Callable[[np.ndarray, np.ndarray], float]
    if metric == "mcd":
        one, name = mcd, MCD_NAME
    elif metric == "pesq":
        one, name = pesq_wb, "PESQ wide band (P.862.2)"
    elif metric == "stoi":
        one, name = stoi, "STOI (pystoi, classic)"
    else:
        from stk.judges.speaker import ResemblyzerJudge

        judge = ResemblyzerJudge()
        one = lambda r, h: cosine(judge.embed(r), judge.embed(h))  # noqa: E731
        name = "speaker similarity (resemblyzer cosine)"
    per = {}
    for u in refs:
        try:
            per[u] = one(refs[u], hyps[u])
        except ValueError as e:
            raise ValueError(f"{hyp_dir}: utterance {u!r}: {metric}: {e}") from None
    mean, ci = mean_ci95(list(per.values()))
    return {"metric": metric, "name": name, "mean": mean, "ci95": ci, "sents": len(per), "per_utt": per}


def score_with_judge(
    ref_text: str | Path, wav_dir: str | Path, metric: str, *, lang: str | None = None,
    hyp_out: str | Path | None = None, resample: bool = False, num_threads: int = 1, norm=None,
) -> dict:
    """Transcribe ``wav_dir`` with the Whisper judge and score the transcripts against ``ref_text``
    (``utt-id text``): ``asr-bleu`` (sacrebleu BLEU/chrF of judge transcripts vs reference
    translations, both normalised by ``norm``, default lowercase + no punctuation) or ``judge-wer``
    (jiwer WER/CER). ``hyp_out`` keeps the judge's transcripts as a Kaldi text file."""
    from stk.data.kaldi import read_kv, write_kv
    from stk.judges.whisper import transcribe_data_dir
    from stk.scoring import Normalizer, error_rates, translation_scores

    if metric not in JUDGE_METRICS:
        raise ValueError(f"metric must be one of {', '.join(JUDGE_METRICS)}, got {metric!r}")
    refs = read_kv(ref_text)
    scp = Path(wav_dir) / "wav.scp"
    have = read_kv(scp) if scp.exists() else {}
    missing = [u for u in refs if u not in have]
    if missing:
        raise ValueError(f"{wav_dir}/wav.scp: {len(missing)} utterance(s) of {ref_text} have no generated wav, "
                         f"e.g. {missing[0]!r}")
    hyps = transcribe_data_dir(wav_dir, lang=lang, resample=resample, num_threads=num_threads)
    if hyp_out is not None:
        write_kv(hyp_out, hyps)
    utts = list(refs)
    norm = norm or Normalizer()
    r, h = [refs[u] for u in utts], [hyps[u] for u in utts]
    if metric == "judge-wer":
        res = error_rates(r, h, norm)
    else:
        res = translation_scores([norm(x) for x in r], [norm(x) for x in h])
    res.update(metric=metric, judge="whisper-base (faster-whisper int8, beam 1)")
    return res


# --------------------------------------------------------------------------- speaker verification


def eer(scores: np.ndarray, targets: np.ndarray) -> float:
    """Equal error rate in percent of verification trials: ``scores (N,)`` (higher = same speaker)
    and ``targets (N,)`` (1 same speaker, 0 different). The threshold sweep accepts the top-k
    scores for k = 0..N; the EER is the mean of the false-accept and false-reject rates where
    they are closest."""
    s, t = np.asarray(scores, np.float64), np.asarray(targets).astype(bool)
    if s.shape != t.shape or s.ndim != 1:
        raise ValueError(f"scores {s.shape} and targets {t.shape} must be equal 1-D shapes")
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"EER needs target and non-target trials, got {n_pos} and {n_neg}")
    t = t[np.argsort(-s, kind="stable")]
    tp = np.concatenate([[0], np.cumsum(t)])
    fp = np.concatenate([[0], np.cumsum(~t)])
    frr, far = 1.0 - tp / n_pos, fp / n_neg
    k = int(np.argmin(np.abs(frr - far)))
    return float(50.0 * (frr[k] + far[k]))


def verification_trials(emb: dict[str, np.ndarray], utt2spk: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores and same-speaker targets of every pair of distinct utterances in ``emb``."""
    utts = [u for u in emb if u in utt2spk]
    if len(utts) < 2:
        raise ValueError("need at least 2 utterances with a speaker for verification trials")
    x = np.stack([emb[u] for u in utts]).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)
    spk = np.array([utt2spk[u] for u in utts])
    iu = np.triu_indices(len(utts), k=1)
    return (x @ x.T)[iu], (spk[:, None] == spk[None, :])[iu].astype(np.int64)
