"""mSLAM pre-training throughput: stk's ``MslamModel`` training step per batch kind, vs a plain Conformer CTC step.

For each model size, four full training steps (forward + backward + Adam) are timed round-robin
on fixed synthetic batches:

  * ``speech``: speech-only batch — w2v-BERT losses (Gumbel quantizer targets, span masking,
    contrastive loss with ``num_negatives`` same-utterance distractors, MLM over quantizer ids,
    codebook diversity).
  * ``text``: text-only batch — character span MLM through the same Conformer.
  * ``paired``: speech + transcript — CTC on the unmasked speech output plus TLM (masked speech
    and masked transcript concatenated in one sequence; both heads). Two passes of the layers.
  * ``conformer``: the reference — stk's ``ConformerEncoder`` with the same sizes and the same
    total number of layers (contrastive + MLM) + a linear CTC head over the character vocabulary,
    on the same speech batch and transcripts. There is no public mSLAM training code to run side
    by side, so this tells what the pre-training machinery (quantizer, negatives, MLM heads, TLM
    concatenation) costs on top of an ordinary Conformer ASR step.

Throughput: input fbank frames per second of step time (speech, paired, conformer) and
characters per second (text). Sizes:

  * ``mini``: ``egs/mini/mslam/conf/pretrain.yaml`` (d_model 96, 4 heads, FFN 256, 2 + 2 layers,
    kernel 15, subsampling channels 32, quantizer 2 × 64, speech span 5, 50 negatives).
  * ``base``: d_model 256, 4 heads, FFN 1024, 4 + 4 layers, kernel 15, subsampling channels 256,
    quantizer 2 × 320 (code_dim 256), the model's default masking (speech span 10, text span 20).

Synthetic inputs: batch ``--batch`` (8) × ``--seconds`` (10 s → 1000 frames) of N(0, 1) 80-bin fbank,
lengths 1000, 984, … (so padding masks are exercised); transcripts of ``--chars-per-second`` (15)
characters per second of audio; text-only batch ``--batch`` × ``--text-chars`` characters (default:
as many positions as the subsampled speech batch, 250, so the Conformer layers see sequences of the
same length); random ids from a ``--vocab`` (113, the mini recipe's character vocabulary) with the
blank (0) never drawn. Dropout 0.1 on, fp32, ``torch.optim.Adam`` defaults (as stk's trainer).

Usage:
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/mslam_pretrain.py --threads 2 --steps 3
    .venv/bin/python bench/mslam_pretrain.py --sizes mini --steps 5 --flops --json bench/out/mslam.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import alternate, count_flops, machine_info, markdown_table, median, set_threads, write_json  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

FEATS = 80
KINDS = ["speech", "text", "paired", "conformer"]

# Model sizes. ``mini`` is egs/mini/mslam/conf/pretrain.yaml's model.conf (variant mslam-ctc).
SIZES: dict[str, dict[str, Any]] = {
    "mini": {
        "encoder": {"d_model": 96, "num_heads": 4, "ffn_dim": 256, "num_contrastive_layers": 2, "num_mlm_layers": 2,
                    "kernel_size": 15, "dropout": 0.1, "subsampling_factor": 4, "subsampling_channels": 32},
        "quantizer": {"num_groups": 2, "num_entries": 64, "tau_decay": 0.999},
        "variant": "mslam-ctc", "speech_mask_ratio": 0.4, "speech_span": 5, "text_mask_ratio": 0.15, "text_span": 20,
        "num_negatives": 50, "speech_weight": 1.0, "text_weight": 0.3, "paired_weight": 0.03,
    },
    "base": {
        "encoder": {"d_model": 256, "num_heads": 4, "ffn_dim": 1024, "num_contrastive_layers": 4, "num_mlm_layers": 4,
                    "kernel_size": 15, "dropout": 0.1, "subsampling_factor": 4, "subsampling_channels": 256},
        "quantizer": {"num_groups": 2, "num_entries": 320, "code_dim": 256},
        "variant": "mslam-ctc", "speech_mask_ratio": 0.4, "speech_span": 10, "text_mask_ratio": 0.15, "text_span": 20,
        "num_negatives": 50, "speech_weight": 1.0, "text_weight": 0.3, "paired_weight": 0.03,
    },
}


def build_mslam(size: str, vocab: int) -> nn.Module:
    """stk's mSLAM model of the named size, training mode."""
    from stk.models.mslam import MslamModel

    return MslamModel(vocab_size=vocab, input_dim=FEATS, **SIZES[size]).train()


def build_conformer(size: str) -> nn.Module:
    """stk's plain Conformer encoder with the mSLAM encoder's sizes and total layer count."""
    from stk.modules.conformer import ConformerEncoder

    e = SIZES[size]["encoder"]
    return ConformerEncoder(
        input_dim=FEATS, d_model=e["d_model"], num_heads=e["num_heads"], ffn_dim=e["ffn_dim"],
        num_layers=e["num_contrastive_layers"] + e["num_mlm_layers"], kernel_size=e["kernel_size"],
        dropout=e["dropout"], subsampling_factor=e["subsampling_factor"],
        subsampling_channels=e["subsampling_channels"],
    )


