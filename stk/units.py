"""Discrete speech units: k-means on frame features, unit files, and unit quality.

A **units model** is a directory::

    units.json               UnitsInfo: features (mfcc | hubert), layer, rate (frames/s), k, dim,
                             sha256 of the feature model's weights, how it was fitted
    centroids.safetensors    {"centroids": (k, dim) float32[, "mean", "std": (dim,) with standardize]}
    feature_model/           the HuBERT package whose layer is clustered (features: hubert only)

Nothing in it is a pickle: the centroids are a safetensors tensor, the rest JSON/YAML. Loading
checks that the centroids have ``k`` rows of the feature dimension and that the feature model's
weights have the recorded sha256, so a units model never silently clusters other features.

- :func:`fit_units` samples frames (:mod:`stk.units_features`) of one or more data dirs (MFCC + Δ + ΔΔ, or a HuBERT layer),
  optionally in equal shares per data dir or speaker (``balance``) and standardised per dimension,
  fits scikit-learn's ``MiniBatchKMeans`` (k-means++ init, as the HuBERT recipe) and writes the model.
- :func:`dump_units` writes ``utt-id u1 u2 …`` (``units``) and, deduplicated, the run length of
  each kept unit (``units.dur``). **Bad input policy**: an utterance whose audio is missing or
  unreadable, or too short for one unit frame, is skipped and named in the log and in
  ``units.skipped`` (``utt-id reason``) with ``bad_input="skip"`` (the default), or stops the dump
  with an error naming it with ``bad_input="fail"``.
- :func:`stk.units_quality.evaluate_units` compares frame units with frame labels from a CTC forced alignment
  (``stk align``'s ``durations``): cluster purity, label (char) purity and PNMI as in the HuBERT
  paper, with 95 % jackknife intervals over utterances, plus units/s after dedup and the code
  perplexity.

Frame rates: MFCC frames are 100/s and HuBERT frames 50/s (stride 2 on 10 ms fbank); features are
mean-pooled over non-overlapping windows to the units' rate (50 or 25/s) before clustering.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from stk.data.kaldi import DataDirError, load_data_dir, read_kv, write_kv
from stk.units_features import (  # noqa: F401 (re-exported: stk.units is the public module)
    BadInput, HubertExtractor, MfccExtractor, UnitsModelError, _pool_factor, iter_features, make_extractor,
    parse_features)
from stk.utils import atomic_write_text, file_sha256

log = logging.getLogger("stk.units")

UNITS_JSON = "units.json"
CENTROIDS = "centroids.safetensors"
FEATURE_MODEL = "feature_model"
Balance = Literal["none", "dir", "speaker"]


@dataclasses.dataclass
class UnitsInfo:
    """``units.json``."""

    features: str  # "mfcc" or "hubert"
    k: int
    dim: int
    rate: int  # unit frames per second
    layer: int | None = None
    feature_model_sha256: str | None = None
    feature_model_source: str | None = None
    fit_data: str = ""
    fit_frames: int = 0
    inertia: float = 0.0
    seed: int = 0
    cmn: bool = False  # features mean-normalised per utterance before clustering
    balance: str = "none"  # how the fit sample was shared: none | dir | speaker (see sample_frames)
    standardize: bool = False  # features scaled per dimension (mean/std in the centroids file) before k-means


# -- k-means --------------------------------------------------------------------------------------


def fit_kmeans(x: np.ndarray, k: int, *, seed: int = 0, batch_size: int = 10000, max_iter: int = 100,
               n_init: int = 3) -> tuple[np.ndarray, float]:
    """scikit-learn ``MiniBatchKMeans`` (k-means++ init) on frames ``x (N, D)`` -> centroids ``(k, D)``
    float32 and the inertia (sum of squared distances to the nearest centroid, on ``x``)."""
    from sklearn.cluster import MiniBatchKMeans

    if x.ndim != 2 or x.shape[0] < k:
        raise ValueError(f"need a (N, D) array with N >= k = {k} frames, got shape {x.shape}")
    km = MiniBatchKMeans(n_clusters=k, init="k-means++", max_iter=max_iter, batch_size=batch_size, tol=0.0,
                         max_no_improvement=100, n_init=n_init, reassignment_ratio=0.0, random_state=seed,
                         compute_labels=False)
    km.fit(x.astype(np.float32))
    c = km.cluster_centers_.astype(np.float32)
    return c, float(-km.score(x.astype(np.float32)))


def assign(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Nearest centroid (squared Euclidean) of each frame: ``(T, D), (k, D) -> (T,)`` int64."""
    if x.size(-1) != centroids.size(-1):
        raise UnitsModelError(f"features have dimension {x.size(-1)}, the centroids {centroids.size(-1)}")
    x = x.float()
    d = (x * x).sum(1, keepdim=True) - 2 * x @ centroids.t() + (centroids * centroids).sum(1)[None]
    return d.argmin(1)


