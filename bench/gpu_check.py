"""One short GPU check of stk (≤ 10 min on one GPU): MFU of the reference Conformer step in bf16,
a few hundred updates of a mini recipe config on GPU next to the same run on CPU, SDPA/AMP/NCCL smoke.

Prepared for when a GPU machine is lent: it runs offline with the repo and its venv only (no corpus,
no download) and writes everything under ``--out`` (default ``$OUT/gpu_check``):
``results.json`` (every figure), ``results.md`` (the table for bench/README.md), ``loss_cuda.tsv``,
``loss_cpu.tsv`` and ``loss.png`` (the two training curves).

Parts (``--parts``, default all):

* ``peak``: the device's measured bf16 matmul peak (best of 20 ``8192² @ 8192²``), the MFU baseline.
* ``conformer``: bench/conformer_step.py's reference step (8 × 400 frames × 80 → 6 Conformer layers
  d 256 → CTC, forward + backward + Adam) under bf16 autocast, at batch 8 and at larger batches
  (the reference batch is far too small to fill a large GPU); FLOPs from ``FlopCounterMode``;
  MFU = FLOPs / median step time / peak. fp32 at batch 8 for comparison.
* ``sdpa``: the Conformer's attention (``F.scaled_dot_product_attention`` with stk's additive bias)
  under each SDPA backend in bf16, against the fp32 math result.
* ``amp``: trainer steps of a small encoder-decoder with ``trainer.amp`` bf16 and fp16 (GradScaler).
* ``nccl``: a 1-GPU NCCL process group (world 1): all_reduce and one DDP step.
* ``train``: ``egs/mini/asr/conf/train.yaml``'s model and optimiser (d 144, 4 Conformer layers,
  CTC 0.7 / attention) through ``stk.trainer.train`` for ``--updates`` updates on a synthetic corpus
  (token sequences rendered as noisy per-token spectral templates of random durations, built in
  memory: the mini corpus needs espeak-ng, which a bare machine lacks), once on CUDA in bf16 and
  once on the CPU in fp32, same seed; the curves are written side by side.

``--device cpu --dry-run`` runs every part at toy sizes on the CPU (gloo instead of NCCL, fp32) so
that the script itself is tested here (tests/test_gpu_check.py); its figures mean nothing.

Usage on a GPU machine (one prepared command; ~5-8 min on one H200, most of it the CPU curve):
    OUT=/tmp/out .venv/bin/python bench/gpu_check.py --threads 16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import count_flops, machine_info, markdown_table  # noqa: E402  (sets OMP_WAIT_POLICY first)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev: torch.device, steps: int, warmup: int) -> list[float]:
    """Seconds of each of ``steps`` calls after ``warmup`` untimed ones (synchronised)."""
    for _ in range(warmup):
        fn()
    sync(dev)
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        sync(dev)
        out.append(time.perf_counter() - t0)
    return out


def median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def autocast(dev: torch.device, dtype: torch.dtype | None):
    return torch.autocast(dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


# -- parts ------------------------------------------------------------------------------------------

def part_peak(dev: torch.device, dry: bool) -> dict[str, Any]:
    n, dtype = (256, torch.float32) if dry else (8192, torch.bfloat16)
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    out = torch.empty(n, n, device=dev, dtype=dtype)
    times = timed(lambda: torch.mm(a, b, out=out), dev, steps=3 if dry else 20, warmup=1 if dry else 5)
    best = min(times)
    return {"n": n, "dtype": str(dtype), "peak_tflops": 2.0 * n**3 / best / 1e12, "best_ms": 1e3 * best}


def part_conformer(dev: torch.device, dry: bool, peak_tflops: float) -> dict[str, Any]:
    import conformer_step as cs

    batches = [2] if dry else [8, 32, 128]
    modes = [("fp32 (dry run)", None)] if dry else [("bf16", torch.bfloat16), ("fp32", None)]
    rows = []
    for mode, dtype in modes:
        for bsz in batches if mode != "fp32" else batches[:1]:
            old = cs.BATCH, cs.FRAMES
            cs.BATCH, cs.FRAMES = bsz, (64 if dry else cs.FRAMES)
            try:
                torch.manual_seed(0)
                batch = {k: v.to(dev) for k, v in cs.make_batch().items()}
                with torch.device(dev):
                    step = cs.TrainStep(cs.build_stk(), batch)
            finally:
                cs.BATCH, cs.FRAMES = old

            def fwd_bwd(step=step, dtype=dtype):
                step.opt.zero_grad(set_to_none=True)
                with autocast(dev, dtype):
                    loss = step.loss()
                loss.backward()

            def train_step(fwd_bwd=fwd_bwd, step=step):
                fwd_bwd()
                step.opt.step()

            flops = count_flops(fwd_bwd)[0]
            t = median(timed(train_step, dev, steps=3 if dry else 20, warmup=1 if dry else 5))
            rows.append({"mode": mode, "batch": bsz, "median_ms": 1e3 * t, "tflop_per_step": flops / 1e12,
                         "achieved_tflops": flops / t / 1e12, "mfu": flops / t / 1e12 / peak_tflops,
                         "max_mem_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None})
    return {"rows": rows, "note": "MFU against the measured peak of part 'peak' (bf16 on CUDA)"}


def part_sdpa(dev: torch.device, dry: bool) -> dict[str, Any]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from stk.modules.conformer import _mask_bias, lengths_to_mask

    b, h, t, dk = (2, 2, 16, 8) if dry else (8, 4, 100, 64)
    g = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(b, h, t, dk, generator=g).to(dev) for _ in range(3))
    lens = torch.tensor([t - 7 * i for i in range(b)], device=dev)
    bias = _mask_bias(lengths_to_mask(lens, t), torch.float32) + 0.1 * torch.randn(b, h, t, t, generator=g).to(dev)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    dtype = torch.float32 if dry else torch.bfloat16
    out: dict[str, Any] = {}
    for name in ("MATH", "EFFICIENT_ATTENTION", "FLASH_ATTENTION", "CUDNN_ATTENTION"):
        try:
            with sdpa_kernel(getattr(SDPBackend, name)):
                y = F.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype), attn_mask=bias.to(dtype))
            out[name] = {"ok": True, "max_abs_err": float((y.float() - ref).abs().max())}
        except Exception as e:  # a backend that does not take an additive mask (flash) or this dtype
            out[name] = {"ok": False, "why": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}
    out["ok"] = out["MATH"]["ok"] and out["MATH"]["max_abs_err"] < 0.05
    return out


def small_encdec(vocab: int):
    from stk.models.encdec import EncoderDecoderModel

    return EncoderDecoderModel(
        vocab_size=vocab, input_dim=80, ctc_weight=0.3,
        encoder={"name": "conformer", "conf": {"d_model": 64, "num_heads": 4, "ffn_dim": 128, "num_layers": 2,
                                               "kernel_size": 7, "dropout": 0.1, "subsampling_channels": 16}},
        decoder={"d_model": 64, "num_heads": 4, "ffn_dim": 128, "num_layers": 1, "dropout": 0.1})


def part_amp(dev: torch.device, dry: bool) -> dict[str, Any]:
    from stk.amp import Precision

    out: dict[str, Any] = {}
    data = SyntheticASR(8, vocab=20, seed=3)
    batch = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in data.collate([data[i] for i in range(8)]).items()}
    for mode in ("bf16", "fp16"):
        torch.manual_seed(0)
        model = small_encdec(20).to(dev)
        prec = Precision(mode if dev.type == "cuda" else "none", dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        losses = []
        for _ in range(3 if dry else 20):
            with prec.autocast():
                loss = model({**batch, "stream": "paired"})["loss"]
            opt.zero_grad(set_to_none=True)
            prec.scaler.scale(loss.float()).backward()
            prec.scaler.step(opt)
            prec.scaler.update()
            losses.append(float(loss.detach()))
        out[mode] = {"effective_mode": prec.mode, "scaler": prec.scaler.is_enabled(), "first_loss": losses[0],
                     "last_loss": losses[-1], "finite": all(math.isfinite(x) for x in losses)}
    out["ok"] = all(out[m]["finite"] for m in ("bf16", "fp16"))
    return out


def part_nccl(dev: torch.device, dry: bool) -> dict[str, Any]:
    import torch.distributed as dist

    backend = "nccl" if dev.type == "cuda" else "gloo"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        x = torch.arange(4.0, device=dev)
        dist.all_reduce(x)
        model = torch.nn.Linear(8, 4).to(dev)
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        ddp(torch.randn(3, 8, device=dev)).sum().backward()
        ok = bool(torch.equal(x.cpu(), torch.arange(4.0))) and model.weight.grad is not None
        return {"backend": backend, "world_size": dist.get_world_size(), "ok": ok}
    finally:
        dist.destroy_process_group()


class SyntheticASR:
    """A learnable in-memory ASR corpus: each token id has a fixed random 80-bin spectral template;
    an utterance of U tokens renders each for 4-12 frames, plus noise. ``lengths``/``langs``/
    ``collate`` as :class:`stk.data.dataset.KaldiDataset` (keys feats, feats_lens, text, text_lens)."""

    def __init__(self, n: int, *, vocab: int, seed: int, max_tokens: int = 12) -> None:
        g = torch.Generator().manual_seed(seed)
        templates = torch.randn(vocab, 80, generator=torch.Generator().manual_seed(1234))
        self.items = []
        for i in range(n):
            u = int(torch.randint(3, max_tokens + 1, (1,), generator=g))
            toks = torch.randint(4, vocab, (u,), generator=g)
            durs = torch.randint(4, 13, (u,), generator=g)
            feats = templates[toks].repeat_interleave(durs, dim=0) + 0.5 * torch.randn(int(durs.sum()), 80, generator=g)
            self.items.append((f"utt{i:05d}", feats, toks))
        self.lengths = [f.size(0) for _, f, _ in self.items]
        self.langs = ["xx"] * n

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        uid, feats, toks = self.items[i]
        return {"utt_id": uid, "feats": feats, "text": toks}

    def collate(self, examples: list[dict]) -> dict:
        b, t, u = len(examples), max(e["feats"].size(0) for e in examples), max(e["text"].size(0) for e in examples)
        feats, text = torch.zeros(b, t, 80), torch.full((b, u), -1, dtype=torch.long)
        for j, e in enumerate(examples):
            feats[j, : e["feats"].size(0)], text[j, : e["text"].size(0)] = e["feats"], e["text"]
        return {"utt_ids": [e["utt_id"] for e in examples], "feats": feats,
                "feats_lens": torch.tensor([e["feats"].size(0) for e in examples]), "text": text,
                "text_lens": torch.tensor([e["text"].size(0) for e in examples])}


def train_curve(device: str, amp: str, updates: int, exp: Path, dry: bool) -> dict[str, Any]:
    from stk.checkpoint import load_checkpoint, seed_everything
    from stk.config import load_config
    from stk.experiment import ExperimentConfig, build_model
    from stk.trainer import train

    cfg = load_config(ExperimentConfig, ROOT / "egs" / "mini" / "asr" / "conf" / "train.yaml")
    vocab = 40
    train_ds = SyntheticASR(64 if dry else 2000, vocab=vocab, seed=0)
    valid_ds = SyntheticASR(16 if dry else 200, vocab=vocab, seed=1)
    seed_everything(1)
    if dry:
        cfg.model.conf["encoder"]["conf"].update(d_model=32, ffn_dim=64, num_layers=1)
        cfg.model.conf["decoder"].update(d_model=32, ffn_dim=64)
    model = build_model(cfg.model, vocab_size=vocab, input_dim=80)
    interval = max(1, updates // 30)
    optim = {**{k: getattr(cfg.optim, k) for k in ("name", "lr", "warmup_steps", "grad_clip", "scheduler", "min_lr")}}
    t0 = time.perf_counter()
    metrics = train(model, {"paired": train_ds}, valid_ds, exp_dir=exp, optim=optim,
                    trainer={"max_steps": updates, "valid_interval_steps": updates, "log_interval": interval,
                             "keep_nbest": 1, "seed": 1, "device": device, "amp": amp, "tensorboard": False,
                             "progress": False, "resume": False},
                    batch={"paired": {"max_frames": 5000}})
    seconds = time.perf_counter() - t0
    history = load_checkpoint(exp / "checkpoints" / "last.pt")["trainer"]["history"]
    return {"device": device, "amp": amp, "updates": metrics["step"], "seconds": seconds,
            "train": history["train"], "valid_loss": metrics["valid"]["loss"] if metrics["valid"] else None}


def part_train(dev: torch.device, dry: bool, updates: int, out: Path) -> dict[str, Any]:
    runs = {}
    for name, device, amp in (("cuda", "cuda", "bf16"), ("cpu", "cpu", "none")):
        if name == "cuda" and dev.type != "cuda":
            continue
        runs[name] = train_curve(device, amp, updates, out / f"exp_{name}", dry)
        (out / f"loss_{name}.tsv").write_text("step\tloss\n" + "".join(f"{s}\t{v:.5f}\n" for s, v in runs[name]["train"]))
    res: dict[str, Any] = {"runs": {k: {kk: vv for kk, vv in v.items() if kk != "train"} for k, v in runs.items()}}
    if "cuda" in runs:
        a, b = dict(map(tuple, runs["cuda"]["train"])), dict(map(tuple, runs["cpu"]["train"]))
        common = sorted(set(a) & set(b))
        rel = [abs(a[s] - b[s]) / max(abs(b[s]), 1e-9) for s in common]
        res["curve_max_rel_diff"], res["curve_median_rel_diff"] = max(rel), median(rel)
        res["final_loss_ratio_cuda_over_cpu"] = a[common[-1]] / b[common[-1]]
        res["speedup_cuda_over_cpu"] = runs["cpu"]["seconds"] / runs["cuda"]["seconds"]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name, r in runs.items():
            ax.plot([s for s, _ in r["train"]], [v for _, v in r["train"]], label=f"{name} ({r['amp']})")
        ax.set_xlabel("update")
        ax.set_ylabel("train loss")
        ax.legend()
        fig.savefig(out / "loss.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
    except ImportError:
        pass
    first = runs["cpu"]["train"]
    res["ok"] = bool(first) and first[-1][1] < first[0][1] and (
        "cuda" not in runs or res["final_loss_ratio_cuda_over_cpu"] < 1.25)
    return res


# -- report -----------------------------------------------------------------------------------------

def report(rec: dict[str, Any]) -> str:
    lines = [f"# stk GPU check ({rec['device_name']}, {rec['date']})", ""]
    if rec.get("dry_run"):
        lines += ["**Dry run on the CPU at toy sizes: the figures mean nothing.**", ""]
    p = rec["parts"]
    if "peak" in p and "error" not in p["peak"]:
        lines.append(f"Measured matmul peak ({p['peak']['dtype']}, {p['peak']['n']}²): {p['peak']['peak_tflops']:.1f} TFLOP/s")
    if "conformer" in p and "error" not in p["conformer"]:
        rows = [[r["mode"], r["batch"], f"{r['median_ms']:.1f}", f"{r['tflop_per_step']:.3f}",
                 f"{r['achieved_tflops']:.1f}", f"{100 * r['mfu']:.1f} %"] for r in p["conformer"]["rows"]]
        lines += ["", "Reference Conformer step (bench/conformer_step.py's config; batch × 400 frames):", "",
                  markdown_table(["mode", "batch", "step ms", "TFLOP/step", "TFLOP/s", "MFU"], rows)]
    if "train" in p and "error" not in p["train"]:
        t = p["train"]
        lines += ["", "Mini recipe config on synthetic data: " + ", ".join(
            f"{k}: {v['updates']} updates in {v['seconds']:.0f} s, valid loss {v['valid_loss']:.3f}"
            for k, v in t["runs"].items())]
        if "final_loss_ratio_cuda_over_cpu" in t:
            lines.append(f"CUDA/CPU final train loss {t['final_loss_ratio_cuda_over_cpu']:.3f}, curve rel. diff median "
                         f"{t['curve_median_rel_diff']:.3f} / max {t['curve_max_rel_diff']:.3f}, "
                         f"speed-up {t['speedup_cuda_over_cpu']:.1f}x")
    for name in ("sdpa", "amp", "nccl"):
        if name in p:
            lines.append(f"{name}: {'ok' if p[name].get('ok') else 'FAILED'} {json.dumps(p[name])[:400]}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--dry-run", action="store_true", help="toy sizes (for testing the script on a CPU)")
    ap.add_argument("--parts", nargs="+", default=["peak", "conformer", "sdpa", "amp", "nccl", "train"],
                    choices=["peak", "conformer", "sdpa", "amp", "nccl", "train"])
    ap.add_argument("--updates", type=int, default=300, help="updates of the mini recipe config (default 300)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=None, help="output dir (default $OUT/gpu_check)")
    args = ap.parse_args(argv)
    out = args.out or Path(os.environ.get("OUT", "bench/out")) / "gpu_check"
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (use --device cpu --dry-run to test the script)", file=sys.stderr)
        return 2
    dev = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    updates = min(args.updates, 20) if args.dry_run else args.updates
    rec: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "dry_run": args.dry_run,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "cuda": torch.version.cuda, "machine": machine_info(torch.get_num_threads()), "parts": {}}
    peak = None
    for name in args.parts:
        t0 = time.perf_counter()
        try:
            if name == "peak":
                res = part_peak(dev, args.dry_run)
                peak = res["peak_tflops"]
            elif name == "conformer":
                res = part_conformer(dev, args.dry_run, peak or part_peak(dev, args.dry_run)["peak_tflops"])
            elif name == "sdpa":
                res = part_sdpa(dev, args.dry_run)
            elif name == "amp":
                res = part_amp(dev, args.dry_run)
            elif name == "nccl":
                res = part_nccl(dev, args.dry_run)
            else:
                res = part_train(dev, args.dry_run, updates, out)
        except Exception as e:  # record and go on: one broken part must not hide the others' figures
            res = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(), "ok": False}
        res["seconds"] = time.perf_counter() - t0
        rec["parts"][name] = res
        print(f"gpu_check: {name} done in {res['seconds']:.1f} s{' (ERROR ' + res['error'] + ')' if 'error' in res else ''}",
              file=sys.stderr, flush=True)
        (out / "results.json").write_text(json.dumps(rec, indent=1, default=str))  # after every part
    (out / "results.md").write_text(report(rec))
    print(report(rec))
    return 0 if all("error" not in r for r in rec["parts"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
