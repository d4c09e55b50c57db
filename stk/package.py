"""Packaged models and the model store.

A packaged model is a directory::

    model.yaml          model spec, fbank settings, default decoding options
    model.safetensors   weights (never pickle)
    tokenizer.model     sentencepiece model
    cmvn.json           global CMVN statistics (required unless model.yaml says ``uses_cmvn: false``)

``stk decode --model NAME_OR_DIR`` accepts a directory, or a name looked up in the model store:
``$STK_MODEL_STORE`` if set, else ``~/.cache/stk/models``. Recipes' last stage runs
``stk package --name NAME`` to publish there. A store name is a plain identifier
(``[A-Za-z0-9][A-Za-z0-9._-]*``); replacing an entry needs ``force=True`` (``--force``), and
nothing outside the store is ever removed. Every problem with a package (unreadable weights,
sizes that do not fit ``model.yaml``, a broken tokenizer, a missing ``cmvn.json``) is a
:class:`~stk.config.ConfigError` naming the file.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
import typing
from pathlib import Path
from typing import Any

import yaml

from stk.config import ConfigError, check_value, from_dict, to_dict
from stk.features.fbank import FbankConfig
from stk.registry import ComponentSpec
from stk.utils import atomic_write_text, current_umask

STORE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclasses.dataclass
class DecodeOptions:
    """Default decoding options stored with a package (overridable on the command line)."""

    method: str = "attention"  # attention | ctc_greedy | ctc_beam | rnnt_greedy | rnnt_beam | classify
    beam_size: int = 10
    ctc_weight: float = 0.3
    length_penalty: float = 0.0
    score_norm: bool = True  # rnnt_beam: rank by length-normalised log-prob (torchaudio's hypo_sort_key default)
    maxlen_ratio: float = 0.0
    rnnt_search: str = "modified"  # rnnt_beam: modified (batched, stk) | torchaudio (RNNTBeamSearch, one utterance at a time)


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
    uses_cmvn: bool = True  # trained on CMVN-normalised features: cmvn.json must be there
    versions: dict[str, str] = dataclasses.field(default_factory=dict)  # stk, git, torch that wrote it


def provenance() -> dict[str, str]:
    """``{"stk": version, "git": commit of the stk checkout (+"-dirty") or "", "torch": version}``."""
    import torch

    import stk

    git = ""
    src = Path(stk.__file__).resolve().parent.parent
    if (src / ".git").exists():
        try:
            head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                                  timeout=10)
            if head.returncode == 0:
                git = head.stdout.strip()
                dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                                       capture_output=True, text=True, timeout=10)
                git += "-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else ""
        except (OSError, subprocess.SubprocessError):
            git = ""
    return {"stk": str(stk.__version__), "git": git, "torch": str(torch.__version__)}


def check_store_name(name: str) -> str:
    """``name`` if it is a plain model-store identifier, else a ConfigError (no paths, not ``.``/``..``)."""
    if not STORE_NAME.fullmatch(name):
        raise ConfigError(f"model store name {name!r} must be a plain identifier ([A-Za-z0-9][A-Za-z0-9._-]*: "
                          "no '/', not '.' or '..')")
    return name


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


def _is_package(p: Path) -> bool:
    return p.is_dir() and not p.is_symlink() and (p / "model.yaml").is_file()


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest``, replacing an existing package dir ``dest`` (never anything else)."""
    if dest.is_symlink():
        dest.unlink()  # a link in the store: remove the link, never what it points to
    elif dest.exists():
        if not _is_package(dest):
            raise ConfigError(f"{dest} exists and is not a package directory (no model.yaml); not replacing it")
        old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old."))
        dest.rename(old / dest.name)
        tmp.rename(dest)
        shutil.rmtree(old)
        return
    tmp.rename(dest)


