"""``stk synth``: speech out — log-mels, vocoding and copy synthesis into wav data dirs."""

from __future__ import annotations

import enum
import json
import logging
from pathlib import Path
from typing import Annotated

import typer

log = logging.getLogger("stk.synth")
app = typer.Typer(help="Speech out: vocoder log-mels, Griffin-Lim / WORLD / HiFi-GAN vocoding and unit resynthesis into wav data dirs.",
                  no_args_is_help=True)


class Vocoder(str, enum.Enum):
    griffin_lim = "griffin-lim"
    world = "world"
    hifigan = "hifigan"


class F0Method(str, enum.Enum):
    dio = "dio"
    harvest = "harvest"


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="synth")


def _fail(e: Exception) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(1)


@app.command()
def resynth(
    data_dir: Annotated[Path, typer.Argument(help="Data dir with a wav.scp (any rate; resampled to 16 kHz).")],
    out_dir: Annotated[Path, typer.Argument(help="Output wav data dir (OUT/wav/<utt>.wav, wav.scp, utt2spk, text).")],
    vocoder: Annotated[Vocoder, typer.Option(help="griffin-lim or hifigan (from the ground-truth log-mel) or world (WORLD analysis-synthesis).")] = Vocoder.griffin_lim,
    model: Annotated[str | None, typer.Option(help="hifigan: the packaged vocoder (dir or model-store name).")] = None,
    n_iter: Annotated[int, typer.Option(help="Griffin-Lim iterations.")] = 32,
    momentum: Annotated[float, typer.Option(help="Griffin-Lim momentum.")] = 0.99,
    f0_method: Annotated[F0Method, typer.Option(help="WORLD F0 estimator.")] = F0Method.dio,
    limit: Annotated[int, typer.Option(help="Only the first N utterances (0: all).")] = 0,
    threads: Annotated[int, typer.Option(help="torch threads (RTF is reported for this count).")] = 1,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write {utts, audio_s, compute_s, rtf} as JSON.")] = None,
) -> None:
    """Copy-synthesise a data dir through a vocoder into a wav data dir; prints the real-time factor.

    Examples:\n
      stk synth resynth data/real_test exp/vocoder/gl_real_test --vocoder griffin-lim\n
      stk synth resynth data/real_test exp/vocoder/world_real_test --vocoder world
    """
    from stk.data.kaldi import DataDirError
    from stk.synthesis import resynthesize_data_dir
    from stk.utils import set_threads, setup_logging

    setup_logging()
    set_threads(threads)
    try:
        st = resynthesize_data_dir(data_dir, out_dir, vocoder=vocoder.value, n_iter=n_iter, momentum=momentum,
                                   f0_method=f0_method.value, limit=limit or None, model=model)
    except (ValueError, DataDirError) as e:
        _fail(e)
    typer.echo(f"{out_dir}: {st['utts']} utts, {st['audio_s']:.1f} s of audio, RTF {st['rtf']:.3f} "
               f"({vocoder.value}, {threads} thread(s))")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(st, indent=1))


@app.command()
def mels(
    data_dir: Annotated[Path, typer.Argument(help="Data dir with a wav.scp.")],
    out_dir: Annotated[Path, typer.Argument(help="Writes OUT/mel.ark, mel.scp (kaldiio) and mel.json (the settings).")],
) -> None:
    """Dump the vocoder log-mels (80 bins, 16 kHz, hop 256) that TTS models predict and vocoders read."""
    from stk.data.kaldi import DataDirError
    from stk.synthesis import dump_mels
    from stk.utils import setup_logging

    setup_logging()
    try:
        n = dump_mels(data_dir, out_dir)
    except (ValueError, DataDirError) as e:
        _fail(e)
    typer.echo(f"{out_dir}/mel.scp: {n} utterances")


