"""Export packaged CTC and transducer models to ONNX or TorchScript (``stk export``).

Graphs written to the output directory (features in, as ``stk decode`` computes them: Kaldi
fbank from :class:`~stk.features.fbank.FbankConfig`; the package's global CMVN is inside the
encoder graph)::

    ctc.{onnx,pt}        x (N, T, F) float, x_lens (N,) int64 -> log_probs (N, T', V), out_lens (N,)
    encoder.{onnx,pt}    x, x_lens -> encoder_out (N, T', D), out_lens (N,)        (transducer)
    predictor.{onnx,pt}  y (N, 1) int64, h (L, N, H), c (L, N, H) -> pred_out (N, 1, P), h, c
    joiner.{onnx,pt}     encoder_out (N, D), pred_out (N, P) -> logits (N, V)
    tokens.txt           `piece id` per line (sherpa-onnx's format); model.yaml; export.json

The transducer is split the way sherpa-onnx runs one (an encoder call per utterance, then a
predictor call per emitted token and a joiner call per frame and symbol); the predictor's LSTM
state travels as ``h``/``c`` (blank, id 0, is its start symbol). ONNX graphs come from
``torch.onnx.export`` (the TorchScript-based exporter, opset 17, dynamic batch and time axes);
TorchScript files from ``torch.jit.trace`` with ``check_trace``. :func:`check_onnx` runs a graph in
onnxruntime and compares it with PyTorch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger("stk.export")

__all__ = ["export_model", "check_onnx", "CTCGraph", "EncoderGraph", "PredictorGraph", "JoinerGraph"]

OPSET = 17


class EncoderGraph(nn.Module):
    """CMVN + encoder: (N, T, F), (N,) -> (N, T', D), (N,)."""

    def __init__(self, model: nn.Module, cmvn: Any | None) -> None:
        super().__init__()
        self.encoder = model.encoder
        mean = cmvn.mean if cmvn is not None else torch.zeros(0)
        std = cmvn.std if cmvn is not None else torch.zeros(0)
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        self.use_cmvn = cmvn is not None

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.use_cmvn:
            x = (x - self.mean) / self.std
        return self.encoder(x, x_lens)


class CTCGraph(nn.Module):
    """CMVN + encoder + CTC head: (N, T, F), (N,) -> log-probs (N, T', V), (N,)."""

    def __init__(self, model: nn.Module, cmvn: Any | None) -> None:
        super().__init__()
        self.enc = EncoderGraph(model, cmvn)
        self.ctc = model.ctc

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        enc, lens = self.enc(x, x_lens)
        return torch.log_softmax(self.ctc(enc), dim=-1), lens


class PredictorGraph(nn.Module):
    """One predictor step: y (N, 1), h, c (L, N, H) -> (N, 1, P), h, c."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.predictor = head.predictor

    def forward(self, y: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        out, (h2, c2) = self.predictor(y, (h, c))
        return out, h2, c2


class JoinerGraph(nn.Module):
    """Joint network on one frame and one predictor output per row: (N, D), (N, P) -> (N, V) logits."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.joiner = head.joiner

    def forward(self, enc: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        return self.joiner.joint(self.joiner.project_enc(enc), self.joiner.project_pred(pred))


def _rel_shift_gather(x: torch.Tensor) -> torch.Tensor:
    """Export-friendly :meth:`RelPositionMultiHeadAttention.rel_shift` (a gather instead of a strided
    view with a size-dependent offset, which ONNX cannot express): ``out[..., i, j] = x[..., i, T-1-i+j]``."""
    t = x.size(-2)
    i = torch.arange(t, device=x.device)
    idx = (t - 1 - i)[:, None] + i[None, :]  # (T, T)
    return x.gather(-1, idx.expand(*x.shape[:-1], t))


@contextlib.contextmanager
def exportable():
    """Swap in the export-friendly pieces of stk's modules while tracing."""
    import stk.modules.conformer as conf
    import stk.modules.subsampling as sub

    Attn, Pos = conf.RelPositionMultiHeadAttention, conf.RelPositionalEncoding
    saved = Attn.__dict__["rel_shift"], sub.conv3x3s2_relu, conf.lengths_to_mask, Pos.forward
    Attn.rel_shift = staticmethod(_rel_shift_gather)
    sub.conv3x3s2_relu = _conv3x3s2_relu_plain
    conf.lengths_to_mask = _lengths_to_mask
    Pos.forward = _rel_positions
    try:
        yield
    finally:
        Attn.rel_shift, sub.conv3x3s2_relu, conf.lengths_to_mask, Pos.forward = saved


def _lengths_to_mask(lengths: torch.Tensor, max_len: Any = None) -> torch.Tensor:
    """:func:`stk.modules.conformer.lengths_to_mask` without ``int()``, so a traced length stays dynamic."""
    if max_len is None:
        max_len = lengths.max()
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def _rel_positions(self: nn.Module, t: Any, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """:class:`RelPositionalEncoding` computed for ``t`` (no cached table sliced at trace-time sizes)."""
    pos = torch.arange(t - 1, -t, -1, device=device, dtype=torch.float32)  # (2T-1,)
    div = torch.exp(torch.arange(0, self.d_model, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / self.d_model))
    ang = pos[:, None] * div  # (2T-1, D/2)
    return torch.stack([ang.sin(), ang.cos()], dim=-1).flatten(1).unsqueeze(0).to(dtype)


def _conv3x3s2_relu_plain(h: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """The ``F.conv2d`` path of :func:`stk.modules.subsampling.conv3x3s2_relu` (its CPU im2col
    path is a custom autograd function over a strided view)."""
    return torch.relu(conv(h.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)


def example_inputs(model: nn.Module, num_mel_bins: int, batch: int = 2, frames: int = 97) -> tuple[torch.Tensor, torch.Tensor]:
    """Random features (N, T, F) and lengths (the second row shorter) for tracing and checks."""
    frames = max(frames, model.min_input_length() + 4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, frames, num_mel_bins, generator=g)
    lens = torch.tensor([frames] + [max(model.min_input_length(), frames - 13 * i) for i in range(1, batch)])
    return x, lens


def _graphs(model: nn.Module, cmvn: Any | None, num_mel_bins: int) -> dict[str, tuple[nn.Module, tuple, list[str], list[str], dict]]:
    """name -> (module, example inputs, input names, output names, dynamic axes)."""
    if getattr(model, "rnnt", None) is None and getattr(model, "ctc", None) is None:
        raise ValueError(f"{type(model).__name__} has neither a CTC head nor an RNN-T head: nothing to export")
    x, lens = example_inputs(model, num_mel_bins)
    feat_axes = {"x": {0: "N", 1: "T"}, "x_lens": {0: "N"}}
    head = getattr(model, "rnnt", None)
    out: dict[str, tuple] = {}
    if head is not None:
        enc_g = EncoderGraph(model, cmvn).eval()
        out["encoder"] = (enc_g, (x, lens), ["x", "x_lens"], ["encoder_out", "out_lens"],
                          {**feat_axes, "encoder_out": {0: "N", 1: "T_out"}, "out_lens": {0: "N"}})
        with torch.no_grad():
            enc, _ = enc_g(x, lens)
        p = head.predictor
        n = 3
        y = torch.tensor([[0], [5 % p.vocab_size], [1]])
        h = torch.zeros(p.num_layers, n, p.hidden_dim)
        out["predictor"] = (PredictorGraph(head).eval(), (y, h, h.clone()), ["y", "h", "c"], ["pred_out", "h_out", "c_out"],
                            {"y": {0: "N"}, "h": {1: "N"}, "c": {1: "N"}, "pred_out": {0: "N"}, "h_out": {1: "N"},
                             "c_out": {1: "N"}})
        with torch.no_grad():
            pred, _, _ = out["predictor"][0](y, h, h.clone())
        out["joiner"] = (JoinerGraph(head).eval(), (enc[:, 0].repeat(2, 1)[:n], pred[:, 0]), ["encoder_out", "pred_out"],
                         ["logits"], {"encoder_out": {0: "N"}, "pred_out": {0: "N"}, "logits": {0: "N"}})
    else:
        out["ctc"] = (CTCGraph(model, cmvn).eval(), (x, lens), ["x", "x_lens"], ["log_probs", "out_lens"],
                      {**feat_axes, "log_probs": {0: "N", 1: "T_out"}, "out_lens": {0: "N"}})
    return out


def export_model(package: str, out_dir: str | Path, fmt: str = "onnx", check: bool = True) -> dict[str, Any]:
    """Export a packaged model (dir or store name) to ``out_dir``; returns what ``export.json`` records.

    With ``check`` (ONNX), each graph is run in onnxruntime on the example inputs and compared with
    PyTorch (:func:`check_onnx`); the largest absolute differences are recorded.
    """
    from stk.package import load_package

    if fmt not in ("onnx", "torchscript"):
        raise ValueError(f"format must be onnx or torchscript, got {fmt!r}")
    pkg = load_package(package, device="cpu")
    model = pkg.model.eval()
    graphs = _graphs(model, pkg.cmvn, pkg.meta.fbank.num_mel_bins)
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    record: dict[str, Any] = {"format": fmt, "package": str(pkg.path), "model": pkg.meta.model.name,
                              "torch": torch.__version__, "graphs": {}}
    for name, (module, inputs, in_names, out_names, axes) in graphs.items():
        with exportable():
            entry = _export_one(module, inputs, in_names, out_names, axes, tmp, name, fmt)
        if check and fmt == "onnx":  # against the modules as stk runs them (strided rel_shift)
            entry["max_abs_diff"] = check_onnx(module, tmp / entry["file"], inputs, out_names)
        record["graphs"][name] = entry
        log.info("%s -> %s", name, entry["file"])
    with open(tmp / "tokens.txt", "w", encoding="utf-8") as f:
        for i in range(pkg.tokenizer.vocab_size):
            f.write(f"{pkg.tokenizer.sp.id_to_piece(i)} {i}\n")
    shutil.copy(pkg.path / "model.yaml", tmp / "model.yaml")
    (tmp / "export.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return record


def _export_one(module: nn.Module, inputs: tuple, in_names: list[str], out_names: list[str], axes: dict, tmp: Path,
                name: str, fmt: str) -> dict[str, Any]:
    if fmt == "onnx":
        path = tmp / f"{name}.onnx"
        _onnx_export(module, inputs, path, in_names, out_names, axes)
        return {"file": path.name, "inputs": in_names, "outputs": out_names}
    path = tmp / f"{name}.pt"
    with torch.no_grad():
        traced = torch.jit.trace(module, inputs, check_trace=True)
    traced.save(str(path))
    return {"file": path.name, "inputs": in_names, "outputs": out_names}


def _onnx_export(module: nn.Module, inputs: tuple, path: Path, in_names: list[str], out_names: list[str],
                 axes: dict) -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ValueError("ONNX export needs the `export` extra: pip install 'stk[export]'") from None
    with torch.no_grad():
        torch.onnx.export(module, inputs, str(path), input_names=in_names, output_names=out_names,
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)


def check_onnx(module: nn.Module, path: str | Path, inputs: tuple, out_names: list[str] | None = None) -> dict[str, float]:
    """Run ``path`` in onnxruntime (CPU) on ``inputs`` and return, per output, the largest absolute
    difference from ``module(*inputs)``. Padded frames past each row's length are compared too."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ValueError("checking an ONNX graph needs onnxruntime: pip install 'stk[export]'") from None
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), inputs)}
    got = sess.run(None, feeds)
    with torch.no_grad():
        ref = module(*inputs)
    ref = ref if isinstance(ref, tuple) else (ref,)
    names = out_names or [o.name for o in sess.get_outputs()]
    return {n: float((torch.as_tensor(g).double() - r.double()).abs().max()) for n, g, r in zip(names, got, ref)}
