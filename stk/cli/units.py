"""``stk units``: discrete speech units: fit k-means, dump unit sequences, measure unit quality."""

from __future__ import annotations

import enum
import json
import logging
from pathlib import Path
from typing import Annotated

import typer

log = logging.getLogger("stk.units")
app = typer.Typer(help="Discrete speech units: k-means on MFCC or HuBERT features, unit files, quality.",
                  no_args_is_help=True)


class Rate(str, enum.Enum):
    r50 = "50"
    r25 = "25"


class Balance(str, enum.Enum):
    none = "none"
    dir = "dir"
    speaker = "speaker"


class BadInputPolicy(str, enum.Enum):
    skip = "skip"
    fail = "fail"


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="units")


def _setup() -> None:
    from stk.utils import set_threads, setup_logging

    setup_logging()
    set_threads()


def _errors():
    from stk.config import ConfigError
    from stk.data.audio import AudioError
    from stk.data.kaldi import DataDirError

    return (ConfigError, DataDirError, AudioError, ValueError, FileNotFoundError)


def _fail(e: Exception) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(1)


@app.command()
def fit(
    data_dirs: Annotated[list[Path], typer.Argument(help="Data dir(s) (wav.scp) whose frames are clustered.")],
    features: Annotated[str, typer.Option(help="mfcc (39-d MFCC+deltas) or hubert:PACKAGE:LAYER (a packaged HuBERT's layer; 0 = front end).")] = ...,
    k: Annotated[int, typer.Option("--k", min=2, help="Number of clusters (units).")] = 100,
    out: Annotated[Path, typer.Option(help="Units model directory to write.")] = ...,
    rate: Annotated[Rate, typer.Option(help="Unit frames per second (features are mean-pooled to it).")] = Rate.r50,
    max_frames: Annotated[int, typer.Option(min=1, help="Frames sampled (from random utterances) for the fit.")] = 100000,
    balance: Annotated[Balance, typer.Option(help="How the frame sample is shared: none (utterances of all DATA_DIRS pooled), dir (max-frames/N from each of the N DATA_DIRS, e.g. recorded and synthetic speech), speaker (an equal share per speaker of utt2spk).")] = Balance.none,
    standardize: Annotated[bool, typer.Option(help="Scale each feature dimension to zero mean, unit variance over the sample before k-means (kept in the model; dump and eval apply it).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the utterance sample and of k-means.")] = 0,
    cmn: Annotated[bool, typer.Option(help="Mean-normalise the features per utterance (kept in units.json; dump and eval apply it).")] = False,
    name: Annotated[str | None, typer.Option(help="Also publish the units model to the model store under this name.")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing model-store entry of that name.")] = False,
    device: Annotated[str, typer.Option(help="cpu or cuda (HuBERT features).")] = "cpu",
) -> None:
    """Fit k-means (scikit-learn MiniBatchKMeans) on frames of DATA_DIR and write a units model.

    The model directory holds centroids.safetensors, units.json (features, layer, rate, k, the
    feature model's sha256, how the sample was drawn) and, for HuBERT features, a copy of the
    feature model; never a pickle. With several DATA_DIRS, --balance dir samples the same number
    of frames from each, so that a smaller source (e.g. recorded next to synthetic speech) is not
    left with a handful of centroids.

    Examples:\n
      stk units fit data/train --features mfcc --k 100 --out exp/units_mfcc\n
      stk units fit data/real_train data/synth_train --balance dir --standardize --features mfcc --out exp/units_mfcc\n
      stk units fit data/train --features hubert:exp/hubert/package:4 --k 100 --out exp/units_hubert --name mini-hubert-units
    """
    _setup()
    from stk.units import fit_units, publish

    try:
        info = fit_units([str(d) for d in data_dirs], features=features, k=k, out=out, rate=int(rate.value),
                         max_frames=max_frames, seed=seed, device=device, cmn=cmn, balance=balance.value,
                         standardize=standardize)
        log.info("%s: k=%d on %d frames of %s, inertia/frame %.3f", out, info.k, info.fit_frames, features,
                 info.inertia / max(1, info.fit_frames))
        if name is not None:
            dest = publish(out, name, force=force)
            log.info("published %s to the model store: %s", name, dest)
    except _errors() as e:
        _fail(e)
    typer.echo(str(out))


@app.command()
def dump(
    data_dir: Annotated[Path, typer.Argument(help="Data dir (wav.scp [+ segments]).")],
    model: Annotated[str, typer.Option(help="Units model directory or model-store name.")] = ...,
    rate: Annotated[Rate | None, typer.Option(help="Unit frames per second (default: the model's).")] = None,
    dedup: Annotated[bool, typer.Option(help="Collapse repeated units; write their run lengths to OUT.dur.")] = False,
    out: Annotated[Path | None, typer.Option(help="Units file (default DATA_DIR/units).")] = None,
    bad_input: Annotated[BadInputPolicy, typer.Option(help="skip: log and list bad utterances in OUT.skipped and go on; fail: stop at the first.")] = BadInputPolicy.skip,
    batch_frames: Annotated[int, typer.Option(min=1, help="Padded input frames per batch.")] = 20000,
    allow_pipes: Annotated[bool, typer.Option(help="Run wav.scp pipe commands (`cmd |`).")] = False,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """Write DATA_DIR/units (`utt-id u1 u2 ...`, Kaldi text-archive style) with a units model.

    With --dedup repeated units are collapsed and units.dur gets the run length of each kept
    unit. Bad input (missing or unreadable audio, too short for one unit frame) names the
    utterance: skipped and listed in units.skipped (--bad-input skip, the default) or an error
    (--bad-input fail). units.info (JSON) records the model, rate, k and counts. A training
    stream reads the file with `int_seqs: {units: units}`.

    Examples:\n
      stk units dump data/train --model mini-hubert-units --dedup\n
      stk units dump data/train --model exp/units_hubert --rate 25 --out data/train/units25
    """
    _setup()
    from stk.units import dump_units, load_units_model

    try:
        um = load_units_model(model, device=device)
        s = dump_units(um, data_dir, out=out, rate=int(rate.value) if rate else None, dedup_runs=dedup,
                       bad_input=bad_input.value, batch_frames=batch_frames, allow_pipes=allow_pipes)
    except _errors() as e:
        _fail(e)
    log.info("%s: %d utterance(s), %d skipped, %.1f s, %.1f units/s%s", data_dir, s["num_utts"], s["num_skipped"],
             s["seconds"], s["units_per_second"], " (dedup)" if dedup else "")
    typer.echo(str(out or data_dir / "units"))


@app.command("eval")
def evaluate(
    data_dir: Annotated[Path, typer.Argument(help="Data dir with wav.scp, text and `stk align` durations.")],
    model: Annotated[str, typer.Option(help="Units model directory or model-store name.")] = ...,
    rate: Annotated[Rate | None, typer.Option(help="Unit frames per second (default: the model's).")] = None,
    durations: Annotated[Path | None, typer.Option(help="Alignment durations (default DATA_DIR/durations).")] = None,
    tokenizer: Annotated[Path | None, typer.Option(help="Tokenizer of the alignment (default: the path in durations.info).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures as JSON.")] = None,
    codes_out: Annotated[Path | None, typer.Option(help="Also write the frame units (not deduplicated) for `stk units compare`.")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """Unit quality against CTC forced-alignment frame labels: purity, PNMI, units/s, perplexity.

    Frame labels are the tokens (characters with a char tokenizer) of `stk align DATA_DIR`'s
    durations. Prints cluster purity, label purity, PNMI (with a 95 % delete-one jackknife
    interval over utterances), units per second after dedup and the code perplexity.

    Example:\n
      stk align data/test --model exp/align/package && stk units eval data/test --model mini-hubert-units
    """
    _setup()
    from stk.units import load_units_model
    from stk.units_quality import evaluate_units

    try:
        um = load_units_model(model, device=device)
        res = evaluate_units(um, data_dir, rate=int(rate.value) if rate else None, durations=durations,
                             tokenizer=tokenizer, codes_out=codes_out)
    except (*_errors(), KeyError) as e:
        _fail(e)
    lo, hi = res["pnmi_ci95"]
    typer.echo(f"{data_dir}\t{res['features']}{'' if res['layer'] is None else ':' + str(res['layer'])}\t"
               f"cluster_purity {res['cluster_purity']:.3f}\tlabel_purity {res['label_purity']:.3f}\t"
               f"pnmi {res['pnmi']:.3f} [{lo:.3f}, {hi:.3f}]\tunits/s {res['units_per_second']:.1f}\t"
               f"perplexity {res['perplexity']:.1f}")
    if json_out is not None:
        from stk.utils import atomic_write_text

        atomic_write_text(json_out, json.dumps(res, indent=2) + "\n")


@app.command()
def compare(
    data_dir: Annotated[Path, typer.Argument(help="Data dir with text and `stk align` durations.")],
    codes_a: Annotated[Path, typer.Argument(help="Frame units of system A (`stk units eval --codes-out`).")],
    codes_b: Annotated[Path, typer.Argument(help="Frame units of system B, at the same rate.")],
    rate: Annotated[Rate, typer.Option(help="Frame rate of both files.")] = Rate.r50,
    durations: Annotated[Path | None, typer.Option(help="Alignment durations (default DATA_DIR/durations).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the comparison as JSON.")] = None,
) -> None:
    """Paired comparison of two systems' units: B - A for PNMI and purity with 95 % intervals.

    The interval is a paired delete-one jackknife over utterances (each utterance left out of both
    systems in turn; B - A ± 1.96 standard errors).
    """
    _setup()
    from stk.units_quality import compare_units

    try:
        res = compare_units(data_dir, codes_a, codes_b, rate=int(rate.value), durations=durations)
    except (*_errors(), KeyError) as e:
        _fail(e)
    for key in ("pnmi", "label_purity", "cluster_purity"):
        r = res[key]
        lo, hi = r["ci95"]
        typer.echo(f"{data_dir}\t{key}\tA {r['a']:.3f}\tB {r['b']:.3f}\tB-A {r['b_minus_a']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                   f"\t{'no difference' if lo <= 0 <= hi else 'B better' if lo > 0 else 'A better'}")
    if json_out is not None:
        from stk.utils import atomic_write_text

        atomic_write_text(json_out, json.dumps(res, indent=2) + "\n")


@app.command()
def publish(
    model_dir: Annotated[Path, typer.Argument(help="Units model directory (from `stk units fit`).")],
    name: Annotated[str, typer.Option(help="Name in the model store.")] = ...,
    force: Annotated[bool, typer.Option(help="Replace an existing model-store entry of that name.")] = False,
) -> None:
    """Copy a units model (with its feature model) into the model store under NAME."""
    _setup()
    from stk.units import load_units_model
    from stk.units import publish as publish_dir

    try:
        load_units_model(model_dir)  # checks it before it is published
        dest = publish_dir(model_dir, name, force=force)
    except _errors() as e:
        _fail(e)
    typer.echo(str(dest))


@app.command()
def pick(
    results: Annotated[list[Path], typer.Argument(help="`stk units eval --json` files (e.g. one per layer and dev set).")],
    key: Annotated[str, typer.Option(help="Figure to maximise (mean over the files of each layer).")] = "pnmi",
) -> None:
    """Print the layer whose eval files have the highest mean KEY (the layer sweep's choice)."""
    by_layer: dict[int, list[float]] = {}
    for p in results:
        try:
            r = json.loads(p.read_text())
            by_layer.setdefault(int(r["layer"]), []).append(float(r[key]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            _fail(ValueError(f"{p}: not a `stk units eval --json` file with a layer and {key!r}: {e}"))
    if not by_layer:
        _fail(ValueError("no results given"))
    best = max(by_layer, key=lambda lay: (sum(by_layer[lay]) / len(by_layer[lay]), -lay))
    typer.echo(str(best))


def _fmt_row(row: str, col: str, r: dict | None) -> str:
    if r is None:
        return f"| {row} | {col} | – | – | – | – | – |"
    lo, hi = r.get("pnmi_ci95", [float("nan")] * 2)
    return (f"| {row} | {col} | {r['cluster_purity']:.3f} | {r['label_purity']:.3f} | "
            f"{r['pnmi']:.3f} [{lo:.3f}, {hi:.3f}] | {r['units_per_second']:.1f} | {r['perplexity']:.1f} |")


@app.command()
def report(
    cells: Annotated[list[str], typer.Argument(help="'ROW|SET|EVAL_JSON' cells of the quality table.")],
    sweep: Annotated[list[str] | None, typer.Option(help="'ROW|SET|EVAL_JSON' cells of the layer sweep table (repeatable).")] = None,
    compare: Annotated[list[str] | None, typer.Option(help="'ROW|SET|COMPARE_JSON' cells (`stk units compare --json`) of the paired differences table (repeatable).")] = None,
    out: Annotated[Path | None, typer.Option(help="Markdown file to write (default: stdout only).")] = None,
    title: Annotated[str, typer.Option(help="Heading.")] = "Unit quality",
    notes: Annotated[str, typer.Option(help="Paragraph under the heading.")] = "",
) -> None:
    """Markdown tables of `stk units eval` results: purity, PNMI [95 % CI], units/s, perplexity."""
    head = ["| units | set | cluster purity | char purity | PNMI [95 % CI] | units/s (dedup) | code perplexity |",
            "|---|---|---:|---:|---:|---:|---:|"]

    def table(specs: list[str]) -> list[str]:
        lines = list(head)
        for spec in specs:
            parts = spec.split("|")
            if len(parts) != 3:
                _fail(ValueError(f"cell {spec!r}: expected ROW|SET|EVAL_JSON"))
            p = Path(parts[2])
            lines.append(_fmt_row(parts[0], parts[1], json.loads(p.read_text()) if p.exists() else None))
        return lines

    caption = ("PNMI intervals: delete-one jackknife over utterances (estimate ± 1.96 se). Purity and PNMI "
               "are plug-in estimates over all frames of the set.")
    text = [f"## {title}", "", notes, "", *table(cells), "", caption, ""]
    if compare:
        text += ["### Paired differences (B − A; 95 % interval: paired delete-one jackknife over utterances)", "",
                 "| comparison | set | Δ PNMI [95 % CI] | Δ char purity [95 % CI] | Δ cluster purity [95 % CI] |",
                 "|---|---|---:|---:|---:|"]
        for spec in compare:
            parts = spec.split("|")
            if len(parts) != 3:
                _fail(ValueError(f"cell {spec!r}: expected ROW|SET|COMPARE_JSON"))
            p = Path(parts[2])
            if not p.exists():
                text.append(f"| {parts[0]} | {parts[1]} | – | – | – |")
                continue
            r = json.loads(p.read_text())
            cells_ = [f"{r[k]['b_minus_a']:+.3f} [{r[k]['ci95'][0]:+.3f}, {r[k]['ci95'][1]:+.3f}]"
                      for k in ("pnmi", "label_purity", "cluster_purity")]
            text.append(f"| {parts[0]} | {parts[1]} | " + " | ".join(cells_) + " |")
        text.append("")
    if sweep:
        text += ["### Layer sweep (k-means per layer, dev sets)", "", *table(sweep), ""]
    md = "\n".join(text)
    if out is not None:
        from stk.utils import atomic_write_text

        atomic_write_text(out, md)
    typer.echo(md)
