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
init:                                       # optional: start from pre-trained weights (not on resume)
  - {path: exp/mslam/model.avg5.safetensors, src: "encoder.", dst: "encoder.", exclude: ["encoder.text_embed."]}
freeze: ["encoder."]                        # optional: parameter-name prefixes kept fixed (a CTC probe)
```
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from stk.data.sampler import BatchConfig
from stk.features.fbank import FbankConfig
from stk.registry import ComponentSpec
from stk.trainer import OptimConfig, TrainerConfig

log = logging.getLogger("stk.experiment")

@dataclasses.dataclass
class StreamConfig:
    """One data stream: a data dir, what to load from it, and how to batch it."""

    data_dir: str
    speech: bool = True
    targets: dict[str, str] = dataclasses.field(default_factory=lambda: {"text": "text"})
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    int_seqs: dict[str, str] = dataclasses.field(default_factory=dict)  # batch key -> `utt-id int …` file (durations)
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
class InitConfig:
    """Initialise part of the model from pre-trained weights (like ESPnet's ``init_param``).

    ``path``: a trainer checkpoint ``*.pt`` (its ``model`` entry) or a ``*.safetensors`` file
    (``stk average``, a package's ``model.safetensors``). Tensors whose name starts with ``src``
    are loaded into the model with that prefix replaced by ``dst``; tensors whose (source) name
    starts with any ``exclude`` prefix are skipped. ``src: ""`` takes every tensor.
    """

    path: str
    src: str = ""
    dst: str = ""
    exclude: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ExperimentConfig:
    """``init`` is applied in order to a freshly built model (skipped when the experiment resumes
    from its own checkpoint); ``freeze`` parameter-name prefixes are never trained."""

    model: ComponentSpec
    data: DataConfig
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    init: list[InitConfig] = dataclasses.field(default_factory=list)
    freeze: list[str] = dataclasses.field(default_factory=list)


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
        extra_labels=stream.labels, label_vocab=vocab, allow_pipes=data.allow_pipes, int_seqs=stream.int_seqs,
    )


def resolve_path(path: str | None, base: Path) -> str | None:
    """Paths in a config are relative to the directory ``stk`` runs in (the recipe dir)."""
    if path is None:
        return None
    p = Path(path)
    return str(p if p.is_absolute() else (base / p))


def _few(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f" … (+{len(names) - n})" if len(names) > n else "")


def init_from_pretrained(model, inits: list[InitConfig]) -> set[str]:
    """Load the tensors selected by each :class:`InitConfig` into ``model`` (later ones win).

    Raises :class:`~stk.config.ConfigError` naming the file when it cannot be read, when nothing
    in it matched a model tensor, or on a shape mismatch. Logs what was loaded and which model
    parameters stay newly initialised. Returns the names of the loaded tensors.
    """
    import torch

    from stk.checkpoint import _model_state
    from stk.config import ConfigError

    own = model.state_dict()
    loaded: set[str] = set()
    for i, ic in enumerate(inits):
        path = Path(ic.path)
        where = f"init[{i}] {path}"
        if path.suffix not in (".pt", ".safetensors"):
            raise ConfigError(f"{where}: expected a trainer checkpoint *.pt or a *.safetensors file")
        try:
            state = _model_state(path)
        except FileNotFoundError:
            raise ConfigError(f"{where}: file not found") from None
        except Exception as e:  # a truncated or foreign file
            raise ConfigError(f"{where}: cannot read it: {e}") from None
        picked: dict[str, Any] = {}
        unknown: list[str] = []
        for key, value in state.items():
            if not isinstance(value, torch.Tensor) or not key.startswith(ic.src) or any(
                    key.startswith(e) for e in ic.exclude):
                continue
            name = ic.dst + key[len(ic.src):]
            if name not in own:
                unknown.append(name)
                continue
            if tuple(value.shape) != tuple(own[name].shape):
                raise ConfigError(f"{where}: shape mismatch for {key} -> {name}: "
                                  f"{tuple(value.shape)} in the file, {tuple(own[name].shape)} in the model")
            picked[name] = value
        if not picked:
            raise ConfigError(
                f"{where}: no tensor matched the model (src {ic.src!r} -> dst {ic.dst!r}, exclude {ic.exclude}); "
                f"the file has e.g. {_few(sorted(state), 3) or 'nothing'}, the model e.g. {_few(sorted(own), 3)}")
        model.load_state_dict(picked, strict=False)
        loaded |= set(picked)
        log.info("init: loaded %d tensors from %s (%r -> %r)", len(picked), path, ic.src, ic.dst)
        if unknown:
            log.warning("init: %d tensors of %s have no counterpart in the model and were ignored: %s",
                        len(unknown), path, _few(unknown))
    if inits:
        fresh = [n for n, _ in model.named_parameters() if n not in loaded]
        if fresh:
            log.info("init: %d parameter tensors stay newly initialised: %s", len(fresh), _few(fresh))
        else:
            log.info("init: every parameter was initialised from pre-trained weights")
    return loaded


def freeze_parameters(model, prefixes: list[str]) -> list[str]:
    """Set ``requires_grad=False`` on parameters whose name starts with any of ``prefixes``; modules
    left with no trainable parameter stay in eval mode during training (:func:`keep_frozen_in_eval`).

    Raises :class:`~stk.config.ConfigError` if a prefix matches no parameter or nothing is left to
    train. Returns the frozen names.
    """
    from stk.config import ConfigError

    if not prefixes:
        return []
    params = dict(model.named_parameters())
    for pre in prefixes:
        if not any(n.startswith(pre) for n in params):
            tops = sorted({n.split(".")[0] + "." for n in params})
            raise ConfigError(f"freeze: {pre!r} matches no parameter; top-level names: {', '.join(tops)}")
    frozen = [n for n in params if any(n.startswith(pre) for pre in prefixes)]
    for n in frozen:
        params[n].requires_grad_(False)
    if len(frozen) == len(params):
        raise ConfigError(f"freeze: {prefixes} freezes every parameter; nothing is left to train")
    n_el = sum(params[n].numel() for n in frozen)
    n_all = sum(p.numel() for p in params.values())
    log.info("freeze: %d parameter tensors (%.2fM of %.2fM values) frozen by %s", len(frozen), n_el / 1e6,
             n_all / 1e6, prefixes)
    held = keep_frozen_in_eval(model, set(frozen))
    log.info("freeze: %s kept in eval mode (no dropout, fixed BatchNorm statistics)", _few(held))
    return frozen


def keep_frozen_in_eval(model, frozen: set[str]) -> list[str]:
    """Put every module whose parameters are all in ``frozen`` in eval mode, and keep it there
    through later ``model.train()`` calls (its ``train`` is overridden to ``train(False)``), so a
    frozen encoder runs without dropout and with fixed BatchNorm statistics. Returns the outermost
    such module names."""
    import types

    held: list[str] = []
    for name, mod in model.named_modules():
        if not name or any(name.startswith(h + ".") for h in held):
            continue
        names = [f"{name}.{p}" for p, _ in mod.named_parameters()]
        if names and all(n in frozen for n in names):
            def train(self, mode: bool = True, _cls=type(mod)):
                return _cls.train(self, False)

            mod.train = types.MethodType(train, mod)
            mod.eval()
            held.append(name)
    return held