@app.command()
def vocode(
    mel_scp: Annotated[Path, typer.Argument(help="Kaldi scp of log-mels (T, 80), e.g. from `stk synth mels` or a TTS model.")],
    out_dir: Annotated[Path, typer.Argument(help="Output wav data dir.")],
    data_dir: Annotated[Path | None, typer.Option(help="Copy utt2spk and text from this data dir.")] = None,
    mel_json: Annotated[Path | None, typer.Option(help="Mel settings (default: mel.json beside MEL_SCP, else the defaults).")] = None,
    model: Annotated[str | None, typer.Option(help="A packaged hifigan vocoder; default: Griffin-Lim.")] = None,
    n_iter: Annotated[int, typer.Option(help="Griffin-Lim iterations.")] = 32,
    momentum: Annotated[float, typer.Option(help="Griffin-Lim momentum.")] = 0.99,
    threads: Annotated[int, typer.Option(help="torch threads.")] = 1,
) -> None:
    """Vocode log-mels with Griffin-Lim (or a packaged HiFi-GAN, --model) into a wav data dir."""
    from stk.data.kaldi import DataDirError, load_data_dir
    from stk.features.mel import MelConfig
    from stk.synthesis import load_mel_config, vocode_feats
    from stk.vocoders import GriffinLimVocoder, HifiGanVocoder
    from stk.utils import set_threads, setup_logging

    setup_logging()
    set_threads(threads)
    try:
        mj = mel_json or (mel_scp.parent / "mel.json")
        conf = load_mel_config(mj) if mj.exists() else MelConfig()
        d = load_data_dir(data_dir) if data_dir is not None else None
        voc = (HifiGanVocoder(model) if model else GriffinLimVocoder(mel_config=conf, n_iter=n_iter, momentum=momentum))
        if model and voc.mel_config != conf:
            raise ValueError(f"{model} was trained on mel settings {voc.mel_config}, {mel_scp} has {conf}")
        out = vocode_feats(mel_scp, out_dir, voc,
                           utt2spk=d.utt2spk if d else None, text=d.text if d else None)
    except (ValueError, DataDirError) as e:
        _fail(e)
    typer.echo(f"{out}/wav.scp written")


@app.command()
def units(
    data_dir: Annotated[Path, typer.Argument(help="Data dir with a `units` file (`stk units dump DATA_DIR --model UNITS`, frame units, no --dedup); its utt2spk picks the speaker.")],
    model: Annotated[str, typer.Option(help="The packaged unit_vocoder (units -> log-mel; dir or model-store name).")] = ...,
    out: Annotated[Path, typer.Option(help="Output wav data dir (OUT/wav/<utt>.wav, wav.scp, utt2spk, text).")] = ...,
    units_file: Annotated[Path | None, typer.Option(help="Units file (default DATA_DIR/units).")] = None,
    vocoder_model: Annotated[str | None, typer.Option(help="A packaged hifigan for the mel -> wave step; default: Griffin-Lim.")] = None,
    n_iter: Annotated[int, typer.Option(help="Griffin-Lim iterations.")] = 32,
    momentum: Annotated[float, typer.Option(help="Griffin-Lim momentum.")] = 0.99,
    limit: Annotated[int, typer.Option(help="Only the first N utterances (0: all).")] = 0,
    threads: Annotated[int, typer.Option(help="torch threads (RTF is reported for this count).")] = 1,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write {utts, audio_s, compute_s, rtf} as JSON.")] = None,
) -> None:
    """Resynthesise speech from discrete units (unit vocoder: units -> log-mel -> Griffin-Lim/HiFi-GAN) into a wav data dir.

    Examples:\n
      stk units dump data/real_test --model exp/units_mfcc\n
      stk synth units data/real_test --model mini-unit-vocoder --out exp/unit-vocoder/real_test
    """
    from stk.config import ConfigError
    from stk.data.kaldi import DataDirError
    from stk.synthesis import synthesize_units
    from stk.vocoders import HifiGanVocoder, UnitVocoder
    from stk.utils import set_threads, setup_logging

    setup_logging()
    set_threads(threads)
    try:
        mel_voc = HifiGanVocoder(vocoder_model) if vocoder_model else None
        voc = UnitVocoder(model, mel_vocoder=mel_voc, n_iter=n_iter, momentum=momentum)
        st = synthesize_units(data_dir, out, voc, units_file=units_file, limit=limit or None)
    except (ValueError, DataDirError, ConfigError, FileNotFoundError) as e:
        _fail(e)
    typer.echo(f"{out}: {st['utts']} utts, {st['audio_s']:.1f} s of audio, RTF {st['rtf']:.3f} "
               f"(unit vocoder + {'hifigan' if vocoder_model else 'griffin-lim'}, {threads} thread(s))")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(st, indent=1))