def make_batches(batch: int, seconds: float, chars_per_second: float, text_chars: int, vocab: int,
                 seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """The speech-only, text-only and paired batches (the reference uses the paired one)."""
    g = torch.Generator().manual_seed(seed)
    frames = int(round(100 * seconds))
    lens = torch.tensor([frames - 16 * i for i in range(batch)])
    feats = torch.randn(batch, frames, FEATS, generator=g)
    feats *= (torch.arange(frames)[None, :] < lens[:, None])[..., None]
    ylens = (lens.float() / 100 * chars_per_second).round().long()
    ys = torch.randint(1, vocab, (batch, int(ylens.max())), generator=g)
    ys.masked_fill_(torch.arange(ys.size(1))[None, :] >= ylens[:, None], -1)
    tlens = torch.tensor([text_chars - 4 * i for i in range(batch)])
    text = torch.randint(1, vocab, (batch, text_chars), generator=g)
    text.masked_fill_(torch.arange(text_chars)[None, :] >= tlens[:, None], -1)
    return {
        "speech": {"feats": feats, "feats_lens": lens},
        "text": {"text": text, "text_lens": tlens},
        "paired": {"feats": feats, "feats_lens": lens, "text": ys, "text_lens": ylens},
    }


class MslamStep:
    """One mSLAM training step (forward + backward + Adam) on a fixed batch."""

    def __init__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> None:
        self.model, self.batch = model, batch
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        self.stats: dict[str, float] = {}

    def forward_backward(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        out = self.model(self.batch)
        out["loss"].backward()
        self.stats = out["stats"]

    def __call__(self) -> None:
        self.forward_backward()
        self.opt.step()


class ConformerCtcStep:
    """The reference: Conformer encoder + linear CTC head over the characters, same optimiser."""

    def __init__(self, encoder: nn.Module, vocab: int, batch: dict[str, torch.Tensor]) -> None:
        self.model = nn.ModuleDict({"encoder": encoder, "head": nn.Linear(encoder.output_dim, vocab)}).train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.batch = batch

    def forward_backward(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        b = self.batch
        y, lens = self.model["encoder"](b["feats"], b["feats_lens"])
        lp = self.model["head"](y).log_softmax(-1).transpose(0, 1)
        loss = F.ctc_loss(lp, b["text"].clamp(min=0), lens, b["text_lens"], reduction="sum",
                          zero_infinity=True) / b["feats"].size(0)
        loss.backward()

    def __call__(self) -> None:
        self.forward_backward()
        self.opt.step()


def num_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def run_size(size: str, args: argparse.Namespace) -> dict[str, Any]:
    """Build the four steps of one size, optionally count their FLOPs, and time them alternated."""
    batches = make_batches(args.batch, args.seconds, args.chars_per_second, args.text_chars, args.vocab, args.seed)
    steps: dict[str, Any] = {}
    for kind in ("speech", "text", "paired"):
        torch.manual_seed(args.seed)  # same initial weights for the three mSLAM steps
        steps[kind] = MslamStep(build_mslam(size, args.vocab), batches[kind])
    torch.manual_seed(args.seed)
    steps["conformer"] = ConformerCtcStep(build_conformer(size), args.vocab, batches["paired"])
    steps = {k: steps[k] for k in args.kinds}
    frames = int(batches["speech"]["feats_lens"].sum())  # the paired batch has the same speech
    units = {"speech": frames, "text": int(batches["text"]["text_lens"].sum()), "paired": frames, "conformer": frames}
    flops = {k: count_flops(s.forward_backward)[0] for k, s in steps.items()} if args.flops else {}
    times = alternate(dict(steps), steps=args.steps, warmup=args.warmup)
    ref = median(times["conformer"]) if "conformer" in times else None
    results: dict[str, Any] = {}
    for kind, s in steps.items():
        t = median(times[kind])
        r = {"median_s": t, "times_s": times[kind], "units": units[kind],
             "unit": "characters" if kind == "text" else "fbank frames", "per_s": units[kind] / t,
             "params_m": num_params(s.model) / 1e6}
        if ref is not None:
            r["time_vs_conformer"] = t / ref
        if kind in flops:
            r["gflop_fwd_bwd"] = flops[kind] / 1e9
            r["gflops_achieved"] = flops[kind] / t / 1e9
        if kind != "conformer":
            r["loss_terms"] = sorted(k for k in s.stats if k not in ("loss",))
        results[kind] = r
    e = SIZES[size]["encoder"]
    return {"size": size, "model_conf": SIZES[size], "results": results,
            "layers": e["num_contrastive_layers"] + e["num_mlm_layers"],
            "batch": {"speech_frames": batches["speech"]["feats_lens"].tolist(),
                      "transcript_chars": batches["paired"]["text_lens"].tolist(),
                      "text_chars": batches["text"]["text_lens"].tolist()}}


def run(args: argparse.Namespace) -> dict[str, Any]:
    set_threads(args.threads)
    record: dict[str, Any] = {
        "config": {"batch": args.batch, "seconds": args.seconds, "chars_per_second": args.chars_per_second,
                   "text_chars": args.text_chars, "vocab": args.vocab, "steps": args.steps, "warmup": args.warmup,
                   "seed": args.seed},
        "machine": machine_info(args.threads), "sizes": {},
    }
    for size in args.sizes:
        record["sizes"][size] = run_size(size, args)
    record["machine"]["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    return record


def table(record: dict[str, Any]) -> str:
    """One markdown table over all sizes of a record from :func:`run`."""
    flops = any("gflop_fwd_bwd" in r for s in record["sizes"].values() for r in s["results"].values())
    header = ["size", "step", "ms (median)", "throughput", "× Conformer CTC step time",
              "per-round ratios (median, range)", "params (M)",
              *(["GFLOP fwd+bwd", "GFLOP/s"] if flops else [])]
    names = {"speech": "mSLAM speech-only (w2v-BERT)", "text": "mSLAM text-only (span MLM)",
             "paired": "mSLAM paired (CTC + TLM)", "conformer": "Conformer + CTC (reference)"}
    rows = []
    for size, rec in record["sizes"].items():
        e = rec["model_conf"]["encoder"]
        label = (f"{size} (d {e['d_model']}, {e['num_contrastive_layers']}+{e['num_mlm_layers']} layers, "
                 f"FFN {e['ffn_dim']})")
        for kind, r in rec["results"].items():
            unit = "chars/s" if kind == "text" else "frames/s"
            ratio = f"{r['time_vs_conformer']:.2f}" if "time_vs_conformer" in r else "—"
            rounds = "—"
            if "conformer" in rec["results"] and kind != "conformer":
                rr = [a / b for a, b in zip(r["times_s"], rec["results"]["conformer"]["times_s"])]
                rounds = f"{median(rr):.2f} ({min(rr):.2f}–{max(rr):.2f})"
            extra = [f"{r['gflop_fwd_bwd']:.1f}", f"{r['gflops_achieved']:.0f}"] if flops else []
            rows.append([label, names[kind], f"{1e3 * r['median_s']:.0f}", f"{r['per_s']:.0f} {unit}", ratio,
                         rounds, f"{r['params_m']:.2f}", *extra])
    c, m = record["config"], record["machine"]
    foot = (f"\n\nbatch {c['batch']} × {c['seconds']:g} s (80-bin fbank, lengths {int(100 * c['seconds'])} − 16·i "
            f"frames), transcripts {c['chars_per_second']:g} chars/s, text-only {c['batch']} × {c['text_chars']} − 4·i "
            f"chars, "
            f"vocab {c['vocab']}; median of {c['steps']} alternated steps after {c['warmup']} warm-up; "
            f"{m['threads']} thread(s), {m['cpu']}, load avg {m['load_avg_1_5_15']} (after: {m['load_avg_after']}), "
            f"OMP_WAIT_POLICY={m['omp_wait_policy'] or 'unset'}, torch {m['torch']}.")
    return markdown_table(header, rows) + foot + (
        "\n(per-round ratio: a step's time over the reference step's time in the same round of the alternation)")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    ap.add_argument("--sizes", nargs="+", default=["mini", "base"], choices=list(SIZES),
                    help="model sizes (default both)")
    ap.add_argument("--kinds", nargs="+", default=KINDS, choices=KINDS, help="steps to time (default all four)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per kind (default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per kind first (default 1)")
    ap.add_argument("--batch", type=int, default=8, help="utterances / text lines per batch (default 8)")
    ap.add_argument("--seconds", type=float, default=10.0, help="longest utterance in seconds (default 10)")
    ap.add_argument("--chars-per-second", type=float, default=15.0, help="transcript length rate (default 15)")
    ap.add_argument("--text-chars", type=int, default=250, help="longest text-only line in characters (default 250)")
    ap.add_argument("--vocab", type=int, default=113, help="character vocabulary incl. blank (default 113)")
    ap.add_argument("--flops", action="store_true", help="count FLOPs of each step's forward + backward first")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the record (all step times) to this JSON file")
    ap.add_argument("--table-from", type=Path, help="only print the table of a record written by --json")
    args = ap.parse_args(argv)
    if args.table_from:
        print(table(json.loads(args.table_from.read_text())))
        return 0
    if "conformer" not in args.kinds:
        print("note: without the 'conformer' reference the ratio column stays empty", file=sys.stderr)
    record = run(args)
    print(table(record))
    if args.json:
        write_json(args.json, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
