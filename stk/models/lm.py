"""Causal Transformer language model over stk token ids, for shallow fusion in beam searches.

Trained by ``stk train`` on a text-only stream (``speech: false``) with the ASR model's
tokenizer, packaged by ``stk package`` and used by ``stk decode --lm PACKAGE_OR_NAME
--lm-weight W``. Training input is ``<sos> y``, target ``y <eos>`` (``<sos/eos>`` = id 2).

:meth:`TransformerLM.scorer` returns an :class:`~stk.decode.lm.LMScorer` that scores the next
token of N hypotheses incrementally (per-layer key/value caches), whatever their lengths: each
row keeps its own position count and a mask of its valid cache columns, so rows that emitted a
different number of tokens (RNN-T hypotheses) can share one state, and ``advance`` takes -1
for a row that stays as it is.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stk.models import MODELS, StkModel
from stk.tokenizer import SOS_EOS

__all__ = ["TransformerLM", "TransformerLMScorer", "LMState"]


class _Block(nn.Module):
    """Pre-norm causal self-attention + feed-forward, with an optional key/value cache."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model))
        self.drop = nn.Dropout(dropout)
        self.num_heads = num_heads
        self.p = dropout

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, l, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(n, l, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        return q, k, v  # each (N, H, L, D/H)

    def _out(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n, _, l, _ = y.shape
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(n, l, -1)))
        return x + self.drop(self.ff(self.norm2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Training: (B, L, D) -> (B, L, D), causal (right padding needs no mask)."""
        q, k, v = self._qkv(x)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.p if self.training else 0.0)
        return self._out(x, y)

    def step(self, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, mask: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One new position: ``x`` (N, 1, D), caches (N, H, C, D/H), ``mask`` (N, C+1) True=attend
        -> output (N, 1, D) and caches with the new column (N, H, C+1, D/H)."""
        q, k, v = self._qkv(x)
        k, v = torch.cat([k_cache, k], dim=2), torch.cat([v_cache, v], dim=2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        return self._out(x, y), k, v


@dataclasses.dataclass
class LMState:
    """Incremental state of N hypotheses.

    Attributes:
        keys, values: per layer (N, H, C, D/H) cached projections of the C columns written so far.
        valid: (N, C) bool, the columns each row attends to (a row's own tokens, <sos> first).
        positions: (N,) tokens (with <sos>) each row holds: the next token's position.
        log_probs: (N, V) log-probabilities of each row's next token.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    valid: torch.Tensor
    positions: torch.Tensor
    log_probs: torch.Tensor


@MODELS.register("lm")
class TransformerLM(StkModel):
    """Causal Transformer LM: token embedding (tied with the output layer) + sinusoidal positions,
    ``num_layers`` pre-norm blocks, a final LayerNorm.

    Args:
        vocab_size: set by the toolkit from the tokenizer.
        input_dim: set by the toolkit (feature size); unused by a text model.
        d_model, num_heads, ffn_dim, num_layers, dropout: sizes.
        max_len: longest sequence (tokens + <sos>); longer training sentences are cut to it.
        target: batch key of the token sequences (a text-only stream's ``targets``).
        tie_embeddings: share the input embedding and output projection weights.

    ``forward(batch)``: ``batch[target]`` (B, U) padded with -1, ``batch[target + "_lens"]`` (B,)
    -> per-token cross entropy ``loss`` and ``stats`` {loss, ppl, acc}, ``weight`` = tokens.
    """

    def __init__(
        self, *, vocab_size: int, input_dim: int | None = None, d_model: int = 256, num_heads: int = 4,
        ffn_dim: int = 1024, num_layers: int = 4, dropout: float = 0.1, max_len: int = 1024, target: str = "text",
        tie_embeddings: bool = True,
    ) -> None:
        super().__init__()
        if vocab_size <= SOS_EOS:
            raise ValueError(f"vocab_size must be > {SOS_EOS}, got {vocab_size}")
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} must be a multiple of num_heads={num_heads}")
        if min(d_model, num_heads, ffn_dim, num_layers, max_len) < 1:
            raise ValueError("d_model, num_heads, ffn_dim, num_layers and max_len must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.vocab_size, self.d_model, self.target = vocab_size, d_model, target
        self.embed = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embed.weight, std=d_model ** -0.5)
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)[:, : d_model // 2]
        self.register_buffer("pe", pe, persistent=False)
        self.blocks = nn.ModuleList(_Block(d_model, num_heads, ffn_dim, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)
        if tie_embeddings:
            self.out.weight = self.embed.weight
        self.drop = nn.Dropout(dropout)

    def _embed(self, ys: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if int(positions.max()) >= self.pe.size(0):
            raise ValueError(f"sequence longer than max_len {self.pe.size(0)}")
        return self.drop(self.embed(ys) * math.sqrt(self.d_model) + self.pe[positions])

    def logits(self, ys_in: torch.Tensor) -> torch.Tensor:
        """Next-token logits for every position of ``ys_in`` (B, L) -> (B, L, V)."""
        x = self._embed(ys_in, torch.arange(ys_in.size(1), device=ys_in.device))
        for block in self.blocks:
            x = block(x)
        return self.out(self.norm(x))

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.target not in batch:
            raise ValueError(f"lm: batch (stream {batch.get('stream')!r}) has no {self.target!r} tokens")
        ys, lens = batch[self.target], batch[f"{self.target}_lens"]
        b = ys.size(0)
        room = self.pe.size(0) - 1  # tokens that fit after <sos>: longer sentences are cut (no <eos> target)
        if ys.size(1) > room:
            ys = ys[:, :room]
        sos = torch.full((b, 1), SOS_EOS, dtype=ys.dtype, device=ys.device)
        ys_in = torch.cat([sos, ys.clamp(min=0)], dim=1)
        ys_out = torch.cat([ys, torch.full_like(sos, -1)], dim=1)
        whole = lens <= room
        rows = torch.arange(b, device=ys.device)[whole]
        ys_out[rows, lens[whole]] = SOS_EOS
        logits = self.logits(ys_in)
        n_tok = (ys_out != -1).sum()
        nll = F.cross_entropy(logits.transpose(1, 2), ys_out, ignore_index=-1, reduction="sum")
        loss = nll / n_tok.clamp(min=1)
        acc = ((logits.argmax(-1) == ys_out) & (ys_out != -1)).sum() / n_tok.clamp(min=1)
        stats = {"loss": loss.item(), "ppl": math.exp(min(loss.item(), 50.0)), "acc": acc.item()}
        return {"loss": loss, "stats": stats, "weight": float(n_tok)}

    @torch.no_grad()
    def sequence_log_prob(self, seqs: list[list[int]]) -> torch.Tensor:
        """Total log-probability of each token sequence followed by <eos> -> (N,) float."""
        if not seqs:
            return torch.zeros(0)
        dev = self.embed.weight.device
        n, u = len(seqs), max(len(s) for s in seqs)
        ys_in = torch.full((n, u + 1), SOS_EOS, dtype=torch.long, device=dev)
        ys_out = torch.full((n, u + 1), -1, dtype=torch.long, device=dev)
        for i, s in enumerate(seqs):
            ys_in[i, 1 : len(s) + 1] = torch.tensor(s, dtype=torch.long)
            ys_out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            ys_out[i, len(s)] = SOS_EOS
        lp = self.logits(ys_in).log_softmax(-1)
        tok = lp.gather(2, ys_out.clamp(min=0)[..., None])[..., 0]
        return tok.masked_fill(ys_out == -1, 0.0).sum(1)

    def scorer(self) -> "TransformerLMScorer":
        """An incremental :class:`~stk.decode.lm.LMScorer` over this model (put it in eval mode first)."""
        return TransformerLMScorer(self)


class TransformerLMScorer:
    """:class:`~stk.decode.lm.LMScorer` of a :class:`TransformerLM` (one cache column per advance)."""

    def __init__(self, model: TransformerLM) -> None:
        self.model = model
        self.vocab_size = model.vocab_size

    @torch.no_grad()
    def _step(self, state_keys: list[torch.Tensor], state_values: list[torch.Tensor], valid: torch.Tensor,
              positions: torch.Tensor, tokens: torch.Tensor, keep: torch.Tensor | None = None,
              old_lp: torch.Tensor | None = None) -> LMState:
        m = self.model
        x = m._embed(tokens.clamp(min=0)[:, None], positions[:, None])  # (N, 1, D)
        mask = torch.cat([valid, valid.new_ones(valid.size(0), 1)], dim=1)
        keys, values = [], []
        for block, kc, vc in zip(m.blocks, state_keys, state_values):
            x, k, v = block.step(x, kc, vc, mask)
            keys.append(k)
            values.append(v)
        lp = m.out(m.norm(x[:, 0])).log_softmax(-1)
        if keep is None:
            return LMState(keys, values, mask, positions + 1, lp)
        # rows with token -1 stay as they were: their new column is never attended to
        mask = torch.cat([valid, ~keep[:, None]], dim=1)
        return LMState(keys, values, mask, positions + (~keep).long(), torch.where(keep[:, None], old_lp, lp))

    def init_state(self, batch_size: int) -> LMState:
        if batch_size < 0:
            raise ValueError(f"batch_size must be >= 0, got {batch_size}")
        m = self.model
        dev = m.embed.weight.device
        h = m.blocks[0].num_heads
        empty = m.embed.weight.new_zeros(1, h, 0, m.d_model // h)
        one = self._step([empty] * len(m.blocks), [empty] * len(m.blocks), torch.zeros(1, 0, dtype=torch.bool, device=dev),
                         torch.zeros(1, dtype=torch.long, device=dev), torch.full((1,), SOS_EOS, dtype=torch.long, device=dev))
        return self.select(one, torch.zeros(batch_size, dtype=torch.long, device=dev))

    def score(self, state: LMState) -> torch.Tensor:
        return state.log_probs

    def advance(self, state: LMState, tokens: torch.Tensor) -> LMState:
        """Append ``tokens`` (N,) to the N rows; a row whose token is -1 stays unchanged (RNN-T
        hypotheses that emitted blank can share one call with those that emitted a token)."""
        if tokens.shape != state.positions.shape:
            raise ValueError(f"tokens must be ({state.positions.numel()},), got {tuple(tokens.shape)}")
        tokens = tokens.to(state.positions.device).long()
        keep = tokens < 0
        if tokens.numel() and int(tokens.max()) >= self.vocab_size:
            raise ValueError(f"token id {int(tokens.max())} outside the LM vocabulary of {self.vocab_size}")
        if not bool(keep.any()):
            return self._step(state.keys, state.values, state.valid, state.positions, tokens)
        return self._step(state.keys, state.values, state.valid, state.positions, tokens, keep, state.log_probs)

    def select(self, state: LMState, index: torch.Tensor) -> LMState:
        index = index.to(state.positions.device).long()
        return LMState([k.index_select(0, index) for k in state.keys], [v.index_select(0, index) for v in state.values],
                       state.valid.index_select(0, index), state.positions.index_select(0, index),
                       state.log_probs.index_select(0, index))
