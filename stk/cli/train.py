"""``stk train``: train a registered model from a typed YAML config (single process or torchrun)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

log = logging.getLogger("stk.train")


def register(app: typer.Typer) -> None:
    app.command()(train)


def train(
    config: Annotated[Path, typer.Option(help="Experiment YAML (model, data, optim, trainer).")],
    exp_dir: Annotated[Path, typer.Option(help="Output dir: checkpoints, logs, tensorboard, resolved config.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key.sub=value overrides, e.g. trainer.max_epochs=3.")] = None,
    print_config: Annotated[bool, typer.Option(help="Print the resolved config and exit.")] = False,
    num_workers: Annotated[int, typer.Option(help="Data-loader worker processes per rank.")] = 0,
    restart: Annotated[bool, typer.Option(help="Start over instead of resuming: the old checkpoints are moved to EXP_DIR/checkpoints.prev<N>.")] = False,
) -> None:
    """Train a model. Resumes from EXP_DIR/checkpoints if present.

    A resume checks the checkpoint against the config before anything is written; unreadable
    checkpoints are kept (as *.unreadable) and the newest readable one is used. SIGTERM or SIGINT
    (Slurm preemption, Ctrl-C) finishes the current step, writes a checkpoint and exits with
    status 75; the same command resumes exactly.

    Fine-tuning: the config's `init` list loads pre-trained weights (a checkpoint .pt or
    .safetensors, with src/dst prefix renaming and exclude prefixes) into a fresh model; it is
    skipped when the run resumes. `freeze` lists parameter-name prefixes that are not trained.

    Single process:  stk train --config conf/train.yaml --exp-dir exp/asr\n
    Distributed:     torchrun --nproc_per_node 2 -m stk.cli train --config ... --exp-dir ...
    (DistributedDataParallel: gloo on CPU, NCCL on GPU; the batch budget is per rank.)
    """
    import os

    import yaml

    import dataclasses

    from stk.checkpoint import CheckpointError, seed_everything
    from stk.config import ConfigError, load_config, save_config, to_dict
    from stk.data.audio import AudioError
    from stk.data.kaldi import DataDirError
    from stk.experiment import (ExperimentConfig, build_dataset, build_model, freeze_parameters,
                                init_from_pretrained)
    from stk.features.fbank import GlobalCMVN
    from stk.tokenizer import Tokenizer
    from stk.trainer import (EXIT_INTERRUPTED, NonFiniteLossError, NonFiniteStateError, TrainingInterrupted,
                             train as run_training)
    from stk.utils import setup_logging

    setup_logging()
    try:
        cfg = load_config(ExperimentConfig, config, overrides or [])
    except (ConfigError, ValueError) as e:
        typer.echo(f"error: {config}: {e}", err=True)
        raise typer.Exit(1)
    if print_config:
        typer.echo(yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))
        return
    import torch

    if cfg.trainer.num_threads == 0 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, min(4, (os.cpu_count() or 1) // int(os.environ.get("WORLD_SIZE", "1")))))
    resume = cfg.trainer.resume and not restart
    ckpt_dir = exp_dir / "checkpoints"
    try:
        tok = Tokenizer(cfg.data.tokenizer)
        cmvn = GlobalCMVN.load(cfg.data.cmvn) if cfg.data.cmvn else None
        num_labels = {k: len(v) for k, v in cfg.data.label_vocab.items()}
        # seed before building anything: the same config and seed give bit-identical initial weights
        # (quantiser codebooks included) and the same data order
        seed_everything(cfg.trainer.seed)
        model = build_model(cfg.model, vocab_size=tok.vocab_size, input_dim=cfg.data.fbank.num_mel_bins,
                            num_labels=num_labels or None)
        if cfg.init:
            if resume and ckpt_dir.is_dir() and any(ckpt_dir.glob("*.pt")):
                log.info("resuming from %s: init from pre-trained weights skipped", ckpt_dir)
            else:
                init_from_pretrained(model, cfg.init)
        freeze_parameters(model, cfg.freeze)
        min_frames = model.min_input_length() if hasattr(model, "min_input_length") else 1
        streams = {n: build_dataset(s, cfg.data, tok, cmvn, min_frames) for n, s in cfg.data.train.items()}
        valid = build_dataset(cfg.data.valid, cfg.data, tok, cmvn, min_frames) if cfg.data.valid else None
    except (ConfigError, DataDirError, CheckpointError, FileNotFoundError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)

    def on_start() -> None:  # rank 0, after the resume check: a run that cannot resume writes nothing
        save_config(cfg, exp_dir / "config.yaml")
        n_params = sum(p.numel() for p in model.parameters())
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info("model %s: %.2fM parameters (%.2fM trained); streams %s", cfg.model.name, n_params / 1e6,
                 n_train / 1e6, {n: len(d) for n, d in streams.items()})

    trainer_cfg = cfg.trainer if resume == cfg.trainer.resume else dataclasses.replace(cfg.trainer, resume=resume)
    try:
        metrics = run_training(
            model, streams, valid, exp_dir=exp_dir, optim=cfg.optim, trainer=trainer_cfg,
            batch={n: s.batch for n, s in cfg.data.train.items()},
            valid_batch=cfg.data.valid.batch if cfg.data.valid else None, num_workers=num_workers,
            on_start=on_start,
        )
    except TrainingInterrupted as e:
        typer.echo(f"interrupted: {e}", err=True)
        raise typer.Exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:  # a second Ctrl-C while the step finished
        typer.echo(f"aborted by a second Ctrl-C: the last checkpoint in {ckpt_dir} is kept", err=True)
        raise typer.Exit(130)
    except (CheckpointError, NonFiniteLossError, NonFiniteStateError, ConfigError, DataDirError, AudioError,
            FileNotFoundError) as e:
        typer.echo(f"error: {exp_dir}: {e}", err=True)
        raise typer.Exit(1)
    log.info("done: %s", {k: v for k, v in metrics.items() if not isinstance(v, (list, dict))})
