"""mSLAM pieces: span masking, negatives, contrastive/MLM/CTC losses against references,
the quantizer, the speech/text modality switch and padding invariance, a few training steps."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stk.losses.contrastive import contrastive_loss, sample_negatives
from stk.losses.masking import concat_padded, span_mask
from stk.models.mslam import MslamModel
from stk.modules.mslam_encoder import MslamEncoder
from stk.modules.quantizer import GumbelQuantizer

ENC = dict(d_model=32, num_heads=4, ffn_dim=64, num_contrastive_layers=2, num_mlm_layers=1, kernel_size=5,
           dropout=0.0, subsampling_channels=8)


def test_span_mask_statistics():
    g = torch.Generator().manual_seed(0)
    lens = torch.tensor([1000] * 50 + [7])
    m = span_mask(lens, ratio=0.3, span=10, generator=g)
    assert m.shape == (51, 1000)
    assert not m[-1, 7:].any() and m[-1].any()  # stays inside the valid length, at least one span
    frac = m[:-1].float().mean().item()
    # 30 spans of 10 placed uniformly with overlaps: expected coverage a bit under 0.3
    assert 0.22 < frac < 0.3
    # every run of masked positions is at least a span long (spans are contiguous)
    row = m[0].int().tolist()
    runs, cur = [], 0
    for v in row + [0]:
        if v:
            cur += 1
        elif cur:
            runs.append(cur)
            cur = 0
    assert min(runs) >= 10
    # a span longer than the sequence covers it; ratio 0 with min_spans 0 masks nothing
    assert span_mask(torch.tensor([5]), ratio=0.1, span=20)[0].all()
    assert not span_mask(torch.tensor([50]), ratio=0.0, span=5, min_spans=0).any()
    with pytest.raises(ValueError):
        span_mask(lens, ratio=1.5, span=3)


def test_sample_negatives_same_utterance_never_self():
    utt = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    neg, ok = sample_negatives(utt, 20, torch.Generator().manual_seed(1))
    assert neg.shape == (7, 20)
    assert ok.tolist() == [True] * 6 + [False]
    for i in range(6):
        assert (utt[neg[i]] == utt[i]).all() and (neg[i] != i).all()
    assert set(neg[:4].flatten().tolist()) == {0, 1, 2, 3}


def test_contrastive_loss_against_reference():
    g = torch.Generator().manual_seed(0)
    c, q = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    neg = torch.tensor([[1, 2], [0, 2], [3, 4], [4, 0], [3, 1]])
    loss, correct = contrastive_loss(c, q, neg, temperature=0.5)
    ref, n_ok, per_row = 0.0, 0, []
    for i in range(5):
        cands = [q[i]] + [q[j] for j in neg[i]]
        sims = torch.tensor([float(c[i] @ v / (c[i].norm() * v.norm())) / 0.5 for v in cands])
        per_row.append(-(sims[0] - torch.logsumexp(sims, 0)).item())
        ref += per_row[-1]
        n_ok += int(sims.argmax() == 0)
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    assert correct.item() == n_ok
    # a distractor identical to the positive is ignored only when asked
    q2 = q.clone()
    q2[1] = q2[0]
    l_keep, _ = contrastive_loss(c, q2, neg, 0.5)
    l_drop, _ = contrastive_loss(c, q2, neg, 0.5, mask_identical=True)
    assert l_drop.item() < l_keep.item()
    # valid rows only
    l_some, _ = contrastive_loss(c, q, neg, 0.5, valid=torch.tensor([True, False, True, False, False]))
    assert l_some.item() == pytest.approx(per_row[0] + per_row[2], rel=1e-5)


def test_quantizer_diversity_and_modes():
    q = GumbelQuantizer(input_dim=16, num_groups=2, num_entries=4, code_dim=8, output_dim=12)
    x = torch.randn(2, 9, 16)
    mask = torch.ones(2, 9, dtype=torch.bool)
    q.eval()
    out, ids, div = q(x, mask)
    assert out.shape == (2, 9, 12) and ids.shape == (2, 9, 2)
    probs = torch.softmax(q.logits(x).view(2, 9, 2, 4), -1).mean((0, 1))
    perp = torch.exp(-(probs * torch.log(probs + 1e-7)).sum(-1)).sum()
    assert div.item() == pytest.approx(((8 - perp) / 8).item(), abs=1e-5)
    assert torch.equal(ids, q.logits(x).view(2, 9, 2, 4).argmax(-1))
    # same ids -> same vectors (eval is deterministic); training anneals the temperature
    assert torch.allclose(q(x, mask)[0], out)
    q.train()
    tau0 = q.tau
    q(x, mask)
    assert int(q.num_updates) == 1 and q.tau <= tau0
    with pytest.raises(ValueError):
        GumbelQuantizer(input_dim=4, num_groups=3, code_dim=8)


def test_concat_padded():
    a = torch.arange(1, 7).view(2, 3, 1).float()
    b = torch.arange(10, 14).view(2, 2, 1).float()
    out, lens, where = concat_padded(a, torch.tensor([3, 1]), b, torch.tensor([1, 2]))
    assert lens.tolist() == [4, 3]
    assert out[..., 0].tolist() == [[1, 2, 3, 10], [4, 12, 13, 0]]
    assert where[1].tolist() == [1, 2]


def _model(variant="mslam-ctc", **kw):
    torch.manual_seed(0)
    return MslamModel(vocab_size=12, input_dim=20, encoder=ENC, quantizer=dict(num_groups=2, num_entries=8),
                      variant=variant, num_negatives=5, **kw)


def _batch(kind: str, b: int = 3):
    g = torch.Generator().manual_seed(3)
    out = {}
    if kind in ("speech", "paired"):
        out["feats"] = torch.randn(b, 60, 20, generator=g)
        out["feats_lens"] = torch.tensor([60, 48, 40][:b])
    if kind in ("text", "paired"):
        ys = torch.randint(3, 12, (b, 6), generator=g)
        lens = torch.tensor([6, 4, 3][:b])
        ys[torch.arange(6)[None, :] >= lens[:, None]] = -1
        out["text"], out["text_lens"] = ys, lens
    return out


def test_modality_switch_shares_layers_and_is_padding_invariant():
    enc = MslamEncoder(input_dim=20, vocab_size=12, **ENC).eval()
    feats = torch.randn(2, 60, 20)
    full, lens = enc(feats, torch.tensor([60, 40]))
    alone, lens1 = enc(feats[1:, :40], torch.tensor([40]))
    assert torch.allclose(full[1, : lens1[0]], alone[0], atol=1e-5)
    ids = torch.tensor([[3, 4, 5, 6], [7, 8, -1, -1]])
    t, _ = enc.forward_text(ids, torch.tensor([4, 2]))
    t1, _ = enc.forward_text(ids[1:, :2], torch.tensor([2]))
    assert torch.allclose(t[1, :2], t1[0], atol=1e-5)
    # both modalities reach the same Conformer parameters
    enc.train()
    enc.zero_grad()
    enc(feats, torch.tensor([60, 40]))[0].sum().backward()
    speech_grads = {n for n, p in enc.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    enc.zero_grad()
    enc.forward_text(ids, torch.tensor([4, 2]))[0].sum().backward()
    text_grads = {n for n, p in enc.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    shared = {n for n in speech_grads & text_grads if n.startswith(("contrastive.", "mlm."))}
    assert len(shared) > 10
    assert any(n.startswith("subsampling") for n in speech_grads - text_grads)
    assert "text_embed.weight" in text_grads - speech_grads


def test_mlm_and_ctc_losses_against_reference():
    m = _model().eval()
    out = torch.randn(2, 7, 32)
    ids = torch.randint(0, 8, (2, 7, 2))
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[0, 2:5] = True
    mask[1, 0] = True
    logits = m.speech_mlm_head(out).view(2, 7, 2, 8)
    ref = torch.stack([F.cross_entropy(logits[b, t], ids[b, t]) for b, t in mask.nonzero()]).mean()
    assert m._speech_mlm(out, ids, mask).item() == pytest.approx(ref.item(), rel=1e-5)
    # CTC against a direct forward-algorithm computation
    b = _batch("paired", 1)
    ys, yl = b["text"][:, :3], torch.tensor([3])
    got = m.ctc_loss(b["feats"], b["feats_lens"], ys, yl).item()
    enc, _ = m.encoder(b["feats"], b["feats_lens"])
    lp = torch.log_softmax(m.ctc(enc), -1)[0].double()
    ext = [0]
    for y in ys[0].tolist():
        ext += [y, 0]
    alpha = torch.full((len(ext),), -math.inf, dtype=torch.double)
    alpha[0], alpha[1] = lp[0, 0], lp[0, ext[1]]
    for t in range(1, lp.size(0)):
        new = torch.full_like(alpha, -math.inf)
        for s in range(len(ext)):
            terms = [alpha[s]] + ([alpha[s - 1]] if s >= 1 else [])
            if s >= 2 and ext[s] != 0 and ext[s] != ext[s - 2]:
                terms.append(alpha[s - 2])
            new[s] = torch.logsumexp(torch.stack(terms), 0) + lp[t, ext[s]]
        alpha = new
    ref_ctc = -torch.logsumexp(alpha[-2:], 0).item()
    assert got == pytest.approx(ref_ctc, rel=1e-4)


@pytest.mark.parametrize("variant", ["w2v-bert", "mslam-tlm", "mslam-ctc"])
def test_variants_losses_and_training(variant):
    m = _model(variant).train()
    kinds = ["speech"] if variant == "w2v-bert" else ["speech", "text", "paired"]
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first, last = {}, {}
    for step in range(25):
        for kind in kinds:
            out = m({**_batch(kind), "stream": kind})
            assert torch.isfinite(out["loss"])
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
            (first if step == 0 else last)[kind] = out["stats"]
    if variant == "mslam-ctc":
        assert "ctc" in last["paired"] and "tlm" in last["paired"] and "speech" not in last["paired"]
        assert last["paired"]["ctc"] < first["paired"]["ctc"]
    if variant == "mslam-tlm":
        assert "ctc" not in last["paired"] and m.ctc is None
    if variant != "w2v-bert":
        assert last["text"]["text_mlm"] < first["text"]["text_mlm"]
    else:
        with pytest.raises(ValueError, match="speech only"):
            m(_batch("text"))
    # evaluation on a paired batch reports every enabled loss
    m.eval()
    stats = m(_batch("paired"))["stats"]
    assert "speech" in stats and (("text" in stats) == (variant != "w2v-bert"))


def test_bad_arguments():
    with pytest.raises(ValueError, match="variant"):
        MslamModel(vocab_size=12, input_dim=20, encoder=ENC, variant="bert")
    with pytest.raises(ValueError, match="text_weight"):
        MslamModel(vocab_size=12, input_dim=20, encoder=ENC, text_weight=-1)


def test_paired_warmup_weight_then_paper_weight():
    """The warm-up weights the paired losses by paired_warmup_weight for its first training calls, then
    paired_weight; the clock is a checkpointed buffer (and only exists when the warm-up is on)."""
    assert "paired_clock" not in MslamModel(vocab_size=12, input_dim=20, encoder=ENC).state_dict()
    m = MslamModel(vocab_size=12, input_dim=20, encoder=ENC, variant="mslam-ctc", paired_weight=0.03,
                   paired_warmup_steps=2, paired_warmup_weight=1.0).train()
    b = {**_batch("paired"), "stream": "paired"}
    seen = []
    for _ in range(3):
        torch.manual_seed(0)  # same masks each call: the total is w * (ctc + tlm)
        st = m(b)["stats"]
        seen.append((st["paired_weight"], st["loss"], st["ctc"] + st["tlm"]))
    assert [w for w, _, _ in seen] == [1.0, 1.0, 0.03]
    for w, loss, paired in seen:
        assert loss == pytest.approx(w * paired, rel=1e-5)
    assert int(m.state_dict()["paired_clock"]) == 3
    m.eval()
    m(b)  # validation does not advance the clock
    assert int(m.paired_clock) == 3
    with pytest.raises(ValueError, match="paired_warmup_steps"):
        MslamModel(vocab_size=12, input_dim=20, encoder=ENC, paired_warmup_steps=-1)
