"""Transformer LM: training, incremental scoring against the full forward pass, LMScorer protocol."""

from __future__ import annotations

import math

import pytest
import torch

from stk.decode.lm import LMScorer
from stk.models import MODELS
from stk.models.lm import TransformerLM
from stk.tokenizer import SOS_EOS

V = 11


def tiny(**kw) -> TransformerLM:
    torch.manual_seed(0)
    conf = dict(vocab_size=V, d_model=16, num_heads=2, ffn_dim=32, num_layers=2, dropout=0.0)
    conf.update(kw)
    return TransformerLM(**conf).eval()


def batch(seqs: list[list[int]]) -> dict:
    u = max(len(s) for s in seqs)
    ys = torch.full((len(seqs), u), -1, dtype=torch.long)
    for i, s in enumerate(seqs):
        ys[i, : len(s)] = torch.tensor(s)
    return {"text": ys, "text_lens": torch.tensor([len(s) for s in seqs]), "stream": "text"}


def test_registered_and_bad_args() -> None:
    assert MODELS.get("lm") is TransformerLM
    with pytest.raises(ValueError, match="multiple of num_heads"):
        TransformerLM(vocab_size=V, d_model=15, num_heads=2)
    with pytest.raises(ValueError, match="vocab_size"):
        TransformerLM(vocab_size=2)
    with pytest.raises(ValueError, match="no 'text'"):
        tiny()({"feats": torch.zeros(1, 3, 4)})


def test_loss_is_token_cross_entropy_and_padding_invariant() -> None:
    lm = tiny()
    seqs = [[3, 4, 5], [6, 7]]
    out = lm(batch(seqs))
    assert out["weight"] == 3 + 1 + 2 + 1  # tokens + <eos>
    total = lm.sequence_log_prob(seqs)
    assert out["loss"].item() == pytest.approx(-total.sum().item() / 7, rel=1e-5)
    alone = lm(batch([[6, 7]]))["loss"].item()  # the padded row scores as it does alone
    assert alone == pytest.approx(-total[1].item() / 3, rel=1e-5)
    assert out["stats"]["ppl"] == pytest.approx(math.exp(out["loss"].item()), rel=1e-5)


def test_long_sentences_are_cut_to_max_len() -> None:
    lm = tiny(max_len=5)
    out = lm(batch([[3, 4, 5, 6, 7, 8, 9], [3, 4]]))  # 7 tokens > 4 that fit after <sos>
    assert out["weight"] == 4 + 3  # the cut row has no <eos> target


