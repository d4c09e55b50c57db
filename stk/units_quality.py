"""Unit quality: HuBERT's cluster purity, label (char/phone) purity and PNMI against frame labels.

Frame labels come from a CTC forced alignment (``stk align``'s ``durations``); intervals are basic
bootstrap 95 % intervals over utterances (:func:`evaluate_units`), and two systems are compared
on the same resamples (:func:`compare_units`). The units themselves: :mod:`stk.units`.
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


def _bootstrap(flats: list[np.ndarray], shapes: list[tuple[int, int]], bootstrap: int,
               seed: int) -> list[list[dict[str, float]]]:
    """Quality measures of ``bootstrap`` resamples of the utterances (the same resample for every
    system; system ``i``'s per-utterance counts ``flats[i]`` reshape to ``shapes[i]``)."""
    rng = np.random.default_rng(seed)
    n = flats[0].shape[0]
    out: list[list[dict[str, float]]] = [[] for _ in flats]
    for _ in range(bootstrap):
        w = np.bincount(rng.integers(0, n, n), minlength=n)
        for i, (f, shape) in enumerate(zip(flats, shapes)):
            out[i].append(quality_from_counts((w @ f).reshape(shape)))
    return out


def _basic_ci(estimate: float, samples: list[float]) -> list[float]:
    """Basic bootstrap 95 % interval ``[2θ − q97.5, 2θ − q2.5]``: it corrects the upward bias of the
    plug-in mutual information on resamples (which repeat utterances), so it can lie below θ."""
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return [float(2 * estimate - hi), float(2 * estimate - lo)]


def evaluate_units(um: UnitsModel, data_dir: str | Path, *, rate: int | None = None,
                   durations: str | Path | None = None, tokenizer: str | Path | None = None,
                   bootstrap: int = 200, seed: int = 0, codes_out: str | Path | None = None) -> dict[str, Any]:
    """Unit quality of ``um`` on ``data_dir`` against CTC-alignment frame labels (see the module docstring).

    ``codes_out``: also write the frame units (not deduplicated) of the evaluated utterances, for
    :func:`compare_units`.
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
    if bootstrap > 0:
        boot = _bootstrap([flat], [(len(vocab), k)], bootstrap, seed)[0]
        for key in QUALITY_KEYS:
            res[f"{key}_ci95"] = _basic_ci(res[key], [b[key] for b in boot])
    res.update(units_per_second=n_units / (n_frames / rate), num_utts=len(utts), num_labels=len(vocab), k=k,
               rate=rate, features=um.info.features, layer=um.info.layer, model=str(um.path))
    return res


def compare_units(data_dir: str | Path, codes_a: str | Path, codes_b: str | Path, *, rate: int,
                  durations: str | Path | None = None, tokenizer: str | Path | None = None, bootstrap: int = 1000,
                  seed: int = 0) -> dict[str, Any]:
    """Paired comparison of two systems' frame units (``evaluate_units(codes_out=…)`` files at ``rate``)
    on the utterances both have: each measure for A and B and ``B − A`` with a paired basic
    bootstrap 95 % interval over utterances (an interval that excludes 0 is a difference)."""
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
    boot_a, boot_b = _bootstrap([fa, fb], [(len(vocab), ka), (len(vocab), kb)], bootstrap, seed)
    res: dict[str, Any] = {"num_utts": len(utts), "a": str(codes_a), "b": str(codes_b)}
    for key in QUALITY_KEYS:
        d = qb[key] - qa[key]
        diffs = [b[key] - a[key] for a, b in zip(boot_a, boot_b)]
        res[key] = {"a": qa[key], "b": qb[key], "b_minus_a": d, "ci95": _basic_ci(d, diffs)}
    return res