def _private_tmpdir(parent: Path, name: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; honour the umask like mkdir
    return tmp


def write_package(
    out_dir: str | Path, *, meta: PackageMeta, state_dict: dict[str, Any], tokenizer: str | Path, cmvn: str | Path | None
) -> Path:
    """Write a package directory (through a temporary dir renamed at the end). An existing package at
    ``out_dir`` is replaced; anything else there (a non-package directory, a file) is refused.
    ``meta.uses_cmvn`` is set from ``cmvn`` (given: the package needs its cmvn.json to decode)."""
    from stk.checkpoint import save_weights

    meta = dataclasses.replace(meta, uses_cmvn=cmvn is not None)
    out = Path(out_dir)
    if out.exists() and not _is_package(out) and not (out.is_dir() and not any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not a package directory (no model.yaml); not replacing it")
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    tmp = _private_tmpdir(out.parent, out.name)
    try:
        save_weights(tmp / "model.safetensors", state_dict)  # atomic, umask-honouring (safetensors' own: 0600)
        shutil.copyfile(tokenizer, tmp / "tokenizer.model")  # copyfile: new files get the umask's mode
        if cmvn is not None:
            shutil.copyfile(cmvn, tmp / "cmvn.json")
        atomic_write_text(tmp / "model.yaml", yaml.safe_dump(to_dict(meta), sort_keys=False, allow_unicode=True))
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def publish(package_dir: str | Path, name: str, *, force: bool = False) -> Path:
    """Copy a package into the model store as ``name``; an existing entry is replaced only with ``force``."""
    check_store_name(name)
    store = model_store()
    dest = store / name
    if (dest.exists() or dest.is_symlink()) and not force:
        raise ConfigError(f"model store entry {name!r} exists ({dest}); pass --force to replace it")
    tmp = _private_tmpdir(store, name)
    try:
        shutil.copytree(package_dir, tmp, dirs_exist_ok=True, copy_function=shutil.copyfile)
        _replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


@dataclasses.dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    cmvn: Any
    meta: PackageMeta
    path: Path


def load_package(name_or_dir: str, device: str = "cpu") -> LoadedModel:
    """Load a packaged model for inference (weights through safetensors only)."""
    from stk.config import load_yaml
    from stk.experiment import build_model
    from stk.features.fbank import GlobalCMVN
    from stk.tokenizer import Tokenizer

    from stk.checkpoint import CheckpointError, load_weights, state_mismatch

    path = resolve_model(name_or_dir)
    meta = from_dict(PackageMeta, load_yaml(path / "model.yaml"), f"{path}/model.yaml")
    try:
        model = build_model(meta.model, vocab_size=meta.vocab_size, input_dim=meta.fbank.num_mel_bins,
                            num_labels=meta.num_labels or None)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}/model.yaml: cannot build the model: {e}") from None
    try:
        state = load_weights(path / "model.safetensors", device=device)
    except (CheckpointError, FileNotFoundError) as e:
        raise ConfigError(str(e)) from None
    mismatch = state_mismatch(model.state_dict(), state)
    if mismatch:
        raise ConfigError(f"{path}/model.safetensors does not fit model.yaml ({mismatch})")
    model.load_state_dict(state)
    model.to(device).eval()
    if (path / "cmvn.json").exists():
        try:
            cmvn = GlobalCMVN.load(path / "cmvn.json")
        except Exception as e:
            raise ConfigError(f"{path}/cmvn.json: cannot read it: {e}") from None
    elif meta.uses_cmvn:
        raise ConfigError(f"{path}: cmvn.json is missing, but the model was trained with CMVN (model.yaml "
                          "uses_cmvn: true); decoding without it would give wrong results silently")
    else:
        cmvn = None
    try:
        tok = Tokenizer(path / "tokenizer.model")
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(str(e)) from None
    if tok.vocab_size != meta.vocab_size:
        raise ConfigError(f"{path}/tokenizer.model has {tok.vocab_size} pieces, model.yaml says vocab_size "
                          f"{meta.vocab_size}")
    return LoadedModel(model, tok, cmvn, meta, path)


def override_decode(opts: DecodeOptions, **kw: Any) -> DecodeOptions:
    """Copy of ``opts`` with the non-None keyword values replaced (type-checked)."""
    hints = typing.get_type_hints(DecodeOptions)
    changes = {k: check_value(v, hints[k], f"decode.{k}") for k, v in kw.items() if v is not None}
    return dataclasses.replace(opts, **changes)