# -- the units model ------------------------------------------------------------------------------


class UnitsModel:
    """A loaded units model: ``info``, ``centroids (k, dim)``, ``extractor``; ``units(feats)`` assigns."""

    def __init__(self, path: Path, info: UnitsInfo, centroids: torch.Tensor, extractor: Any,
                 mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> None:
        self.path, self.info, self.centroids, self.extractor = path, info, centroids, extractor
        self.mean, self.std = mean, std

    def units(self, feats: torch.Tensor) -> torch.Tensor:
        """Nearest centroid of each frame ``(T, D) -> (T,)`` (standardised first if the model was)."""
        if self.mean is not None and self.std is not None and feats.size(-1) == self.mean.numel():
            feats = (feats.float() - self.mean) / self.std
        return assign(feats, self.centroids)


def resolve_units_model(name_or_dir: str | Path) -> Path:
    """A units-model directory from a path or a model-store name."""
    from stk.package import model_store

    p = Path(name_or_dir)
    if (p / UNITS_JSON).exists():
        return p
    if "/" not in str(name_or_dir) and (model_store() / str(name_or_dir) / UNITS_JSON).exists():
        return model_store() / str(name_or_dir)
    raise UnitsModelError(f"unknown units model {str(name_or_dir)!r}: no {UNITS_JSON} there or in the model store "
                          f"{model_store()} (make one with `stk units fit`)")


def load_units_model(name_or_dir: str | Path, device: str = "cpu") -> UnitsModel:
    """Load and check a units model (see the module docstring for what is checked)."""
    from safetensors.torch import load_file

    from stk.config import ConfigError, from_dict

    path = resolve_units_model(name_or_dir)
    try:
        info = from_dict(UnitsInfo, json.loads((path / UNITS_JSON).read_text()), f"{path / UNITS_JSON}")
    except (json.JSONDecodeError, ConfigError) as e:
        raise UnitsModelError(f"{path / UNITS_JSON}: {e}") from None
    if not (path / CENTROIDS).exists():
        raise UnitsModelError(f"{path}: {CENTROIDS} is missing")
    tensors = load_file(str(path / CENTROIDS))
    c = tensors.get("centroids")
    if c is None or c.dim() != 2:
        raise UnitsModelError(f"{path / CENTROIDS}: no (k, dim) tensor named 'centroids'")
    if tuple(c.shape) != (info.k, info.dim):
        raise UnitsModelError(f"{path}: centroids are {tuple(c.shape)}, {UNITS_JSON} says k={info.k}, dim={info.dim}")
    mean, std = tensors.get("mean"), tensors.get("std")
    if info.standardize and (mean is None or std is None or mean.shape != (info.dim,) or std.shape != (info.dim,)
                             or bool((std <= 0).any())):
        raise UnitsModelError(f"{path / CENTROIDS}: {UNITS_JSON} says standardize, but there is no (dim,) 'mean' "
                              "and positive 'std'")
    if info.features == "mfcc":
        ext: Any = MfccExtractor()
    elif info.features == "hubert":
        fm = path / FEATURE_MODEL
        if not (fm / "model.safetensors").exists():
            raise UnitsModelError(f"{path}: {FEATURE_MODEL}/model.safetensors (the HuBERT feature model) is missing")
        sha = file_sha256(fm / "model.safetensors")
        if sha != info.feature_model_sha256:
            raise UnitsModelError(
                f"{path}: the feature model's weights {fm / 'model.safetensors'} have sha256 {sha[:12]}…, but the "
                f"centroids were fitted on a model with sha256 {str(info.feature_model_sha256)[:12]}…: refit with "
                "`stk units fit`")
        if info.layer is None:
            raise UnitsModelError(f"{path / UNITS_JSON}: features hubert needs a layer")
        ext = HubertExtractor(fm, info.layer, device=device)
    else:
        raise UnitsModelError(f"{path / UNITS_JSON}: unknown features {info.features!r} (mfcc or hubert)")
    if ext.dim != info.dim:
        raise UnitsModelError(f"{path}: the {info.features} features have dimension {ext.dim}, the centroids {info.dim}")
    _pool_factor(ext.native_rate, info.rate)
    if not info.standardize:
        mean = std = None
    return UnitsModel(path, info, c.float().to(device), ext,
                      None if mean is None else mean.float().to(device), None if std is None else std.float().to(device))


def _sample_groups(data_dirs: list[Path], balance: Balance) -> list[list[tuple[Path, str]]]:
    """The groups of ``(data dir, utterance)`` that share the frame sample equally: one (all dirs
    pooled), one per data dir, or one per (data dir, speaker)."""
    if balance not in ("none", "dir", "speaker"):
        raise ValueError(f"balance must be none, dir or speaker, got {balance!r}")
    groups: list[list[tuple[Path, str]]] = []
    for p in data_dirs:
        d = load_data_dir(p)
        if balance == "speaker":
            by_spk: dict[str, list[tuple[Path, str]]] = {}
            for u in d.utt_ids:
                by_spk.setdefault(d.utt2spk.get(u, u) if d.utt2spk else u, []).append((p, u))
            groups += [by_spk[s] for s in sorted(by_spk)]
        else:
            groups.append([(p, u) for u in d.utt_ids])
    return [[x for g in groups for x in g]] if balance == "none" else groups


def sample_frames(extractor: Any, data_dir: str | Path | list[str | Path], *, rate: int, max_frames: int,
                  seed: int = 0, batch_frames: int = 20000, cmn: bool = False, balance: Balance = "none",
                  ) -> np.ndarray:
    """Up to ``max_frames`` feature frames (all frames of random utterances, then a random subset).

    ``data_dir`` may be several data dirs. ``balance``: ``none`` samples utterances of all of them
    pooled (a source with more audio gets more frames), ``dir`` gives every data dir an equal share
    ``max_frames / len(dirs)`` (e.g. recorded and synthetic speech, so k-means does not spend its
    centroids on the larger one), ``speaker`` an equal share to every speaker (``utt2spk``) of every
    dir. A group with fewer frames than its share gives all it has.
    """
    dirs = [Path(x) for x in (data_dir if isinstance(data_dir, (list, tuple)) else [data_dir])]
    if not dirs:
        raise ValueError("no data dir to sample frames from")
    groups = _sample_groups(dirs, balance)
    share = max_frames // len(groups)
    if share < 1:
        raise ValueError(f"max_frames {max_frames} is less than one frame per sample group ({len(groups)} groups)")
    durs = {p: read_kv(p / "utt2dur") if (p / "utt2dur").exists() else None for p in dirs}
    rng = np.random.default_rng(seed)
    chunks = []
    for group in groups:
        order = rng.permutation(len(group))
        by_dir: dict[Path, list[str]] = {}
        total = 0.0
        for i in order:  # read only as many utterances as the share needs (where utt2dur says)
            p, u = group[i]
            by_dir.setdefault(p, []).append(u)
            if durs[p] is not None:
                total += float(durs[p].get(u, 0.0)) * rate
                if total >= share * 1.1:
                    break
        part = [f.numpy() for p, us in by_dir.items()
                for _, f in iter_features(extractor, p, rate=rate, utts=us, batch_frames=batch_frames, cmn=cmn)]
        if not part:
            log.warning("%s: no usable utterance in a sample group of %d", ", ".join(map(str, by_dir)), len(group))
            continue
        x = np.concatenate(part)
        if x.shape[0] > share:
            x = x[rng.choice(x.shape[0], share, replace=False)]
        chunks.append(x)
    if not chunks:
        raise DataDirError(f"{', '.join(map(str, dirs))}: no usable utterance to fit on")
    return np.concatenate(chunks)


def fit_units(data_dir: str | Path | list[str | Path], *, features: str, k: int, out: str | Path, rate: int = 50,
              max_frames: int = 100000, seed: int = 0, device: str = "cpu", cmn: bool = False,
              balance: Balance = "none", standardize: bool = False) -> UnitsInfo:
    """Fit k-means on frames of ``data_dir`` (one or several data dirs, sampled as ``balance`` says,
    see :func:`sample_frames`) and write the units model ``out`` (atomically).

    ``standardize``: scale every feature dimension to zero mean and unit variance over the sample
    before k-means (the mean and standard deviation are kept in the centroids file and applied by
    :meth:`UnitsModel.units`); the HuBERT paper clusters raw features.
    """
    from safetensors.torch import save_file

    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    kind, pkg, layer = parse_features(features)
    ext = make_extractor(features, device)
    dirs = [Path(x) for x in (data_dir if isinstance(data_dir, (list, tuple)) else [data_dir])]
    x = sample_frames(ext, dirs, rate=rate, max_frames=max_frames, seed=seed, cmn=cmn, balance=balance)
    tensors: dict[str, torch.Tensor] = {}
    if standardize:
        mean, std = x.mean(0), x.std(0)
        std = np.where(std > 1e-8, std, 1.0).astype(np.float32)
        x = (x - mean) / std
        tensors.update(mean=torch.from_numpy(mean.astype(np.float32)), std=torch.from_numpy(std))
    log.info("%s: fitting k-means (k=%d) on %d %s frames of dimension %d at %d/s (balance %s%s)",
             ", ".join(map(str, dirs)), k, x.shape[0], features, x.shape[1], rate, balance,
             ", standardised" if standardize else "")
    c, inertia = fit_kmeans(x, k, seed=seed)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    sha = None
    if kind == "hubert":
        shutil.copytree(ext.lm.path, tmp / FEATURE_MODEL)
        sha = file_sha256(tmp / FEATURE_MODEL / "model.safetensors")
    info = UnitsInfo(features=kind, k=k, dim=int(x.shape[1]), rate=rate, layer=layer, feature_model_sha256=sha,
                     feature_model_source=str(pkg) if pkg else None, fit_data=",".join(map(str, dirs)),
                     fit_frames=int(x.shape[0]), inertia=inertia, seed=seed, cmn=cmn, balance=balance,
                     standardize=standardize)
    save_file({"centroids": torch.from_numpy(c), **tensors}, str(tmp / CENTROIDS))
    atomic_write_text(tmp / UNITS_JSON, json.dumps(dataclasses.asdict(info), indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return info


def publish(model_dir: str | Path, name: str, *, force: bool = False) -> Path:
    """Copy a units model (units.json, centroids, feature model) into the model store as ``name``
    (an existing entry needs ``force``)."""
    from stk.package import check_store_name, model_store

    dest = model_store() / check_store_name(name)
    if dest.exists() and not force:
        raise UnitsModelError(f"{dest} already exists in the model store (pass --force to replace it)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in (UNITS_JSON, CENTROIDS):  # the model only, not eval outputs kept beside it
        shutil.copy(Path(model_dir) / name, tmp / name)
    if (Path(model_dir) / FEATURE_MODEL).is_dir():
        shutil.copytree(Path(model_dir) / FEATURE_MODEL, tmp / FEATURE_MODEL)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


# -- unit files -----------------------------------------------------------------------------------


def dedup(units: list[int]) -> tuple[list[int], list[int]]:
    """Collapse runs: ``[5, 5, 3, 5] -> ([5, 3, 5], [2, 1, 1])``."""
    out: list[int] = []
    dur: list[int] = []
    for u in units:
        if out and out[-1] == u:
            dur[-1] += 1
        else:
            out.append(u)
            dur.append(1)
    return out, dur


def expand(units: list[int], durations: list[int]) -> list[int]:
    """Inverse of :func:`dedup`."""
    if len(units) != len(durations) or any(d < 1 for d in durations):
        raise ValueError("units and durations must have the same length and durations must be >= 1")
    return [u for u, d in zip(units, durations) for _ in range(d)]


def read_int_file(path: str | Path) -> dict[str, list[int]]:
    """``utt-id i1 i2 …`` lines -> ``{utt: [ints]}`` (DataDirError naming the line's utterance)."""
    out = {}
    for u, v in read_kv(path).items():
        try:
            out[u] = [int(x) for x in v.split()]
        except ValueError:
            raise DataDirError(f"{path}: utterance {u!r}: not a list of integers") from None
    return out


def write_int_file(path: str | Path, seqs: dict[str, list[int]]) -> None:
    write_kv(path, {u: " ".join(map(str, s)) for u, s in seqs.items()})


def dump_units(um: UnitsModel, data_dir: str | Path, *, out: str | Path | None = None, rate: int | None = None,
               dedup_runs: bool = False, bad_input: BadInput = "skip", batch_frames: int = 20000,
               allow_pipes: bool = False) -> dict[str, Any]:
    """Write ``units`` (and, deduplicated, ``units.dur``) for every utterance of ``data_dir``.

    Returns a summary (utterances, frames, seconds, skipped). Also writes ``OUT.info`` (JSON) and,
    when utterances were skipped, ``OUT.skipped``; a stale ``OUT.dur`` is removed without ``dedup``.
    """
    rate = rate or um.info.rate
    if rate != um.info.rate:
        log.warning("dumping at %d/s with centroids fitted at %d/s", rate, um.info.rate)
    out = Path(out) if out is not None else Path(data_dir) / "units"
    skipped: dict[str, str] = {}
    units: dict[str, list[int]] = {}
    durs: dict[str, list[int]] = {}
    frames = 0
    for u, f in iter_features(um.extractor, data_dir, rate=rate, batch_frames=batch_frames, bad_input=bad_input,
                              skipped=skipped, allow_pipes=allow_pipes, cmn=um.info.cmn):
        ids = um.units(f).tolist()
        frames += len(ids)
        if dedup_runs:
            units[u], durs[u] = dedup(ids)
        else:
            units[u] = ids
    if not units:
        raise DataDirError(f"{data_dir}: no utterance could be turned into units ({len(skipped)} skipped)")
    write_int_file(out, units)
    dur_path = out.with_name(out.name + ".dur")
    if dedup_runs:
        write_int_file(dur_path, durs)
    elif dur_path.exists():
        dur_path.unlink()
    skip_path = out.with_name(out.name + ".skipped")
    if skipped:
        write_kv(skip_path, skipped)
    elif skip_path.exists():
        skip_path.unlink()
    n_units = sum(len(v) for v in units.values())
    summary = {"model": str(um.path), "features": um.info.features, "layer": um.info.layer, "k": um.info.k,
               "rate": rate, "dedup": dedup_runs, "feature_model_sha256": um.info.feature_model_sha256,
               "num_utts": len(units), "num_skipped": len(skipped), "frames": frames, "seconds": frames / rate,
               "units": n_units, "units_per_second": n_units / (frames / rate)}
    atomic_write_text(out.with_name(out.name + ".info"), json.dumps(summary, indent=2) + "\n")
    return summary
