"""Autoregressive Transformer decoder with cross-attention and incremental decoding."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class DecoderLayer(nn.Module):
    """Pre-norm: causal self-attention → cross-attention → feed-forward."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.src_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d_model, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_pad: torch.Tensor | None,
        causal: torch.Tensor | None,
        tgt_pad: torch.Tensor | None,
    ) -> torch.Tensor:
        """Training: ``x`` (B, L, D), ``memory`` (B, T, D) -> (B, L, D)."""
        h = self.norm1(x)
        q = x + self.drop(self.self_attn(h, h, h, attn_mask=causal, key_padding_mask=tgt_pad, need_weights=False)[0])
        q = q + self.drop(self.src_attn(self.norm2(q), memory, memory, key_padding_mask=memory_pad, need_weights=False)[0])
        return q + self.drop(self.ff(self.norm3(q)))

    def project_memory(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys and values of ``memory`` (N, T, D) -> two (N, H, T, D/H) tensors."""
        a = self.src_attn
        d, h = a.embed_dim, a.num_heads
        w, b = a.in_proj_weight, a.in_proj_bias
        n, t, _ = memory.shape
        k = F.linear(memory, w[d : 2 * d], b[d : 2 * d]).view(n, t, h, d // h).transpose(1, 2)
        v = F.linear(memory, w[2 * d :], b[2 * d :]).view(n, t, h, d // h).transpose(1, 2)
        return k, v

    def step(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], memory_mask: torch.Tensor) -> torch.Tensor:
        """Inference: the output at the last position of ``x`` (N, L, D) given precomputed
        cross-attention ``kv`` and ``memory_mask`` (N, T) True=valid -> (N, 1, D)."""
        h = self.norm1(x)
        q = x[:, -1:] + self.self_attn(h[:, -1:], h, h, need_weights=False)[0]
        a = self.src_attn
        d, nh = a.embed_dim, a.num_heads
        n = q.size(0)
        qq = F.linear(self.norm2(q), a.in_proj_weight[:d], a.in_proj_bias[:d]).view(n, 1, nh, d // nh).transpose(1, 2)
        y = F.scaled_dot_product_attention(qq, kv[0], kv[1], attn_mask=memory_mask[:, None, None, :])
        q = q + a.out_proj(y.transpose(1, 2).reshape(n, 1, d))
        return q + self.ff(self.norm3(q))


class TransformerDecoder(nn.Module):
    """Token decoder attending to an encoder memory.

    Args:
        vocab_size: output vocabulary V (ids from :mod:`stk.tokenizer`).
        d_model, num_heads, ffn_dim, num_layers, dropout: sizes.
        memory_dim: encoder output dimension (projected to ``d_model`` when different).

    ``forward(ys_in (B, L), ys_lens (B,), memory (B, T, M), memory_lens (B,)) -> logits (B, L, V)``.
    ``score_step`` scores the next token of N prefixes with a per-layer cache (beam search).
    """

    def __init__(
        self, *, vocab_size: int, d_model: int = 256, num_heads: int = 4, ffn_dim: int = 1024,
        num_layers: int = 3, dropout: float = 0.1, memory_dim: int | None = None, max_len: int = 1024,
    ) -> None:
        super().__init__()
        if vocab_size < 4:
            raise ValueError(f"vocab_size must be >= 4, got {vocab_size}")
        self.embed = nn.Embedding(vocab_size, d_model)
        # N(0, 1/d) so that the sqrt(d)-scaled embeddings have unit scale, like the positions and
        # the attention outputs (fairseq's convention). With N(0, 1) they were sqrt(d) times larger
        # than every update the layers add, and the decoder learned to use the encoder very slowly.
        nn.init.normal_(self.embed.weight, std=d_model ** -0.5)
        self.register_buffer("pe", self._sinusoid(max_len, d_model), persistent=False)
        self.mem_proj = nn.Linear(memory_dim, d_model) if memory_dim and memory_dim != d_model else nn.Identity()
        self.layers = nn.ModuleList(DecoderLayer(d_model, num_heads, ffn_dim, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)
        self.drop = nn.Dropout(dropout)
        self.d_model = d_model

    @staticmethod
    def _sinusoid(n: int, d: int) -> torch.Tensor:
        pos = torch.arange(n, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
        pe = torch.zeros(n, d)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
        return pe

    def _embed(self, ys: torch.Tensor, offset: int = 0) -> torch.Tensor:
        if ys.size(1) + offset > self.pe.size(0):
            raise ValueError(f"sequence of {ys.size(1) + offset} tokens exceeds max_len {self.pe.size(0)}")
        return self.drop(self.embed(ys) * math.sqrt(self.d_model) + self.pe[offset : offset + ys.size(1)])

    def forward(
        self, ys_in: torch.Tensor, ys_lens: torch.Tensor, memory: torch.Tensor, memory_lens: torch.Tensor
    ) -> torch.Tensor:
        l = ys_in.size(1)
        x = self._embed(ys_in)
        memory = self.mem_proj(memory)
        mem_pad = torch.arange(memory.size(1), device=memory.device)[None] >= memory_lens[:, None]
        tgt_pad = torch.arange(l, device=ys_in.device)[None] >= ys_lens[:, None]
        causal = torch.triu(torch.ones(l, l, dtype=torch.bool, device=ys_in.device), 1)
        for layer in self.layers:
            x = layer(x, memory, mem_pad, causal, tgt_pad)
        return self.out(self.norm(x))

    @torch.no_grad()
    def score_step(
        self, ys: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor, cache: list[torch.Tensor] | None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Log-probs of the next token for prefixes ``ys`` (N, L).

        ``memory`` (N, T, M), ``memory_mask`` (N, T) True=valid; ``cache`` holds each layer's
        outputs for the first L-1 positions, ``(N, L-1, D)``, or is None. Returns ``(N, V)`` and
        the new cache ``(N, L, D)`` per layer.
        """
        kv = self._memory_kv(memory)
        x = self._embed(ys)  # recompute embeddings for all positions (cheap); layers reuse the cache
        new_cache = []
        for i, layer in enumerate(self.layers):
            if cache is None:  # first call: every position
                outs = [layer.step(x[:, : j + 1], kv[i], memory_mask) for j in range(x.size(1))]
                x = torch.cat(outs, dim=1)
            else:
                x = torch.cat([cache[i], layer.step(x, kv[i], memory_mask)], dim=1)
            new_cache.append(x)
        return torch.log_softmax(self.out(self.norm(x[:, -1])), dim=-1), new_cache

    def _memory_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer cross-attention keys/values, computed once per memory tensor.

        Beam search passes the same ``memory`` object at every step until its rows change, so
        the projection (most of the decoder's work) is not repeated for every step.
        """
        memo = getattr(self, "_kv_memo", None)
        if memo is not None and memo[0] is memory:
            return memo[1]
        mem = self.mem_proj(memory)
        kv = [layer.project_memory(mem) for layer in self.layers]
        self._kv_memo = (memory, kv)
        return kv
