"""Discrete units: HuBERT training step vs a same-size Conformer step, and unit extraction speed.

1. **Training step** (forward + backward + Adam, dropout 0 as in the recipe, fp32), alternated round-robin:
   * ``hubert``: stk's ``HubertModel`` (stride-2 conv front end -> 50 frames/s, span masking
     0.8 × span 10, cosine logits to ``k`` cluster embeddings, CE on masked and unmasked frames
     as ``egs/mini/units/conf/hubert.yaml``);
   * ``conformer-50hz``: the same front end and Conformer layers with a plain linear CE head over
     the ``k`` ids at every frame (what the HuBERT machinery costs on top of frame classification);
   * ``conformer-ctc``: stk's ``ConformerEncoder`` of the same width/depth with its usual 4×
     Conv2d subsampling (25 frames/s) + CTC head — the ASR encoder step of the other recipes.
   Sizes: ``mini`` = ``egs/mini/units/conf/hubert.yaml`` (d 144, 6 layers, FFN 576, kernel 15).
   Batch: 8 × 10 s of N(0, 1) 80-bin fbank.
2. **Unit extraction** at one thread, as ``stk units dump`` does it: audio -> MFCC + Δ + ΔΔ ->
   pooling to 50/s -> nearest of k centroids; and audio -> fbank + CMVN -> HuBERT front end +
   ``L`` layers -> nearest centroid. × real time = audio seconds / wall seconds (per core).

Usage:
    .venv/bin/python bench/units.py --threads 1 --steps 5 --json bench/out/units.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import alternate, machine_info, markdown_table, median, set_threads, write_json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

SIZES = {"mini": dict(d_model=144, num_heads=4, ffn_dim=576, num_layers=6, kernel_size=15)}
DROPOUT = 0.0  # egs/mini/units/conf/hubert.yaml
HEAD = dict(final_dim=64, masked_weight=1.0, unmasked_weight=1.0)
K, BATCH, SECONDS, FEATS = 100, 8, 10.0, 80


def training_steps(size: str, steps: int) -> list[list[object]]:
    from stk.models.hubert import HubertModel
    from stk.modules.conformer import ConformerEncoder

    enc = SIZES[size]
    torch.manual_seed(0)
    hubert = HubertModel(vocab_size=2, input_dim=FEATS, num_units=K, encoder={**enc, "dropout": DROPOUT, "stride": 2},
                         **HEAD)
    frame_head = torch.nn.Linear(enc["d_model"], K)
    ctc_enc = ConformerEncoder(input_dim=FEATS, dropout=DROPOUT, subsampling_factor=4, subsampling_channels=32, **enc)
    ctc_head = torch.nn.Linear(enc["d_model"], 120)
    t = int(SECONDS * 100)
    lens = torch.tensor([t - 16 * i for i in range(BATCH)])
    feats = torch.randn(BATCH, t, FEATS)
    units = torch.randint(0, K, (BATCH, t // 2))
    batch = {"feats": feats, "feats_lens": lens, "units": units, "units_lens": lens // 2}
    text = torch.randint(1, 120, (BATCH, int(SECONDS * 15)))
    text_lens = torch.full((BATCH,), text.size(1))
    opt_h = torch.optim.Adam(hubert.parameters(), 1e-4)
    plain = list(hubert.encoder.parameters()) + list(frame_head.parameters())
    opt_p = torch.optim.Adam(plain, 1e-4)
    opt_c = torch.optim.Adam(list(ctc_enc.parameters()) + list(ctc_head.parameters()), 1e-4)
    hubert.train()

    def step_hubert():
        opt_h.zero_grad()
        hubert(batch)["loss"].backward()
        opt_h.step()

    def step_plain():
        opt_p.zero_grad()
        out, ol = hubert.encoder(feats, lens)
        valid = torch.arange(out.size(1))[None] < ol[:, None]
        F.cross_entropy(frame_head(out[valid]), units[:, : out.size(1)][valid]).backward()
        opt_p.step()

    def step_ctc():
        opt_c.zero_grad()
        out, ol = ctc_enc(feats, lens)
        lp = torch.log_softmax(ctc_head(out), -1).transpose(0, 1)
        F.ctc_loss(lp, text, ol, text_lens, zero_infinity=True).backward()
        opt_c.step()

    times = alternate({"hubert": step_hubert, "conformer-50hz": step_plain, "conformer-ctc": step_ctc}, steps, warmup=1)
    ref = median(times["conformer-ctc"])
    frames = int(lens.sum())
    rows = []
    params = {"hubert": hubert, "conformer-50hz": [hubert.encoder, frame_head], "conformer-ctc": [ctc_enc, ctc_head]}
    for name, ts in times.items():
        mods = params[name] if isinstance(params[name], list) else [params[name]]
        n = sum(p.numel() for m in mods for p in m.parameters()) / 1e6
        rows.append([size, name, f"{median(ts) * 1000:.0f}", f"{frames / median(ts):.0f}", f"{median(ts) / ref:.2f}",
                     f"{n:.2f}"])
    return rows


def extraction(seconds: float, layer: int) -> list[list[object]]:
    from stk.features.fbank import FbankConfig, compute_fbank
    from stk.features.mfcc import compute_mfcc
    from stk.models.hubert import HubertModel
    from stk.units import assign
    from stk.units_features import pool_frames

    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in (seconds / 4,) * 4]
    total = sum(len(w) for w in waves) / 16000
    cent39, cent144 = torch.randn(K, 39), torch.randn(K, SIZES["mini"]["d_model"])
    model = HubertModel(vocab_size=2, input_dim=FEATS, num_units=K, encoder=SIZES["mini"]).eval()
    conf = FbankConfig()

    def mfcc_units():
        for w in waves:
            assign(pool_frames(compute_mfcc(w, 16000), 2), cent39)

    def hubert_units():
        for w in waves:
            f = compute_fbank(w, 16000, conf)
            with torch.inference_mode():
                h, _ = model.extract(f[None], torch.tensor([f.size(0)]), layer)
            assign(h[0], cent144)

    rows = []
    for name, fn in (("MFCC + deltas, k-means (k=100)", mfcc_units),
                     (f"HuBERT mini layer {layer}, k-means (k=100)", hubert_units)):
        fn()
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        rows.append([name, f"{total:.0f}", f"{median(ts):.2f}", f"{total / median(ts):.0f}"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--sizes", nargs="+", default=["mini"], choices=sorted(SIZES))
    ap.add_argument("--audio-seconds", type=float, default=120.0)
    ap.add_argument("--layer", type=int, default=4)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    set_threads(args.threads)
    before = machine_info(args.threads)
    step_rows = [r for s in args.sizes for r in training_steps(s, args.steps)]
    set_threads(1)
    ext_rows = extraction(args.audio_seconds, args.layer)
    after = machine_info(args.threads)
    print(markdown_table(["size", "step", "ms (median)", "fbank frames/s", "× Conformer CTC step", "params (M)"],
                         step_rows))
    print()
    print(markdown_table(["units", "audio s", "wall s (median of 3)", "× real time (1 thread)"], ext_rows))
    print(f"\nbatch {BATCH} × {SECONDS:g} s; {args.steps} alternated steps after 1 warm-up; {args.threads} thread(s) "
          f"for the steps, 1 for extraction; {before['cpu']}, load avg {before['load_avg_1_5_15']} "
          f"(after: {after['load_avg_1_5_15']}), OMP_WAIT_POLICY={before['omp_wait_policy']}, torch {before['torch']}")
    if args.json:
        write_json(args.json, {"machine": before, "after": after, "steps": step_rows, "extraction": ext_rows})


if __name__ == "__main__":
    main()
