"""conf/ presets: each loads as an ExperimentConfig, builds on the meta device (no memory), and
has the parameter count its header cites within 5 %; every preset uses conf/features.yaml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from stk.config import from_dict, load_config, load_yaml
from stk.experiment import ExperimentConfig, build_model
from stk.features.fbank import FbankConfig, SpecAugmentConfig

CONF = Path(__file__).resolve().parents[1] / "conf"
PRESETS = sorted(p for p in CONF.rglob("*.yaml") if p.name != "features.yaml")
REF = re.compile(r"^# reference: ([0-9.]+e[0-9]+) parameters, vocab (\d+), counting (\S+)$", re.M)


def reference(path: Path) -> tuple[float, int, list[str] | None]:
    m = REF.search(path.read_text(encoding="utf-8"))
    assert m, f"{path}: no '# reference: N parameters, vocab V, counting all|prefix,...' line"
    count = None if m.group(3) == "all" else [p for p in m.group(3).split(",") if p]
    return float(m.group(1)), int(m.group(2)), count


def build_meta(cfg: ExperimentConfig, vocab: int) -> torch.nn.Module:
    with torch.device("meta"):
        return build_model(cfg.model, vocab_size=vocab, input_dim=cfg.data.fbank.num_mel_bins)


def test_the_presets_are_there():
    names = {p.relative_to(CONF).as_posix() for p in PRESETS}
    assert {"asr/librispeech_conformer_ctc_att.yaml", "asr/librispeech_conformer_transducer.yaml",
            "pretrain/w2v_bert_0.6b.yaml", "pretrain/mslam_0.6b.yaml", "pretrain/mslam_2b.yaml",
            "pretrain/maestro_0.6b.yaml"} <= names


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.relative_to(CONF).as_posix())
def test_preset_parameter_count_matches_its_source(path):
    figure, vocab, prefixes = reference(path)
    cfg = load_config(ExperimentConfig, path)  # the whole config: typed, unknown keys rejected
    model = build_meta(cfg, vocab)
    params = list(model.named_parameters())
    assert params and all(p.is_meta for _, p in params)  # nothing was allocated
    n = sum(p.numel() for name, p in params if prefixes is None or name.startswith(tuple(prefixes)))
    assert abs(n - figure) / figure <= 0.05, f"{path.name}: {n / 1e6:.2f} M parameters vs the cited {figure / 1e6:.2f} M"


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.relative_to(CONF).as_posix())
def test_preset_uses_the_shared_feature_settings(path):
    shared = load_yaml(CONF / "features.yaml")
    fbank = from_dict(FbankConfig, shared["fbank"])
    cfg = load_config(ExperimentConfig, path)
    assert cfg.data.fbank == fbank
    assert cfg.data.cmvn == shared["cmvn"]
    specaug = cfg.model.conf.get("specaug")
    if specaug is not None:
        assert from_dict(SpecAugmentConfig, specaug) == from_dict(SpecAugmentConfig, shared["specaug"])


def test_the_count_is_of_the_model_the_config_describes():
    # the check can fail: one layer fewer moves the LibriSpeech CTC/attention preset outside 5 %
    path = CONF / "asr" / "librispeech_conformer_ctc_att.yaml"
    figure, vocab, _ = reference(path)
    cfg = load_config(ExperimentConfig, path, ["model.conf.encoder.conf.num_layers=10"])
    n = sum(p.numel() for p in build_meta(cfg, vocab).parameters())
    assert abs(n - figure) / figure > 0.05
