"""Encoder/decoder/model properties on tiny dimensions."""

import pytest
import torch

from stk.models import MODELS
from stk.modules.conformer import ConformerEncoder, RelPositionMultiHeadAttention
from stk.modules.transformer_decoder import TransformerDecoder

torch.set_num_threads(1)

TINY_ENC = {"d_model": 32, "num_heads": 4, "ffn_dim": 64, "num_layers": 2, "kernel_size": 5}
TINY_DEC = {"d_model": 32, "num_heads": 4, "ffn_dim": 64, "num_layers": 2}


def test_rel_shift_indexes_relative_distance():
    t = 6
    x = torch.randn(1, 1, t, 2 * t - 1)
    y = RelPositionMultiHeadAttention.rel_shift(x)
    for i in range(t):
        for j in range(t):
            assert y[0, 0, i, j] == x[0, 0, i, t - 1 - i + j]  # distance i - j


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conformer_padding_invariance(dtype):
    torch.manual_seed(0)
    enc = ConformerEncoder(input_dim=20, **TINY_ENC).to(dtype).eval()
    a, b = torch.randn(1, 41, 20, dtype=dtype), torch.randn(1, 67, 20, dtype=dtype)
    x = torch.zeros(2, 67, 20, dtype=dtype)
    x[0, :41], x[1] = a[0], b[0]
    y, lens = enc(x, torch.tensor([41, 67]))
    ya, la = enc(a, torch.tensor([41]))
    assert lens.tolist() == [9, 16] and la.tolist() == [9]
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert torch.allclose(y[0, :9], ya[0], atol=tol)


def test_conformer_too_short_input_is_a_clear_error():
    enc = ConformerEncoder(input_dim=20, **TINY_ENC)
    with pytest.raises(ValueError, match="at least 7"):
        enc(torch.randn(1, 5, 20), torch.tensor([5]))


def test_decoder_incremental_cache_matches_full_forward():
    torch.manual_seed(0)
    dec = TransformerDecoder(vocab_size=11, memory_dim=16, **TINY_DEC).eval()
    mem = torch.randn(2, 7, 16)
    mask = torch.tensor([[True] * 7, [True] * 5 + [False] * 2])
    ys = torch.tensor([[2, 5, 6, 7], [2, 3, 4, 9]])
    cache = None
    for l in range(1, 5):
        lp, cache = dec.score_step(ys[:, :l], mem, mask, cache)
        full = torch.log_softmax(dec(ys[:, :l], torch.tensor([l, l]), mem, torch.tensor([7, 5])), -1)[:, -1]
        assert torch.allclose(lp, full, atol=1e-5)


def _tiny_model(**kw):
    conf = {"encoder": {"name": "conformer", "conf": TINY_ENC}, "decoder": TINY_DEC, **kw}
    return MODELS.build({"name": "encdec", "conf": conf}, vocab_size=12, input_dim=20)


def test_hybrid_model_loss_falls():
    torch.manual_seed(0)
    model = _tiny_model(ctc_weight=0.3, specaug=None)
    feats = torch.randn(2, 60, 20)
    batch = {"feats": feats, "feats_lens": torch.tensor([60, 48]),
             "text": torch.tensor([[4, 5, 6, 7], [8, 9, -1, -1]]), "text_lens": torch.tensor([4, 2])}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.3 * losses[0]
    assert set(out["stats"]) == {"ctc", "att", "acc", "loss"}


def test_ctc_only_and_st_targets():
    m = _tiny_model(ctc_weight=1.0)
    assert m.decoder is None
    st = _tiny_model(ctc_target="text", dec_target="text_en")
    batch = {"feats": torch.randn(1, 40, 20), "feats_lens": torch.tensor([40]),
             "text": torch.tensor([[4, 5]]), "text_lens": torch.tensor([2]),
             "text_en": torch.tensor([[6, 7, 8]]), "text_en_lens": torch.tensor([3])}
    assert torch.isfinite(st(batch)["loss"])
    with pytest.raises(Exception, match="model.conf.decoder.num_layer"):
        _tiny_model(decoder={"num_layer": 2})
