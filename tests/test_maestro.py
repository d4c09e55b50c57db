"""MAESTRO pieces: duration upsampling, the duration model, modality matching on padded batches,
the aligned-MLM path, the speech-only variant, and the split encoder used for fine-tuning."""

from __future__ import annotations

import pytest
import torch

from stk.models.maestro import MaestroModel
from stk.modules.maestro import DurationModel, MaestroEncoder, upsample

ENC = dict(d_model=32, num_heads=4, ffn_dim=64, num_speech_layers=1, num_shared_layers=1, kernel_size=5,
           dropout=0.0, subsampling_channels=8)


def _model(**kw):
    torch.manual_seed(0)
    return MaestroModel(vocab_size=10, input_dim=20, encoder=ENC,
                        text_encoder=dict(num_conv=1, num_layers=1, ffn_dim=64, dropout=0.0),
                        refiner_layers=1, duration=dict(hidden=16, dropout=0.0),
                        rnnt=dict(embed_dim=16, pred_dim=16, joint_dim=16), quantizer=dict(num_entries=8),
                        num_negatives=4, **kw)


def test_upsample_lengths_content_and_padding():
    x = torch.arange(1, 7, dtype=torch.float).view(2, 3, 1)
    d = torch.tensor([[2, 1, 3], [1, 2, -1]])
    out, lens = upsample(x, d, torch.tensor([3, 2]))
    assert lens.tolist() == [6, 3]
    assert out[0, :, 0].tolist() == [1, 1, 2, 3, 3, 3]
    assert out[1, :, 0].tolist() == [4, 5, 5, 0, 0, 0]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        u = torch.randint(1, 6, (3,), generator=g)
        dd = torch.randint(1, 5, (3, 5), generator=g)
        o, ln = upsample(torch.randn(3, 5, 4, generator=g), dd, u)
        assert ln.tolist() == [int(dd[i, : u[i]].sum()) for i in range(3)]
        assert (o[torch.arange(o.size(1))[None, :].expand(3, -1) >= ln[:, None]] == 0).all()


def test_duration_model_learns_and_predicts_integers():
    torch.manual_seed(0)
    dm = DurationModel(d_model=8, hidden=16, dropout=0.0)
    x = torch.randn(4, 6, 8)
    target = (x[..., 0] > 0).long() * 4 + 1  # duration depends on the embedding
    lens = torch.tensor([6, 5, 4, 2])
    opt = torch.optim.Adam(dm.parameters(), lr=1e-2)
    first = dm.loss(x, target, lens).item()
    for _ in range(150):
        loss = dm.loss(x, target, lens)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first
    pred = dm.predict(x, lens)
    assert pred.dtype == torch.long and (pred[0] >= 1).all() and (pred[3, 2:] == 0).all()
    assert (pred[0] == target[0]).float().mean() > 0.8


def _paired(b=2):
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(b, 43, 20, generator=g)
    flens = torch.tensor([43, 31][:b])
    t = ((flens - 1) // 2 - 1) // 2  # encoder frames with 4x subsampling: [10, 7]
    ys = torch.tensor([[3, 4, 5, 6], [7, 8, 9, -1]][:b])
    ylens = torch.tensor([4, 3][:b])
    durs = torch.tensor([[2, 3, 3, 2], [2, 2, 3, -1]][:b])
    assert (durs.clamp(min=0).sum(1) == t).all()
    return {"feats": feats, "feats_lens": flens, "text": ys, "text_lens": ylens, "durations": durs}


def test_modality_matching_is_padding_invariant():
    m = _model().eval()
    both = m(_paired())["stats"]
    one = [m({k: v[i : i + 1] for k, v in _paired().items()})["stats"] for i in range(2)]
    # MSE is a mean over valid (frame, dim) entries: the batch value is the frame-weighted mean
    assert both["mm"] == pytest.approx((10 * one[0]["mm"] + 7 * one[1]["mm"]) / 17, rel=1e-4)
    assert both["len_mismatch"] == 0
    assert both["rnnt"] == pytest.approx((one[0]["rnnt"] + one[1]["rnnt"]) / 2, rel=1e-4)


def test_paired_and_text_only_losses_train_the_right_parts():
    m = _model().train()
    out = m({**_paired(), "stream": "paired"})
    assert {"rnnt", "mm", "duration", "amlm"} <= set(out["stats"])
    b = _paired()
    text_only = {"text": b["text"], "text_lens": b["text_lens"], "stream": "text"}
    m.zero_grad()
    out = m(text_only)
    assert set(out["stats"]) == {"amlm", "loss"}
    out["loss"].backward()
    grads = {n for n, p in m.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("encoder.shared_layers") for n in grads)
    assert any(n.startswith("text_encoder") for n in grads) and any(n.startswith("refiner") for n in grads)
    assert any(n.startswith("rnnt") for n in grads)
    assert not any(n.startswith(("encoder.speech_layers", "duration", "quantizer")) for n in grads)
    # a few steps on one paired batch lower every paired loss
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = m(_paired())["stats"]
    for _ in range(30):
        loss = m(_paired())["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = m(_paired())["stats"]
    for k in ("rnnt", "mm", "duration"):
        assert last[k] < first[k], k
    with pytest.raises(ValueError, match="stk align"):
        m({k: v for k, v in _paired().items() if k != "durations"})


def test_speech_only_variant_and_errors():
    m = _model(variant="speech-only").train()
    assert not hasattr(m, "text_encoder")
    b = _paired()
    out = m({"feats": b["feats"], "feats_lens": b["feats_lens"]})
    assert "contrastive" in out["stats"] and torch.isfinite(out["loss"])
    with pytest.raises(ValueError, match="speech-only"):
        m({"text": b["text"], "text_lens": b["text_lens"]})
    with pytest.raises(ValueError, match="variant"):
        _model(variant="bert")
    with pytest.raises(ValueError, match="mm_weight"):
        _model(mm_weight=-1.0)


def test_encoder_split_equals_full_forward():
    enc = MaestroEncoder(input_dim=20, **ENC).eval()
    feats, lens = torch.randn(2, 43, 20), torch.tensor([43, 31])
    full, flens = enc(feats, lens)
    x, xl = enc.features(feats, lens)
    assert torch.allclose(full, enc.shared(enc.speech(x, xl), xl), atol=1e-6)
    alone, _ = enc(feats[1:, :31], lens[1:])
    assert torch.allclose(full[1, : flens[1]], alone[0], atol=1e-5)
