"""Pruned RNN-T loss (Kuang et al. 2022, "Pruned RNN-T for fast, memory-efficient ASR training").

k2's method, written with torch ops and torchaudio's ``rnnt_loss`` kernel:

1. A "simple" joiner: linear projections of the encoder frames ``am`` (B, T, V) and of the
   predictor outputs ``lm`` (B, U + 1, V) added, no nonlinearity. Its log-normaliser
   ``logsumexp_v(am[t, v] + lm[u, v])`` is one batched matmul of their exponentials, so the
   (B, T, U + 1) lattice of [blank, next-token] log-probabilities (:func:`simple_lattice`) costs
   O(B T U V) multiply-adds, J times less than the full joiner's output layer. Its loss is
   smoothed with LM-only and AM-only log-probabilities (k2's ``rnnt_loss_smoothed``).
2. The simple loss' gradient with respect to its lattice is minus the posterior occupancy of each
   transition; summed per node it gives the occupancy of each (t, u) (torchaudio's kernel computes
   it in its forward pass). :func:`prune_ranges` picks, per frame, the window of ``S`` symbol
   positions with the largest occupancy and makes the windows a connected band that contains the
   start and the end of the lattice (k2's ``get_rnnt_prune_ranges``).
3. The full joiner runs only on that (B, T, S) band (:func:`band_joint_inputs`, k2's
   ``do_rnnt_pruning``), and the pruned loss is the RNN-T loss restricted to the band: the band's
   [blank, next-token] log-probabilities are scattered into a (B, T, U + 1, 2) lattice whose other
   nodes are unreachable (:data:`OUTSIDE`), which torchaudio's kernel consumes
   (:func:`lattice_loss`).

When ``S >= U + 1`` the band is the whole lattice and the pruned loss equals the full loss
(``tests/test_rnnt_pruned.py`` checks loss and gradients against torchaudio's full-lattice call).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor

__all__ = ["OUTSIDE", "lattice_loss", "simple_lattice", "occupancy", "prune_ranges", "band_joint_inputs",
           "band_lattice", "warmup_scales"]

OUTSIDE = -1.0e4
"""Log-probability given to the transitions outside the band: exp(-1e4) is exactly 0 in float32,
so no path through them counts (a finite value keeps the kernel's arithmetic free of NaNs)."""


def lattice_loss(blank: Tensor, emit: Tensor, enc_lens: Tensor, target_lens: Tensor, *, clamp: float = -1.0,
                 reduction: str = "none") -> Tensor:
    """RNN-T negative log-likelihood of a [blank, next-token] lattice with torchaudio's kernel.

    Args:
        blank: (B, T, U + 1) log-score of the blank transition (t, u) -> (t + 1, u).
        emit: (B, T, U + 1) log-score of emitting target ``u`` at (t, u) -> (t, u + 1) (column U unused).
        enc_lens: (B,) valid frames (max == T).
        target_lens: (B,) valid targets (max == U).
        clamp: torchaudio's gradient clamp (-1 off).
        reduction: "none" (B,), "mean" or "sum".

    The scores need not be normalised; the gradient is minus each transition's posterior occupancy.
    """
    two = torch.stack([blank, emit], dim=-1)
    B, U = two.size(0), two.size(2) - 1
    return torchaudio.functional.rnnt_loss(
        two, torch.ones(B, U, dtype=torch.int32, device=two.device),
        enc_lens.to(device=two.device, dtype=torch.int32), target_lens.to(device=two.device, dtype=torch.int32),
        blank=0, clamp=clamp, reduction=reduction, fused_log_softmax=False)


def simple_lattice(am: Tensor, lm: Tensor, nxt: Tensor, *, blank: int, lm_scale: float = 0.25,
                   am_scale: float = 0.0) -> tuple[Tensor, Tensor]:
    """[blank, next-token] log-probabilities of the simple joiner ``log_softmax(am[t] + lm[u])``.

    Args:
        am: (B, T, V) encoder-side logits.
        lm: (B, U + 1, V) predictor-side logits (position u has seen the start symbol and targets < u).
        nxt: (B, U + 1) the target after each position (any valid id at u = U).
        blank: blank id.
        lm_scale, am_scale: smoothing: the lattice is ``(1 - lm_scale - am_scale) * joint +
            lm_scale * log_softmax(lm) + am_scale * log_softmax(am)`` (k2's ``rnnt_loss_smoothed``).

    Returns:
        ``(blank_lp, emit_lp)``, each (B, T, U + 1).
    """
    if lm_scale < 0 or am_scale < 0 or lm_scale + am_scale >= 1:
        raise ValueError(f"need lm_scale, am_scale >= 0 and lm_scale + am_scale < 1, got {lm_scale}, {am_scale}")
    B, T, V = am.shape
    U1 = lm.size(1)
    am, lm = am.float(), lm.float()
    am_max = am.max(-1, keepdim=True).values.detach()  # (B, T, 1)
    lm_max = lm.max(-1, keepdim=True).values.detach()  # (B, U1, 1)
    norm = torch.matmul((am - am_max).exp(), (lm - lm_max).exp().transpose(1, 2))  # (B, T, U1)
    norm = norm.clamp_min(1e-30).log() + am_max + lm_max.transpose(1, 2)
    am_y = am.gather(2, nxt[:, None, :].expand(B, T, U1))  # (B, T, U1)
    lm_y = lm.gather(2, nxt[:, :, None]).transpose(1, 2)  # (B, 1, U1)
    emit = am_y + lm_y - norm
    blank_lp = am[..., blank:blank + 1] + lm[..., blank].unsqueeze(1) - norm
    if lm_scale > 0 or am_scale > 0:
        w = 1.0 - lm_scale - am_scale
        lm_lp, am_lp = lm.log_softmax(-1), am.log_softmax(-1)
        emit = (w * emit + lm_scale * lm_lp.gather(2, nxt[:, :, None]).transpose(1, 2)
                + am_scale * am_lp.gather(2, nxt[:, None, :].expand(B, T, U1)))
        blank_lp = (w * blank_lp + lm_scale * lm_lp[..., blank].unsqueeze(1)
                    + am_scale * am_lp[..., blank:blank + 1])
    return blank_lp, emit


def occupancy(loss: Tensor, blank: Tensor, emit: Tensor, enc_lens: Tensor, target_lens: Tensor,
              clamp: float = -1.0) -> Tensor:
    """Posterior occupancy (B, T, U + 1) of each lattice node under ``lattice_loss(blank, emit)``.

    ``loss`` is that (B,) loss; when the lattice requires grad its gradient is read back from the
    kernel (computed in its forward pass) without freeing the graph, else the kernel runs again.
    """
    if loss.requires_grad and blank.requires_grad and emit.requires_grad:
        gb, ge = torch.autograd.grad(loss.sum(), (blank, emit), retain_graph=True)
    else:
        with torch.enable_grad():
            b, e = blank.detach().requires_grad_(), emit.detach().requires_grad_()
            gb, ge = torch.autograd.grad(lattice_loss(b, e, enc_lens, target_lens, clamp=clamp).sum(), (b, e))
    return -(gb + ge)


def prune_ranges(occ: Tensor, enc_lens: Tensor, target_lens: Tensor, s_range: int) -> Tensor:
    """Per-frame start ``s_t`` of a band of ``s_range`` symbol positions (k2's ``get_rnnt_prune_ranges``).

    Args:
        occ: (B, T, U + 1) node occupancy (from the simple loss).
        enc_lens, target_lens: (B,).
        s_range: band width S, 2 <= S <= U + 1.

    Returns:
        (B, T) long: the band of frame t is ``s_t .. s_t + S - 1``. Chosen as the window of the
        largest occupancy, then constrained so that ``s_0 = 0``, ``s_t = max(U_b - S + 1, 0)`` from
        the last valid frame on (the end node is inside), ``s_t <= s_{t+1} <= s_t + S - 1`` (monotone
        and connected: the top of one frame's band is inside the next one's). An utterance needs
        ``U_b <= (S - 1) T_b`` (at most S - 1 symbols per frame on average) for such a band to exist.
    """
    B, T, U1 = occ.shape
    S = int(s_range)
    if not 2 <= S <= U1:
        raise ValueError(f"s_range must be in [2, U + 1 = {U1}], got {S}")
    c = F.pad(occ.detach().cumsum(2), (1, 0))  # (B, T, U1 + 1)
    start = (c[..., S:] - c[..., : U1 + 1 - S]).argmax(-1)  # (B, T) in [0, U1 - S]
    hi = (target_lens.to(start.device).long() - S + 1).clamp(min=0)[:, None]  # (B, 1)
    t = torch.arange(T, device=start.device)
    last = t[None] >= enc_lens.to(start.device)[:, None] - 1
    start = torch.where(last, hi, torch.minimum(start, hi))
    start[:, 0] = 0
    start = start.cummax(1).values  # monotone
    # reachable from the start: s_{t+1} <= s_t + S - 1, i.e. s_t - (S - 1) t non-increasing (cummin)
    start = (start - (S - 1) * t).cummin(1).values + (S - 1) * t
    # reaching the end: s_t >= s_{t+1} - (S - 1), i.e. s_t - (S - 1) t non-increasing from the end (cummax
    # of the flipped sequence); it keeps s_0 = 0 whenever U_b <= (S - 1)(T_b - 1) + S - 1 (else no
    # band of width S links start and end, and that utterance's pruned loss is ~ -OUTSIDE).
    start = torch.where(last, hi, start)
    return ((start - (S - 1) * t).flip(1).cummax(1).values.flip(1) + (S - 1) * t)


def band_joint_inputs(enc_p: Tensor, pred_p: Tensor, start: Tensor, s_range: int) -> tuple[Tensor, Tensor]:
    """Gather the predictor side of the band (k2's ``do_rnnt_pruning``).

    Args:
        enc_p: (B, T, J) projected encoder frames.
        pred_p: (B, U + 1, J) projected predictor outputs.
        start: (B, T) band starts from :func:`prune_ranges`.

    Returns:
        ``(enc_p (B, T, 1, J), pred_band (B, T, S, J))`` to add in the joiner, and (implicitly) the
        band's positions ``start[..., None] + arange(S)``.
    """
    B, T, J = enc_p.shape
    idx = start[..., None] + torch.arange(s_range, device=start.device)  # (B, T, S)
    pred_band = pred_p.gather(1, idx.reshape(B, T * s_range, 1).expand(B, T * s_range, J))
    return enc_p.unsqueeze(2), pred_band.reshape(B, T, s_range, J)


def band_lattice(band_lp: Tensor, nxt: Tensor, start: Tensor, *, blank: int, U1: int) -> tuple[Tensor, Tensor]:
    """Scatter the band's log-probabilities into a full (B, T, U + 1) [blank, next-token] lattice.

    Args:
        band_lp: (B, T, S, V) normalised log-probabilities of the full joiner on the band.
        nxt: (B, U + 1) the target after each position.
        start: (B, T) band starts.
        blank: blank id.
        U1: U + 1.

    Returns:
        ``(blank_lp, emit_lp)``, each (B, T, U + 1), :data:`OUTSIDE` off the band.
    """
    B, T, S, _ = band_lp.shape
    idx = start[..., None] + torch.arange(S, device=start.device)  # (B, T, S)
    nxt_band = nxt.gather(1, idx.reshape(B, T * S)).reshape(B, T, S)
    emit = band_lp.gather(3, nxt_band[..., None]).squeeze(-1)
    blank_b = band_lp[..., blank]
    full = band_lp.new_full((B, T, U1), OUTSIDE)
    return full.scatter(2, idx, blank_b), full.scatter(2, idx, emit)


def warmup_scales(step: int, warm_steps: int, simple_loss_scale: float) -> tuple[float, float]:
    """icefall's schedule: ``(simple, pruned)`` loss weights at training ``step``.

    The simple weight falls linearly from 1 to ``simple_loss_scale`` and the pruned weight rises
    from 0.1 to 1 over ``warm_steps``; afterwards they stay at ``(simple_loss_scale, 1)``.
    """
    if warm_steps <= 0 or step >= warm_steps:
        return simple_loss_scale, 1.0
    f = step / warm_steps
    return 1.0 - f * (1.0 - simple_loss_scale), 0.1 + 0.9 * f
