"""Gumbel-softmax product quantizer (wav2vec 2.0 §2; the target generator of w2v-BERT).

``G`` codebooks of ``V`` entries each; a frame picks one entry per codebook (straight-through
hard Gumbel-softmax while training, argmax otherwise); the chosen entries are concatenated and
projected to ``output_dim``. The Gumbel temperature decays from ``tau_start`` to ``tau_end`` by
``tau_decay`` per training forward call (the counter is a buffer, so it survives resume).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GumbelQuantizer(nn.Module):
    """Args:
        input_dim: D_in of the frames to quantize.
        num_groups: G codebooks.
        num_entries: V entries per codebook.
        code_dim: size of the concatenated codevector (divisible by G).
        output_dim: size of the projected quantized vector.
        tau_start, tau_end, tau_decay: Gumbel temperature schedule.

    ``forward(x (B, T, D_in), mask (B, T) valid) -> (q (B, T, output_dim), ids (B, T, G), diversity)``
    where ``diversity = (G·V - perplexity) / (G·V)`` over the valid frames (wav2vec 2.0's L_d; it is
    0 when every entry is used equally).
    """

    def __init__(
        self, *, input_dim: int, num_groups: int = 2, num_entries: int = 320, code_dim: int = 256,
        output_dim: int = 256, tau_start: float = 2.0, tau_end: float = 0.5, tau_decay: float = 0.999995,
    ) -> None:
        super().__init__()
        if num_groups < 1 or num_entries < 2 or code_dim % num_groups:
            raise ValueError(f"need num_groups >= 1, num_entries >= 2, code_dim % num_groups == 0; got "
                             f"{num_groups}, {num_entries}, {code_dim}")
        if not 0 < tau_end <= tau_start or not 0 < tau_decay <= 1:
            raise ValueError(f"need 0 < tau_end <= tau_start and 0 < tau_decay <= 1, got {tau_start}, {tau_end}, {tau_decay}")
        self.g, self.v = num_groups, num_entries
        self.logits = nn.Linear(input_dim, num_groups * num_entries)
        self.codebook = nn.Parameter(torch.randn(num_groups * num_entries, code_dim // num_groups))
        self.proj = nn.Linear(code_dim, output_dim)
        nn.init.normal_(self.logits.weight, std=3.0 * input_dim ** -0.5)
        nn.init.zeros_(self.logits.bias)
        self.tau_start, self.tau_end, self.tau_decay = tau_start, tau_end, tau_decay
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @property
    def tau(self) -> float:
        return max(self.tau_end, self.tau_start * self.tau_decay ** int(self.num_updates))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        logits = self.logits(x).float().view(b, t, self.g, self.v)
        ids = logits.argmax(-1)  # (B, T, G)
        valid = mask[..., None, None].to(logits.dtype)
        probs = torch.softmax(logits, -1)
        avg = (probs * valid).sum((0, 1)) / valid.sum().clamp(min=1)  # (G, V)
        perplexity = torch.exp(-(avg * torch.log(avg + 1e-7)).sum(-1)).sum()
        diversity = (self.g * self.v - perplexity) / (self.g * self.v)
        if self.training:
            onehot = F.gumbel_softmax(logits, tau=self.tau, hard=True, dim=-1)
            self.num_updates += 1
        else:
            onehot = F.one_hot(ids, self.v).to(logits.dtype)
        # (B, T, G, V) x (G, V, C) -> (B, T, G, C)
        codes = torch.einsum("btgv,gvc->btgc", onehot.to(x.dtype), self.codebook.view(self.g, self.v, -1))
        return self.proj(codes.reshape(b, t, -1)), ids, diversity
