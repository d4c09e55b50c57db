"""Vocoder inference speed (real-time factor at 1 and 2 threads) and vocoder training step times.

Systems, each timed on the same utterances, alternated round-robin per thread count:

- ``griffin-lim``: ground-truth 80-bin log-mel -> inverse mel (least squares) -> 32 Griffin-Lim
  iterations (``stk.synthesis.GriffinLimVocoder``; the mel analysis is not timed);
- ``world``: pyworld analysis-synthesis of the waveform (DIO + StoneMask, CheapTrick, D4C);
- ``hifigan``: the generator of ``egs/mini/vocoder/conf/hifigan.yaml`` on the log-mel (a packaged
  model with ``--hifigan``, else randomly initialised: the speed is the same);
- ``unit-vocoder``: frame units (50/s) -> log-mel by ``conf/unit_vocoder.yaml``'s model (``--unit-vocoder``
  package, else random init and random units) -> Griffin-Lim; ``unit-to-mel`` is its first half alone.

RTF = compute seconds / audio seconds (lower is faster). Training steps (forward + backward +
AdamW): HiFi-GAN at the recipe's batch (``--hifigan-segments`` crops of 32 frames = 8192 samples,
generator + MPD/MSD, all losses) and the unit vocoder at its batch (``--uv-frames`` mel frames).

Usage:
    .venv/bin/python bench/vocoder.py --data-dir egs/mini/vocoder/data/real_test_en --utts 6 \\
        --hifigan egs/mini/vocoder/exp/hifigan/package --unit-vocoder egs/mini/vocoder/exp/unit_vocoder/package \\
        --json bench/out/vocoder.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import alternate, machine_info, markdown_table, median, set_threads, write_json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "egs/mini/vocoder/conf"


def load_utterances(data_dir: Path | None, n: int) -> list[np.ndarray]:
    """The first ``n`` wavs of a data dir at 16 kHz, or synthetic harmonic tones (3 s each)."""
    from stk.synthesis import SAMPLE_RATE, resample

    if data_dir is not None and (data_dir / "wav.scp").exists():
        from stk.data.audio import read_audio
        from stk.data.kaldi import read_kv

        out = []
        for spec in list(read_kv(data_dir / "wav.scp").values())[:n]:
            w, r = read_audio(spec)
            out.append(resample(w, r, SAMPLE_RATE).astype(np.float32))
        return out
    rng = np.random.default_rng(0)
    t = np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE
    return [(0.1 * sum(np.sin(2 * np.pi * k * (110 + 10 * i) * t) / k for k in range(1, 6))
             + 0.01 * rng.standard_normal(t.size)).astype(np.float32) for i in range(n)]


def model_conf(name: str) -> dict:
    from stk.config import load_yaml

    return load_yaml(CONF / name)["model"]["conf"]


def build_systems(waves: list[np.ndarray], hifigan: str | None, unit_vocoder: str | None):
    """name -> callable running the system over all utterances."""
    from stk.features.mel import log_mel
    from stk.models.hifigan import HifiGanModel
    from stk.models.unit_vocoder import UnitVocoderModel
    from stk.synthesis import GriffinLimVocoder, WorldVocoder

    gl = GriffinLimVocoder()
    world = WorldVocoder()
    mels = [log_mel(w, 16000).numpy() for w in waves]
    if hifigan:
        from stk.synthesis import HifiGanVocoder

        hg = HifiGanVocoder(hifigan)
        gen = hg.lm.model.generator
    else:
        conf = model_conf("hifigan.yaml")
        gen = HifiGanModel(vocab_size=1, input_dim=256, **conf).generator.eval()
    if unit_vocoder:
        from stk.package import load_package

        uv = load_package(unit_vocoder).model
    else:
        conf = model_conf("unit_vocoder.yaml") | {"speaker_label": None}
        uv = UnitVocoderModel(vocab_size=1, input_dim=80, **conf).eval()
    g = torch.Generator().manual_seed(0)
    units = [torch.randint(0, uv.num_units, (max(2, int(len(w) / 16000 * uv.unit_rate)),), generator=g) for w in waves]
    nf0 = getattr(uv, "f0_bins", 0)  # a model with F0 input: random F0 bins, one per mel frame
    f0s = [torch.randint(0, nf0, (1, int(uv.mel_lengths(torch.tensor([u.numel()]))[0])), generator=g) if nf0 else None
           for u in units]

    def run_gl():
        for m in mels:
            gl(m)

    def run_world():
        for w in waves:
            world(w)

    def run_hifigan():
        with torch.inference_mode():
            for m in mels:
                gen(torch.from_numpy(m).T[None])

    def unit_mels():
        with torch.inference_mode():
            return [uv.generate(u[None], torch.tensor([u.numel()]), **({"f0": f} if nf0 else {}))[0][0].numpy()
                    for u, f in zip(units, f0s)]

    def run_unit():
        for m in unit_mels():
            gl(m)

    return {"griffin-lim": run_gl, "world": run_world, "hifigan": run_hifigan, "unit-vocoder": run_unit,
            "unit-to-mel": unit_mels}


def train_steps(threads: int, steps: int, segments: int, uv_frames: int) -> dict[str, float]:
    """Median seconds of one training step (forward + backward + AdamW) of each model."""
    from stk.models.hifigan import HifiGanModel
    from stk.models.unit_vocoder import UnitVocoderModel

    set_threads(threads)
    torch.manual_seed(0)
    hg = HifiGanModel(vocab_size=1, input_dim=256, **model_conf("hifigan.yaml")).train()
    hg_opt = torch.optim.AdamW(hg.parameters(), lr=2e-4, betas=(0.8, 0.99))
    seg = hg.segment_frames
    hg_batch = {"feats": 0.1 * torch.randn(segments, seg, 256), "feats_lens": torch.full((segments,), seg)}
    conf = model_conf("unit_vocoder.yaml") | {"speaker_label": None}
    uv = UnitVocoderModel(vocab_size=1, input_dim=80, **conf).train()
    uv_opt = torch.optim.AdamW(uv.parameters(), lr=2e-3)
    b, t_u = 24, max(8, int(uv_frames / 24 / uv.frames_per_unit))
    units = torch.randint(0, uv.num_units, (b, t_u))
    lens = torch.full((b,), t_u)
    mel_lens = uv.mel_lengths(lens)
    uv_batch = {"feats": torch.randn(b, int(mel_lens.max()), 80) - 5, "feats_lens": mel_lens, "units": units,
                "units_lens": lens, "utt_ids": [str(i) for i in range(b)]}
    if uv.f0_bins:
        uv_batch |= {"f0": torch.randint(0, uv.f0_bins, (b, int(mel_lens.max()))), "f0_lens": mel_lens.clone()}

    def step(model, opt, batch):
        def f():
            opt.zero_grad()
            model(batch)["loss"].backward()
            opt.step()
        return f

    times = alternate({"hifigan": step(hg, hg_opt, hg_batch), "unit-vocoder": step(uv, uv_opt, uv_batch)},
                      steps=steps, warmup=1)
    return {k: median(v) for k, v in times.items()} | {"uv_batch_mel_frames": int(mel_lens.sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, default=None, help="Data dir of test speech (default: synthetic tones).")
    ap.add_argument("--utts", type=int, default=6)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=3, help="Timed rounds per system and thread count.")
    ap.add_argument("--hifigan", default=None, help="A packaged hifigan (default: random init of conf/hifigan.yaml).")
    ap.add_argument("--unit-vocoder", default=None, help="A packaged unit_vocoder (default: random init).")
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--hifigan-segments", type=int, default=12)
    ap.add_argument("--uv-frames", type=int, default=6000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    waves = load_utterances(args.data_dir, args.utts)
    audio_s = sum(len(w) for w in waves) / 16000
    systems = build_systems(waves, args.hifigan, args.unit_vocoder)
    rows, record = [], {"machine": machine_info(args.threads[0]), "audio_s": audio_s, "utts": len(waves),
                        "data_dir": str(args.data_dir), "rtf": {}, "train_step_s": {}}
    for t in args.threads:
        set_threads(t)
        times = alternate(systems, steps=args.reps, warmup=1)
        record["rtf"][t] = {k: median(v) / audio_s for k, v in times.items()}
    for name in systems:
        rows.append([name] + [f"{record['rtf'][t][name]:.3f}" for t in args.threads])
    print(f"{len(waves)} utterances, {audio_s:.1f} s of audio; load {machine_info(1)['load_avg_1_5_15']}")
    print(markdown_table(["system"] + [f"RTF {t} thread(s)" for t in args.threads], rows))
    if args.train_steps:
        trows = []
        for t in args.threads:
            record["train_step_s"][t] = train_steps(t, args.train_steps, args.hifigan_segments, args.uv_frames)
        for name in ("hifigan", "unit-vocoder"):
            trows.append([name] + [f"{record['train_step_s'][t][name]:.2f}" for t in args.threads])
        print(f"\ntraining step (s, median of {args.train_steps}): hifigan {args.hifigan_segments} x 8192 samples; "
              f"unit-vocoder {record['train_step_s'][args.threads[0]]['uv_batch_mel_frames']} mel frames")
        print(markdown_table(["model"] + [f"s/step {t} thread(s)" for t in args.threads], trows))
    record["machine_end"] = machine_info(args.threads[-1])
    if args.json:
        write_json(args.json, record)


if __name__ == "__main__":
    main()
