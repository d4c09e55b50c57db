"""Checkpoints: atomic saving, ``weights_only`` loading, RNG state capture, safetensors, averaging.

* :func:`save_checkpoint` writes through a temporary file, fsyncs and renames, so a reader (or a
  job killed by SIGKILL mid-save) never sees a half-written ``*.pt``.
* :func:`load_checkpoint` uses ``torch.load(weights_only=True)``: it never unpickles code. Keep
  checkpoint contents to tensors and plain Python types; :func:`rng_state` stores the RNG
  states (Python ``random``, NumPy, torch CPU/CUDA) in that form.
* :func:`save_weights` / :func:`load_weights`: a bare ``state_dict`` as ``.safetensors`` for
  packaged models.
* :func:`average_checkpoints` / :func:`average_best` average model weights of checkpoints;
  :func:`prune_checkpoints` deletes all but a chosen set (of the files the caller wrote).
* Every read error is a :class:`CheckpointError` with a one-line message naming the file.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from stk.utils import atomic_write

log = logging.getLogger("stk.checkpoint")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> None:
    """Save ``state`` with ``torch.save`` atomically (temp file + fsync + rename)."""
    path = Path(path)
    atomic_write(path, lambda f: torch.save(dict(state), f))
    _fsync_dir(path.parent)


class CheckpointError(RuntimeError):
    """A checkpoint or weights file cannot be read (truncated, foreign, or a pickle that would run code).

    The message is one line naming the file.
    """


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 300 else text[:297] + "..."


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises :class:`CheckpointError` (a ``RuntimeError``) naming the file when it is truncated, not
    a checkpoint, or a pickle that needs anything beyond tensors and plain types (which would run code).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        import re

        msg = str(e)
        m = re.search(r"(Unsupported global: GLOBAL [\w.]+|Unsupported operand \d+|Trying to [^\n]*?(?=\.?\n|\.?$))", msg)
        if "Weights only load failed" in msg or "WeightsUnpickler" in msg:
            why = m.group(1) if m else msg.splitlines()[0]
            raise CheckpointError(
                f"refusing to load {path}: it is a pickle that needs more than tensors and plain types "
                f"({why}); stk loads checkpoints with weights_only=True and never runs code from a file") from None
        raise CheckpointError(f"cannot load checkpoint {path}: {type(e).__name__}: {_one_line(e)} "
                              "(truncated, or not a checkpoint written by stk/torch.save)") from None


def link_last(directory: str | Path, target: str | Path, name: str = "last.pt") -> Path:
    """Atomically point ``directory/name`` at ``target`` (symlink; hard link or copy as fallback)."""
    directory = Path(directory)
    target = Path(target)
    link = directory / name
    tmp = directory / f".{name}.link.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    try:
        os.symlink(target.name, tmp)
    except OSError:
        try:
            os.link(directory / target.name, tmp)
        except OSError:
            data = (directory / target.name).read_bytes()
            atomic_write(tmp, lambda f: f.write(data))
    os.replace(tmp, link)
    _fsync_dir(directory)
    return link


# -- RNG states ----------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors and plain types (loadable with ``weights_only=True``)."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": {
            "version": int(version),
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore states captured by :func:`rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state(
        (nps["kind"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"], nps["gauss"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


# -- safetensors ---------------------------------------------------------------------------------


def save_weights(path: str | Path, state_dict: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a ``state_dict`` as safetensors, atomically (shared/tied tensors are copied apart)."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    data = save(tensors, metadata=metadata)
    atomic_write(Path(path), lambda f: f.write(data))


def load_weights(path: str | Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file into a ``state_dict``."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights not found: {path}")
    try:
        return load_file(str(path), device=device)
    except Exception as e:  # safetensors raises SafetensorError / OSError / ValueError for foreign or cut files
        raise CheckpointError(f"cannot read {path} as safetensors (truncated, or not a safetensors file: stk "
                              f"never unpickles weights): {type(e).__name__}: {_one_line(e)}") from None


# -- averaging and pruning -----------------------------------------------------------------------


def _model_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_weights(path)
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{path}: not a checkpoint or state_dict (it holds a {type(ckpt).__name__})")
    if "model" in ckpt and isinstance(ckpt["model"], Mapping):
        ckpt = ckpt["model"]
    bad = [k for k, v in ckpt.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: not model weights ({bad[0]!r} is a {type(ckpt[bad[0]]).__name__}, not a tensor)")
    return dict(ckpt)


def average_checkpoints(paths: Iterable[str | Path]) -> dict[str, torch.Tensor]:
    """Average model weights over checkpoints (``*.pt`` with a ``"model"`` entry, or safetensors).

    Floating-point tensors are averaged (accumulated in float64, cast back); integer and bool
    tensors (e.g. BatchNorm's ``num_batches_tracked``) are taken from the last checkpoint.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("average_checkpoints: no paths given")
    sums: dict[str, torch.Tensor] = {}
    last: dict[str, torch.Tensor] = {}
    for i, p in enumerate(paths):
        state = _model_state(p)
        if i == 0:
            keys = set(state)
        elif set(state) != keys:
            missing = sorted(keys ^ set(state))[:5]
            raise ValueError(f"{p}: keys differ from {paths[0]} (e.g. {missing})")
        for k, v in state.items():
            if v.is_floating_point():
                acc = v.detach().to(torch.float64)
                sums[k] = acc.clone() if i == 0 else sums[k] + acc
        last = state
    out: dict[str, torch.Tensor] = {}
    for k, v in last.items():
        out[k] = (sums[k] / len(paths)).to(v.dtype) if k in sums else v.clone()
    return out


def prune_checkpoints(directory: str | Path, keep: Iterable[str | Path], pattern: str = "step*.pt", *,
                      only: Iterable[str | Path] | None = None) -> list[Path]:
    """Delete checkpoint files matching ``pattern`` that are not in ``keep`` (names or paths).

    ``only``: delete nothing but these names (the trainer passes the checkpoints its own rotation
    wrote, so a file it did not write is never removed). Also removes temporary files left by
    interrupted saves. Returns the deleted paths.
    """
    directory = Path(directory)
    keep_names = {Path(k).name for k in keep}
    allowed = None if only is None else {Path(k).name for k in only}
    removed = []
    for p in sorted(directory.glob(pattern)):
        if allowed is not None and p.name not in allowed:
            continue
        if p.name not in keep_names and not p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(p)
    for p in directory.glob(".*.tmp"):
        p.unlink(missing_ok=True)
    return removed


def select_keep(valid_losses: Mapping[str, float | None], *, nbest: int, last: str | None) -> list[str]:
    """Names to keep: the ``nbest`` lowest valid losses plus ``last`` (``nbest=0``: keep all)."""
    if nbest <= 0:
        return sorted(valid_losses) + ([last] if last and last not in valid_losses else [])
    scored = sorted((v, n) for n, v in valid_losses.items() if v is not None)
    keep = [n for _, n in scored[:nbest]]
    if last is not None and last not in keep:
        keep.append(last)
    return keep


def seed_everything(seed: int) -> None:
    """Seed Python ``random``, NumPy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def average_best(exp_dir: str | Path, n: int) -> dict[str, torch.Tensor]:
    """Average the model weights of the ``n`` kept checkpoints with the lowest valid loss.

    Reads the best-valid bookkeeping of ``exp_dir/checkpoints/last.pt`` (written by the trainer).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ckpt_dir = Path(exp_dir) / "checkpoints"
    best = load_checkpoint(ckpt_dir / "last.pt")["trainer"]["best"]
    scored = sorted((v, k) for k, v in best.items()  # a NaN valid loss (older runs recorded them) is never best
                    if v is not None and v == v and abs(v) != float("inf") and (ckpt_dir / k).exists())
    if not scored:
        raise ValueError(f"{ckpt_dir}: no checkpoint with a valid loss to average")
    if len(scored) < n:
        log.warning("only %d checkpoints with a valid loss are kept; averaging those", len(scored))
    chosen = [ckpt_dir / k for _, k in scored[:n]]
    log.info("averaging %s", ", ".join(p.name for p in chosen))
    return average_checkpoints(chosen)


def find_latest(ckpt_dir: str | Path) -> tuple[Path, dict[str, Any], list[Path]] | None:
    """``(path, state, unreadable)`` of the newest readable checkpoint: ``last.pt``, else the newest
    loadable ``step*.pt``; ``unreadable`` lists the newer files that failed to load. None if the
    directory holds no checkpoint; :class:`CheckpointError` naming the files if none is readable."""
    ckpt_dir = Path(ckpt_dir)
    cands = [ckpt_dir / "last.pt"] if (ckpt_dir / "last.pt").exists() else []
    cands += sorted(ckpt_dir.glob("step*.pt"), reverse=True)
    bad: list[Path] = []
    errors: list[str] = []
    for p in cands:
        if p.resolve() in bad:
            continue
        try:
            return p.resolve(), load_checkpoint(p, map_location="cpu"), bad
        except (RuntimeError, FileNotFoundError) as e:
            log.warning("skipping unreadable checkpoint %s: %s", p, e)
            bad.append(p.resolve())
            errors.append(f"{p.name} -> {p.resolve().name}" if p.is_symlink() else p.name)
    if bad:
        raise CheckpointError(
            f"{ckpt_dir}: no checkpoint is readable ({', '.join(errors)}); nothing was changed. Move them away "
            "or start over on purpose with `stk train --restart` (which keeps them in checkpoints.prev*)")
    return None


def latest_checkpoint(ckpt_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """``(path, state)`` of ``last.pt``, else of the newest loadable ``step*.pt``; None if there is
    none; :class:`CheckpointError` if there are checkpoints but none is readable."""
    found = find_latest(ckpt_dir)
    return None if found is None else found[:2]


def state_mismatch(expected: Mapping[str, torch.Tensor], got: Mapping[str, Any]) -> str | None:
    """One line describing how ``got`` (weights from a file) fails to fit ``expected`` (a model's
    ``state_dict``): missing and unexpected names, shape differences; None when it fits."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [f"{k} {tuple(got[k].shape)} vs {tuple(v.shape)} in the model" for k, v in expected.items()
              if k in got and isinstance(got[k], torch.Tensor) and tuple(got[k].shape) != tuple(v.shape)]
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es), e.g. {'; '.join(shapes[:2])}")
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {', '.join(missing[:3])}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, e.g. {', '.join(unexpected[:3])}")
    return "; ".join(parts) or None


def non_finite_tensors(module: torch.nn.Module) -> list[str]:
    """Names of floating-point parameters and buffers of ``module`` holding NaN or inf."""
    named = list(module.named_parameters()) + list(module.named_buffers())
    return [n for n, t in named if t.is_floating_point() and not bool(torch.isfinite(t.detach()).all())]


def plot_history(history: Mapping[str, list[list[float]]], path: str | Path) -> None:
    """Draw the training history as a PNG (Agg, atomic): losses (``train``, ``valid``), the learning
    rate (``lr``) and the task metrics (every other key, e.g. ``valid/acc``, ``train/paired/ctc``),
    each ``[[step, value], …]``; a panel is drawn only when it has points."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    losses = {k: v for k, v in history.items() if k in ("train", "valid") and v}
    lr = history.get("lr") or []
    metrics = {k: v for k, v in history.items() if k not in ("train", "valid", "lr") and v}
    panels = [("loss", losses)] + ([("learning rate", {"lr": lr})] if lr else []) + ([("task metrics", metrics)] if metrics else [])
    fig = Figure(figsize=(6, 3.2 * len(panels)))
    FigureCanvasAgg(fig)
    for i, (ylabel, series) in enumerate(panels, 1):
        ax = fig.add_subplot(len(panels), 1, i)
        for key, pts in series.items():
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if key.startswith("valid") else None,
                    label=key, markersize=3)
        ax.set(xlabel="step", ylabel=ylabel)
        if ylabel == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        if series:
            ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=80))
