"""Discrete units: k-means wrapper vs scikit-learn, purity/PNMI by hand, unit files, dedup, bad input,
feature-model checks, units as a training target, and the `stk units` commands."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_data_dir, make_wav
from stk import units as U
from stk import units_quality as Q
from stk.data.kaldi import DataDirError

ROOT = Path(__file__).resolve().parents[1]


def test_fit_kmeans_matches_a_direct_minibatchkmeans_call():
    from sklearn.cluster import MiniBatchKMeans

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 0.3, (200, 3)) for c in (-3.0, 0.0, 3.0, 6.0)]).astype(np.float32)
    c, inertia = U.fit_kmeans(x, 4, seed=3, batch_size=256)
    km = MiniBatchKMeans(n_clusters=4, init="k-means++", max_iter=100, batch_size=256, tol=0.0, max_no_improvement=100,
                         n_init=3, reassignment_ratio=0.0, random_state=3, compute_labels=False).fit(x)
    np.testing.assert_allclose(c, km.cluster_centers_, rtol=1e-5, atol=1e-5)
    assert inertia == pytest.approx(-km.score(x), rel=1e-4)
    ids = U.assign(torch.from_numpy(x), torch.from_numpy(c))
    assert ids.tolist() == km.predict(x).tolist()
    assert sorted(np.bincount(ids.numpy()).tolist()) == [200, 200, 200, 200]
    with pytest.raises(ValueError, match="N >= k"):
        U.fit_kmeans(x[:3], 4)
    with pytest.raises(U.UnitsModelError, match="dimension 3, the centroids 2"):
        U.assign(torch.from_numpy(x), torch.zeros(4, 2))


def test_purity_and_pnmi_against_a_hand_computed_example():
    # labels a,a,a,b,b,c over codes 0,0,1,1,1,2 -> joint counts
    labels, codes = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 1, 2]
    c = Q.contingency(labels, codes, 3, 3)
    assert c.tolist() == [[2, 1, 0], [0, 2, 0], [0, 0, 1]]
    q = Q.quality_from_counts(c)
    assert q["label_purity"] == pytest.approx((2 + 2 + 1) / 6)  # per code: max label count
    assert q["cluster_purity"] == pytest.approx((2 + 2 + 1) / 6)  # per label: max code count
    py, pz = np.array([3, 2, 1]) / 6, np.array([2, 3, 1]) / 6
    p = c / 6
    mi = sum(p[i, j] * math.log(p[i, j] / (py[i] * pz[j])) for i in range(3) for j in range(3) if p[i, j] > 0)
    hy = -sum(v * math.log(v) for v in py)
    assert q["pnmi"] == pytest.approx(mi / hy)
    assert q["perplexity"] == pytest.approx(math.exp(-sum(v * math.log(v) for v in pz)))
    from sklearn.metrics import mutual_info_score

    assert mi == pytest.approx(mutual_info_score(labels, codes))
    # perfect codes: PNMI 1; one code for everything: PNMI 0, perplexity 1
    assert Q.quality_from_counts(np.eye(3, dtype=np.int64) * 5)["pnmi"] == pytest.approx(1.0)
    one = Q.quality_from_counts(np.array([[4, 0], [3, 0]]))
    assert one["pnmi"] == pytest.approx(0.0) and one["perplexity"] == pytest.approx(1.0)
    assert one["cluster_purity"] == pytest.approx(1.0) and one["label_purity"] == pytest.approx(4 / 7)


def test_dedup_expand_and_unit_file_round_trip(tmp_path):
    assert U.dedup([5, 5, 3, 5, 5, 5]) == ([5, 3, 5], [2, 1, 3])
    assert U.dedup([]) == ([], [])
    assert U.expand([5, 3, 5], [2, 1, 3]) == [5, 5, 3, 5, 5, 5]
    with pytest.raises(ValueError):
        U.expand([1, 2], [1, 0])
    seqs = {"b": [1, 1, 2], "a": [0]}
    U.write_int_file(tmp_path / "units", seqs)
    assert (tmp_path / "units").read_text() == "a 0\nb 1 1 2\n"
    assert U.read_int_file(tmp_path / "units") == seqs
    (tmp_path / "bad").write_text("a 1 x\n")
    with pytest.raises(DataDirError, match="utterance 'a'"):
        U.read_int_file(tmp_path / "bad")


@pytest.fixture
def mfcc_model(tmp_path) -> tuple[Path, Path]:
    d = make_data_dir(tmp_path, n=4)
    out = tmp_path / "units_mfcc"
    info = U.fit_units(d, features="mfcc", k=4, out=out, rate=50, max_frames=5000)
    assert info.features == "mfcc" and info.k == 4 and info.dim == 39 and info.rate == 50 and info.fit_frames > 4
    assert sorted(p.name for p in out.iterdir()) == ["centroids.safetensors", "units.json"]  # no pickle anywhere
    return d, out


def test_dump_units_dedup_round_trip_and_rates(mfcc_model):
    d, out = mfcc_model
    um = U.load_units_model(out)
    full = U.dump_units(um, d, out=d / "units_full")
    frames = U.read_int_file(d / "units_full")
    assert full["num_utts"] == 4 and not (d / "units_full.dur").exists()
    from stk.features.fbank import FbankConfig

    n0 = FbankConfig().num_frames(int(0.6 * 16000))
    assert len(frames["spk0-utt000"]) == n0 // 2  # 100 frames/s pooled to 50/s
    s = U.dump_units(um, d, dedup_runs=True)
    units, durs = U.read_int_file(d / "units"), U.read_int_file(d / "units.dur")
    for u in frames:
        assert U.expand(units[u], durs[u]) == frames[u]
        assert all(a != b for a, b in zip(units[u], units[u][1:]))
    assert s["units_per_second"] <= 50 and json.loads((d / "units.info").read_text())["dedup"] is True
    U.dump_units(um, d)  # without dedup a stale units.dur goes away
    assert not (d / "units.dur").exists()
    r25 = U.dump_units(um, d, out=d / "units25", rate=25)
    assert len(U.read_int_file(d / "units25")["spk0-utt000"]) == n0 // 4 and r25["rate"] == 25
    # a stream loads them as integer targets (no tokenizer)
    from stk.data.dataset import KaldiDataset

    ds = KaldiDataset(d, speech=False, int_seqs={"units": "units"}, targets={})
    ex = ds.collate([ds[0], ds[1]]) if len(ds) > 1 else None
    assert ex is not None and ex["units"].dtype == torch.long and ex["units_lens"].tolist()[0] > 0


def test_bad_input_skip_or_fail_names_the_utterance(mfcc_model, tmp_path):
    d, out = mfcc_model
    wav = (d / "wav.scp").read_text().splitlines()
    short = make_wav(tmp_path / "short.wav", 0.02)  # 20 ms: shorter than one window
    wav[1] = f"{wav[1].split()[0]} {short}"
    wav[2] = f"{wav[2].split()[0]} {tmp_path / 'missing.wav'}"
    (d / "wav.scp").write_text("\n".join(wav) + "\n")
    um = U.load_units_model(out)
    s = U.dump_units(um, d)
    skipped = dict(line.split(" ", 1) for line in (d / "units.skipped").read_text().splitlines())
    assert s["num_skipped"] == 2 and sorted(skipped) == ["spk0-utt002", "spk1-utt001"]
    assert "too short" in skipped["spk0-utt002"] and "cannot be read" in skipped["spk1-utt001"]  # wav.scp is sorted
    assert sorted(U.read_int_file(d / "units")) == ["spk0-utt000", "spk1-utt003"]
    with pytest.raises(DataDirError, match="spk0-utt002.*too short"):
        U.dump_units(um, d, bad_input="fail")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([str(ROOT / ".venv/bin/stk"), "units", "dump", str(d), "--model", str(out), "--bad-input", "fail"],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 1 and "spk0-utt002" in p.stderr and "Traceback" not in p.stderr


def test_units_model_checks(mfcc_model, tmp_path):
    d, out = mfcc_model
    info = json.loads((out / "units.json").read_text())
    (out / "units.json").write_text(json.dumps({**info, "dim": 13}))
    with pytest.raises(U.UnitsModelError, match=r"centroids are \(4, 39\)"):
        U.load_units_model(out)
    from safetensors.torch import save_file

    save_file({"centroids": torch.zeros(4, 13)}, str(out / "centroids.safetensors"))
    with pytest.raises(U.UnitsModelError, match="mfcc features have dimension 39, the centroids 13"):
        U.load_units_model(out)
    (out / "units.json").write_text(json.dumps({**info, "unknown": 1}))
    with pytest.raises(U.UnitsModelError, match="unknown"):
        U.load_units_model(out)
    with pytest.raises(U.UnitsModelError, match="unknown units model"):
        U.load_units_model(tmp_path / "nothing")
    with pytest.raises(ValueError, match="hubert:PACKAGE:LAYER"):
        U.parse_features("hubert:pkg")
    assert U.parse_features("hubert:exp/a:b/package:3") == ("hubert", "exp/a:b/package", 3)


def test_hubert_units_model_detects_a_changed_feature_model(tmp_path):
    """A units model on a HuBERT layer: dump works; replacing the feature model's weights is an error."""
    from safetensors.torch import load_file, save_file

    from stk.models import MODELS
    from stk.package import PackageMeta, write_package
    from stk.registry import ComponentSpec
    from stk.tokenizer import train_tokenizer

    d = make_data_dir(tmp_path, n=3)
    tok = train_tokenizer([line.split(" ", 1)[1] for line in (d / "text").read_text().splitlines()], tmp_path / "tok",
                          vocab_size=30, model_type="char")
    from stk.tokenizer import Tokenizer

    v = Tokenizer(tok).vocab_size
    spec = ComponentSpec("hubert", {"num_units": 5, "encoder": {"d_model": 16, "num_heads": 2, "ffn_dim": 32,
                                                                "num_layers": 2, "kernel_size": 3}})
    model = MODELS.build(spec, vocab_size=v, input_dim=80)
    pkg = write_package(tmp_path / "pkg", meta=PackageMeta(model=spec, vocab_size=v, uses_cmvn=False), state_dict=model.state_dict(),
                        tokenizer=tok, cmvn=None)
    out = tmp_path / "units_h"
    info = U.fit_units(d, features=f"hubert:{pkg}:1", k=3, out=out, max_frames=2000)
    assert info.dim == 16 and info.layer == 1 and len(info.feature_model_sha256) == 64
    s = U.dump_units(U.load_units_model(out), d, dedup_runs=True)
    assert s["num_utts"] == 3 and s["layer"] == 1
    w = out / "feature_model" / "model.safetensors"
    state = load_file(str(w))
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(w))
    with pytest.raises(U.UnitsModelError, match="sha256"):
        U.load_units_model(out)


