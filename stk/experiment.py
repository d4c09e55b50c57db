"""The experiment config (``stk train --config``) and the pieces built from it.

```yaml
model: {name: encdec, conf: {...}}          # registered model + its typed constructor args
data:
  tokenizer: data/token/bpe500.model
  cmvn: data/cmvn.json
  fbank: {num_mel_bins: 80}
  train:                                    # one or more named streams, mixed by ratio
    paired: {data_dir: data/synth_train, targets: {text: text}, batch: {max_frames: 12000}}
  valid: {data_dir: data/synth_dev, targets: {text: text}}
optim: {lr: 0.002, warmup_steps: 500}
trainer: {max_epochs: 30}
```
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from stk.data.sampler import BatchConfig
from stk.features.fbank import FbankConfig
from stk.registry import ComponentSpec
from stk.trainer import OptimConfig, TrainerConfig


@dataclasses.dataclass
class StreamConfig:
    """One data stream: a data dir, what to load from it, and how to batch it."""

    data_dir: str
    speech: bool = True
    targets: dict[str, str] = dataclasses.field(default_factory=lambda: {"text": "text"})
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    max_input_frames: int | None = 3000
    batch: BatchConfig = dataclasses.field(default_factory=lambda: BatchConfig(max_frames=20000))


@dataclasses.dataclass
class DataConfig:
    tokenizer: str
    train: dict[str, StreamConfig]
    valid: StreamConfig | None = None
    cmvn: str | None = None
    fbank: FbankConfig = dataclasses.field(default_factory=FbankConfig)
    label_vocab: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    allow_pipes: bool = False


@dataclasses.dataclass
class ExperimentConfig:
    model: ComponentSpec
    data: DataConfig
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)


def build_model(spec: ComponentSpec, *, vocab_size: int, input_dim: int, num_labels: dict[str, int] | None = None):
    """Build a registered model, supplying the sizes the toolkit knows."""
    from stk.models import MODELS

    extra: dict[str, Any] = {"vocab_size": vocab_size, "input_dim": input_dim}
    factory = MODELS.get(spec.name)
    import inspect

    if num_labels and "num_labels" in inspect.signature(factory).parameters:
        extra["num_labels"] = num_labels
    return MODELS.build(spec, "model", **extra)


def build_dataset(stream: StreamConfig, data: DataConfig, tokenizer, cmvn, min_frames: int):
    """A :class:`~stk.data.dataset.KaldiDataset` for one stream."""
    from stk.data.dataset import KaldiDataset

    vocab = {k: {v: i for i, v in enumerate(vals)} for k, vals in data.label_vocab.items()}
    return KaldiDataset(
        stream.data_dir, speech=stream.speech, targets=stream.targets, tokenize=tokenizer.encode,
        fbank=data.fbank, cmvn=cmvn, min_frames=min_frames, max_frames=stream.max_input_frames,
        extra_labels=stream.labels, label_vocab=vocab, allow_pipes=data.allow_pipes,
    )


def resolve_path(path: str | None, base: Path) -> str | None:
    """Paths in a config are relative to the directory ``stk`` runs in (the recipe dir)."""
    if path is None:
        return None
    p = Path(path)
    return str(p if p.is_absolute() else (base / p))
