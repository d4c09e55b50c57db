"""Process-group helpers of the trainer: device resolution and ``torchrun`` initialisation (gloo on
CPU, NCCL on CUDA), moving batches to the device, gathering Python objects from every rank."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


def _gather(obj: Any) -> list[Any]:
    """``obj`` of every rank (just ``[obj]`` without a process group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def init_distributed(device: str) -> tuple[int, int, torch.device, bool]:
    """Resolve the device; under torchrun (``WORLD_SIZE > 1``) init the process group (gloo on
    CPU, NCCL on CUDA). Returns ``(rank, world_size, device, initialised_here)``."""
    world, local_rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("trainer.device is 'cuda' but CUDA is not available")
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    owns = world > 1 and not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return (dist.get_rank(), dist.get_world_size(), dev, owns) if dist.is_initialized() else (0, 1, dev, owns)
