"""Optimizer and training-loop settings: :class:`OptimConfig` (optimizer, LR schedule),
:class:`TrainerConfig` (loop, precision, DDP), :func:`build_optimizer` and :func:`lr_factor`.

Both configs are plain dataclasses read by :func:`stk.config.from_dict` (unknown keys are
rejected) and checked in ``__post_init__`` (``ValueError`` naming the key). ``stk.trainer``
re-exports every name here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterable, Literal

import torch
from torch import nn

from stk.amp import resolve_amp


@dataclass
class OptimConfig:
    """Optimizer and LR schedule (see :func:`lr_factor`). ``grad_clip=0`` disables clipping."""

    name: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-9
    weight_decay: float = 0.0
    scheduler: Literal["warmuplr", "constant", "cosine"] = "warmuplr"
    warmup_steps: int = 25000
    min_lr: float = 0.0
    grad_clip: float = 5.0

    def __post_init__(self) -> None:
        if not self.lr > 0 or not self.eps > 0:
            raise ValueError(f"optim.lr and optim.eps must be > 0, got {self.lr}, {self.eps}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optim.betas must be in [0, 1), got {self.betas}")
        if min(self.weight_decay, self.grad_clip, self.min_lr) < 0:
            raise ValueError("optim.weight_decay, grad_clip and min_lr must be >= 0")
        if self.warmup_steps < 0 or (self.scheduler == "warmuplr" and self.warmup_steps == 0):
            raise ValueError(f"optim.warmup_steps must be >= 0 (> 0 for warmuplr), got {self.warmup_steps}")


@dataclass
class TrainerConfig:
    """Loop settings. ``max_steps > 0`` stops by optimizer steps instead of epochs;
    ``valid_interval_steps = 0`` validates at epoch ends; ``save_interval_steps = 0`` saves at
    epoch ends and after validations only; ``keep_nbest = 0`` keeps every checkpoint;
    ``max_bad_steps`` consecutive non-finite steps abort; ``num_threads = 0`` leaves torch's.

    ``accum_grad = k`` sums the gradients of k micro-batches of ``loss / k`` (DDP syncs only the
    last): the same gradient as one batch of the k micro-batches together when they hold equally
    many utterances (models average their losses over utterances; tested). ``amp``,
    ``grad_checkpointing``: see :mod:`stk.amp`. ``sync_batchnorm``: under DDP on CUDA, BatchNorm
    statistics over every rank's batch (torch's SyncBatchNorm has no CPU kernel: on gloo each rank
    normalises its own batch, the one way a DDP step differs from one process with the whole batch)."""

    max_epochs: int = 10
    max_steps: int = 0
    accum_grad: int = 1
    log_interval: int = 50
    valid_interval_steps: int = 0
    save_interval_steps: int = 0
    keep_nbest: int = 3
    seed: int = 0
    num_threads: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"  # autocast on CUDA (stk/amp.py); bf16 needs no loss scaling
    use_amp: bool = False  # the older switch: true = amp fp16
    grad_checkpointing: bool = False  # recompute encoder layers in backward (less activation memory)
    sync_batchnorm: bool = False  # under DDP on CUDA: BatchNorm statistics over the global batch
    max_bad_steps: int = 10
    find_unused_parameters: bool = False
    tensorboard: bool = True
    progress: bool = True
    resume: bool = True

    def __post_init__(self) -> None:
        for name, v in dataclasses.asdict(self).items():
            low = 1 if name in ("accum_grad", "log_interval", "max_bad_steps") else 0
            if isinstance(v, int) and not isinstance(v, bool) and name != "seed" and v < low:
                raise ValueError(f"trainer.{name} must be >= {low}, got {v}")
        if self.max_epochs == 0 and self.max_steps == 0:
            raise ValueError("trainer: set max_epochs or max_steps")
        resolve_amp(self.amp, self.use_amp)  # ValueError on an unknown mode (from Python, not YAML)
        if (self.use_amp or self.amp != "none") and self.device == "cpu":
            raise ValueError("trainer.amp/use_amp needs a CUDA device (fp16/bf16 autocast on this CPU is unusable); "
                             "use trainer.amp=none with trainer.device=cpu")


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)


def lr_factor(cfg: OptimConfig, step: int, total_steps: int | None = None) -> float:
    """LR multiplier for optimizer update ``step`` (1-based). warmuplr: ESPnet/Noam
    ``min(step / warmup, (warmup / step) ** 0.5)``; constant/cosine: linear warmup, then flat or
    cosine decay to ``min_lr`` at ``total_steps``."""
    w = cfg.warmup_steps
    if cfg.scheduler == "warmuplr":
        return min(step / w, (w / step) ** 0.5)
    if w > 0 and step < w:
        return step / w
    if cfg.scheduler == "constant":
        return 1.0
    if not total_steps:
        raise ValueError("cosine scheduler needs the total number of steps")
    progress = min(1.0, (step - w) / max(1, total_steps - w))
    return (f := cfg.min_lr / cfg.lr) + (1.0 - f) * 0.5 * (1.0 + math.cos(math.pi * progress))
