"""``stk speaker``: speaker embeddings (x-vectors) from a packaged speaker encoder, and their evaluation."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

log = logging.getLogger("stk.speaker")
app = typer.Typer(help="Speaker embeddings: x-vectors to kaldiio arks, speaker ID accuracy and EER.",
                  no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="speaker")


def _fail(e: Exception) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(1)


def embed_data_dir(model: str, data_dir: Path, *, batch_frames: int = 20000, allow_pipes: bool = False):
    """``{utt: (embed_dim,) float32}`` x-vectors of every utterance of ``data_dir`` (a package's ``embed``)."""
    import torch

    from stk.inference import iter_batches, read_scp_input
    from stk.package import load_package

    lm = load_package(model)
    if not hasattr(lm.model, "embed"):
        raise ValueError(f"{model}: this model has no speaker embedding (embed); train an `xvector` model")
    wav_scp, segments = read_scp_input(data_dir)
    out = {}
    with torch.inference_mode():
        for utts, feats, lens in iter_batches(lm, wav_scp, segments, batch_frames=batch_frames, allow_pipes=allow_pipes):
            for u, e in zip(utts, lm.model.embed(feats, lens).numpy()):
                out[u] = e
    return lm, out


@app.command()
def embed(
    data_dir: Annotated[Path, typer.Argument(help="Data dir (wav.scp, optional utt2spk).")],
    model: Annotated[str, typer.Option(help="Packaged speaker encoder (dir or model-store name), e.g. mini-xvector.")],
    out_dir: Annotated[Path | None, typer.Option(help="Where xvector.{ark,scp} go (default: DATA_DIR).")] = None,
    allow_pipes: Annotated[bool, typer.Option(help="Allow wav.scp pipe commands.")] = False,
) -> None:
    """Write x-vectors to OUT/xvector.{ark,scp} (kaldiio) and the per-speaker means to spk_xvector.{ark,scp}."""
    import kaldiio
    import numpy as np

    from stk.data.kaldi import DataDirError, read_kv
    from stk.utils import set_threads, setup_logging

    setup_logging()
    set_threads()
    out = out_dir or data_dir
    try:
        _, emb = embed_data_dir(model, data_dir, allow_pipes=allow_pipes)
    except (ValueError, DataDirError) as e:
        _fail(e)
    out.mkdir(parents=True, exist_ok=True)
    order = sorted(emb, key=lambda s: s.encode())
    with kaldiio.WriteHelper(f"ark,scp:{out}/xvector.ark,{out}/xvector.scp") as w:
        for u in order:
            w(u, emb[u].astype(np.float32))
    n_spk = 0
    if (data_dir / "utt2spk").exists():
        u2s = read_kv(data_dir / "utt2spk")
        spk: dict[str, list] = {}
        for u in order:
            spk.setdefault(u2s.get(u, u), []).append(emb[u])
        with kaldiio.WriteHelper(f"ark,scp:{out}/spk_xvector.ark,{out}/spk_xvector.scp") as w:
            for s in sorted(spk, key=lambda s: s.encode()):
                w(s, np.mean(spk[s], axis=0).astype(np.float32))
        n_spk = len(spk)
    typer.echo(f"{out}/xvector.scp: {len(emb)} x-vectors of dim {len(emb[order[0]])}"
               + (f", {n_spk} speakers in spk_xvector.scp" if n_spk else ""))


@app.command("eval")
def evaluate(
    data_dir: Annotated[Path, typer.Argument(help="Held-out data dir with utt2spk.")],
    model: Annotated[str, typer.Option(help="Packaged speaker encoder.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures as JSON.")] = None,
) -> None:
    """Speaker ID accuracy and cosine-scoring EER of a speaker encoder on held-out utterances.

    Accuracy is closed-set (speakers the encoder was trained on); the EER scores every pair of
    utterances by cosine similarity."""
    import torch

    from stk.data.kaldi import DataDirError, read_kv
    from stk.metrics_speech import eer, verification_trials
    from stk.utils import atomic_write_text, set_threads, setup_logging

    setup_logging()
    set_threads()
    try:
        if not (data_dir / "utt2spk").exists():
            raise ValueError(f"{data_dir}: no utt2spk")
        u2s = read_kv(data_dir / "utt2spk")
        lm, emb = embed_data_dir(model, data_dir)
        scores, targets = verification_trials(emb, u2s)
        res = {"utts": len(emb), "trials": int(len(scores)), "target_trials": int(targets.sum()),
               "eer": eer(scores, targets), "scoring": "cosine of x-vectors, every pair of utterances"}
        names = lm.meta.label_vocab.get(getattr(lm.model, "label", ""), [])
        known = [u for u in emb if u2s.get(u) in names]
        if known:
            from stk.inference import iter_batches, read_scp_input

            wav_scp, _ = read_scp_input(data_dir)
            correct = 0
            with torch.inference_mode():
                for utts, feats, lens in iter_batches(lm, {u: wav_scp[u] for u in known}, None, batch_frames=20000,
                                                      allow_pipes=False):
                    pred = lm.model.classify(feats, lens).tolist()
                    correct += sum(names[p] == u2s[u] for u, p in zip(utts, pred))
            res.update(id_acc=100.0 * correct / len(known), id_utts=len(known), id_speakers=len({u2s[u] for u in known}))
    except (ValueError, DataDirError) as e:
        _fail(e)
    line = f"EER {res['eer']:.2f} % ({res['trials']} trials, {res['target_trials']} target)"
    if "id_acc" in res:
        line += f"; speaker ID accuracy {res['id_acc']:.1f} % ({res['id_utts']} utts, {res['id_speakers']} speakers)"
    typer.echo(line)
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(res, indent=1))


@app.command()
def similarity(
    ref_dir: Annotated[Path, typer.Argument(help="Reference speech data dir (wav.scp), e.g. the original test set.")],
    hyp_dir: Annotated[Path, typer.Argument(help="Generated speech data dir with the same utterance ids.")],
    model: Annotated[str, typer.Option(help="Packaged speaker encoder (e.g. mini-xvector).")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write {mean, ci95, sents, per_utt} as JSON.")] = None,
) -> None:
    """Speaker similarity of generated speech: cosine of stk x-vectors of each utterance and its reference."""
    from stk.data.kaldi import DataDirError
    from stk.metrics_speech import cosine, mean_ci95
    from stk.utils import atomic_write_text, set_threads, setup_logging

    setup_logging()
    set_threads()
    try:
        _, ref = embed_data_dir(model, ref_dir)
        _, hyp = embed_data_dir(model, hyp_dir)
        missing = [u for u in ref if u not in hyp]
        if missing:
            raise ValueError(f"{hyp_dir}: {len(missing)} utterance(s) of {ref_dir} have no generated wav, e.g. {missing[0]!r}")
        per = {u: cosine(ref[u], hyp[u]) for u in ref}
        mean, ci = mean_ci95(list(per.values()))
    except (ValueError, DataDirError) as e:
        _fail(e)
    res = {"metric": "spk-sim-xvector", "name": f"speaker similarity (stk x-vector {model} cosine)", "mean": mean,
           "ci95": ci, "sents": len(per), "per_utt": per}
    typer.echo(f"SPK-SIM {mean:.3f} ± {ci:.3f} (95 % interval, {len(per)} utts): {res['name']}")
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(res, indent=1))
