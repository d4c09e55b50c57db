"""stk export: CTC and transducer graphs to ONNX (checked in onnxruntime) and TorchScript."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stk.features.fbank import GlobalCMVN
from stk.package import PackageMeta, load_package, write_package
from stk.registry import ComponentSpec

onnx = pytest.importorskip("onnx", reason="the `export` extra (onnx, onnxruntime) is not installed")
ort = pytest.importorskip("onnxruntime")

ENC = {"name": "conformer", "conf": {"d_model": 16, "num_heads": 2, "ffn_dim": 32, "num_layers": 1, "kernel_size": 3,
                                     "subsampling_channels": 4}}
# Logits agree to float32 rounding: |onnxruntime - torch| <= ATOL for outputs of scale ~1-10.
ATOL = 1e-4


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Path:
    from stk.tokenizer import train_tokenizer

    d = tmp_path_factory.mktemp("tok")
    return train_tokenizer([f"hello world abc {i}" for i in range(20)], d / "char", vocab_size=30, model_type="char")


def package(tmp: Path, tok: Path, name: str, conf: dict) -> Path:
    from stk.experiment import build_model
    from stk.tokenizer import Tokenizer

    vocab = Tokenizer(tok).vocab_size
    torch.manual_seed(0)
    model = build_model(ComponentSpec(name, conf), vocab_size=vocab, input_dim=80)
    cmvn = tmp / "cmvn.json"
    GlobalCMVN(np.full(80, 2.0, dtype=np.float32), np.full(80, 3.0, dtype=np.float32)).save(cmvn)
    return write_package(tmp / f"pkg_{name}", meta=PackageMeta(model=ComponentSpec(name, conf), vocab_size=vocab),
                         state_dict=model.state_dict(), tokenizer=tok, cmvn=cmvn)


def test_ctc_onnx_matches_pytorch_and_torchscript(tmp_path, tok):
    from stk.export import example_inputs, export_model

    pkg = package(tmp_path, tok, "encdec", {"encoder": ENC, "ctc_weight": 1.0})
    rec = export_model(str(pkg), tmp_path / "onnx", "onnx")
    assert set(rec["graphs"]) == {"ctc"}
    assert rec["graphs"]["ctc"]["max_abs_diff"]["log_probs"] < ATOL
    # independently: onnxruntime on other lengths (dynamic axes) vs the package's model + CMVN as stk decode runs it
    lm = load_package(str(pkg))
    x, lens = example_inputs(lm.model, 80, batch=3, frames=150)
    sess = ort.InferenceSession(str(tmp_path / "onnx/ctc.onnx"), providers=["CPUExecutionProvider"])
    lp, out_lens = sess.run(None, {"x": x.numpy(), "x_lens": lens.numpy()})
    with torch.no_grad():
        enc, ref_lens = lm.model.encode(lm.cmvn(x), lens)
        ref = lm.model.ctc_log_probs(enc)
    assert out_lens.tolist() == ref_lens.tolist()
    for b, n in enumerate(ref_lens.tolist()):  # valid frames
        assert np.abs(lp[b, :n] - ref[b, :n].numpy()).max() < ATOL
    tokens = (tmp_path / "onnx/tokens.txt").read_text(encoding="utf-8").splitlines()
    assert tokens[0] == "<blank> 0" and len(tokens) == lm.tokenizer.vocab_size
    assert json.loads((tmp_path / "onnx/export.json").read_text())["format"] == "onnx"
    export_model(str(pkg), tmp_path / "ts", "torchscript")
    ts = torch.jit.load(str(tmp_path / "ts/ctc.pt"))
    with torch.no_grad():
        lp_ts, _ = ts(x, lens)
    for b, n in enumerate(ref_lens.tolist()):
        assert (lp_ts[b, :n] - ref[b, :n]).abs().max() < ATOL


def test_transducer_graphs_match_pytorch(tmp_path, tok):
    from stk.export import export_model

    conf = {"encoder": ENC, "ctc_weight": 0.0, "rnnt": {"embed_dim": 8, "pred_dim": 12, "joint_dim": 10}}
    pkg = package(tmp_path, tok, "transducer", conf)
    rec = export_model(str(pkg), tmp_path / "onnx", "onnx")
    assert set(rec["graphs"]) == {"encoder", "predictor", "joiner"}
    for name, g in rec["graphs"].items():
        assert max(g["max_abs_diff"].values()) < ATOL, (name, g)
    # a greedy step through the three graphs = the PyTorch head
    lm = load_package(str(pkg))
    head = lm.model.rnnt
    s = {n: ort.InferenceSession(str(tmp_path / f"onnx/{n}.onnx"), providers=["CPUExecutionProvider"])
         for n in ("encoder", "predictor", "joiner")}
    x = torch.randn(1, 60, 80)
    enc, _ = s["encoder"].run(None, {"x": x.numpy(), "x_lens": np.array([60])})
    h = np.zeros((head.predictor.num_layers, 1, head.predictor.hidden_dim), dtype=np.float32)
    pred, _, _ = s["predictor"].run(None, {"y": np.array([[0]]), "h": h, "c": h})
    logits = s["joiner"].run(None, {"encoder_out": enc[:, 0], "pred_out": pred[:, 0]})[0]
    with torch.no_grad():
        e, _ = lm.model.encode(lm.cmvn(x), torch.tensor([60]))
        p, _ = head.predictor(torch.zeros(1, 1, dtype=torch.long))
        ref = head.joiner(e[:, :1], p)[:, 0, 0]
    assert np.abs(logits - ref.numpy()).max() < ATOL


def test_export_errors(tmp_path, tok):
    from stk.export import export_model

    with pytest.raises(ValueError, match="onnx or torchscript"):
        export_model("x", tmp_path / "o", "tflite")
    pkg = package(tmp_path, tok, "lm", {"d_model": 16, "num_heads": 2, "ffn_dim": 32, "num_layers": 1})
    with pytest.raises(ValueError, match="nothing to export"):
        export_model(str(pkg), tmp_path / "o", "onnx")


def test_stk_export_cli(tmp_path, tok):
    from typer.testing import CliRunner

    from stk.cli import app

    pkg = package(tmp_path, tok, "encdec", {"encoder": ENC, "ctc_weight": 1.0})
    res = CliRunner().invoke(app, ["export", str(pkg), "--format", "torchscript", "--out", str(tmp_path / "ts")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "ts/ctc.pt").exists() and "ctc.pt" in res.output
    res = CliRunner().invoke(app, ["export", str(tmp_path / "nosuch"), "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "unknown model" in res.output