@app.command()
def frames(
    data_dir: Annotated[Path, typer.Argument(help="Data dir with a wav.scp (any rate; resampled to 16 kHz).")],
    out_dir: Annotated[Path, typer.Argument(help="Vocoder-training data dir: feats.{ark,scp} of (T, hop) waveform frames + utt2spk, text.")],
    hop_length: Annotated[int, typer.Option(help="Samples per frame (the mel hop).")] = 256,
) -> None:
    """Cut every waveform into (T, hop) frames in feats.scp: the training data of the hifigan model."""
    from stk.data.kaldi import DataDirError
    from stk.synthesis import dump_wave_frames
    from stk.utils import setup_logging

    setup_logging()
    try:
        n = dump_wave_frames(data_dir, out_dir, hop_length=hop_length)
    except (ValueError, DataDirError) as e:
        _fail(e)
    typer.echo(f"{out_dir}/feats.scp: {n} utterances")


def _cell(path: Path, key: str, fmt: str = "{:.1f}", ci: bool = False) -> str:
    if not path.exists():
        return "–"
    r = json.loads(path.read_text())
    if key not in r:
        return "–"
    s = fmt.format(r[key])
    if ci and r.get("ci95") == r.get("ci95"):  # not NaN
        s += " ± " + fmt.format(r["ci95"])
    return s


def _ci(path: Path, key: str) -> str:
    """`` [lo, hi]`` from a ``stk score --bootstrap --json`` file, or ``""``."""
    if not path.exists():
        return ""
    b = json.loads(path.read_text()).get("bootstrap", {})
    return f" [{b[key][0]:.1f}, {b[key][1]:.1f}]" if key in b else ""


