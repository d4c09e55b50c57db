"""Pruned RNN-T loss: gradients vs torchaudio's full loss, band constraints, simple joiner, training."""

from __future__ import annotations

import pytest
import torch
import torchaudio

from stk.modules.rnnt import RNNTHead
from stk.modules.rnnt_pruned import lattice_loss, occupancy, prune_ranges, simple_lattice, warmup_scales


def head(V=7, E=6, prune_range=5, seed=0, **kw):
    torch.manual_seed(seed)
    return RNNTHead(vocab_size=V, enc_dim=E, embed_dim=5, pred_dim=8, joint_dim=9, loss="pruned",
                    prune_range=prune_range, **kw).train()


def batch(B=3, T=9, U=4, V=7, E=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(B, T, E, generator=g)
    ys = torch.randint(1, V, (B, U), generator=g)
    lens = torch.tensor([T] + [T - 2] * (B - 1))
    tlens = torch.tensor([U] + [U - 1] * (B - 1))
    return enc, lens, ys, tlens


@pytest.mark.parametrize("S", [5, 8])  # S >= U + 1: the band is the whole lattice
def test_pruned_equals_torchaudio_full_loss_and_gradients(S):
    h = head(prune_range=S)
    enc, lens, ys, tlens = batch()
    enc.requires_grad_(True)
    params = [enc, *h.predictor.parameters(), *h.joiner.parameters()]
    pruned = h.loss_terms(enc, lens, ys, tlens)["rnnt_pruned"]
    g_pruned = torch.autograd.grad(pruned, params)
    full = torchaudio.functional.rnnt_loss(h.logits(enc, ys), ys.int(), lens.int(), tlens.int(), blank=0)
    g_full = torch.autograd.grad(full, params)
    torch.testing.assert_close(pruned, full, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_pruned, g_full):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_narrow_band_loss_bounds_the_full_loss():
    h = head(prune_range=2)
    enc, lens, ys, tlens = batch(U=6)
    terms = h.loss_terms(enc, lens, ys, tlens, reduction="none")
    h.eval()
    full = h.loss(enc, lens, ys, tlens, reduction="none")
    # fewer paths: the band's NLL is finite and >= the full NLL
    assert bool(torch.isfinite(terms["rnnt_pruned"]).all())
    assert bool((terms["rnnt_pruned"] >= full - 1e-4).all())
    assert set(terms) == {"rnnt", "rnnt_simple", "rnnt_pruned"}
    assert set(h.loss_terms(enc, lens, ys, tlens)) == {"rnnt"}  # eval: the full loss only


def test_simple_lattice_matches_log_softmax_of_the_sum():
    torch.manual_seed(0)
    B, T, U1, V = 2, 5, 4, 6
    am, lm = torch.randn(B, T, V) * 3, torch.randn(B, U1, V) * 3
    nxt = torch.randint(1, V, (B, U1))
    lp = (am[:, :, None] + lm[:, None]).log_softmax(-1)  # (B, T, U1, V)
    blank, emit = simple_lattice(am, lm, nxt, blank=0, lm_scale=0.0)
    torch.testing.assert_close(blank, lp[..., 0])
    torch.testing.assert_close(emit, lp.gather(3, nxt[:, None, :, None].expand(B, T, U1, 1)).squeeze(-1))
    sb, se = simple_lattice(am, lm, nxt, blank=0, lm_scale=0.25, am_scale=0.1)
    lm_lp, am_lp = lm.log_softmax(-1), am.log_softmax(-1)
    torch.testing.assert_close(sb, 0.65 * lp[..., 0] + 0.25 * lm_lp[..., 0][:, None] + 0.1 * am_lp[..., 0:1])


def test_occupancy_is_a_posterior_and_ranges_are_a_connected_band():
    torch.manual_seed(0)
    B, T, U = 2, 8, 6
    blank, emit = torch.randn(B, T, U + 1).requires_grad_(), torch.randn(B, T, U + 1).requires_grad_()
    lens, tlens = torch.tensor([8, 6]), torch.tensor([6, 4])
    loss = lattice_loss(blank, emit, lens, tlens)
    occ = occupancy(loss, blank, emit, lens, tlens)
    # every path passes through frame t once in a blank transition: blank occupancy sums to 1
    gb = -torch.autograd.grad(loss.sum(), blank)[0]
    for b in range(B):
        torch.testing.assert_close(gb[b, : lens[b]].sum(-1), torch.ones(int(lens[b])), rtol=1e-4, atol=1e-4)
        assert float(occ[b, 0, 0]) == pytest.approx(1.0, abs=1e-4)  # every path starts at (0, 0)
    for S in (2, 3, 5):
        start = prune_ranges(occ, lens, tlens, S)
        assert start.shape == (B, T)
        assert bool((start[:, 0] == 0).all())
        d = start.diff(dim=1)
        assert bool((d >= 0).all()) and bool((d <= S - 1).all())
        for b in range(B):
            end = int(start[b, lens[b] - 1])
            assert end <= int(tlens[b]) <= end + S - 1  # the end node is in the last frame's band
    with pytest.raises(ValueError):
        prune_ranges(occ, lens, tlens, 1)


def test_warmup_schedule_and_bad_args():
    assert warmup_scales(0, 100, 0.5) == (1.0, 0.1)
    assert warmup_scales(50, 100, 0.5) == pytest.approx((0.75, 0.55))
    assert warmup_scales(100, 100, 0.5) == (0.5, 1.0)
    assert warmup_scales(3, 0, 0.5) == (0.5, 1.0)
    for bad in ({"loss": "fast"}, {"prune_range": 1}, {"simple_loss_scale": 2.0}, {"lm_scale": 0.6, "am_scale": 0.5},
                {"warm_steps": -1}):
        with pytest.raises(ValueError):
            RNNTHead(vocab_size=5, enc_dim=4, **bad)


def test_pruned_training_lowers_the_full_loss():
    h = head(V=6, E=6, prune_range=3, warm_steps=10)
    enc, lens, ys, tlens = batch(B=4, T=10, U=5, V=6)
    h.eval()
    with torch.no_grad():
        before = float(h.loss(enc, lens, ys, tlens))
    h.train()
    opt = torch.optim.Adam(h.parameters(), lr=0.02)
    for _ in range(40):
        opt.zero_grad()
        h.loss(enc, lens, ys, tlens).backward()
        opt.step()
    h.eval()
    with torch.no_grad():
        after = float(h.loss(enc, lens, ys, tlens))
    assert h.updates == 40
    assert after < 0.5 * before, (before, after)


def test_empty_and_short_targets():
    h = head(prune_range=5)
    enc = torch.randn(2, 6, 6)
    lens = torch.tensor([6, 5])
    for ys, tl in ((torch.zeros(2, 0, dtype=torch.long), torch.tensor([0, 0])),
                   (torch.tensor([[1, 2], [3, 0]]), torch.tensor([2, 1]))):
        terms = h.loss_terms(enc, lens, ys, tl)
        h.eval()
        full = h.loss(enc, lens, ys, tl)
        h.train()
        torch.testing.assert_close(terms["rnnt_pruned"], full, rtol=1e-5, atol=1e-5)


def test_band_widens_for_dense_targets():
    h = head(prune_range=2)
    enc, lens = torch.randn(2, 4, 6), torch.tensor([4, 2])
    ys, tl = torch.tensor([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 0]]), torch.tensor([6, 5])  # 2.5 targets per frame
    pruned = h.loss_terms(enc, lens, ys, tl, reduction="none")["rnnt_pruned"]
    h.eval()
    full = h.loss(enc, lens, ys, tl, reduction="none")
    assert bool((pruned >= full - 1e-4).all()) and bool((pruned < full + 50).all())
