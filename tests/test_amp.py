"""stk/amp.py: trainer.amp modes (CPU refuses or falls back to fp32), activation checkpointing of
Conformer layers (recomputed in backward, same gradients, dropout included)."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from stk.amp import Precision, resolve_amp, set_grad_checkpointing
from stk.config import ConfigError, from_dict
from stk.models.encdec import EncoderDecoderModel
from stk.trainer import TrainerConfig


def tiny_model() -> EncoderDecoderModel:
    torch.manual_seed(0)
    return EncoderDecoderModel(
        vocab_size=16, input_dim=20, specaug=None,
        encoder={"name": "conformer", "conf": {"d_model": 32, "num_heads": 2, "ffn_dim": 64, "num_layers": 3,
                                               "kernel_size": 5, "dropout": 0.2, "subsampling_channels": 8}},
        decoder={"d_model": 32, "num_heads": 2, "ffn_dim": 64, "num_layers": 1, "dropout": 0.2})


def batch() -> dict:
    g = torch.Generator().manual_seed(1)
    return {"feats": torch.randn(3, 40, 20, generator=g), "feats_lens": torch.tensor([40, 33, 25]),
            "text": torch.randint(4, 16, (3, 4), generator=g), "text_lens": torch.tensor([4, 3, 2]), "stream": "p"}


def grads_of(model: nn.Module) -> dict[str, torch.Tensor]:
    torch.manual_seed(5)  # the same dropout masks in both runs
    model.train()
    model(batch())["loss"].backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_checkpointed_layers_are_recomputed_and_give_the_same_gradients():
    plain, ckpt = tiny_model(), tiny_model()
    assert set_grad_checkpointing(ckpt) == 1  # the encoder's ConformerLayers
    calls = []
    layer0 = ckpt.encoder.layers.layers[0]
    layer0.register_forward_pre_hook(lambda *_: calls.append(1))  # (recomputation stops early: no post hook)
    expected, got = grads_of(plain), grads_of(ckpt)
    assert len(calls) == 2  # the forward pass and its recomputation in backward
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=lambda m: f"{name}: {m}")
    calls.clear()
    with torch.no_grad():  # no recomputation without autograd (and in eval)
        ckpt(batch())
    assert len(calls) == 1


def test_amp_modes():
    assert resolve_amp("none", True) == "fp16"  # the older use_amp switch
    assert resolve_amp("bf16", True) == "bf16"
    with pytest.raises(ValueError, match="none, bf16 or fp16"):
        resolve_amp("fp8", False)
    with pytest.raises(ValueError, match="CUDA"):
        TrainerConfig(amp="bf16", device="cpu")
    with pytest.raises(ConfigError, match="bf16"):
        from_dict(TrainerConfig, {"amp": "bfloat16"})


def test_auto_device_without_cuda_trains_in_fp32(caplog):
    with caplog.at_level(logging.WARNING, logger="stk.amp"):
        p = Precision("bf16", torch.device("cpu"))
    assert p.mode == "none" and not p.enabled and not p.scaler.is_enabled()
    assert "ignored" in caplog.text
    with p.autocast():
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32


def test_grad_checkpointing_needs_a_supporting_model(tmp_path):
    from stk.data.mixing import MixedStreams
    from stk.trainer import OptimConfig, Trainer

    with pytest.raises(ValueError, match="grad_checkpointing"):
        Trainer(nn.Linear(2, 2), exp_dir=tmp_path, optim=OptimConfig(), train_data=MixedStreams({"a": [{}]}),
                config=TrainerConfig(max_steps=1, grad_checkpointing=True, device="cpu"), device=torch.device("cpu"))
