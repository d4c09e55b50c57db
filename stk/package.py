"""Packaged models and the model store.

A packaged model is a directory::

    model.yaml          model spec, fbank settings, default decoding options
    model.safetensors   weights (never pickle)
    tokenizer.model     sentencepiece model
    cmvn.json           global CMVN statistics (optional)

``stk decode --model NAME_OR_DIR`` accepts a directory, or a name looked up in the model store:
``$STK_MODEL_STORE`` if set, else ``~/.cache/stk/models``. Recipes' last stage runs
``stk package --name NAME`` to publish there.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import typing
from pathlib import Path
from typing import Any

import yaml

from stk.config import ConfigError, check_value, from_dict, to_dict
from stk.features.fbank import FbankConfig
from stk.registry import ComponentSpec
from stk.utils import atomic_write_text


@dataclasses.dataclass
class DecodeOptions:
    """Default decoding options stored with a package (overridable on the command line)."""

    method: str = "attention"  # attention | ctc_greedy | ctc_beam | rnnt_greedy | rnnt_beam | classify
    beam_size: int = 10
    ctc_weight: float = 0.3
    length_penalty: float = 0.0
    score_norm: bool = True  # rnnt_beam: rank by length-normalised log-prob (torchaudio's hypo_sort_key default)
    maxlen_ratio: float = 0.0


@dataclasses.dataclass
class PackageMeta:
    """``model.yaml``. ``num_labels``/``label_vocab`` (from the experiment's ``data.label_vocab``)
    let a classifier be rebuilt and its label ids written as strings."""

    model: ComponentSpec
    vocab_size: int
    fbank: FbankConfig = dataclasses.field(default_factory=FbankConfig)
    decode: DecodeOptions = dataclasses.field(default_factory=DecodeOptions)
    num_labels: dict[str, int] = dataclasses.field(default_factory=dict)
    label_vocab: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    description: str = ""


def model_store() -> Path:
    return Path(os.environ.get("STK_MODEL_STORE", Path.home() / ".cache" / "stk" / "models"))


def known_models() -> list[str]:
    store = model_store()
    return sorted(p.name for p in store.iterdir() if (p / "model.yaml").exists()) if store.is_dir() else []


def resolve_model(name_or_dir: str) -> Path:
    """A package directory from a path or a model-store name; clear error listing known names."""
    p = Path(name_or_dir)
    if (p / "model.yaml").exists():
        return p
    if "/" not in name_or_dir and (model_store() / name_or_dir / "model.yaml").exists():
        return model_store() / name_or_dir
    known = known_models()
    raise ConfigError(
        f"unknown model {name_or_dir!r}: not a package directory and not in the model store {model_store()} "
        f"(known: {', '.join(known) or 'none — run a recipe to the packaging stage, or set STK_MODEL_STORE'})"
    )


def write_package(
    out_dir: str | Path, *, meta: PackageMeta, state_dict: dict[str, Any], tokenizer: str | Path, cmvn: str | Path | None
) -> Path:
    from safetensors.torch import save_file

    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp / "model.safetensors"))
    shutil.copy(tokenizer, tmp / "tokenizer.model")
    if cmvn is not None:
        shutil.copy(cmvn, tmp / "cmvn.json")
    atomic_write_text(tmp / "model.yaml", yaml.safe_dump(to_dict(meta), sort_keys=False, allow_unicode=True))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


@dataclasses.dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    cmvn: Any
    meta: PackageMeta
    path: Path


def load_package(name_or_dir: str, device: str = "cpu") -> LoadedModel:
    """Load a packaged model for inference (weights through safetensors only)."""
    from safetensors.torch import load_file

    from stk.config import load_yaml
    from stk.experiment import build_model
    from stk.features.fbank import GlobalCMVN
    from stk.tokenizer import Tokenizer

    path = resolve_model(name_or_dir)
    meta = from_dict(PackageMeta, load_yaml(path / "model.yaml"), "model.yaml")
    model = build_model(meta.model, vocab_size=meta.vocab_size, input_dim=meta.fbank.num_mel_bins,
                        num_labels=meta.num_labels or None)
    state = load_file(str(path / "model.safetensors"), device=device)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"{path}/model.safetensors does not match model.yaml: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.to(device).eval()
    cmvn = GlobalCMVN.load(path / "cmvn.json") if (path / "cmvn.json").exists() else None
    return LoadedModel(model, Tokenizer(path / "tokenizer.model"), cmvn, meta, path)


def override_decode(opts: DecodeOptions, **kw: Any) -> DecodeOptions:
    """Copy of ``opts`` with the non-None keyword values replaced (type-checked)."""
    hints = typing.get_type_hints(DecodeOptions)
    changes = {k: check_value(v, hints[k], f"decode.{k}") for k, v in kw.items() if v is not None}
    return dataclasses.replace(opts, **changes)