def test_training_learns_a_pattern() -> None:
    lm = tiny()
    lm.train()
    opt = torch.optim.Adam(lm.parameters(), lr=1e-2)
    b = batch([[3, 4, 5, 6, 3, 4, 5, 6], [5, 6, 3, 4, 5, 6]])
    first = None
    for _ in range(60):
        loss = lm(b)["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.25 * first


def test_scorer_matches_full_forward_with_select_and_skips() -> None:
    lm = tiny()
    sc = lm.scorer()
    assert isinstance(sc, LMScorer) and sc.vocab_size == V
    seqs = [[3, 4, 5, 6], [7, 8, 9, 10], [3, 3, 3, 3]]
    full = lm.logits(torch.tensor([[SOS_EOS] + s for s in seqs])).log_softmax(-1)  # (3, 5, V)
    st = sc.init_state(3)
    assert torch.allclose(sc.score(st), full[:, 0], atol=1e-5)
    for t in range(4):
        st = sc.advance(st, torch.tensor([s[t] for s in seqs]))
        assert torch.allclose(sc.score(st), full[:, t + 1], atol=1e-5)
    # reorder and duplicate rows
    sel = sc.select(st, torch.tensor([2, 0, 0]))
    assert torch.allclose(sc.score(sel), full[[2, 0, 0], 4], atol=1e-5)
    # rows of different lengths in one state: -1 leaves a row as it is
    st = sc.init_state(2)
    st = sc.advance(st, torch.tensor([3, -1]))
    st = sc.advance(st, torch.tensor([4, 7]))
    st = sc.advance(st, torch.tensor([-1, 8]))
    ref = lm.logits(torch.tensor([[SOS_EOS, 3, 4], [SOS_EOS, 7, 8]])).log_softmax(-1)[:, -1]
    assert torch.allclose(sc.score(st), ref, atol=1e-5)
    with pytest.raises(ValueError, match="outside the LM vocabulary"):
        sc.advance(st, torch.tensor([V, 3]))
    assert sc.score(sc.init_state(0)).shape == (0, V)


# --- stk decode --lm: packages, checks ----------------------------------------------------

def _package(tmp, tok, name, conf, out):
    from stk.experiment import build_model
    from stk.package import PackageMeta, write_package
    from stk.registry import ComponentSpec
    from stk.tokenizer import Tokenizer

    import numpy as np

    from stk.features.fbank import GlobalCMVN

    vocab = Tokenizer(tok).vocab_size
    torch.manual_seed(0)
    model = build_model(ComponentSpec(name, conf), vocab_size=vocab, input_dim=80)
    GlobalCMVN(np.zeros(80, dtype=np.float32), np.full(80, 4.0, dtype=np.float32)).save(tmp / "cmvn.json")
    return write_package(tmp / out, meta=PackageMeta(model=ComponentSpec(name, conf), vocab_size=vocab),
                         state_dict=model.state_dict(), tokenizer=tok, cmvn=tmp / "cmvn.json")


def test_stk_decode_with_lm_fusion(tmp_path, data_dir):
    from typer.testing import CliRunner

    from stk.cli import app
    from stk.tokenizer import train_tokenizer

    tok = train_tokenizer([f"hello world abc {i}" for i in range(20)], tmp_path / "char", vocab_size=30, model_type="char")
    tok2 = train_tokenizer([f"other text xyz {i}" for i in range(20)], tmp_path / "char2", vocab_size=30, model_type="char")
    enc = {"name": "conformer", "conf": {"d_model": 16, "num_heads": 2, "ffn_dim": 32, "num_layers": 1, "kernel_size": 3}}
    asr = _package(tmp_path, tok, "encdec", {"encoder": enc, "decoder": {"d_model": 16, "num_heads": 2, "ffn_dim": 32,
                                                                          "num_layers": 1}}, "asr")
    lm_conf = {"d_model": 16, "num_heads": 2, "ffn_dim": 32, "num_layers": 1}
    lm = _package(tmp_path, tok, "lm", lm_conf, "lm")
    lm_other = _package(tmp_path, tok2, "lm", lm_conf, "lm_other")
    run = lambda *a: CliRunner().invoke(app, ["decode", str(data_dir), "--model", str(asr), "--beam-size", "2", *a])
    res = run("--method", "attention", "--lm", str(lm), "--lm-weight", "0.5", "--maxlen-ratio", "0.3")
    assert res.exit_code == 0, res.output
    assert len(res.stdout.splitlines()) == len((data_dir / "wav.scp").read_text().splitlines())
    res = run("--method", "ctc_greedy", "--lm", str(lm), "--lm-weight", "0.5")
    assert res.exit_code == 1 and "fused with --method attention or rnnt_beam" in res.output
    res = run("--method", "attention", "--lm", str(lm_other), "--lm-weight", "0.5")
    assert res.exit_code == 1 and "tokenizer differs" in res.output
    res = run("--method", "attention", "--lm-weight", "0.5")
    assert res.exit_code == 1 and "--lm-weight needs --lm" in res.output
    res = run("--method", "attention", "--lm", str(asr), "--lm-weight", "0.5")
    assert res.exit_code == 1 and "not an `lm`" in res.output
    rnnt = _package(tmp_path, tok, "transducer", {"encoder": enc, "ctc_weight": 0.0,
                                                  "rnnt": {"embed_dim": 8, "pred_dim": 12, "joint_dim": 10}}, "rnnt")
    res = CliRunner().invoke(app, ["decode", str(data_dir), "--model", str(rnnt), "--method", "rnnt_beam", "--beam-size",
                                   "2", "--lm", str(lm), "--lm-weight", "0.5"])
    assert res.exit_code == 0, res.output
    assert len(res.stdout.splitlines()) == len((data_dir / "wav.scp").read_text().splitlines())