@app.command()
def report(
    exp_dir: Annotated[Path, typer.Argument(help="Recipe exp dir: EXP/<system>/<set>/{judge_wer,mcd,spk_sim,spk_sim_xvector,rtf}.json.")],
    systems: Annotated[str, typer.Option(help="Comma-separated row names (sub-dirs of EXP_DIR), e.g. original,griffin-lim,world,hifigan.")],
    sets: Annotated[str, typer.Option(help="Comma-separated test sets (sub-dirs of each system).")],
    out: Annotated[Path | None, typer.Option(help="Write the markdown here (default: stdout).")] = None,
    title: Annotated[str, typer.Option(help="Heading.")] = "Vocoders",
    notes: Annotated[str, typer.Option(help="Text under the heading.")] = "",
) -> None:
    """Gather vocoder scores into one markdown table.

    Columns: judge WER/CER and MCD per test set, speaker similarity and RTF; a missing score is
    shown as –."""
    from stk.metrics_speech import MCD_NAME
    from stk.utils import atomic_write_text

    syss, tsets = systems.split(","), sets.split(",")
    head = ["system"]
    for x in tsets:
        head += [f"judge WER % {x}", f"judge CER % {x}", f"MCD dB {x}", f"spk-sim resemblyzer {x}", f"spk-sim x-vector {x}"]
    head.append("RTF (1 thread)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for s in syss:
        row = [s]
        rtfs = []
        for x in tsets:
            d = exp_dir / s / x
            row += [_cell(d / "judge_wer.json", "wer") + _ci(d / "judge_wer_ci.json", "wer"),
                    _cell(d / "judge_wer.json", "cer") + _ci(d / "judge_wer_ci.json", "cer"),
                    _cell(d / "mcd.json", "mean", "{:.2f}", ci=True), _cell(d / "spk_sim.json", "mean", "{:.3f}"),
                    _cell(d / "spk_sim_xvector.json", "mean", "{:.3f}")]
            if (d / "rtf.json").exists():
                rtfs.append(json.loads((d / "rtf.json").read_text())["rtf"])
        row.append(f"{sum(rtfs) / len(rtfs):.3f}" if rtfs else "–")
        lines.append("| " + " | ".join(row) + " |")
    cmp = ["| system − original | " + " | ".join(f"judge WER {x}" for x in tsets) + " |",
           "|---|" + "---|" * len(tsets)]
    for s in syss[1:]:
        cells = []
        for x in tsets:
            p = exp_dir / s / x / "judge_cmp.json"
            if p.exists():
                w = json.loads(p.read_text())["wer"]
                cells.append(f"{-w['diff']:+.1f} [{-w['ci'][1]:+.1f}, {-w['ci'][0]:+.1f}]: "
                             + {"no difference": "no difference"}.get(w["verdict"], "worse" if w["diff"] < 0 else "better"))
            else:
                cells.append("–")
        cmp.append(f"| {s} | " + " | ".join(cells) + " |")
    has_cmp = any((exp_dir / s / x / "judge_cmp.json").exists() for s in syss[1:] for x in tsets)
    text = (f"## {title}\n\n" + (f"{notes}\n\n" if notes else "") + "\n".join(lines) + "\n\n"
            f"MCD: {MCD_NAME}, against the original, ± its 95 % interval. Judge: Whisper base (faster-whisper int8, "
            "beam 1), WER/CER after lowercasing and stripping punctuation, [95 % bootstrap interval over utterances] "
            "where computed. Speaker similarity: cosine of embeddings "
            "of each generated utterance and its original. RTF: compute seconds per audio second, 1 thread.\n")
    if has_cmp:
        text += ("\nJudge WER of each system minus the original's on the same utterances, with its 95 % paired-bootstrap "
                 "interval (`stk score --compare`; 'no difference' when the interval contains 0):\n\n" + "\n".join(cmp) + "\n")
    if out is None:
        typer.echo(text)
    else:
        atomic_write_text(out, text)


@app.command()
def plot(
    out: Annotated[Path, typer.Argument(help="PNG to write.")],
    dirs: Annotated[list[str], typer.Argument(help="NAME=DATA_DIR pairs: the original first, then each vocoder's output.")],
    utt: Annotated[str | None, typer.Option(help="Utterance to show (default: the first of the first dir).")] = None,
) -> None:
    """Log-mel spectrograms of one utterance, original vs each vocoder, stacked in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stk.data.audio import read_audio
    from stk.data.kaldi import read_kv
    from stk.features.mel import log_mel
    from stk.synthesis import resample

    pairs = []
    for d in dirs:
        if "=" not in d:
            _fail(ValueError(f"expected NAME=DATA_DIR, got {d!r}"))
        name, path = d.split("=", 1)
        pairs.append((name, read_kv(Path(path) / "wav.scp")))
    u = utt or next(iter(pairs[0][1]))
    fig, axes = plt.subplots(len(pairs), 1, figsize=(8, 2.2 * len(pairs)), squeeze=False)
    for ax, (name, scp) in zip(axes[:, 0], pairs):
        if u not in scp:
            _fail(ValueError(f"{name}: utterance {u!r} not in its wav.scp"))
        w, r = read_audio(scp[u])
        m = log_mel(resample(w, r, 16000), 16000).numpy().T
        ax.imshow(m, origin="lower", aspect="auto", vmin=-11, vmax=2, cmap="magma")
        ax.set_title(f"{name}: {u}", fontsize=9)
        ax.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel("frame (16 ms)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    typer.echo(f"{out}: {len(pairs)} spectrograms of {u}")
