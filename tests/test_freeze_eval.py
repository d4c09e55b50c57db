"""freeze: frozen modules run in eval mode during training (no dropout, fixed BatchNorm statistics)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from stk.experiment import freeze_parameters


class Probe(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 8))
        self.ctc = nn.Sequential(nn.Dropout(0.5), nn.Linear(8, 3))

    def forward(self, x):
        return self.ctc(self.encoder(x))


def test_frozen_encoder_stays_in_eval_mode_through_train():
    torch.manual_seed(0)
    m = Probe()
    frozen = freeze_parameters(m, ["encoder."])
    assert frozen == ["encoder.0.weight", "encoder.0.bias", "encoder.1.weight", "encoder.1.bias",
                      "encoder.3.weight", "encoder.3.bias"]
    m.train()
    assert m.training and m.ctc.training and m.ctc[0].training
    assert not any(mod.training for mod in m.encoder.modules())
    stats = m.encoder[1].running_mean.clone()
    x = torch.randn(16, 4)
    a, b = m.encoder(x), m.encoder(x)
    torch.testing.assert_close(a, b)  # no dropout
    m(x).sum().backward()
    torch.testing.assert_close(m.encoder[1].running_mean, stats)  # BatchNorm statistics fixed
    assert m.encoder[0].weight.grad is None and m.ctc[1].weight.grad is not None
    assert not torch.equal(m.ctc(a), m.ctc(a))  # the trained head still has its dropout
    m.eval()
    m.train(True)
    assert not m.encoder.training and m.ctc.training
    c = copy.deepcopy(m).train()
    assert not c.encoder.training and c.ctc.training


def test_partial_freeze_keeps_only_fully_frozen_modules_in_eval():
    m = Probe()
    freeze_parameters(m, ["encoder.0."])
    m.train()
    assert not m.encoder[0].training
    assert m.encoder.training and m.encoder[1].training and m.encoder[2].training
