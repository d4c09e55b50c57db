"""``stk average`` (average the best checkpoints) and ``stk package`` (make a decodable model dir)."""

from __future__ import annotations

import logging
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
    from stk.checkpoint import CheckpointError, average_best, save_weights
    from stk.utils import setup_logging

    setup_logging()
    try:
        state = average_best(exp_dir, n)
        out = out or exp_dir / f"model.avg{n}.safetensors"
        save_weights(out, state)
    except (CheckpointError, ValueError, FileNotFoundError, KeyError, TypeError) as e:
        typer.echo(f"error: {exp_dir}: {e}", err=True)
        raise typer.Exit(1)
    except OSError as e:
        typer.echo(f"error: cannot write {out}: {e.strerror or e}", err=True)
        raise typer.Exit(1)
    typer.echo(str(out))


def package(
    exp_dir: Annotated[Path, typer.Argument(help="Experiment dir (its config.yaml names model, tokenizer, features).")],
    weights: Annotated[Path, typer.Option(help="Weights (safetensors from `stk average`, or a checkpoint .pt).")],
    out: Annotated[Path, typer.Option(help="Package directory to write (an existing package there is replaced; anything else is refused).")],
    name: Annotated[str | None, typer.Option(help="Also publish to the model store under this name (for `stk decode --model NAME`): a plain identifier.")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing model-store entry NAME.")] = False,
    method: Annotated[Method | None, typer.Option(help="Default decoding method (default: classify for a classifier model, else attention).")] = None,
    beam_size: Annotated[int, typer.Option(help="Default beam size.")] = 10,
    ctc_weight: Annotated[float, typer.Option(help="Default CTC weight for attention decoding.")] = 0.3,
    description: Annotated[str, typer.Option(help="Free text stored in model.yaml.")] = "",
) -> None:
    """Write a self-contained model directory: model.yaml, model.safetensors, tokenizer.model, cmvn.json.

    The weights are checked against the model the config describes, and model.yaml records whether
    the model was trained with CMVN and the stk version, git commit and torch version that wrote it.
    """
    from stk.checkpoint import CheckpointError, average_checkpoints, non_finite_tensors, state_mismatch
    from stk.config import ConfigError, load_config
    from stk.experiment import ExperimentConfig, build_model
    from stk.models import MODELS
    from stk.package import (DecodeOptions, PackageMeta, check_store_name, model_store, provenance, publish,
                             write_package)
    from stk.tokenizer import Tokenizer
    from stk.utils import setup_logging

    setup_logging()
    try:
        if name is not None:
            check_store_name(name)
            if (model_store() / name).exists() and not force:
                raise ConfigError(f"model store entry {name!r} exists ({model_store() / name}); pass --force to "
                                  "replace it")
        cfg = load_config(ExperimentConfig, exp_dir / "config.yaml")
        state = average_checkpoints([weights])
        tok = Tokenizer(cfg.data.tokenizer)
        num_labels = {k: len(v) for k, v in cfg.data.label_vocab.items()}
        model = build_model(cfg.model, vocab_size=tok.vocab_size, input_dim=cfg.data.fbank.num_mel_bins,
                            num_labels=num_labels or None)
        mismatch = state_mismatch(model.state_dict(), state)
        if mismatch:
            raise ConfigError(f"{weights} does not fit the model of {exp_dir}/config.yaml ({mismatch})")
        model.load_state_dict(state)
        bad = non_finite_tensors(model)
        if bad:
            raise ConfigError(f"{weights}: non-finite values in {len(bad)} tensor(s), e.g. {', '.join(bad[:3])}")
        if cfg.data.cmvn is not None and not Path(cfg.data.cmvn).is_file():
            raise ConfigError(f"{exp_dir}/config.yaml: data.cmvn {cfg.data.cmvn} not found (the model was trained "
                              "with it; a package without it would decode wrongly)")
        if method is None:
            method = Method.classify if hasattr(MODELS.get(cfg.model.name), "classify") else Method.attention
        meta = PackageMeta(
            model=cfg.model, vocab_size=tok.vocab_size, fbank=cfg.data.fbank,
            decode=DecodeOptions(method=method.value, beam_size=beam_size, ctc_weight=ctc_weight),
            num_labels=num_labels, label_vocab=cfg.data.label_vocab, description=description,
            uses_cmvn=cfg.data.cmvn is not None, versions=provenance(),
        )
        write_package(out, meta=meta, state_dict=state, tokenizer=cfg.data.tokenizer, cmvn=cfg.data.cmvn)
        typer.echo(str(out))
        if name is not None:
            dest = publish(out, name, force=force)
            log.info("published %s to the model store: %s", name, dest)
    except (CheckpointError, ConfigError, ValueError, FileNotFoundError, TypeError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    except OSError as e:
        typer.echo(f"error: cannot write the package: {e}", err=True)
        raise typer.Exit(1)
