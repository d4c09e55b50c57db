"""Training loop: DDP, gradient accumulation, multi-stream batches, NaN guard, exact resume.

The settings (:class:`OptimConfig`, :class:`TrainerConfig`) live in :mod:`stk.optim` and the
process-group helpers in :mod:`stk.distributed`; both are re-exported here.

Usage (single process, or under ``torchrun --nproc_per_node N``)::

    from stk.trainer import OptimConfig, TrainerConfig, train
    metrics = train(model, {"paired": train_ds}, valid_ds, exp_dir="exp/asr",
                    optim=OptimConfig(lr=1e-3, warmup_steps=1000),
                    trainer=TrainerConfig(max_epochs=20, accum_grad=2),
                    batch={"paired": {"max_frames": 20000}})

A model's ``forward(batch)`` returns ``{"loss", "stats"[, "weight"]}``; ``batch["stream"]`` names
the batch's data stream. Outputs in ``exp_dir``: ``checkpoints/step*.pt`` + ``last.pt``,
``tensorboard/``, ``loss.png``, ``train.log``. A restarted run resumes from ``last.pt`` exactly
(weights, optimizer, scheduler, data position, RNG states of main-process randomness: dropout,
``__getitem__`` with ``num_workers=0``; loader workers are re-seeded). Multi-task models whose
streams use different parameters need ``find_unused_parameters: true`` under DDP.

Nothing is lost, nothing is silently wrong:

* an unreadable newest checkpoint is set aside (``*.unreadable``) and the run resumes from the
  newest readable one; if none is readable, :class:`~stk.checkpoint.CheckpointError` (``resume:
  false`` starts over, moving the old ``checkpoints/`` to ``checkpoints.prev<N>/``);
* the keep-N rotation deletes only checkpoints it wrote itself;
* a skipped (non-finite) step leaves every persistent buffer (BatchNorm statistics, quantiser
  counters) as it was before the step, and a non-finite parameter or buffer at save time raises
  :class:`NonFiniteStateError` instead of writing it; a non-finite valid loss is never "best";
* SIGTERM/SIGINT (Slurm preemption, Ctrl-C): the current step finishes, a checkpoint is written
  and :class:`TrainingInterrupted` is raised (``stk train`` exits with :data:`EXIT_INTERRUPTED`);
  the next run resumes exactly. A second SIGINT aborts at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.distributed as dist
from torch import nn

from stk.amp import Precision, resolve_amp, set_grad_checkpointing
from stk.checkpoint import (CheckpointError, average_best, find_latest, latest_checkpoint,  # noqa: F401
                            link_last, non_finite_tensors, plot_history, prune_checkpoints, rng_state,
                            save_checkpoint, seed_everything, select_keep, set_rng_state, state_mismatch)
from stk.config import from_dict, save_config
from stk.data.mixing import MixedStreams
from stk.data.sampler import BatchConfig, make_loader, make_sampler
from stk.distributed import _gather, _to_device, init_distributed  # noqa: F401
from stk.optim import OptimConfig, TrainerConfig, build_optimizer, lr_factor  # noqa: F401
from stk.utils import setup_logging

log = logging.getLogger("stk.trainer")


class NonFiniteLossError(RuntimeError):
    """Too many consecutive optimizer steps had a non-finite loss or gradient."""


class NonFiniteStateError(RuntimeError):
    """A parameter or buffer holds NaN/inf at save time (the checkpoint is not written)."""


EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: stopped by SIGTERM/SIGINT after writing a checkpoint; run again to resume


class TrainingInterrupted(Exception):
    """SIGTERM/SIGINT: the step finished and a checkpoint was written; ``signum`` is the signal."""

    def __init__(self, signum: int, path: Path | None) -> None:
        self.signum, self.path = signum, path
        super().__init__(f"stopped by {signal.Signals(signum).name} after writing {path}; run the same command "
                         "again to resume")


def _persistent_buffers(model: nn.Module) -> list[tuple[nn.Module, str]]:
    out = []
    for mod in model.modules():
        for name, buf in mod._buffers.items():
            if buf is not None and name not in mod._non_persistent_buffers_set:
                out.append((mod, name))
    return out


class Trainer:
    """Trains ``model`` over a :class:`MixedStreams` (under DDP: on every rank, after
    :func:`init_distributed`). ``valid_stream``: ``batch["stream"]`` of valid batches (default: the
    primary stream); ``total_steps``: the ``cosine`` schedule length (default: ``max_steps``)."""

    def __init__(self, model: nn.Module, *, exp_dir: str | Path, optim: OptimConfig, config: TrainerConfig,
                 train_data: MixedStreams, valid_data: Iterable[Any] | None = None, valid_stream: str | None = None,
                 total_steps: int | None = None, device: torch.device | None = None) -> None:
        self.cfg, self.optim_cfg = config, optim
        self.exp_dir = Path(exp_dir)
        self.ckpt_dir = self.exp_dir / "checkpoints"
        distributed = dist.is_available() and dist.is_initialized()
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        self.device = device = device or torch.device("cuda" if config.device != "cpu" and torch.cuda.is_available()
                                                      else "cpu")
        self.precision = Precision(resolve_amp(config.amp, config.use_amp), device)
        self.amp = self.precision.scaler.is_enabled()  # fp16: loss scaling (unscale, skipped-step accounting)
        self.data, self.valid_data, self.valid_stream = train_data, valid_data, valid_stream or train_data.primary
        seed_everything(config.seed + self.rank)
        if config.grad_checkpointing and not set_grad_checkpointing(model):
            raise ValueError(f"trainer.grad_checkpointing: {type(model).__name__} has no layer stack that supports "
                             "it (Conformer layers do)")
        self.model = model.to(device)
        if config.sync_batchnorm and self.world > 1 and device.type == "cuda":  # before the optimizer sees it
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        elif config.sync_batchnorm and self.world > 1:
            log.warning("trainer.sync_batchnorm needs CUDA (torch's SyncBatchNorm); BatchNorm stays per rank")
        self.optimizer = build_optimizer([p for p in self.model.parameters() if p.requires_grad], optim)
        total = total_steps or config.max_steps or None
        if optim.scheduler == "cosine" and not total:
            raise ValueError("cosine scheduler needs total_steps (or trainer.max_steps)")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(optim, s + 1, total))
        self.scaler = self.precision.scaler
        self.step = self.nan_skipped = self.consecutive_bad = 0
        self._first_bad_ids: list[Any] = []
        self._stop_signal: int | None = None
        self._stop = False
        self._buffers = _persistent_buffers(self.model)
        self._buffer_snapshot: list[torch.Tensor] | None = None
        self._rotation: set[str] = set()  # checkpoint names written by this run's rotation (and its resumed bookkeeping)
        self.best: dict[str, float | None] = {}  # kept checkpoint name -> its valid loss
        self.history: dict[str, list[list[float]]] = {"train": [], "valid": []}
        self.last_valid: tuple[int, dict[str, float]] | None = None
        self.last_train_loss: float | None = None
        self._saved_step, self._pending_rng, self._writer, self._interval = -1, None, None, {}
        if not config.resume:
            self._set_aside_old_checkpoints()
        self.resumed_from = self._resume() if config.resume else None
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        if self.world > 1:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=config.find_unused_parameters)

    def _set_aside_old_checkpoints(self) -> None:
        """``resume: false``: keep an earlier run's checkpoints (moved to ``checkpoints.prev<N>``)."""
        if self.rank != 0 or not self.ckpt_dir.is_dir() or not any(self.ckpt_dir.glob("*.pt")):
            return
        n = 1
        while (dest := self.ckpt_dir.with_name(f"checkpoints.prev{n}")).exists():
            n += 1
        self.ckpt_dir.rename(dest)
        log.warning("starting over (resume off): the earlier checkpoints were moved to %s", dest)

    def _resume(self) -> Path | None:
        found = find_latest(self.ckpt_dir)
        if found is None:
            return None
        path, ck, unreadable = found
        mismatch = state_mismatch(self.model.state_dict(), ck.get("model", {}))
        if mismatch:
            raise CheckpointError(f"{path} does not fit the model built from the config ({mismatch}); change the "
                                  "config back, or use another exp dir")
        self.model.load_state_dict(ck["model"])
        try:
            self.optimizer.load_state_dict(ck["optimizer"])
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{path}: its optimizer state does not fit the trained parameters (was `freeze` "
                                  f"changed?): {e}") from None
        self.scheduler.load_state_dict(ck["scheduler"])
        if self.amp and "scaler" in ck:
            self.scaler.load_state_dict(ck["scaler"])
        self.data.load_state_dict(ck["mixer"])
        t = ck["trainer"]
        self.step, self.nan_skipped, self.consecutive_bad = t["step"], t["nan_skipped"], t["consecutive_bad"]
        self.best, self.history = dict(t["best"]), {k: list(v) for k, v in t["history"].items()}
        self.last_train_loss, lv, self._saved_step = t["last_train_loss"], t["last_valid"], self.step
        self.last_valid = (lv["step"], dict(lv["stats"])) if lv is not None else None
        if len(ck["rng"]) == self.world:
            self._pending_rng = ck["rng"][self.rank]
        else:
            log.warning("checkpoint has RNG states of %d ranks, running %d: reseeding", len(ck["rng"]), self.world)
            seed_everything(self.cfg.seed + self.rank + 7919 * self.step)
        self._rotation = set(self.best)
        if self.rank == 0 and unreadable:
            for p in unreadable:
                if p.exists() and not p.is_symlink() and p.name != "last.pt":
                    aside = p.with_name(p.name + ".unreadable")
                    p.rename(aside)
                    log.warning("unreadable checkpoint %s kept as %s (never deleted)", p, aside.name)
            if path.name != "last.pt":
                link_last(self.ckpt_dir, path.name)
        log.info("resumed from %s (epoch %d, step %d)", path, self.data.epoch + 1, self.step)
        return path

    def _save(self, mixer_state: dict[str, Any], plot: bool = False) -> None:
        """Checkpoint (collective: every rank calls it; rank 0 writes), and redraw ``loss.png``."""
        bad = non_finite_tensors(self.model)
        if bad:
            raise NonFiniteStateError(
                f"step {self.step}: non-finite values in {len(bad)} tensor(s), e.g. {', '.join(bad[:3])}; the "
                f"checkpoint was not written (earlier ones in {self.ckpt_dir} are kept)")
        rngs = _gather(rng_state())
        name = f"step{self.step:08d}.pt"
        valid = self.last_valid[1]["loss"] if self.last_valid and self.last_valid[0] == self.step else None
        if valid is not None and not math.isfinite(valid):
            log.warning("step %d: valid loss is %s; %s is kept but never counted as best", self.step, valid, name)
            valid = None
        if valid is not None or name not in self.best:
            self.best[name] = valid
        keep = select_keep(self.best, nbest=self.cfg.keep_nbest, last=name)
        self.best = {k: v for k, v in self.best.items() if k in keep}
        self._saved_step = self.step
        rotation, self._rotation = self._rotation | {name}, set(keep)
        if self.rank != 0:
            return
        lv = {"step": self.last_valid[0], "stats": self.last_valid[1]} if self.last_valid else None
        state = {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "mixer": mixer_state, "rng": rngs,
            "trainer": {"step": self.step, "epoch": self.data.epoch, "nan_skipped": self.nan_skipped,
                        "consecutive_bad": self.consecutive_bad, "best": dict(self.best), "history": self.history,
                        "last_valid": lv, "last_train_loss": self.last_train_loss},
            "config": {"optim": dataclasses.asdict(self.optim_cfg), "trainer": dataclasses.asdict(self.cfg)},
        }
        if self.amp:
            state["scaler"] = self.scaler.state_dict()
        try:
            save_checkpoint(self.ckpt_dir / name, state)
        except OSError as e:
            raise CheckpointError(f"cannot write checkpoint {self.ckpt_dir / name}: {e.strerror or e}; no partial "
                                  f"file was left and the earlier checkpoints are kept") from None
        link_last(self.ckpt_dir, name)
        prune_checkpoints(self.ckpt_dir, keep, only=rotation)
        if plot:
            plot_history(self.history, self.exp_dir / "loss.png")

    def _snapshot_buffers(self) -> None:
        self._buffer_snapshot = [m._buffers[n].detach().clone() for m, n in self._buffers]

    def _restore_buffers(self) -> None:
        if self._buffer_snapshot is not None:
            with torch.no_grad():
                for (m, n), saved in zip(self._buffers, self._buffer_snapshot):
                    m._buffers[n].copy_(saved)

    def _forward_backward(self, name: str, batch: dict[str, Any], sync: bool) -> tuple[bool, list[Any]]:
        utt_ids = list(batch.get("utt_ids", []))
        batch = _to_device({**batch, "stream": name}, self.device)
        ctx = self.ddp.no_sync() if (self.ddp is not None and not sync) else contextlib.nullcontext()
        with ctx:
            with self.precision.autocast():
                out = (self.ddp or self.model)(batch)
            loss = out["loss"]
            finite = bool(torch.isfinite(loss.detach()).all())
            self.scaler.scale(loss.float() / self.cfg.accum_grad).backward()
        if finite:
            s = self._interval.setdefault(name, {"n": 0, "sums": {}})
            s["n"] += 1
            for k, v in {"loss": float(loss.detach()), **out.get("stats", {})}.items():
                s["sums"][k] = s["sums"].get(k, 0.0) + float(v)
        return finite, utt_ids

    def _optimizer_step(self, all_finite: bool, utt_ids: list[Any]) -> bool:
        """Clip and step, or skip the step when any rank saw a non-finite loss/grad."""
        if self.amp:
            self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = self.optim_cfg.grad_clip if self.optim_cfg.grad_clip > 0 else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(params, clip)) if params else 0.0
        local_bad = not all_finite or (not self.amp and not math.isfinite(norm))
        bad, self._stop = local_bad, self._stop_signal is not None
        if self.world > 1:  # one collective for both flags: every rank skips together and stops together
            flag = torch.tensor([float(bad), float(self._stop)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            bad, self._stop = bool(flag[0].item() > 0), bool(flag[1].item() > 0)
        if bad:
            self._restore_buffers()  # the forward pass already moved BatchNorm statistics
            self.optimizer.zero_grad(set_to_none=True)
            if self.amp:
                self.scaler.update()
            self.nan_skipped, self.consecutive_bad = self.nan_skipped + 1, self.consecutive_bad + 1
            ids = [u for part in _gather(utt_ids if local_bad else []) for u in part]
            if self.consecutive_bad == 1:
                self._first_bad_ids = ids
            log.warning("non-finite loss/grad at step %d: step skipped (%d in total, %d in a row); utt_ids: %s",
                        self.step + 1, self.nan_skipped, self.consecutive_bad, ids)
            if self.consecutive_bad >= self.cfg.max_bad_steps:
                first = ", ".join(map(str, self._first_bad_ids[:8])) or "unknown"
                raise NonFiniteLossError(
                    f"{self.consecutive_bad} consecutive steps with a non-finite loss or gradient after step "
                    f"{self.step} (first offending utterances: {first}); check those utterances, lower the "
                    "learning rate, or raise trainer.max_bad_steps")
            return False
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step, self.consecutive_bad, self._first_bad_ids = self.step + 1, 0, []
        self._interval["_norm"] = self._interval.get("_norm", 0.0) + norm
        self._interval["_steps"] = self._interval.get("_steps", 0) + 1
        return True

    def _log_interval(self) -> None:
        iv, self._interval = self._interval, {"_t0": time.time()}
        steps, norm, t0 = iv.pop("_steps", 0), iv.pop("_norm", 0.0), iv.pop("_t0", time.time())
        n_all = sum(s["n"] for s in iv.values())
        if not steps or not n_all:
            return
        lr = self.optimizer.param_groups[0]["lr"]
        loss = sum(s["sums"]["loss"] for s in iv.values()) / n_all
        self.last_train_loss = loss
        self.history["train"].append([self.step, loss])
        self.history.setdefault("lr", []).append([self.step, lr])
        scalars = {"train/loss": loss, "train/lr": lr, "train/grad_norm": norm / steps}
        parts = []
        for name, s in sorted(iv.items()):
            avg = {k: v / s["n"] for k, v in s["sums"].items()}
            parts.append(f"[{name} n={s['n']} " + " ".join(f"{k}={v:.4g}" for k, v in avg.items()) + "]")
            scalars.update({f"train/{name}/{k}": v for k, v in avg.items()})
            for k, v in avg.items():  # task metrics (accuracy, CTC/attention losses) for loss.png
                if k != "loss":
                    self.history.setdefault(f"train/{name}/{k}", []).append([self.step, v])
        log.info("epoch %d step %d lr %.3e loss %.4g grad_norm %.3g %s %.2f step/s", self.data.epoch + 1, self.step,
                 lr, loss, norm / steps, " ".join(parts), steps / max(time.time() - t0, 1e-9))
        self._scalars(scalars)

    def _scalars(self, scalars: dict[str, float]) -> None:
        if self._writer is not None:
            for k, v in scalars.items():
                self._writer.add_scalar(k, v, self.step)
            self._writer.flush()

    def validate(self) -> dict[str, float]:
        """Valid loss/stats averaged with each batch's ``"weight"`` over all ranks' shards.

        Collective under DDP. The training RNG states are left untouched.
        """
        if self.valid_data is None:
            return {}
        saved = rng_state()
        sums: dict[str, float] = {"__weight": 0.0}
        self.model.eval()
        bar = getattr(self, "_progress", None)  # the training bars' Progress (None off a terminal)
        task = bar.add_task("validation", total=len(self.valid_data)) if bar is not None else None
        try:
            with torch.no_grad(), self.precision.autocast():
                for batch in self.valid_data:
                    if task is not None:
                        bar.advance(task)
                    out = self.model(_to_device({**batch, "stream": self.valid_stream}, self.device))
                    w = float(out.get("weight", 1.0))
                    for k, v in {**out.get("stats", {}), "loss": out["loss"], "__weight": 1.0}.items():
                        sums[k] = sums.get(k, 0.0) + float(v) * w
        finally:
            if task is not None:
                bar.remove_task(task)
            self.model.train()
            set_rng_state(saved)
        merged: dict[str, float] = {}
        for part in _gather(sums):
            for k, v in part.items():
                merged[k] = merged.get(k, 0.0) + v
        weight = merged.pop("__weight")
        if weight <= 0:
            raise ValueError("validation produced no batches (or zero total weight)")
        result = {k: v / weight for k, v in merged.items()}
        self.last_valid = (self.step, result)
        self.history["valid"].append([self.step, result["loss"]])
        for k, v in result.items():
            if k != "loss":
                self.history.setdefault(f"valid/{k}", []).append([self.step, v])
        log.info("valid epoch %d step %d: %s", getattr(self, "_epoch_now", self.data.epoch + 1), self.step,
                 " ".join(f"{k}={v:.4g}" for k, v in result.items()))
        self._scalars({f"valid/{k}": v for k, v in result.items()})
        return result

    def _install_signal_handlers(self) -> dict[int, Any]:
        """SIGTERM/SIGINT set a flag checked after each optimizer step (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_signal(signum: int, frame: Any) -> None:
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop at once
            self._stop_signal = signum
            log.warning("%s received: finishing the current step, then writing a checkpoint and stopping",
                        signal.Signals(signum).name)

        previous = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, on_signal)
        return previous

    def _interrupt(self) -> None:
        path = self.ckpt_dir / f"step{self._saved_step:08d}.pt"
        log.warning("stopped at step %d by %s; checkpoint %s written: run again to resume", self.step,
                    signal.Signals(self._stop_signal or signal.SIGTERM).name, path)
        raise TrainingInterrupted(self._stop_signal or signal.SIGTERM, path)

    def _done(self) -> bool:
        if self.cfg.max_steps > 0:
            return self.step >= self.cfg.max_steps
        return self.data.epoch >= self.cfg.max_epochs

    def _run_epoch(self, progress: Any) -> bool:
        """Train until the epoch ends (True) or ``max_steps`` is reached mid-epoch (False)."""
        cfg = self.cfg
        self._epoch_now = self.data.epoch + 1  # the epoch being trained (data.epoch moves on at its end)
        task = progress.add_task(f"epoch {self._epoch_now}", total=len(self.data))
        n_micro, all_finite, utt_ids = 0, True, []
        for name, batch in self.data:
            is_last = self.data.last_in_epoch()
            if n_micro == 0 and self._buffers:
                self._snapshot_buffers()
            n_micro += 1
            final = n_micro == cfg.accum_grad or is_last
            finite, ids = self._forward_backward(name, batch, sync=final)
            all_finite, utt_ids = all_finite and finite, utt_ids + ids
            progress.advance(task)
            if not final:
                continue
            stepped = self._optimizer_step(all_finite, utt_ids)
            n_micro, all_finite, utt_ids = 0, True, []
            if self._stop and not is_last:  # SIGTERM/SIGINT: this step is done; checkpoint and stop
                self._save(self.data.state_dict(), plot=True)
                self._interrupt()
            if not stepped:
                continue
            if self.step % cfg.log_interval == 0:
                self._log_interval()
            validate = cfg.valid_interval_steps and self.step % cfg.valid_interval_steps == 0
            if validate and self.valid_data is not None:
                self.validate()
            limit = cfg.max_steps > 0 and self.step >= cfg.max_steps
            interval = cfg.save_interval_steps and self.step % cfg.save_interval_steps == 0
            if not is_last and (validate or interval or limit):
                self._save(self.data.state_dict(), plot=bool(limit))
            if limit and not is_last:
                progress.remove_task(task)
                return False
        progress.remove_task(task)
        return True

    def fit(self) -> dict[str, Any]:
        """Train to ``max_epochs``/``max_steps`` (resumed if a checkpoint exists); return metrics."""
        from rich.progress import Progress

        from stk.console import console

        stk_log, handler = logging.getLogger("stk"), None
        prev_level = stk_log.level
        stk_log.setLevel(prev_level or logging.INFO)
        if self.rank == 0:
            self.exp_dir.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(self.exp_dir / "train.log", encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            stk_log.addHandler(handler)
            if self.cfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                purge = self.step + 1 if self.resumed_from else None
                self._writer = SummaryWriter(str(self.exp_dir / "tensorboard"), purge_step=purge)
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng)
        self._interval = {"_t0": time.time()}
        show = self.rank == 0 and self.cfg.progress and sys.stderr.isatty()
        previous = self._install_signal_handlers()
        try:
            with Progress(console=console(), disable=not show, transient=True) as progress:
                self._progress = progress if show else None
                while not self._done():
                    if self._run_epoch(progress):
                        if not self.cfg.valid_interval_steps and self.valid_data is not None:
                            self.validate()
                        self._save(self.data.state_dict(), plot=True)
                        if self._stop and not self._done():
                            self._interrupt()
            if self._saved_step != self.step:
                self._save(self.data.state_dict(), plot=True)
        finally:
            for signum, handler_fn in previous.items():
                signal.signal(signum, handler_fn)
            if self._writer is not None:
                self._writer.close()
            stk_log.setLevel(prev_level)
            if handler is not None:
                stk_log.removeHandler(handler)
                handler.close()
        scored = sorted((v, k) for k, v in self.best.items() if v is not None and math.isfinite(v))
        return {"step": self.step, "epoch": self.data.epoch, "train_loss": self.last_train_loss,
                "valid": self.last_valid[1] if self.last_valid else None,
                "best_valid_loss": scored[0][0] if scored else None,
                "best_checkpoints": [k for _, k in scored], "nan_skipped": self.nan_skipped}


def _as(cls: type, value: Any) -> Any:
    return value if isinstance(value, cls) else from_dict(cls, value)


def train(model: nn.Module, train_streams: Mapping[str, Any], valid: Any | None = None, *,
          exp_dir: str | Path, optim: OptimConfig | dict[str, Any], trainer: TrainerConfig | dict[str, Any],
          batch: Mapping[str, BatchConfig | dict[str, Any]], valid_batch: BatchConfig | dict[str, Any] | None = None,
          num_workers: int = 0, on_start: Callable[[], None] | None = None) -> dict[str, Any]:
    """Build samplers, loaders and the stream mixer (DDP-aware), train, return the final metrics.

    ``train_streams``: name -> dataset (``lengths``, ``langs``, ``collate``); the first is the
    primary stream, whose passes are the epochs; a stream whose ``batch.ratio`` is 0 is left out.
    ``batch``: name -> :class:`BatchConfig` (or its fields as a dict). ``valid_batch`` defaults to the primary's settings, unshuffled.
    ``on_start``: called on rank 0 once the trainer is built and any resume checkpoint was checked
    against the model, before training (``stk train`` writes ``config.yaml`` there, so a run that
    cannot resume changes nothing).
    """
    optim, cfg = _as(OptimConfig, optim), _as(TrainerConfig, trainer)
    bcfg = {k: _as(BatchConfig, v) for k, v in batch.items()}
    if not train_streams or set(bcfg) != set(train_streams):
        raise ValueError(f"batch settings for {sorted(bcfg)} do not match train streams {sorted(train_streams)}")
    off = [n for n in train_streams if bcfg[n].ratio == 0]
    train_streams = {n: ds for n, ds in train_streams.items() if n not in off}
    if not train_streams:
        raise ValueError("every train stream has batch.ratio 0")
    if not logging.getLogger().handlers:
        setup_logging()
    rank, world, device, owns = init_distributed(cfg.device)
    prev_level = log.level
    log.setLevel(logging.ERROR if rank else prev_level)  # rank 0 logs (with all ranks' NaN utt_ids)
    try:
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        if rank == 0 and off:
            log.info("streams disabled by batch.ratio 0: %s", ", ".join(off))
        kw = {"num_workers": num_workers, "pin_memory": device.type == "cuda"}
        loaders = {name: make_loader(ds, make_sampler(ds, bcfg[name], seed=cfg.seed + 1009 * i, num_replicas=world,
                                                      rank=rank), seed=cfg.seed + i, **kw)
                   for i, (name, ds) in enumerate(train_streams.items())}
        mixer = MixedStreams(loaders, {n: bcfg[n].ratio for n in loaders}, seed=cfg.seed)
        valid_loader = None
        if valid is not None:
            vb = _as(BatchConfig, valid_batch) if valid_batch is not None else bcfg[mixer.primary]
            vb = dataclasses.replace(vb, shuffle=False, temperature=0.0, drop_last=False)
            valid_loader = make_loader(valid, make_sampler(valid, vb).epoch_batches(0)[rank::world], seed=cfg.seed, **kw)
        total = cfg.max_steps or cfg.max_epochs * math.ceil(len(mixer) / cfg.accum_grad)
        runner = Trainer(model, exp_dir=exp_dir, optim=optim, config=cfg, train_data=mixer,
                         valid_data=valid_loader, total_steps=total, device=device)
        if rank == 0:  # after the resume check: a run that cannot resume leaves the exp dir as it was
            save_config({"optim": optim, "trainer": cfg, "batch": bcfg}, Path(exp_dir) / "trainer_config.yaml")
            if on_start is not None:
                on_start()
        return runner.fit()
    finally:
        log.setLevel(prev_level)
        if owns and dist.is_initialized():
            dist.destroy_process_group()
