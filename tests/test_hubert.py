"""HuBERT model: masked-prediction loss against torchaudio's reference logits, shapes, errors, training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stk.models import MODELS
from stk.models.hubert import HubertModel


def tiny(num_units: int = 7, **kw) -> HubertModel:
    conf = {"num_units": num_units, "final_dim": 8,
            "encoder": {"d_model": 16, "num_heads": 2, "ffn_dim": 32, "num_layers": 3, "kernel_size": 3, "dropout": 0.0},
            **kw}
    return MODELS.build({"name": "hubert", "conf": conf}, vocab_size=5, input_dim=12)


def test_masked_prediction_loss_matches_torchaudio_logit_generator():
    from torchaudio.models.wav2vec2.components import LogitGenerator

    torch.manual_seed(0)
    model = tiny(masked_weight=1.0, unmasked_weight=0.5)
    ref = LogitGenerator(16, 7, 8, skip_masked=False, skip_nomask=False)
    with torch.no_grad():
        ref.final_proj.weight.copy_(model.final_proj.weight)
        ref.final_proj.bias.copy_(model.final_proj.bias)
        ref.label_embeddings.copy_(model.code_emb)
    out = torch.randn(2, 9, 16)
    y = torch.randint(0, 7, (2, 9))
    y[1, 6:] = -1  # padding
    m = torch.rand(2, 9) < 0.5
    m[0, 0], m[0, 1] = True, False
    loss, stats = model.masked_prediction_loss(out, y, m)
    valid = y >= 0
    mm, mu = m & valid, ~m & valid
    logit_m, logit_u = ref(out, y.clamp(min=0), mm, mu)  # positive first, then every class (positive -inf)
    ce_m = F.cross_entropy(logit_m, torch.zeros(logit_m.size(0), dtype=torch.long))
    ce_u = F.cross_entropy(logit_u, torch.zeros(logit_u.size(0), dtype=torch.long))
    assert torch.allclose(loss, ce_m + 0.5 * ce_u, atol=1e-5)
    assert stats["ce_masked"] == pytest.approx(ce_m.item(), abs=1e-5)
    assert stats["ce_unmasked"] == pytest.approx(ce_u.item(), abs=1e-5)
    # by hand: cosine similarity / 0.1, log-softmax, mean over masked frames
    p = F.normalize(model.final_proj(out[mm]), dim=-1)
    e = F.normalize(model.code_emb, dim=-1)
    hand = -(torch.log_softmax(p @ e.t() / 0.1, -1).gather(1, y[mm][:, None])).mean()
    assert stats["ce_masked"] == pytest.approx(hand.item(), abs=1e-5)


def test_shapes_extract_and_lengths():
    model = tiny().eval()
    feats, lens = torch.randn(2, 41, 12), torch.tensor([41, 30])
    enc, el = model.encode(feats, lens)
    assert enc.shape == (2, 20, 16) and el.tolist() == [20, 15]
    with torch.no_grad():
        h, hl = model.extract(feats, lens, 2)
        front, fl = model.encoder.frontend(feats, lens)
        full, hidden = model.encoder.layers(front, fl, return_hidden=True)
    assert torch.allclose(h, hidden[1], atol=1e-5) and hl.tolist() == [20, 15]
    assert torch.allclose(model.extract(feats, lens, 3)[0], full, atol=1e-5)
    assert torch.allclose(model.extract(feats, lens, 0)[0], front)
    with pytest.raises(ValueError, match="layer must be in 0..3"):
        model.extract(feats, lens, 4)


def test_bad_arguments_and_target_rate_mismatch():
    with pytest.raises(ValueError, match="num_units"):
        tiny(num_units=1)
    with pytest.raises(ValueError, match="temperature"):
        tiny(temperature=0.0)
    with pytest.raises(ValueError, match="stride"):
        tiny(encoder={"stride": 3})
    model = tiny()
    batch = {"feats": torch.randn(2, 40, 12), "feats_lens": torch.tensor([40, 40]), "utt_ids": ["a", "b"],
             "units": torch.zeros(2, 40, dtype=torch.long), "units_lens": torch.tensor([20, 40])}
    with pytest.raises(ValueError, match="utterance 'b': 40 target frames for 20 model frames"):
        model(batch)
    with pytest.raises(ValueError, match="no 'units' targets"):
        model({"feats": batch["feats"], "feats_lens": batch["feats_lens"]})


def test_training_lowers_the_loss_on_learnable_targets():
    torch.manual_seed(0)
    model = tiny(num_units=4, mask_ratio=0.5, mask_span=2)
    feats = torch.randn(4, 60, 12)
    y = (feats[:, ::2, 0] > 0).long() + 2 * (feats[:, ::2, 1] > 0).long()  # a function of the input frames
    batch = {"feats": feats, "feats_lens": torch.full((4,), 60), "units": y, "units_lens": torch.full((4,), 30)}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert out["stats"]["masked_frames"] > 0.2


def test_utterance_cmvn_removes_each_utterances_channel():
    """utterance_cmvn: a per-bin gain and offset on one utterance (another channel) leaves its
    features unchanged, padding does not leak into the statistics, and the other utterance is untouched."""
    from stk.models.hubert import utterance_cmvn

    torch.manual_seed(0)
    model = tiny(encoder={"d_model": 16, "num_heads": 2, "ffn_dim": 32, "num_layers": 2, "kernel_size": 3,
                          "dropout": 0.0, "utterance_cmvn": True}).eval()
    feats, lens = torch.randn(2, 40, 12), torch.tensor([40, 26])
    n = utterance_cmvn(feats, lens)
    assert torch.allclose(n[1, :26].mean(0), torch.zeros(12), atol=1e-5)
    assert torch.allclose(n[1, :26].std(0, unbiased=False), torch.ones(12), atol=1e-3)
    assert (n[1, 26:] == 0).all()
    other = feats.clone()
    other[1, :26] = other[1, :26] * torch.linspace(0.5, 3.0, 12) + torch.linspace(-4.0, 4.0, 12)
    other[1, 26:] = 100.0  # padding
    with torch.no_grad():
        a, _ = model.extract(feats, lens, 2)
        b, _ = model.extract(other, lens, 2)
    assert torch.allclose(a[1, :13], b[1, :13], atol=1e-4) and torch.allclose(a[0], b[0])
    plain = tiny().eval()
    with torch.no_grad():
        c, _ = plain.extract(other, lens, 2)
    assert not torch.allclose(c[1, :13], plain.extract(feats, lens, 2)[0][1, :13], atol=1e-2)
