"""Feature pipeline throughput: Kaldi fbank (80 bins) on 16 kHz audio, ×real-time per core.

Compares stk's feature path (``stk.features.fbank.compute_fbank``: float samples in [-1, 1] →
int16 scale → ``torchaudio.compliance.kaldi.fbank``) with calling
``torchaudio.compliance.kaldi.fbank`` directly on an int16-scale tensor, with the same settings
(25 ms / 10 ms, 80 bins, no dither, energy floor 0). If stk's module is missing, or its API
differs, only torchaudio is benched and the table says why.

Utterances are synthetic (a few harmonic tones with a moving pitch plus noise, 2–12 s), alternated
between the implementations; ×RT = seconds of audio per second of wall time, divided by threads.

Usage:
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/features.py --threads 1 --seconds 120
    .venv/bin/python bench/features.py --threads 2 --json bench/out/features.json
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import alternate, machine_info, markdown_table, median, set_threads, write_json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

RATE, BINS = 16000, 80


def synth_utterances(total_seconds: float, seed: int = 0) -> list[np.ndarray]:
    """Float32 waveforms in [-1, 1] of 2–12 s, ``total_seconds`` in all."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    left = total_seconds
    while left > 0.5:
        dur = float(min(left, rng.uniform(2.0, 12.0)))
        t = np.arange(int(dur * RATE)) / RATE
        f0 = 120.0 + 40.0 * np.sin(2 * math.pi * 0.5 * t)
        phase = 2 * math.pi * np.cumsum(f0) / RATE
        wave = sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.1 + 0.01 * rng.standard_normal(t.size)
        out.append(wave.astype(np.float32))
        left -= dur
    return out


def torchaudio_fbank(wave: np.ndarray) -> torch.Tensor:
    """Plain ``torchaudio.compliance.kaldi.fbank`` on int16-scale samples."""
    import torchaudio

    w = torch.from_numpy(wave).reshape(1, -1) * 32768.0
    return torchaudio.compliance.kaldi.fbank(
        w, sample_frequency=RATE, num_mel_bins=BINS, frame_length=25.0, frame_shift=10.0, dither=0.0, energy_floor=0.0
    )


def stk_fbank_fn() -> tuple[Callable[[np.ndarray], torch.Tensor] | None, str | None]:
    """stk's fbank as ``wave -> feats``, or ``None`` and the reason it is unavailable."""
    try:
        from stk.features.fbank import FbankConfig, compute_fbank
    except ImportError as e:
        return None, f"stk.features.fbank is not importable ({e}); benched torchaudio alone"
    conf = FbankConfig(sample_rate=RATE, num_mel_bins=BINS)
    return (lambda wave: compute_fbank(wave, RATE, conf)), None


def run(threads: int, seconds: float, rounds: int) -> dict[str, Any]:
    """Time every implementation over the whole synthetic set ``rounds`` times (alternated)."""
    set_threads(threads)
    utts = synth_utterances(seconds)
    audio_s = sum(u.size for u in utts) / RATE
    impls: dict[str, Callable[[np.ndarray], torch.Tensor]] = {"torchaudio": torchaudio_fbank}
    notes: list[str] = []
    stk_fn, why = stk_fbank_fn()
    if stk_fn is None:
        notes.append(str(why))
    else:
        ref, got = torchaudio_fbank(utts[0]), stk_fn(utts[0])
        if ref.shape != got.shape or not torch.allclose(ref, got, atol=1e-4):
            notes.append("stk's fbank differs from plain torchaudio's on the same settings")
        impls = {"stk": stk_fn, **impls}
    fns = {name: (lambda f=f: [f(u) for u in utts]) for name, f in impls.items()}
    times = alternate(fns, steps=rounds, warmup=1)
    results = {}
    for name in impls:
        t = median(times[name])
        results[name] = {"median_s": t, "xrt": audio_s / t, "xrt_per_core": audio_s / t / threads,
                         "times_s": times[name]}
    return {"audio_seconds": audio_s, "utterances": len(utts), "rounds": rounds,
            "machine": machine_info(threads), "results": results, "notes": notes}


def table(record: dict[str, Any]) -> str:
    """The markdown table of a record from :func:`run`."""
    res = record["results"]
    rows = [[name, f"{r['median_s']:.3f}", f"{r['xrt']:.0f}", f"{r['xrt_per_core']:.0f}",
             f"{res['torchaudio']['median_s'] / r['median_s']:.2f}"] for name, r in res.items()]
    m = record["machine"]
    foot = (f"\n{record['audio_seconds']:.0f} s of 16 kHz audio in {record['utterances']} utterances, median of "
            f"{record['rounds']} rounds, {m['threads']} thread(s), load avg {m['load_avg_1_5_15']}.")
    header = ["impl", "wall s (median)", "×RT", "×RT per core", "speed vs torchaudio"]
    return markdown_table(header, rows) + foot + "".join(f"\n- {n}" for n in record["notes"])


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1: ×RT per core)")
    ap.add_argument("--seconds", type=float, default=120.0, help="seconds of audio per round (default 120)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per implementation (default 5)")
    ap.add_argument("--json", type=Path, help="also write the record to this JSON file")
    args = ap.parse_args(argv)
    record = run(args.threads, args.seconds, args.rounds)
    print(table(record))
    if args.json:
        write_json(args.json, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
