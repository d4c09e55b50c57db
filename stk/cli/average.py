"""``stk average`` (average the best checkpoints) and ``stk package`` (make a decodable model dir)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Annotated

import typer

from stk.decode import DecodeMethod as Method

log = logging.getLogger("stk.package")


def register(app: typer.Typer) -> None:
    app.command()(average)
    app.command()(package)


def average(
    exp_dir: Annotated[Path, typer.Argument(help="Experiment dir written by `stk train`.")],
    n: Annotated[int, typer.Option(help="Average the N checkpoints with the lowest valid loss.")] = 5,
    out: Annotated[Path | None, typer.Option(help="Output safetensors (default EXP_DIR/model.avg<N>.safetensors).")] = None,
) -> None:
    """Average the model weights of the N best checkpoints (by validation loss) into safetensors."""
    from stk.checkpoint import average_best, save_weights
    from stk.utils import setup_logging

    setup_logging()
    try:
        state = average_best(exp_dir, n)
    except (ValueError, FileNotFoundError, KeyError) as e:
        typer.echo(f"error: {exp_dir}: {e}", err=True)
        raise typer.Exit(1)
    out = out or exp_dir / f"model.avg{n}.safetensors"
    save_weights(out, state)
    typer.echo(str(out))


def package(
    exp_dir: Annotated[Path, typer.Argument(help="Experiment dir (its config.yaml names model, tokenizer, features).")],
    weights: Annotated[Path, typer.Option(help="Weights (safetensors from `stk average`, or a checkpoint .pt).")],
    out: Annotated[Path, typer.Option(help="Package directory to write.")],
    name: Annotated[str | None, typer.Option(help="Also publish to the model store under this name (for `stk decode --model NAME`).")] = None,
    method: Annotated[Method | None, typer.Option(help="Default decoding method (default: classify for a classifier model, else attention).")] = None,
    beam_size: Annotated[int, typer.Option(help="Default beam size.")] = 10,
    ctc_weight: Annotated[float, typer.Option(help="Default CTC weight for attention decoding.")] = 0.3,
    description: Annotated[str, typer.Option(help="Free text stored in model.yaml.")] = "",
) -> None:
    """Write a self-contained model directory: model.yaml, model.safetensors, tokenizer.model, cmvn.json."""
    from stk.checkpoint import average_checkpoints
    from stk.config import ConfigError, load_config
    from stk.experiment import ExperimentConfig
    from stk.models import MODELS
    from stk.package import DecodeOptions, PackageMeta, model_store, write_package
    from stk.tokenizer import Tokenizer

    try:
        cfg = load_config(ExperimentConfig, exp_dir / "config.yaml")
        state = average_checkpoints([weights])
        tok = Tokenizer(cfg.data.tokenizer)
        if method is None:
            method = Method.classify if hasattr(MODELS.get(cfg.model.name), "classify") else Method.attention
    except (ConfigError, ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    meta = PackageMeta(
        model=cfg.model, vocab_size=tok.vocab_size, fbank=cfg.data.fbank,
        decode=DecodeOptions(method=method.value, beam_size=beam_size, ctc_weight=ctc_weight),
        num_labels={k: len(v) for k, v in cfg.data.label_vocab.items()}, label_vocab=cfg.data.label_vocab,
        description=description,
    )
    write_package(out, meta=meta, state_dict=state, tokenizer=cfg.data.tokenizer, cmvn=cfg.data.cmvn)
    typer.echo(str(out))
    if name is not None:
        dest = model_store() / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(out, tmp)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        log.info("published %s to the model store: %s", name, dest)
