"""``stk data``: validate, fix, split data dirs; dump fbank features; compute CMVN."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Annotated

import typer

log = logging.getLogger("stk.data")
app = typer.Typer(help="Kaldi data dirs: validate, fix, split, dump features, CMVN.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="data")


def _fail(e: Exception) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(1)


@app.command()
def validate(
    data_dir: Annotated[Path, typer.Argument(help="Kaldi data dir to check.")],
    no_audio: Annotated[bool, typer.Option("--no-audio", help="Skip reading the audio headers.")] = False,
    sample_rate: Annotated[int, typer.Option(help="Expected sample rate (0: any).")] = 16000,
    allow_pipes: Annotated[bool, typer.Option(help="Allow wav.scp pipe commands (runs shell commands).")] = False,
    allow_empty_text: Annotated[bool, typer.Option(help="Accept empty transcripts.")] = False,
    no_spk_sort: Annotated[bool, typer.Option("--no-spk-sort", help="Do not require utt2spk sorted by speaker too (Kaldi's --no-spk-sort; speaker ids need not prefix utterance ids).")] = False,
) -> None:
    """Check a data dir like Kaldi's validate_data_dir.sh; exits 1 naming the file and line of the first problem.

    Checks LF line endings, sorted unique ids, speaker ids prefixing utterance ids, matching
    text/utt2*/feats.scp/spk2gender/cmvn.scp ids, no <s> </s> #0 in text, positive utt2dur and
    integer utt2num_frames, non-empty transcripts, readable audio at the expected rate.
    """
    from stk.data.kaldi import DataDirError, validate_data_dir

    try:
        d = validate_data_dir(data_dir, check_audio=not no_audio, allow_pipes=allow_pipes,
                              expected_rate=sample_rate or None, allow_empty_text=allow_empty_text,
                              spk_sort=not no_spk_sort)
    except DataDirError as e:
        _fail(e)
    typer.echo(f"{data_dir}: OK ({len(d.utt_ids)} utterances)")


@app.command()
def fix(data_dir: Annotated[Path, typer.Argument(help="Data dir to repair in place.")]) -> None:
    """Sort every file, keep only utterances present everywhere, rebuild spk2utt."""
    from stk.data.kaldi import DataDirError, fix_data_dir

    try:
        fix_data_dir(data_dir)
    except DataDirError as e:
        _fail(e)


@app.command()
def split(
    data_dir: Annotated[Path, typer.Argument(help="Data dir to split.")],
    num: Annotated[int, typer.Argument(help="Number of parts.")],
    by_speaker: Annotated[bool, typer.Option(help="Keep each speaker within one part.")] = False,
) -> None:
    """Split a data dir into DATA_DIR/split<N>/<1..N> (contiguous, near-equal parts)."""
    from stk.data.kaldi import load_data_dir, read_kv, write_kv, spk2utt_from_utt2spk

    d = load_data_dir(data_dir)
    utts = d.utt_ids
    if num < 1 or num > len(utts):
        _fail(ValueError(f"cannot split {len(utts)} utterances into {num} parts"))
    groups: list[list[str]] = []
    if by_speaker and d.utt2spk:
        spk_groups: dict[str, list[str]] = {}
        for u in utts:
            spk_groups.setdefault(d.utt2spk[u], []).append(u)
        groups = list(spk_groups.values())
    else:
        groups = [[u] for u in utts]
    parts: list[list[str]] = [[] for _ in range(num)]
    total, acc, k = len(utts), 0, 0
    for g in groups:
        if k < num - 1 and acc >= (k + 1) * total / num:
            k += 1
        parts[k].extend(g)
        acc += len(g)
    files = [f for f in data_dir.iterdir() if f.is_file() and f.name not in ("spk2utt", "wav.scp", "segments")]
    for i, part in enumerate(parts, 1):
        out = data_dir / f"split{num}" / str(i)
        out.mkdir(parents=True, exist_ok=True)
        keep = set(part)
        if d.segments is not None:
            seg = read_kv(data_dir / "segments")
            write_kv(out / "segments", {u: v for u, v in seg.items() if u in keep})
            recs = {d.segments[u][0] for u in part}
            write_kv(out / "wav.scp", {r: v for r, v in (d.wav_scp or {}).items() if r in recs})
        elif d.wav_scp is not None:
            write_kv(out / "wav.scp", {u: v for u, v in d.wav_scp.items() if u in keep})
        for f in files:
            kv = read_kv(f)
            if set(kv) & keep:
                write_kv(out / f.name, {u: v for u, v in kv.items() if u in keep})
        if d.utt2spk:
            write_kv(out / "spk2utt", spk2utt_from_utt2spk({u: d.utt2spk[u] for u in part}))
    typer.echo(f"{data_dir}/split{num}: {[len(p) for p in parts]}")


@app.command()
def fbank(
    data_dir: Annotated[Path, typer.Argument(help="Input data dir (wav.scp [+ segments]).")],
    out_dir: Annotated[Path, typer.Argument(help="Output data dir: a copy with feats.ark/feats.scp/utt2num_frames.")],
    num_mel_bins: Annotated[int, typer.Option(help="Mel bins.")] = 80,
    sample_rate: Annotated[int, typer.Option(help="Expected sample rate.")] = 16000,
    allow_pipes: Annotated[bool, typer.Option(help="Allow wav.scp pipe commands.")] = False,
) -> None:
    """Dump Kaldi fbank features to OUT_DIR/feats.{ark,scp} (kaldiio) and copy the data files.

    Each recording is read once (its segments are cut from one read). OUT_DIR appears only when
    complete: it is written as a temporary sibling and renamed at the end, so a failure leaves no
    partial dir. An earlier output at OUT_DIR (a dir with feats.scp) is replaced, whole, only on
    success; any other non-empty OUT_DIR is refused.
    """
    import os
    import tempfile

    import kaldiio

    from stk.console import progress
    from stk.data.audio import AudioError, iter_utterances
    from stk.data.kaldi import DataDirError, load_data_dir, read_kv, write_kv
    from stk.features.fbank import FbankConfig, compute_fbank
    from stk.utils import set_threads, setup_logging

    setup_logging()
    set_threads()
    conf = FbankConfig(sample_rate=sample_rate, num_mel_bins=num_mel_bins)
    try:
        d = load_data_dir(data_dir)
    except DataDirError as e:
        _fail(e)
    if d.wav_scp is None:
        _fail(DataDirError(f"{data_dir}: no wav.scp"))
    if out_dir.resolve() == data_dir.resolve():
        _fail(DataDirError(f"{out_dir}: the output dir must differ from the input dir"))
    final = out_dir.resolve()
    if final.exists() and (not final.is_dir() or (any(final.iterdir()) and not (final / "feats.scp").exists())):
        _fail(DataDirError(f"{out_dir}: exists and is not an earlier `stk data fbank` output (no feats.scp); "
                           "not replacing it"))
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        for f in data_dir.iterdir():
            if f.is_file() and f.name not in ("feats.scp", "feats.ark", "utt2num_frames"):
                shutil.copy(f, tmp / f.name)
        frames: dict[str, str] = {}
        utts = d.utt_ids
        with kaldiio.WriteHelper(f"ark,scp:{tmp / 'feats.ark'},{tmp / 'feats.scp.unsorted'}") as writer, \
                progress() as bar:
            task = bar.add_task(f"fbank {data_dir.name}", total=len(utts))
            it = iter_utterances(d.wav_scp, utts, d.segments, allow_pipes=allow_pipes)
            try:
                for utt, wav, rate in _in_source(it, data_dir):
                    try:
                        feats = compute_fbank(wav, rate, conf)
                    except ValueError as e:
                        raise DataDirError(f"{data_dir}: utterance {utt!r}: {e}") from None
                    writer(utt, feats.numpy())
                    frames[utt] = str(feats.size(0))
                    bar.advance(task)
            except AudioError as e:  # names the recording's file
                raise DataDirError(f"{data_dir}: {e}") from None
        # the scp names the final ark path, sorted by id like every data file
        ark_tmp, ark_final = str(tmp / "feats.ark"), str(final / "feats.ark")
        scp = {u: v.replace(ark_tmp, ark_final, 1) for u, v in read_kv(tmp / "feats.scp.unsorted").items()}
        (tmp / "feats.scp.unsorted").unlink()
        write_kv(tmp / "feats.scp", scp)
        write_kv(tmp / "utt2num_frames", frames)
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-"))
            final.rename(old / "d")
        tmp.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, DataDirError):
            _fail(e)
        raise
    log.info("%s: %d utterances, %d frames -> %s", data_dir, len(frames), sum(map(int, frames.values())), out_dir)


def _in_source(it, data_dir: Path):
    """Iterate ``it`` with ``data_dir`` named as the audio source (the once-per-dir stereo notice)."""
    from stk.data.audio import audio_source

    with audio_source(str(data_dir)):
        yield from it


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


@app.command()
def cmvn(
    data_dirs: Annotated[list[Path], typer.Argument(help="Data dirs with feats.scp.")],
    out: Annotated[Path, typer.Option(help="Output JSON with global mean/std.")] = Path("cmvn.json"),
) -> None:
    """Accumulate global CMVN statistics over dumped features."""
    import kaldiio
    import numpy as np

    from stk.features.fbank import GlobalCMVN
    from stk.utils import setup_logging

    setup_logging()
    total = total_sq = None
    count = 0
    for d in data_dirs:
        if not (d / "feats.scp").is_file():
            _fail(ValueError(f"{d}: no feats.scp (dump features first: stk data fbank {d} OUT_DIR)"))
        utt = None
        try:
            for utt, mat in kaldiio.load_scp_sequential(str(d / "feats.scp")):
                m = mat.astype(np.float64)
                total = m.sum(0) if total is None else total + m.sum(0)
                total_sq = (m**2).sum(0) if total_sq is None else total_sq + (m**2).sum(0)
                count += m.shape[0]
        except Exception as e:  # a missing or cut ark, a malformed line
            after = f" after utterance {utt!r}" if utt else ""
            _fail(ValueError(f"{d}/feats.scp: cannot read the features{after}: {type(e).__name__}: "
                             f"{' '.join(str(e).split())[:200]}"))
    if not count:
        _fail(ValueError(f"{', '.join(map(str, data_dirs))}: feats.scp lists no frames"))
    GlobalCMVN.from_stats(total, total_sq, count).save(out)
    log.info("CMVN over %d frames -> %s", count, out)


@app.command()
def combine(
    out_dir: Annotated[Path, typer.Argument(help="Output data dir.")],
    in_dirs: Annotated[list[Path], typer.Argument(help="Data dirs to merge (utterance ids must be disjoint).")],
    normalize_text: Annotated[bool, typer.Option(help="Lowercase `text` and strip its punctuation (ASR targets).")] = False,
    langs: Annotated[str | None, typer.Option(help="Keep only utterances of these languages (comma-separated; needs utt2lang).")] = None,
    subset: Annotated[int | None, typer.Option(help="Keep a random subset of this many utterances (like subset_data_dir.sh; seeded).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of --subset.")] = 0,
    exclude: Annotated[Path | None, typer.Option(help="Drop the utterances listed in this data dir (e.g. the complement of a --subset).")] = None,
) -> None:
    """Merge data dirs (like Kaldi's combine_data.sh): files present in every input are combined."""
    from stk.data.kaldi import DataDirError, read_kv, write_data_dir
    from stk.scoring import Normalizer

    names = None
    for d in in_dirs:
        if not d.is_dir():
            _fail(DataDirError(f"{d}: data dir not found"))
        present = {f.name for f in d.iterdir() if f.is_file() and f.name not in ("spk2utt", "feats.ark")}
        names = present if names is None else names & present
    merged: dict[str, dict[str, str]] = {n: {} for n in sorted(names or [])}
    for d in in_dirs:
        for n in merged:
            kv = read_kv(d / n)
            clash = set(kv) & set(merged[n])
            if clash:
                _fail(DataDirError(f"{d}/{n}: id {sorted(clash)[0]!r} also appears in an earlier input"))
            merged[n].update(kv)
    if langs is not None:
        if "utt2lang" not in merged:
            _fail(DataDirError("--langs needs utt2lang in every input"))
        keep_langs = set(langs.split(","))
        keep = {u for u, lang in merged["utt2lang"].items() if lang in keep_langs}
        merged = {n: {u: v for u, v in kv.items() if u in keep} for n, kv in merged.items()}
    if exclude is not None:
        gone = set(read_kv(exclude / "utt2spk")) if (exclude / "utt2spk").exists() else set(read_kv(exclude / "text"))
        merged = {n: {u: v for u, v in kv.items() if u not in gone} for n, kv in merged.items()}
    if subset is not None:
        import random

        ids = sorted(next(iter(merged.values()), {}))
        if subset < 1:
            _fail(DataDirError(f"--subset must be >= 1, got {subset}"))
        keep = set(random.Random(seed).sample(ids, min(subset, len(ids))))
        merged = {n: {u: v for u, v in kv.items() if u in keep} for n, kv in merged.items()}
    if normalize_text and "text" in merged:
        norm = Normalizer()
        merged["text"] = {u: norm(t) for u, t in merged["text"].items()}
    utt2spk = merged.pop("utt2spk", None)
    if not next(iter(merged.values()), {}):
        _fail(DataDirError(f"{out_dir}: no utterances left to write"))
    write_data_dir(out_dir, utt2spk=utt2spk, extra=merged)
    typer.echo(f"{out_dir}: {len(next(iter(merged.values()), {}))} entries from {len(in_dirs)} dirs")


@app.command("to-lhotse")
def to_lhotse_cmd(
    data_dir: Annotated[Path, typer.Argument(help="Kaldi data dir (wav.scp [+ segments], text, utt2spk, utt2lang, text.<lang>…).")],
    out: Annotated[Path, typer.Argument(help="Output dir: recordings.jsonl.gz and supervisions.jsonl.gz.")],
    sample_rate: Annotated[int, typer.Option(help="Sampling rate of the recordings.")] = 16000,
    allow_pipes: Annotated[bool, typer.Option(help="Let lhotse run wav.scp pipes to measure durations (no utt2dur/reco2dur).")] = False,
) -> None:
    """Write lhotse recordings and supervisions manifests for a data dir (needs the lhotse extra).

    utt2lang becomes the supervision language; translations (text.<lang>) and other utt2* labels
    become custom fields named by their file.
    """
    from stk.data.kaldi import DataDirError
    from stk.data.lhotse import to_lhotse
    from stk.utils import setup_logging

    setup_logging()
    try:
        rec, sup = to_lhotse(data_dir, out, sampling_rate=sample_rate, allow_pipes=allow_pipes)
    except DataDirError as e:
        _fail(e)
    typer.echo(f"{rec}\n{sup}")


@app.command("from-lhotse")
def from_lhotse_cmd(
    manifests: Annotated[list[Path], typer.Argument(help="lhotse manifests: recordings + supervisions files, a cuts file, or a dir holding them.")],
    out: Annotated[Path, typer.Argument(help="Output Kaldi data dir (new or empty).")],
    prefix_spk_id: Annotated[bool, typer.Option(help="Prefix utterance ids with the speaker id (Kaldi's sort convention).")] = False,
) -> None:
    """Write a Kaldi data dir from lhotse manifests (needs the lhotse extra).

    Supervision custom fields named text.<lang> or utt2* become those files (translations, intents).
    """
    from stk.data.kaldi import DataDirError
    from stk.data.lhotse import from_lhotse
    from stk.utils import setup_logging

    setup_logging()
    try:
        d = from_lhotse(manifests, out, prefix_spk_id=prefix_spk_id)
    except DataDirError as e:
        _fail(e)
    typer.echo(f"{d}: {len(_utterances(d))} utterances")


@app.command()
def pitch(
    data_dir: Annotated[Path, typer.Argument(help="Data dir with a wav.scp (any rate; resampled to 16 kHz).")],
    out_dir: Annotated[Path | None, typer.Option(help="Where pitch.{ark,scp} and pitch_stats.json go (default: DATA_DIR).")] = None,
    method: Annotated[str, typer.Option(help="pyworld F0 estimator: dio (DIO + StoneMask) or harvest.")] = "dio",
    frame_shift_ms: Annotated[float, typer.Option(help="Frame shift in ms (10: the fbank frame rate).")] = 10.0,
    bins_per_octave: Annotated[int, typer.Option(help="> 0: also write f0bins (log-F0 bins per frame, 0 unvoiced: a unit vocoder's F0 input).")] = 0,
) -> None:
    """F0 + voicing per frame (pyworld) with per-speaker normalised log-F0 -> pitch.{ark,scp} (kaldiio)."""
    from stk.data.kaldi import DataDirError
    from stk.features.pitch import PitchConfig, dump_pitch

    try:
        res = dump_pitch(data_dir, out_dir, PitchConfig(method=method, frame_shift_ms=frame_shift_ms),
                         bins_per_octave=bins_per_octave)
    except (DataDirError, ValueError) as e:
        _fail(e)
    typer.echo(f"{out_dir or data_dir}/pitch.scp: {res['utts']} utterances, {res['frames']} frames, "
               f"{100 * res['voiced_fraction']:.1f} % voiced, {len(res['speakers'])} speakers")


def _utterances(d: Path) -> dict[str, str]:
    from stk.data.kaldi import read_kv

    for name in ("segments", "utt2spk", "wav.scp"):
        if (d / name).exists():
            return read_kv(d / name)
    return {}


@app.command("perturb-speed")
def perturb_speed_cmd(
    data_dir: Annotated[Path, typer.Argument(help="Data dir with wav.scp and utt2spk (segments, text, utt2lang… are carried over).")],
    out: Annotated[Path, typer.Option(help="Output data dir; the perturbed wavs go to OUT/wav.")],
    factors: Annotated[str, typer.Option(help="Comma-separated speed factors; 1.0 keeps the original ids and audio.")] = "0.9,1.0,1.1",
    allow_pipes: Annotated[bool, typer.Option(help="Allow wav.scp pipe commands (runs shell commands).")] = False,
) -> None:
    """Speed-perturb a data dir like Kaldi's perturb_data_dir_speed_3way.sh (ids prefixed sp0.9-, durations x 1/f)."""
    from stk.data.augment import perturb_speed
    from stk.data.kaldi import DataDirError
    from stk.utils import set_threads, setup_logging

    setup_logging()
    set_threads(1)
    try:
        parsed = [float(f) for f in factors.split(",") if f.strip()]
    except ValueError:
        _fail(ValueError(f"--factors {factors!r}: not a comma-separated list of numbers"))
    try:
        perturb_speed(data_dir, out, parsed, allow_pipes=allow_pipes)
    except (DataDirError, ValueError) as e:
        _fail(e)
    typer.echo(f"{out}: {len(_utterances(out))} utterances (factors {','.join(f'{f:g}' for f in parsed)})")


@app.command("add-noise")
def add_noise_cmd(
    data_dir: Annotated[Path, typer.Argument(help="Data dir with wav.scp and utt2spk.")],
    out: Annotated[Path, typer.Option(help="Output data dir; the noisy wavs go to OUT/wav.")],
    noise: Annotated[str, typer.Option(help="white | pink | brown | babble (other speakers of DATA_DIR) | a data dir of noise recordings.")] = "babble",
    snr: Annotated[str, typer.Option(help="SNR range in dB, LOW:HIGH (drawn uniformly per utterance).")] = "5:20",
    seed: Annotated[int, typer.Option(help="Seed of the SNR, noise and babble draws (per utterance id).")] = 0,
    prefix: Annotated[str | None, typer.Option(help="Id prefix of the noisy copies (default: '<noise>-', 'noise-' for a noise dir).")] = None,
    babble_speakers: Annotated[int, typer.Option(help="Utterances (of distinct other speakers) summed into the babble.")] = 3,
    allow_pipes: Annotated[bool, typer.Option(help="Allow wav.scp pipe commands (runs shell commands).")] = False,
) -> None:
    """Add noise or babble at a random SNR to every utterance (like Kaldi's augment_data_dir.py)."""
    from stk.data.augment import add_noise
    from stk.data.kaldi import DataDirError
    from stk.utils import setup_logging

    setup_logging()
    try:
        lo, hi = (float(x) for x in snr.split(":"))
    except ValueError:
        _fail(ValueError(f"--snr {snr!r}: expected LOW:HIGH in dB, e.g. 5:20"))
    try:
        add_noise(data_dir, out, noise=noise, snr=(lo, hi), seed=seed, prefix=prefix,
                  babble_speakers=babble_speakers, allow_pipes=allow_pipes)
    except (DataDirError, ValueError) as e:
        _fail(e)
    typer.echo(f"{out}: {len(_utterances(out))} utterances ({noise}, SNR {lo:g}-{hi:g} dB)")
