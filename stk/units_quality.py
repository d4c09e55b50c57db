"""Unit quality: HuBERT's cluster purity, label (char/phone) purity and PNMI against frame labels.

Frame labels come from a CTC forced alignment (``stk align``'s ``durations``); intervals are
delete-one jackknife 95 % intervals over utterances (:func:`jackknife_ci`), and two systems are
compared leaving the same utterance out of both (:func:`compare_units`). (A bootstrap resample
repeats utterances, which inflates the plug-in mutual information, so its basic interval fell
below the estimate; the jackknife repeats none.) The units themselves: :mod:`stk.units`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from stk.data.kaldi import DataDirError, read_kv
from stk.units import UnitsModel, dedup, iter_features, read_int_file, write_int_file
from stk.utils import file_sha256


def frame_labels(data_dir: str | Path, rate: int, durations: str | Path | None = None,
                 tokenizer: str | Path | None = None) -> dict[str, list[str]]:
    """Frame labels at ``rate`` frames/s from ``stk align``'s ``durations`` (+ ``durations.info``).

    Each alignment token owns its frames (see :mod:`stk.align`); a unit frame ``j`` takes the label
    of the alignment frame holding its centre ``(j + ½) / rate``. Labels are the tokenizer's pieces
    of the transcript (characters for a char tokenizer); frames past the alignment are dropped.
    """
    from stk.tokenizer import Tokenizer

    data_dir = Path(data_dir)
    dpath = Path(durations) if durations is not None else data_dir / "durations"
    ipath = dpath.with_name(dpath.name + ".info")
    if not dpath.exists() or not ipath.exists():
        raise DataDirError(f"{dpath}(.info) not found: run `stk align {data_dir} --model CTC_PACKAGE` first")
    info = json.loads(ipath.read_text())
    tok_path = Path(tokenizer) if tokenizer is not None else Path(info["tokenizer_path"])
    if not tok_path.exists():
        raise DataDirError(f"{ipath}: tokenizer {tok_path} not found (pass --tokenizer)")
    if file_sha256(tok_path) != info.get("tokenizer"):
        raise DataDirError(f"{tok_path} is not the tokenizer {dpath} was aligned with (sha256 differs)")
    tok = Tokenizer(tok_path)
    text = read_kv(data_dir / "text")
    shift = float(info["frame_shift_ms"]) / 1000.0
    out = {}
    for u, ds in read_int_file(dpath).items():
        pieces = tok.pieces(text.get(u, ""))
        if len(pieces) != len(ds):
            raise DataDirError(f"{dpath}: utterance {u!r} has {len(ds)} durations for {len(pieces)} tokens")
        frame_lab = [p for p, d in zip(pieces, ds) for _ in range(d)]
        n = int(len(frame_lab) * shift * rate)
        out[u] = [frame_lab[min(len(frame_lab) - 1, int((j + 0.5) / rate / shift))] for j in range(n)]
    return out


def contingency(labels: list[int], codes: list[int], num_labels: int, k: int) -> np.ndarray:
    """Joint counts ``(num_labels, k)``."""
    c = np.zeros((num_labels, k), dtype=np.int64)
    np.add.at(c, (np.asarray(labels, dtype=np.int64), np.asarray(codes, dtype=np.int64)), 1)
    return c


def quality_from_counts(c: np.ndarray) -> dict[str, float]:
    """HuBERT's measures from joint counts ``c[y, z]`` (label y, code z).

    ``label_purity`` = Σ_z max_y p(y, z) (phone/char purity), ``cluster_purity`` = Σ_y max_z p(y, z),
    ``pnmi`` = I(Y; Z) / H(Y), and ``perplexity`` = exp H(Z) (nats) of the code usage.
    """
    n = c.sum()
    if n == 0:
        raise ValueError("no frames")
    p = c / n
    py, pz = p.sum(1), p.sum(0)
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / (py[:, None] * pz[None, :])[nz])).sum())
    hy = float(-(py[py > 0] * np.log(py[py > 0])).sum())
    hz = float(-(pz[pz > 0] * np.log(pz[pz > 0])).sum())
    return {"label_purity": float(p.max(0).sum()), "cluster_purity": float(p.max(1).sum()),
            "pnmi": mi / hy if hy > 0 else 0.0, "perplexity": math.exp(hz), "frames": int(n)}


QUALITY_KEYS = ("label_purity", "cluster_purity", "pnmi", "perplexity")


def _utt_counts(labels: dict[str, list[str]], codes: dict[str, list[int]], vocab: dict[str, int], k: int,
                utts: list[str]) -> np.ndarray:
    """Per-utterance joint counts, flattened: ``(len(utts), len(vocab) · k)`` (labels and codes cut to
    the shorter of the two)."""
    rows = []
    for u in utts:
        n = min(len(labels[u]), len(codes[u]))
        c = np.zeros((len(vocab), k), dtype=np.int64)
        np.add.at(c, (np.asarray([vocab[x] for x in labels[u][:n]], dtype=np.int64),
                      np.asarray(codes[u][:n], dtype=np.int64)), 1)
        rows.append(c.ravel())
    return np.stack(rows)


def _jackknife(flats: list[np.ndarray], shapes: list[tuple[int, int]]) -> list[list[dict[str, float]]]:
    """Quality measures with each utterance left out in turn (delete-one jackknife; the same
    utterance left out of every system, so differences stay paired): system ``i``'s per-utterance
    counts ``flats[i]`` ``(n, L·k)`` reshape to ``shapes[i]``."""
    n = flats[0].shape[0]
    totals = [f.sum(0) for f in flats]
    out: list[list[dict[str, float]]] = [[] for _ in flats]
    for j in range(n):
        for i, (f, t, shape) in enumerate(zip(flats, totals, shapes)):
            out[i].append(quality_from_counts((t - f[j]).reshape(shape)))
    return out


def jackknife_ci(estimate: float, leave_one_out: list[float] | np.ndarray, z: float = 1.959964) -> dict[str, Any]:
    """Delete-one jackknife over utterances: standard error ``√((n−1)/n · Σ(θ₍ᵢ₎ − θ̄)²)``, the 95 %
    normal interval ``θ ± 1.96 se`` (it always contains θ) and the jackknife estimate of the
    plug-in bias ``(n−1)(θ̄ − θ)``.

    No utterance is repeated, unlike a bootstrap resample, so the upward bias of the plug-in mutual
    information on a resample with duplicates does not shift the interval.
    """
    t = np.asarray(leave_one_out, dtype=np.float64)
    n = t.size
    if n < 2:
        raise ValueError("the jackknife needs at least 2 utterances")
    se = float(np.sqrt((n - 1) / n * ((t - t.mean()) ** 2).sum()))
    return {"ci95": [estimate - z * se, estimate + z * se], "se": se, "bias": float((n - 1) * (t.mean() - estimate))}


def evaluate_units(um: UnitsModel, data_dir: str | Path, *, rate: int | None = None,
                   durations: str | Path | None = None, tokenizer: str | Path | None = None,
                   intervals: bool = True, codes_out: str | Path | None = None) -> dict[str, Any]:
    """Unit quality of ``um`` on ``data_dir`` against CTC-alignment frame labels (see the module docstring).

    ``codes_out``: also write the frame units (not deduplicated) of the evaluated utterances, for
    :func:`compare_units`. ``intervals``: add ``KEY_ci95`` (95 %), ``KEY_se`` and
    ``KEY_jackknife_bias`` for each measure (:func:`jackknife_ci`).
    """
    rate = rate or um.info.rate
    labels = frame_labels(data_dir, rate, durations, tokenizer)
    codes: dict[str, list[int]] = {}
    n_units = n_frames = 0
    for u, f in iter_features(um.extractor, data_dir, rate=rate, utts=sorted(labels), cmn=um.info.cmn):
        c = um.units(f).tolist()
        n_frames += len(c)
        n_units += len(dedup(c)[0])
        if min(len(labels[u]), len(c)) > 0:
            codes[u] = c
    if not codes:
        raise DataDirError(f"{data_dir}: no aligned utterance to evaluate")
    if codes_out is not None:
        write_int_file(codes_out, codes)
    utts = sorted(codes)
    vocab = {x: i for i, x in enumerate(sorted({x for u in utts for x in labels[u]}))}
    k = um.info.k
    flat = _utt_counts(labels, codes, vocab, k, utts)
    res: dict[str, Any] = quality_from_counts(flat.sum(0).reshape(len(vocab), k))
    if intervals and len(utts) > 1:
        loo = _jackknife([flat], [(len(vocab), k)])[0]
        for key in QUALITY_KEYS:
            j = jackknife_ci(res[key], [x[key] for x in loo])
            res[f"{key}_ci95"], res[f"{key}_se"], res[f"{key}_jackknife_bias"] = j["ci95"], j["se"], j["bias"]
        res["interval"] = "delete-one jackknife over utterances, estimate ± 1.96 se"
    res.update(units_per_second=n_units / (n_frames / rate), num_utts=len(utts), num_labels=len(vocab), k=k,
               rate=rate, features=um.info.features, layer=um.info.layer, model=str(um.path))
    return res


def compare_units(data_dir: str | Path, codes_a: str | Path, codes_b: str | Path, *, rate: int,
                  durations: str | Path | None = None, tokenizer: str | Path | None = None) -> dict[str, Any]:
    """Paired comparison of two systems' frame units (``evaluate_units(codes_out=…)`` files at ``rate``)
    on the utterances both have: each measure for A and B and ``B − A`` with a paired delete-one
    jackknife 95 % interval over utterances (the same utterance left out of both systems; an
    interval that excludes 0 is a difference)."""
    labels = frame_labels(data_dir, rate, durations, tokenizer)
    ca, cb = read_int_file(codes_a), read_int_file(codes_b)
    utts = sorted(set(ca) & set(cb) & set(labels))
    utts = [u for u in utts if min(len(labels[u]), len(ca[u]), len(cb[u])) > 0]
    if not utts:
        raise DataDirError(f"{data_dir}: no utterance in common between {codes_a} and {codes_b}")
    vocab = {x: i for i, x in enumerate(sorted({x for u in utts for x in labels[u]}))}
    ka = max(max(ca[u]) for u in utts) + 1
    kb = max(max(cb[u]) for u in utts) + 1
    fa, fb = _utt_counts(labels, ca, vocab, ka, utts), _utt_counts(labels, cb, vocab, kb, utts)
    qa = quality_from_counts(fa.sum(0).reshape(len(vocab), ka))
    qb = quality_from_counts(fb.sum(0).reshape(len(vocab), kb))
    if len(utts) < 2:
        raise DataDirError(f"{data_dir}: a paired comparison needs at least 2 utterances in common")
    loo_a, loo_b = _jackknife([fa, fb], [(len(vocab), ka), (len(vocab), kb)])
    res: dict[str, Any] = {"num_utts": len(utts), "a": str(codes_a), "b": str(codes_b),
                           "interval": "paired delete-one jackknife over utterances, estimate ± 1.96 se"}
    for key in QUALITY_KEYS:
        d = qb[key] - qa[key]
        j = jackknife_ci(d, [b[key] - a[key] for a, b in zip(loo_a, loo_b)])
        res[key] = {"a": qa[key], "b": qb[key], "b_minus_a": d, "ci95": j["ci95"], "se": j["se"]}
    return res