def test_balanced_frame_sample_per_dir_and_speaker(tmp_path):
    """--balance dir: each data dir gets max_frames / N frames (a smaller dir gives all it has);
    speaker: each speaker of each dir an equal share; none: utterances pooled."""
    big = make_data_dir(tmp_path / "big", n=8)  # 0.6 .. 1.3 s: 30 .. 65 frames at 50/s, 380 in all
    small = make_data_dir(tmp_path / "small", n=2)  # 30 + 35 = 65 frames
    ext = U.MfccExtractor()
    groups = U._sample_groups([big, small], "speaker")
    assert [sorted({p.parent.name for p, _ in g}) for g in groups] == [["big"], ["big"], ["small"], ["small"]]
    assert sorted(len(g) for g in groups) == [1, 1, 4, 4]
    assert len(U._sample_groups([big, small], "none")) == 1 and len(U._sample_groups([big, small], "dir")) == 2
    n_small = sum(f.size(0) for _, f in U.iter_features(ext, small, rate=50))
    assert n_small < 100
    x_dir = U.sample_frames(ext, [big, small], rate=50, max_frames=200, balance="dir")
    assert x_dir.shape == (100 + n_small, 39)  # 100 from big, all of small
    x_none = U.sample_frames(ext, [big, small], rate=50, max_frames=200, balance="none")
    assert x_none.shape == (200, 39)
    # every row of the small dir is in the balanced sample (it had fewer frames than its share)
    small_rows = np.concatenate([f.numpy() for _, f in U.iter_features(ext, small, rate=50)])
    assert all(np.isclose(x_dir, r).all(1).any() for r in small_rows)
    with pytest.raises(ValueError, match="balance must be"):
        U.sample_frames(ext, [big], rate=50, max_frames=10, balance="lang")


