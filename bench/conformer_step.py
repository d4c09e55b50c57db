"""Reference Conformer training step: stk vs torchaudio vs ESPnet, timed side by side.

The step (``shared/notes/anchors-perf.md``): batch 8 × 400 frames × 80 fbank → Conv2d subsampling
4× (two 3×3 stride-2 convs, 256 channels) → 6 Conformer layers (d_model 256, 4 heads, FFN 1024,
conv kernel 31) → CTC head (vocab 500); forward + backward + Adam, dropout 0.1 on, fp32.

Implementations:
  * ``stk``: :class:`stk.modules.conformer.ConformerEncoder` (rel-pos attention, macaron).
  * ``torchaudio``: ``torchaudio.models.Conformer`` behind a plain ESPnet-style Conv2d subsampling
    (``--torchaudio-subsampling stk``: behind stk's, to compare the Conformer layers alone).
  * ``espnet``: ``espnet2.asr.encoder.conformer_encoder.ConformerEncoder`` with ``rel_pos`` /
    ``rel_selfattn`` (``rel_pos_type="latest"``), macaron, conv module — if ESPnet is installed
    (``bash tools/install_peer.sh``); otherwise it says so and benches the rest.

Steps are alternated round-robin after a warm-up, together with an fp32 2048² matmul that measures
the machine's peak under the same load; the table gives medians, ratios, FLOPs per step
(``FlopCounterMode``, forward + backward) and model-FLOPs utilisation (FLOPs / median time / peak).

Usage:
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/conformer_step.py --threads 2 --steps 10
    .venv/bin/python bench/conformer_step.py --impls stk espnet --json bench/out/conformer.json
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402  (sets OMP_WAIT_POLICY before torch loads)
    alternate, count_flops, machine_info, markdown_table, matmul_gflops, median, set_threads, write_json,
)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

BATCH, FRAMES, FEATS = 8, 400, 80
D_MODEL, HEADS, FFN, LAYERS, KERNEL, VOCAB, DROPOUT = 256, 4, 1024, 6, 31, 500, 0.1
TARGET_LEN = 30


class PlainConv2dSubsampling(nn.Module):
    """ESPnet-style ``conv2d`` front-end (two 3×3 stride-2 Conv2d + ReLU, then a Linear), unoptimised."""

    def __init__(self, input_dim: int, d_model: int, channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, channels, 3, 2), nn.ReLU(), nn.Conv2d(channels, channels, 3, 2), nn.ReLU())
        self.out = nn.Linear(channels * (((input_dim - 1) // 2 - 1) // 2), d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, F)``, ``(B,)`` -> ``(B, T', D)``, ``(B,)``."""
        x = self.conv(x.unsqueeze(1))
        b, c, t, f = x.shape
        x = self.out(x.transpose(1, 2).reshape(b, t, c * f))
        return x, ((lengths - 1) // 2 - 1) // 2


class TorchaudioEncoder(nn.Module):
    """Conv2d subsampling (plain, or stk's with ``stk_subsampling``) + ``torchaudio.models.Conformer``."""

    def __init__(self, stk_subsampling: bool = False) -> None:
        super().__init__()
        from torchaudio.models import Conformer

        if stk_subsampling:
            from stk.modules.subsampling import Conv2dSubsampling

            self.subsampling: nn.Module = Conv2dSubsampling(input_dim=FEATS, d_model=D_MODEL, channels=D_MODEL)
        else:
            self.subsampling = PlainConv2dSubsampling(FEATS, D_MODEL, D_MODEL)
        self.conformer = Conformer(
            input_dim=D_MODEL, num_heads=HEADS, ffn_dim=FFN, num_layers=LAYERS,
            depthwise_conv_kernel_size=KERNEL, dropout=DROPOUT,
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, F)``, ``(B,)`` -> ``(B, T', D)``, ``(B,)``."""
        x, lengths = self.subsampling(x, lengths)
        return self.conformer(x, lengths)


class EspnetEncoder(nn.Module):
    """ESPnet's Conformer encoder, same sizes, adapted to ``forward(x, lengths) -> (y, lengths)``."""

    def __init__(self) -> None:
        super().__init__()
        with contextlib.redirect_stdout(sys.stderr):  # espnet prints a flash-attn notice on import
            from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
        self.enc = ConformerEncoder(
            input_size=FEATS, output_size=D_MODEL, attention_heads=HEADS, linear_units=FFN, num_blocks=LAYERS,
            dropout_rate=DROPOUT, positional_dropout_rate=DROPOUT, attention_dropout_rate=DROPOUT,
            input_layer="conv2d", normalize_before=True, macaron_style=True, rel_pos_type="latest",
            pos_enc_layer_type="rel_pos", selfattention_layer_type="rel_selfattn", activation_type="swish",
            use_cnn_module=True, cnn_module_kernel=KERNEL,
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, F)``, ``(B,)`` -> ``(B, T', D)``, ``(B,)``."""
        y, out_lengths, _ = self.enc(x, lengths)
        return y, out_lengths


def build_stk() -> nn.Module:
    """stk's encoder with the reference sizes."""
    from stk.modules.conformer import ConformerEncoder

    return ConformerEncoder(
        input_dim=FEATS, d_model=D_MODEL, num_heads=HEADS, ffn_dim=FFN, num_layers=LAYERS, kernel_size=KERNEL,
        dropout=DROPOUT, subsampling_factor=4, subsampling_channels=D_MODEL,
    )


def espnet_available() -> str | None:
    """``None`` if ESPnet's encoder imports, else the reason it does not."""
    try:
        with contextlib.redirect_stdout(sys.stderr):
            import espnet2.asr.encoder.conformer_encoder  # noqa: F401
    except Exception as e:  # ImportError, or a broken install
        return f"{type(e).__name__}: {e}"
    return None


class TrainStep:
    """One CTC training step (forward + backward + Adam) of an encoder with a linear CTC head."""

    def __init__(self, encoder: nn.Module, batch: dict[str, torch.Tensor]) -> None:
        self.model = nn.ModuleDict({"encoder": encoder, "head": nn.Linear(D_MODEL, VOCAB)}).train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.batch = batch

    def loss(self) -> torch.Tensor:
        """The CTC loss of the batch (forward only)."""
        b = self.batch
        y, lengths = self.model["encoder"](b["x"], b["lengths"])
        logp = self.model["head"](y).log_softmax(-1).transpose(0, 1)  # (T', B, V)
        return F.ctc_loss(logp, b["targets"], lengths, b["target_lengths"], zero_infinity=True)

    def forward_backward(self) -> None:
        """Forward and backward, no optimiser step (what the FLOP count covers)."""
        self.opt.zero_grad(set_to_none=True)
        self.loss().backward()

    def __call__(self) -> None:
        self.forward_backward()
        self.opt.step()

    def num_params(self) -> int:
        """Trainable parameters of the encoder."""
        return sum(p.numel() for p in self.model["encoder"].parameters() if p.requires_grad)


def make_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random fbank-like input with lengths 400…~340 (so padding masks are exercised) and CTC targets."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([FRAMES - 8 * i for i in range(BATCH)])
    return {
        "x": torch.randn(BATCH, FRAMES, FEATS, generator=g),
        "lengths": lengths,
        "targets": torch.randint(1, VOCAB, (BATCH, TARGET_LEN), generator=g),
        "target_lengths": torch.full((BATCH,), TARGET_LEN),
    }


def run(impls: list[str], threads: int, steps: int, warmup: int, ta_stk_sub: bool = False) -> dict[str, Any]:
    """Build, count and time the requested implementations; return a JSON-able record."""
    set_threads(threads)
    batch = make_batch()
    builders: dict[str, Callable[[], nn.Module]] = {
        "stk": build_stk, "torchaudio": lambda: TorchaudioEncoder(ta_stk_sub), "espnet": EspnetEncoder,
    }
    notes: list[str] = []
    if "espnet" in impls and (why := espnet_available()) is not None:
        notes.append(f"ESPnet is not installed ({why}); install it with `bash tools/install_peer.sh`. Benched the rest.")
        impls = [i for i in impls if i != "espnet"]
    trainers: dict[str, TrainStep] = {}
    for name in impls:
        torch.manual_seed(0)
        trainers[name] = TrainStep(builders[name](), batch)
    flops = {name: count_flops(t.forward_backward)[0] for name, t in trainers.items()}
    fwd_flops = {name: count_flops(lambda t=t: t.loss().detach())[0] for name, t in trainers.items()}
    peaks: list[float] = []
    fns: dict[str, Callable[[], Any]] = dict(trainers)
    fns["matmul 2048²"] = lambda: peaks.append(matmul_gflops())
    times = alternate(fns, steps=steps, warmup=warmup)
    peak = median(peaks)
    results = {}
    for name in trainers:
        t = median(times[name])
        results[name] = {
            "median_ms": 1e3 * t, "times_ms": [1e3 * x for x in times[name]], "gflop_per_step": flops[name] / 1e9,
            "forward_gflop": fwd_flops[name] / 1e9, "achieved_gflops": flops[name] / t / 1e9,
            "mfu": flops[name] / t / 1e9 / peak, "params_m": trainers[name].num_params() / 1e6,
        }
    return {"config": {"batch": BATCH, "frames": FRAMES, "feats": FEATS, "d_model": D_MODEL, "heads": HEADS,
                       "ffn": FFN, "layers": LAYERS, "kernel": KERNEL, "vocab": VOCAB, "dropout": DROPOUT,
                       "steps": steps, "warmup": warmup,
                       "torchaudio_subsampling": "stk" if ta_stk_sub else "plain"},
            "machine": machine_info(threads), "peak_gflops": peak, "peaks_gflops": peaks,
            "results": results, "notes": notes}


def table(record: dict[str, Any]) -> str:
    """The markdown table of a record from :func:`run`."""
    res = record["results"]
    rows = []
    for name, r in res.items():
        ratios = [f"{r['median_ms'] / res[o]['median_ms']:.2f}" if o in res and o != name else "—"
                  for o in ("espnet", "torchaudio")]
        rows.append([name, f"{r['median_ms']:.0f}", *ratios, f"{r['gflop_per_step']:.1f}", f"{r['forward_gflop']:.1f}",
                     f"{r['achieved_gflops']:.0f}", f"{100 * r['mfu']:.0f} %", f"{r['params_m']:.2f}"])
    header = ["impl", "step ms (median)", "× ESPnet", "× torchaudio", "GFLOP/step", "fwd GFLOP", "GFLOP/s", "MFU",
              "params (M)"]
    m = record["machine"]
    foot = (f"\n{m['threads']} thread(s), {m['cpu']}, matmul 2048² peak {record['peak_gflops']:.0f} GFLOP/s "
            f"(median of {len(record['peaks_gflops'])}, measured between the steps), median of "
            f"{record['config']['steps']} steps after {record['config']['warmup']} warm-up, load avg "
            f"{m['load_avg_1_5_15']}, OMP_WAIT_POLICY={m['omp_wait_policy'] or 'unset'}; torchaudio's "
            f"Conformer behind the {record['config']['torchaudio_subsampling']} Conv2d subsampling.")
    return markdown_table(header, rows) + foot + "".join(f"\n- {n}" for n in record["notes"])


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per implementation (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per implementation first (default 2)")
    ap.add_argument("--impls", nargs="+", default=["stk", "torchaudio", "espnet"],
                    choices=["stk", "torchaudio", "espnet"], help="implementations to bench (default all)")
    ap.add_argument("--torchaudio-subsampling", choices=["plain", "stk"], default="plain",
                    help="front-end for torchaudio's Conformer: a plain nn.Conv2d one (default) or stk's")
    ap.add_argument("--json", type=Path, help="also write the record (all step times) to this JSON file")
    args = ap.parse_args(argv)
    record = run(args.impls, args.threads, args.steps, args.warmup, args.torchaudio_subsampling == "stk")
    print(table(record))
    if args.json:
        write_json(args.json, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
