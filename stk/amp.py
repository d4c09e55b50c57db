"""Mixed precision and activation checkpointing for the trainer (the GPU path).

* ``trainer.amp: bf16`` — autocast to bfloat16 on CUDA; no loss scaling (bf16 has fp32's
  exponent range). ``fp16`` — autocast to float16 with a :class:`torch.amp.GradScaler` (dynamic
  loss scaling; a step whose gradients overflow is skipped by the scaler and counted by the
  trainer). ``none`` — fp32. On CPU, amp is refused when ``trainer.device: cpu`` is asked for
  explicitly (CPUs without bf16 units run bf16 matmuls hundreds of times slower than fp32:
  0.3 GFLOP/s on the project's machines); ``device: auto`` on a machine without CUDA falls back to fp32 with a
  warning, so one config runs on a laptop and on a GPU node.
* ``trainer.grad_checkpointing: true`` — every module with a ``grad_checkpointing`` attribute
  (:class:`~stk.modules.conformer.ConformerLayers`, hence every Conformer encoder, the mSLAM and
  MAESTRO blocks) recomputes each layer's activations in the backward pass
  (``torch.utils.checkpoint``, ``use_reentrant=False``): memory for activations drops from one set
  per layer to one per stack, for about one more forward pass of compute. Gradients are the same
  (bit-identical on CPU); BatchNorm running statistics are updated twice per step (once in the
  recomputation), which changes their effective momentum only.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Literal

import torch
from torch import nn

log = logging.getLogger("stk.amp")

AmpMode = Literal["none", "bf16", "fp16"]
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_amp(amp: str, use_amp: bool) -> str:
    """The effective mode: ``use_amp: true`` (the older boolean) means ``fp16`` unless ``amp`` is set."""
    if amp not in ("none", "bf16", "fp16"):
        raise ValueError(f"trainer.amp must be none, bf16 or fp16, got {amp!r}")
    if use_amp and amp == "none":
        return "fp16"
    return amp


class Precision:
    """The autocast context and gradient scaler of one training run on ``device``.

    Args:
        mode: ``none``, ``bf16`` or ``fp16`` (see the module docstring).
        device: the training device; on CPU every mode runs in fp32 (a warning says so).
    """

    def __init__(self, mode: str, device: torch.device) -> None:
        mode = resolve_amp(mode, False)
        if mode != "none" and device.type != "cuda":
            log.warning("trainer.amp %s ignored: the device is %s (training in fp32)", mode, device)
            mode = "none"
        if mode == "bf16" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"trainer.amp bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; "
                             "use trainer.amp=fp16")
        self.mode, self.device = mode, device
        self.dtype = _DTYPES.get(mode)
        # fp16 needs loss scaling (its 5-bit exponent underflows small gradients); bf16 does not
        self.scaler = torch.amp.GradScaler("cuda", enabled=mode == "fp16")

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def autocast(self) -> contextlib.AbstractContextManager:
        """``torch.autocast`` to the mode's dtype (a no-op context in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def set_grad_checkpointing(model: nn.Module, enabled: bool = True) -> int:
    """Switch activation checkpointing on (or off) in every submodule that supports it.

    Returns how many modules were switched; 0 with ``enabled`` means the model has none (the
    caller decides whether that is an error).
    """
    n = 0
    for mod in model.modules():
        if hasattr(mod, "grad_checkpointing"):
            mod.grad_checkpointing = bool(enabled)
            n += 1
    return n
