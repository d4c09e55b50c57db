"""RNN-T (transducer) head: prediction network, joint network, loss, and a torchaudio adapter.

The head sits on top of any encoder producing ``(B, T, enc_dim)`` frames. Training uses
``torchaudio.functional.rnnt_loss`` on the full lattice or, with ``loss="pruned"``, on a pruned band
(:mod:`stk.modules.rnnt_pruned`). stk's beam search is batched (:mod:`stk.decode.rnnt`);
torchaudio's ``torchaudio.models.RNNTBeamSearch`` runs through :class:`TorchaudioRNNT`, which
wraps an encoder callable and this head in the interface torchaudio's decoder expects.

Token convention: ``blank`` (default 0) is both the blank symbol and the predictor's start
symbol, as in icefall; targets never contain ``blank``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torchaudio
from torch import Tensor, nn

from stk.modules.rnnt_pruned import (
    band_joint_inputs, band_lattice, lattice_loss, occupancy, prune_ranges, simple_lattice, warmup_scales,
)

__all__ = ["RNNTPredictor", "RNNTJoiner", "RNNTHead", "TorchaudioRNNT", "make_rnnt_beam_search"]

LSTMState = tuple[Tensor, Tensor]


class RNNTPredictor(nn.Module):
    """Stateful prediction network: token embedding + unidirectional LSTM.

    Args:
        vocab_size: number of symbols V (blank included).
        embed_dim: embedding size.
        hidden_dim: LSTM size; also the output size ``pred_dim``.
        num_layers: stacked LSTM layers.
        dropout: dropout on the embeddings and between LSTM layers.
        blank: blank id, also fed as the start symbol.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        embed_dim: int,
        hidden_dim: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        blank: int = 0,
    ) -> None:
        super().__init__()
        if vocab_size < 2 or embed_dim < 1 or hidden_dim < 1 or num_layers < 1:
            raise ValueError(
                f"bad predictor sizes: vocab_size={vocab_size} embed_dim={embed_dim} "
                f"hidden_dim={hidden_dim} num_layers={num_layers}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not 0 <= blank < vocab_size:
            raise ValueError(f"blank={blank} outside [0, {vocab_size})")
        self.vocab_size = vocab_size
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.blank = blank
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(
            embed_dim, hidden_dim, num_layers=num_layers, batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )

    @property
    def output_dim(self) -> int:
        return self.hidden_dim

    def forward(self, tokens: Tensor, state: LSTMState | None = None) -> tuple[Tensor, LSTMState]:
        """Run the predictor over ``tokens``.

        Args:
            tokens: (B, U) token ids (the first is normally ``blank`` = start).
            state: ``(h, c)``, each (num_layers, B, hidden_dim), or None for zeros.

        Returns:
            ``(out, (h, c))`` with ``out`` (B, U, hidden_dim).
        """
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (B, U), got {tuple(tokens.shape)}")
        out, new_state = self.lstm(self.dropout(self.embed(tokens)), state)
        return out, new_state

    def step(self, tokens: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        """One step for N hypotheses (inference: no dropout): ``tokens`` (N,), ``(h, c)`` each
        (num_layers, N, hidden_dim) -> ``(out (N, hidden_dim), (h, c))``.

        Same result as :meth:`forward` on (N, 1) tokens, through ``torch.lstm_cell`` per layer: at a
        handful of rows and one time step it is ~10-30x faster on CPU than ``nn.LSTM``'s fused kernel.
        """
        x = self.embed(tokens)
        hs, cs = [], []
        for k in range(self.num_layers):
            lstm = self.lstm
            h, c = torch.lstm_cell(x, (state[0][k], state[1][k]), getattr(lstm, f"weight_ih_l{k}"),
                                   getattr(lstm, f"weight_hh_l{k}"), getattr(lstm, f"bias_ih_l{k}"),
                                   getattr(lstm, f"bias_hh_l{k}"))
            hs.append(h)
            cs.append(c)
            x = h
        return x, (torch.stack(hs), torch.stack(cs))


class RNNTJoiner(nn.Module):
    """Joint network ``out(tanh(W_e enc + W_p pred))``.

    Args:
        enc_dim: encoder frame size E.
        pred_dim: predictor output size P.
        joint_dim: hidden size J of the joint.
        vocab_size: output symbols V (blank included).
    """

    def __init__(self, *, enc_dim: int, pred_dim: int, joint_dim: int, vocab_size: int) -> None:
        super().__init__()
        if min(enc_dim, pred_dim, joint_dim) < 1 or vocab_size < 2:
            raise ValueError(
                f"bad joiner sizes: enc_dim={enc_dim} pred_dim={pred_dim} "
                f"joint_dim={joint_dim} vocab_size={vocab_size}"
            )
        self.vocab_size = vocab_size
        self.enc_proj = nn.Linear(enc_dim, joint_dim)
        self.pred_proj = nn.Linear(pred_dim, joint_dim, bias=False)
        self.out = nn.Linear(joint_dim, vocab_size)

    def project_enc(self, enc: Tensor) -> Tensor:
        """(..., E) -> (..., J)."""
        return self.enc_proj(enc)

    def project_pred(self, pred: Tensor) -> Tensor:
        """(..., P) -> (..., J)."""
        return self.pred_proj(pred)

    def joint(self, enc_proj: Tensor, pred_proj: Tensor) -> Tensor:
        """Logits from already projected inputs; shapes broadcast: (..., J) + (..., J) -> (..., V)."""
        return self.out(torch.tanh(enc_proj + pred_proj))

    def forward(self, enc: Tensor, pred: Tensor) -> Tensor:
        """Full lattice of logits.

        Args:
            enc: (B, T, E) encoder frames.
            pred: (B, U1, P) predictor outputs.

        Returns:
            (B, T, U1, V) unnormalised logits.
        """
        return self.joint(self.project_enc(enc).unsqueeze(2), self.project_pred(pred).unsqueeze(1))


class RNNTHead(nn.Module):
    """Predictor + joiner with the transducer loss.

    Args:
        vocab_size: output symbols V (blank included).
        enc_dim: encoder frame size E.
        embed_dim: predictor embedding size.
        pred_dim: predictor LSTM size.
        joint_dim: joint hidden size.
        num_layers: predictor LSTM layers.
        dropout: predictor dropout.
        blank: blank id (also the predictor's start symbol).
        clamp: gradient clamp of ``rnnt_loss`` on the [blank, next-token] log-prob lattice (``-1`` disables it).
        loss: ``"full"`` (the joiner on the whole (B, T, U + 1) lattice) or ``"pruned"`` (k2's pruned
            RNN-T, :mod:`stk.modules.rnnt_pruned`: a simple additive joiner picks a band of
            ``prune_range`` symbols per frame and the joiner runs on the band only). Pruned adds the
            simple joiner's two projections ``simple_am`` (E -> V) and ``simple_lm`` (P -> V). In eval
            mode (validation) the loss is always the full one, so valid losses compare across both.
        prune_range: band width S (>= 2) of the pruned loss (widened for a batch holding an utterance
            with more than S - 1 targets per frame, which no narrower band can align).
        simple_loss_scale: weight of the simple loss after warm-up (icefall: 0.5).
        lm_scale, am_scale: smoothing of the simple loss (k2's ``rnnt_loss_smoothed``; icefall: 0.25, 0).
        warm_steps: icefall's warm-up: over the first ``warm_steps`` training-mode loss calls the
            simple weight falls from 1 to ``simple_loss_scale`` and the pruned weight rises from 0.1
            to 1 (counted by the head; a resumed run starts counting again).
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        enc_dim: int,
        embed_dim: int = 256,
        pred_dim: int = 512,
        joint_dim: int = 512,
        num_layers: int = 1,
        dropout: float = 0.0,
        blank: int = 0,
        clamp: float = -1.0,
        loss: str = "full",
        prune_range: int = 5,
        simple_loss_scale: float = 0.5,
        lm_scale: float = 0.25,
        am_scale: float = 0.0,
        warm_steps: int = 2000,
    ) -> None:
        super().__init__()
        if clamp != -1.0 and clamp <= 0:
            raise ValueError(f"clamp must be -1 (off) or > 0, got {clamp}")
        if loss not in ("full", "pruned"):
            raise ValueError(f"loss must be 'full' or 'pruned', got {loss!r}")
        if prune_range < 2:
            raise ValueError(f"prune_range must be >= 2, got {prune_range}")
        if not 0.0 <= simple_loss_scale <= 1.0:
            raise ValueError(f"simple_loss_scale must be in [0, 1], got {simple_loss_scale}")
        if lm_scale < 0 or am_scale < 0 or lm_scale + am_scale >= 1:
            raise ValueError(f"need lm_scale, am_scale >= 0 and lm_scale + am_scale < 1, got {lm_scale}, {am_scale}")
        if warm_steps < 0:
            raise ValueError(f"warm_steps must be >= 0, got {warm_steps}")
        self.predictor = RNNTPredictor(
            vocab_size=vocab_size, embed_dim=embed_dim, hidden_dim=pred_dim,
            num_layers=num_layers, dropout=dropout, blank=blank,
        )
        self.joiner = RNNTJoiner(enc_dim=enc_dim, pred_dim=pred_dim, joint_dim=joint_dim, vocab_size=vocab_size)
        self.vocab_size = vocab_size
        self.enc_dim = enc_dim
        self.blank = blank
        self.clamp = float(clamp)
        self.loss_type, self.prune_range, self.simple_loss_scale = loss, int(prune_range), float(simple_loss_scale)
        self.lm_scale, self.am_scale, self.warm_steps = float(lm_scale), float(am_scale), int(warm_steps)
        self.updates = 0  # training-mode loss calls (the warm-up clock)
        if loss == "pruned":
            self.simple_am = nn.Linear(enc_dim, vocab_size)
            self.simple_lm = nn.Linear(pred_dim, vocab_size)

    def logits(self, enc: Tensor, targets: Tensor) -> Tensor:
        """Joint logits for teacher forcing: (B, T, E), (B, U) -> (B, T, U + 1, V)."""
        start = targets.new_full((targets.size(0), 1), self.blank)
        pred, _ = self.predictor(torch.cat([start, targets], dim=1))
        return self.joiner(enc, pred)

    def loss(
        self, enc: Tensor, enc_lens: Tensor, targets: Tensor, target_lens: Tensor, *, reduction: str = "mean"
    ) -> Tensor:
        """Transducer loss (negative log-likelihood summed over alignments).

        Args:
            enc: (B, T, E) encoder output.
            enc_lens: (B,) valid frames.
            targets: (B, U) padded token ids (padding value is ignored; valid ids never blank).
            target_lens: (B,) valid tokens.
            reduction: "mean" (over utterances), "sum" or "none".

        Returns:
            Scalar (or (B,) for "none"): with ``loss="pruned"`` in training mode, the warm-up weighted
            sum of the simple and the pruned losses (see :meth:`loss_terms`).
        """
        return self.loss_terms(enc, enc_lens, targets, target_lens, reduction=reduction)["rnnt"]

    def _prepare(self, enc: Tensor, enc_lens: Tensor, targets: Tensor, target_lens: Tensor,
                 reduction: str) -> tuple[Tensor, Tensor]:
        if enc.dim() != 3 or enc.size(-1) != self.enc_dim:
            raise ValueError(f"enc must be (B, T, {self.enc_dim}), got {tuple(enc.shape)}")
        B, T, _ = enc.shape
        if targets.dim() != 2 or targets.size(0) != B:
            raise ValueError(f"targets must be (B={B}, U), got {tuple(targets.shape)}")
        if enc_lens.shape != (B,) or target_lens.shape != (B,):
            raise ValueError(
                f"enc_lens/target_lens must be ({B},), got {tuple(enc_lens.shape)}/{tuple(target_lens.shape)}"
            )
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be mean|sum|none, got {reduction!r}")
        if B == 0:
            raise ValueError("empty batch")
        if int(enc_lens.min()) < 1 or int(enc_lens.max()) > T:
            raise ValueError(f"enc_lens must be in [1, {T}], got {enc_lens.tolist()}")
        U = targets.size(1)
        if int(target_lens.min()) < 0 or int(target_lens.max()) > U:
            raise ValueError(f"target_lens must be in [0, {U}], got {target_lens.tolist()}")
        # rnnt_loss wants the padded sizes to equal the longest lengths.
        t_max, u_max = int(enc_lens.max()), int(target_lens.max())
        valid = torch.arange(u_max, device=targets.device)[None, :] < target_lens[:, None]
        tgt = targets[:, :u_max].masked_fill(~valid, self.blank).long()
        if bool(((tgt == self.blank) & valid).any()):
            raise ValueError("targets contain the blank id inside their valid lengths")
        if bool(((tgt < 0) | (tgt >= self.vocab_size)).any()):
            raise ValueError(f"target ids outside [0, {self.vocab_size})")
        return enc[:, :t_max], tgt

    def loss_terms(
        self, enc: Tensor, enc_lens: Tensor, targets: Tensor, target_lens: Tensor, *, reduction: str = "mean"
    ) -> dict[str, Tensor]:
        """The loss and its parts; arguments as :meth:`loss`.

        Returns:
            ``{"rnnt": loss}`` for the full loss (``loss="full"``, or eval mode); with the pruned loss
            in training mode also ``"rnnt_simple"`` and ``"rnnt_pruned"`` (unweighted) and
            ``rnnt = w_simple * rnnt_simple + w_pruned * rnnt_pruned`` (icefall's warm-up weights).
        """
        enc, tgt = self._prepare(enc, enc_lens, targets, target_lens, reduction)
        B = enc.size(0)
        nxt = torch.cat([tgt, tgt.new_full((B, 1), self.blank)], dim=1)  # (B, U + 1): token after u
        if self.loss_type == "full" or not self.training:
            # The loss reads only log p(blank) and log p(next token) at each lattice point, so the
            # lattice handed to torchaudio is (B, T, U + 1, 2): [blank, next token], normalised here
            # (log_softmax + gather, differentiated by autograd). Same loss and gradients as the full
            # (B, T, U + 1, V) lattice, with a V/2 times smaller recursion (the loss runs 2-3x faster
            # on CPU: bench/rnnt_loss.py).
            lp = self.logits(enc, tgt).float().log_softmax(-1)
            emit = lp.gather(3, nxt[:, None, :, None].expand(B, lp.size(1), -1, 1)).squeeze(-1)
            return {"rnnt": lattice_loss(lp[..., self.blank], emit, enc_lens, target_lens, clamp=self.clamp,
                                         reduction=reduction)}
        return self._pruned_terms(enc, enc_lens, tgt, target_lens, nxt, reduction)

    def _pruned_terms(self, enc: Tensor, enc_lens: Tensor, tgt: Tensor, target_lens: Tensor, nxt: Tensor,
                      reduction: str) -> dict[str, Tensor]:
        start_tok = tgt.new_full((tgt.size(0), 1), self.blank)
        pred, _ = self.predictor(torch.cat([start_tok, tgt], dim=1))  # (B, U + 1, P)
        U1 = pred.size(1)
        sb, se = simple_lattice(self.simple_am(enc), self.simple_lm(pred), nxt, blank=self.blank,
                                lm_scale=self.lm_scale, am_scale=self.am_scale)
        simple = lattice_loss(sb, se, enc_lens, target_lens, clamp=self.clamp)  # (B,)
        # a band of S links start and end only if U_b <= (S - 1) T_b: widen it for such a batch
        lens = enc_lens.to(tgt.device).long()
        need = int(((target_lens.to(tgt.device).long() + lens - 1) // lens).max()) + 1
        S = min(max(self.prune_range, need), U1)
        if S == U1:  # the band is the whole lattice (short targets): nothing to prune
            start = torch.zeros(enc.shape[:2], dtype=torch.long, device=enc.device)
        else:
            occ = occupancy(simple, sb, se, enc_lens, target_lens, self.clamp)
            start = prune_ranges(occ, enc_lens, target_lens, S)
        enc_b, pred_b = band_joint_inputs(self.joiner.project_enc(enc), self.joiner.project_pred(pred), start, S)
        band_lp = self.joiner.joint(enc_b, pred_b).float().log_softmax(-1)  # (B, T, S, V)
        pb, pe = band_lattice(band_lp, nxt, start, blank=self.blank, U1=U1)
        pruned = lattice_loss(pb, pe, enc_lens, target_lens, clamp=self.clamp)
        w_simple, w_pruned = warmup_scales(self.updates, self.warm_steps, self.simple_loss_scale)
        self.updates += 1
        red = {"mean": torch.mean, "sum": torch.sum, "none": lambda x: x}[reduction]
        simple, pruned = red(simple), red(pruned)
        return {"rnnt": w_simple * simple + w_pruned * pruned, "rnnt_simple": simple, "rnnt_pruned": pruned}

    def forward(self, enc: Tensor, enc_lens: Tensor, targets: Tensor, target_lens: Tensor) -> Tensor:
        """Same as :meth:`loss` with mean reduction."""
        return self.loss(enc, enc_lens, targets, target_lens)


# --------------------------------------------------------------------------------------
# torchaudio adapter
#
# torchaudio's RNNTBeamSearch reads the blank score from the *last* column of the joint
# output (``next_token_probs[:, -1]``), whatever ``blank`` it is given. The adapter therefore
# presents a permuted vocabulary where stk's blank is moved to index V-1 and every other id
# above it shifts down by one; :meth:`TorchaudioRNNT.to_stk_tokens` maps hypotheses back.
# Predictor states are exchanged as ``[[h_l, c_l] for each layer]`` with batch first (B, H),
# the layout torchaudio concatenates and slices along dim 0.
# --------------------------------------------------------------------------------------


class _Transcriber(nn.Module):
    def __init__(self, encoder: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None) -> None:
        super().__init__()
        # A module is registered (so .to()/.eval() reach it); a plain callable is just kept.
        self.encoder = encoder

    def forward(self, input: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if self.encoder is None:
            return input, lengths
        return self.encoder(input, lengths)


def _perm_to_stk(ids: Tensor, blank: int, vocab_size: int) -> Tensor:
    """Permuted ids (blank last) -> stk ids."""
    shifted = torch.where(ids >= blank, ids + 1, ids)
    return torch.where(ids == vocab_size - 1, torch.full_like(ids, blank), shifted)


class _PredictorAdapter(nn.Module):
    def __init__(self, predictor: RNNTPredictor) -> None:
        super().__init__()
        self.predictor = predictor

    def forward(
        self, input: Tensor, lengths: Tensor, state: list[list[Tensor]] | None = None
    ) -> tuple[Tensor, Tensor, list[list[Tensor]]]:
        p = self.predictor
        lstm_state = None
        if state is not None:
            h = torch.stack([layer[0] for layer in state], dim=0)
            c = torch.stack([layer[1] for layer in state], dim=0)
            lstm_state = (h, c)
        out, (h, c) = p(_perm_to_stk(input, p.blank, p.vocab_size), lstm_state)
        return out, lengths, [[h[i], c[i]] for i in range(h.size(0))]


class _JoinerAdapter(nn.Module):
    def __init__(self, joiner: RNNTJoiner, blank: int) -> None:
        super().__init__()
        self.joiner = joiner
        V = joiner.vocab_size
        order = [i for i in range(V) if i != blank] + [blank]
        self.register_buffer("order", torch.tensor(order, dtype=torch.long), persistent=False)

    def forward(
        self, source_encodings: Tensor, source_lengths: Tensor, target_encodings: Tensor, target_lengths: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        logits = self.joiner(source_encodings, target_encodings)  # (B, T, U, V), broadcast over B
        return logits.index_select(-1, self.order.to(logits.device)), source_lengths, target_lengths


class TorchaudioRNNT(torchaudio.models.RNNT):
    """A ``torchaudio.models.RNNT`` built from an stk :class:`RNNTHead` and an encoder.

    Args:
        head: the transducer head (its modules are shared, not copied).
        encoder: callable ``(x (B, T', F), lengths (B,)) -> (enc (B, T, E), enc_lens (B,))``;
            None means the inputs are already encoder frames.

    Token ids seen by torchaudio are permuted so that blank is the last id (V - 1);
    use :meth:`to_stk_tokens` on a hypothesis' tokens.
    """

    def __init__(
        self, head: RNNTHead, encoder: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None
    ) -> None:
        super().__init__(
            _Transcriber(encoder), _PredictorAdapter(head.predictor), _JoinerAdapter(head.joiner, head.blank)
        )
        self.stk_blank = head.blank
        self.vocab_size = head.vocab_size

    @property
    def search_blank(self) -> int:
        """The blank id to give ``RNNTBeamSearch`` (V - 1 in the permuted vocabulary)."""
        return self.vocab_size - 1

    def to_stk_tokens(self, tokens: list[int]) -> list[int]:
        """Map a torchaudio hypothesis' tokens to stk ids, dropping blanks (the start symbol)."""
        ids = _perm_to_stk(torch.tensor(tokens, dtype=torch.long), self.stk_blank, self.vocab_size)
        return [int(i) for i in ids.tolist() if i != self.stk_blank]


def make_rnnt_beam_search(
    head: RNNTHead,
    encoder: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
    *,
    step_max_tokens: int = 100,
    length_normalise: bool = False,
    temperature: float = 1.0,
) -> torchaudio.models.RNNTBeamSearch:
    """torchaudio's ``RNNTBeamSearch`` over ``TorchaudioRNNT(head, encoder)``.

    ``length_normalise`` ranks hypotheses (the per-frame beam and the final list) by
    ``score / (len + 1)``, torchaudio's default, where its token list also holds the start symbol
    (``len(stk tokens) + 2`` in the divisor); off, they are ranked by log-probability. The model is available as ``search.model``.
    """
    if step_max_tokens < 1:
        raise ValueError(f"step_max_tokens must be >= 1, got {step_max_tokens}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    model = TorchaudioRNNT(head, encoder)
    key = None if length_normalise else (lambda hypo: hypo[3])
    return torchaudio.models.RNNTBeamSearch(
        model, model.search_blank, temperature=temperature, hypo_sort_key=key, step_max_tokens=step_max_tokens
    )