def test_standardized_units_model_applies_its_mean_and_std(tmp_path):
    from safetensors.torch import load_file, save_file

    d = make_data_dir(tmp_path, n=4)
    out = tmp_path / "units_std"
    info = U.fit_units([d], features="mfcc", k=4, out=out, max_frames=5000, balance="dir", standardize=True)
    assert info.standardize and info.balance == "dir"
    t = load_file(str(out / "centroids.safetensors"))
    assert t["mean"].shape == (39,) and (t["std"] > 0).all()
    um = U.load_units_model(out)
    _, f = next(U.iter_features(um.extractor, d, rate=50))
    assert um.units(f).tolist() == U.assign((f - t["mean"]) / t["std"], t["centroids"]).tolist()
    # the standardised centroids differ from raw-feature ones: the option is not a no-op
    assert um.units(f).tolist() != U.assign(f, t["centroids"]).tolist()
    save_file({"centroids": t["centroids"]}, str(out / "centroids.safetensors"))
    with pytest.raises(U.UnitsModelError, match="standardize"):
        U.load_units_model(out)


def test_jackknife_interval_contains_the_estimate_and_is_paired():
    # a linear statistic: the jackknife standard error is the textbook s / sqrt(n)
    x = np.random.default_rng(0).normal(size=50)
    loo = (x.sum() - x) / (len(x) - 1)
    j = Q.jackknife_ci(float(x.mean()), loo)
    assert j["se"] == pytest.approx(x.std(ddof=1) / math.sqrt(len(x)))
    assert j["bias"] == pytest.approx(0.0, abs=1e-12)
    # PNMI of weakly dependent labels/codes over 80 "utterances": the plug-in MI is biased upwards
    # (positive jackknife bias estimate), and the interval is centred on the estimate (the old basic
    # bootstrap interval lay below it)
    rng = np.random.default_rng(1)
    flats = []
    for _ in range(80):
        y = rng.integers(0, 6, 40)
        z = np.where(rng.random(40) < 0.3, y, rng.integers(0, 10, 40))
        flats.append(Q.contingency(y.tolist(), z.tolist(), 6, 10).ravel())
    flat = np.stack(flats)
    est = Q.quality_from_counts(flat.sum(0).reshape(6, 10))
    loo_q = Q._jackknife([flat], [(6, 10)])[0]
    j = Q.jackknife_ci(est["pnmi"], [q["pnmi"] for q in loo_q])
    lo, hi = j["ci95"]
    assert lo < est["pnmi"] < hi and hi - lo < 0.1 and j["bias"] > 0
    # paired: the same utterance leaves both systems, so a system against itself differs by exactly 0
    a, b = Q._jackknife([flat, flat], [(6, 10), (6, 10)])
    d = Q.jackknife_ci(0.0, [qb["pnmi"] - qa["pnmi"] for qa, qb in zip(a, b)])
    assert d["ci95"] == [0.0, 0.0]
