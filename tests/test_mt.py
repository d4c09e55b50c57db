"""Text MT model (``mt``): arguments, padding, learning a mapping only the source determines, and
decoding through the package path of ``stk decode --text``."""

from __future__ import annotations

import pytest
import torch

from stk.config import ConfigError
from stk.models import ENCODERS, MODELS
from stk.models.mt import TextConformerEncoder, TextTranslationModel

V = 12  # ids 0-2 are reserved (blank, unk, sos/eos); 3..11 are "words"


def tiny(**kw) -> TextTranslationModel:
    torch.manual_seed(0)
    conf = dict(vocab_size=V, encoder=dict(d_model=32, num_heads=2, ffn_dim=64, num_layers=1, kernel_size=3, dropout=0.0),
                decoder=dict(d_model=32, num_heads=2, ffn_dim=64, num_layers=1, dropout=0.0), lsm_weight=0.0)
    conf.update(kw)
    return TextTranslationModel(**conf)


def pad(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.full((len(seqs), max(map(len, seqs))), -1, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s)
    return out, torch.tensor([len(s) for s in seqs])


def batch(src: list[list[int]], tgt: list[list[int]]) -> dict:
    (s, sl), (t, tl) = pad(src), pad(tgt)
    return {"text": s, "text_lens": sl, "text_en": t, "text_en_lens": tl, "stream": "text"}


def translate(s: list[int]) -> list[int]:
    """A toy language pair: every word maps to another, word order reversed."""
    return [3 + (x - 3 + 4) % 9 for x in reversed(s)]


def test_registered_and_bad_args() -> None:
    assert MODELS.get("mt") is TextTranslationModel
    assert ENCODERS.get("text_conformer") is TextConformerEncoder
    with pytest.raises(ValueError, match="two"):
        tiny(src_target="text", dec_target="text")
    with pytest.raises(ValueError, match="vocab_size is set by the toolkit"):
        tiny(encoder={"vocab_size": 5})
    with pytest.raises(ValueError, match="lsm_weight"):
        tiny(lsm_weight=1.0)
    with pytest.raises(ValueError, match="num_layers"):
        tiny(decoder={"num_layers": 0})
    with pytest.raises(ConfigError, match="unknown key"):
        tiny(encoder={"subsampling_factor": 4})
    with pytest.raises(ValueError, match="no 'text_en'"):
        tiny()({"text": torch.zeros(1, 3, dtype=torch.long), "text_lens": torch.tensor([3])})
    with pytest.raises(ValueError, match="not speech features"):
        tiny().encode(torch.zeros(1, 10, 80), torch.tensor([10]))


def test_padding_does_not_change_the_encoding() -> None:
    m = tiny().eval()
    ids, lens = pad([[3, 4, 5, 6, 7], [8, 9]])
    enc, enc_lens = m.encode_text(ids, lens)
    assert enc.shape == (2, 5, 32) and enc_lens.tolist() == [5, 2]
    alone, _ = m.encode_text(torch.tensor([[8, 9]]), torch.tensor([2]))
    torch.testing.assert_close(enc[1, :2], alone[0], atol=1e-5, rtol=1e-5)


def test_learns_a_mapping_that_needs_the_source() -> None:
    """Random sources: a decoder that ignored its encoder (a target-side LM) stays near chance
    (1/9 per word); the model must reach high accuracy, and lose it when the sources are swapped."""
    g = torch.Generator().manual_seed(1)
    src = [torch.randint(3, V, (int(n),), generator=g).tolist() for n in torch.randint(3, 7, (24,), generator=g)]
    b = batch(src, [translate(s) for s in src])
    m = tiny()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    m.train()
    for _ in range(150):
        opt.zero_grad()
        out = m(b)
        out["loss"].backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        acc = m(b)["stats"]["acc"]
        swapped = dict(b, text=b["text"].roll(1, 0), text_lens=b["text_lens"].roll(1, 0))
        acc_swapped = m(swapped)["stats"]["acc"]
    assert acc > 0.9, acc
    assert acc_swapped < 0.5, acc_swapped


def test_beam_search_on_text_encoding() -> None:
    """The search ``stk decode --text`` runs (inference.search) decodes a trained model exactly."""
    from stk.inference import search
    from stk.package import DecodeOptions

    src = [[3, 4, 5], [6, 7, 8, 9], [10, 11, 3]]
    b = batch(src, [translate(s) for s in src])
    m = tiny()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(120):
        opt.zero_grad()
        m(b)["loss"].backward()
        opt.step()
    m.eval()
    enc, enc_lens = m.encode_text(b["text"], b["text_lens"])

    class Loaded:  # the part of a LoadedModel that search reads
        model = m

    hyps = search(Loaded(), enc, enc_lens, DecodeOptions(method="attention", beam_size=3, ctc_weight=0.0,
                                                         maxlen_ratio=2.0))
    assert hyps == [translate(s) for s in src]
