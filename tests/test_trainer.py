"""Trainer: loss falls, NaN steps are skipped, SIGKILL + restart is exact, 2-process DDP agrees."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from stk.checkpoint import CheckpointError, average_best, load_checkpoint
from stk.config import from_dict
from stk.trainer import (EXIT_INTERRUPTED, NonFiniteLossError, NonFiniteStateError, OptimConfig, TrainerConfig,
                         TrainingInterrupted, lr_factor, train)

DIM = 4


class ToyDS:
    """Regression examples: ``x (L, DIM)``, target ``y = mean_t(x) · w``; ``x`` gets random noise
    (from the global torch RNG) when ``noise`` is set; ``nan_ids`` examples contain a NaN; loading
    stalls once the file ``stall_on`` exists (so a test can SIGKILL a run at a known point)."""

    def __init__(self, n: int, seed: int, *, noise: float = 0.0, nan_ids: tuple[int, ...] = (),
                 stall_on: str | None = None, delay: float = 0.0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.lengths = torch.randint(2, 9, (n,), generator=g).tolist()
        self.langs = ["a" if i % 4 else "b" for i in range(n)]
        self.x = [torch.randn(L, DIM, generator=g) for L in self.lengths]
        w = torch.tensor([1.0, -2.0, 0.5, 3.0])
        self.y = [float(x.mean(0) @ w) for x in self.x]
        self.noise, self.nan_ids, self.stall_on, self.delay = noise, set(nan_ids), stall_on, delay

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> dict:
        if self.stall_on and os.path.exists(self.stall_on):
            time.sleep(600)
        if self.delay:
            time.sleep(self.delay)
        x = self.x[i].clone()
        if self.noise:
            x += self.noise * torch.randn_like(x)
        if i in self.nan_ids:
            x[0, 0] = float("nan")
        return {"utt_id": f"utt{i:03d}", "x": x, "y": self.y[i]}

    def collate(self, examples: list[dict]) -> dict:
        T = max(e["x"].shape[0] for e in examples)
        x = torch.zeros(len(examples), T, DIM)
        for b, e in enumerate(examples):
            x[b, : e["x"].shape[0]] = e["x"]
        return {"utt_ids": [e["utt_id"] for e in examples], "x": x,
                "x_lens": torch.tensor([e["x"].shape[0] for e in examples]),
                "y": torch.tensor([e["y"] for e in examples])}


class ToyModel(nn.Module):
    """Masked mean-pool -> MLP with dropout; one head per stream (a toy multi-task model)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(DIM, 16)
        self.drop = nn.Dropout(0.1)
        self.heads = nn.ModuleDict({"paired": nn.Linear(16, 1), "extra": nn.Linear(16, 1)})

    def forward(self, batch: dict) -> dict:
        mask = (torch.arange(batch["x"].shape[1])[None] < batch["x_lens"][:, None]).float()
        pooled = (batch["x"] * mask[..., None]).sum(1) / batch["x_lens"][:, None]
        h = self.drop(torch.tanh(self.enc(pooled)))
        head = self.heads[batch["stream"]] if batch["stream"] in self.heads else self.heads["paired"]
        pred = head(h).squeeze(-1)
        loss = ((pred - batch["y"]) ** 2).mean()
        return {"loss": loss, "stats": {"mse": float(loss.detach())}, "weight": float(len(batch["y"]))}


class BatchNormToy(ToyModel):
    """ToyModel with a BatchNorm after the encoder: running statistics are buffers the forward updates."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(16)

    def forward(self, batch: dict) -> dict:
        mask = (torch.arange(batch["x"].shape[1])[None] < batch["x_lens"][:, None]).float()
        h = self.enc(batch["x"])
        h = self.bn(h.reshape(-1, h.shape[-1])).reshape(h.shape)  # BatchNorm over (B·T, 16) frames
        pooled = (h * mask[..., None]).sum(1) / batch["x_lens"][:, None]
        pred = self.heads["paired"](self.drop(torch.tanh(pooled))).squeeze(-1)
        loss = ((pred - batch["y"]) ** 2).mean()
        return {"loss": loss, "stats": {"mse": float(loss.detach())}, "weight": float(len(batch["y"]))}


def run_toy(exp_dir: str | Path, *, stall_on: str | None = None, max_epochs: int = 4, nan_ids: tuple[int, ...] = (),
            temperature: float = 2.0, model_cls: type = ToyModel, delay: float = 0.0,
            **trainer_kw) -> tuple[dict, dict]:
    """Train the toy model on two streams; returns ``(metrics, final state_dict)``."""
    torch.manual_seed(1234)
    model = model_cls()
    streams = {"paired": ToyDS(40, 1, noise=0.05, nan_ids=nan_ids, stall_on=stall_on, delay=delay),
               "extra": ToyDS(16, 2, noise=0.05)}
    conf = {"max_epochs": max_epochs, "accum_grad": 2, "log_interval": 2, "save_interval_steps": 3,
            "keep_nbest": 2, "seed": 7, "num_threads": 1, "device": "cpu", "tensorboard": False, "progress": False}
    conf.update(trainer_kw)
    metrics = train(model, streams, ToyDS(12, 3), exp_dir=exp_dir,
                    optim={"lr": 0.03, "scheduler": "constant", "warmup_steps": 2, "grad_clip": 5.0},
                    trainer=from_dict(TrainerConfig, conf),
                    batch={"paired": {"max_frames": 24, "temperature": temperature}, "extra": {"max_frames": 16, "ratio": 0.5}})
    return metrics, {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_lr_schedules_and_config_errors():
    cfg = OptimConfig(lr=1.0, warmup_steps=100)
    assert lr_factor(cfg, 50) == pytest.approx(0.5)
    assert lr_factor(cfg, 100) == pytest.approx(1.0)
    assert lr_factor(cfg, 400) == pytest.approx(0.5)
    cos = OptimConfig(scheduler="cosine", warmup_steps=10, lr=1.0, min_lr=0.1)
    assert lr_factor(cos, 5, 110) == pytest.approx(0.5)
    assert lr_factor(cos, 60, 110) == pytest.approx(0.55)
    assert lr_factor(cos, 110, 110) == pytest.approx(0.1)
    for cls, bad in ((TrainerConfig, {"accum_grad": 0}), (TrainerConfig, {"max_epochs": 0}),
                     (TrainerConfig, {"use_amp": True, "device": "cpu"}), (OptimConfig, {"lr": 0.0}),
                     (OptimConfig, {"scheduler": "warmuplr", "warmup_steps": 0}), (OptimConfig, {"name": "sgd"})):
        with pytest.raises(ValueError):
            from_dict(cls, bad)


def test_loss_falls_and_outputs_written(tmp_path):
    exp = tmp_path / "exp"
    metrics, _ = run_toy(exp, max_epochs=6, tensorboard=True, valid_interval_steps=0)
    hist = load_checkpoint(exp / "checkpoints" / "last.pt")["trainer"]["history"]
    assert hist["valid"][-1][1] < 0.5 * hist["valid"][0][1]
    assert hist["train"][-1][1] < hist["train"][0][1]
    assert metrics["epoch"] == 6 and metrics["nan_skipped"] == 0
    assert metrics["best_valid_loss"] == pytest.approx(min(v for _, v in hist["valid"]))
    kept = sorted(p.name for p in (exp / "checkpoints").glob("step*.pt"))
    assert 1 <= len(kept) <= 3 and (exp / "checkpoints" / "last.pt").exists()
    for name in ("loss.png", "train.log", "trainer_config.yaml"):
        assert (exp / name).stat().st_size > 0
    assert "valid epoch 6" in (exp / "train.log").read_text()
    assert list((exp / "tensorboard").glob("events.out.tfevents.*"))
    avg = average_best(exp, 2)
    assert set(avg) == set(ToyModel().state_dict())


def test_nan_steps_are_skipped_counted_and_abort(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="stk.trainer")
    metrics, state = run_toy(tmp_path / "a", max_epochs=2, nan_ids=(3,), temperature=0.0)
    assert metrics["nan_skipped"] == 2  # example 3 is in one accumulation group per epoch
    assert all(torch.isfinite(v).all() for v in state.values())
    assert "utt003" in caplog.text and "step skipped" in caplog.text
    with pytest.raises(NonFiniteLossError, match=r"consecutive .*first offending utterances: utt0"):
        run_toy(tmp_path / "b", max_epochs=1, nan_ids=tuple(range(40)), max_bad_steps=3)


def test_skipped_nan_step_leaves_batchnorm_statistics_alone(tmp_path):
    # The NaN utterance's forward pass updated BatchNorm's running statistics before the step was
    # skipped: every later validation was NaN, `best_valid_loss` NaN and last.pt non-finite.
    metrics, state = run_toy(tmp_path / "a", max_epochs=2, nan_ids=(3,), temperature=0.0, model_cls=BatchNormToy)
    assert metrics["nan_skipped"] == 2
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    hist = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["trainer"]["history"]
    assert hist["valid"] and all(v == v for _, v in hist["valid"])  # no NaN validation
    assert metrics["best_valid_loss"] is not None and metrics["best_valid_loss"] == metrics["best_valid_loss"]


class PoisonedBuffer(ToyModel):
    """A finite loss, but the forward writes a NaN into a buffer at its 5th call."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, batch: dict) -> dict:
        self.calls += 1
        if float(self.calls) == 5:
            self.calls.fill_(float("nan"))
        return super().forward(batch)


def test_non_finite_buffer_at_save_is_an_error(tmp_path):
    with pytest.raises(NonFiniteStateError, match="calls"):
        run_toy(tmp_path / "a", max_epochs=2, model_cls=PoisonedBuffer)
    ckpts = sorted(p.name for p in (tmp_path / "a" / "checkpoints").glob("step*.pt"))
    for p in ckpts:  # what was written before is finite
        assert torch.isfinite(load_checkpoint(tmp_path / "a" / "checkpoints" / p)["model"]["calls"])


def test_unreadable_checkpoint_is_kept_and_resume_uses_the_newest_readable(tmp_path, caplog):
    exp = tmp_path / "exp"
    run_toy(exp, max_epochs=2)
    ckpts = exp / "checkpoints"
    newest = (ckpts / "last.pt").resolve()
    older = sorted(p for p in ckpts.glob("step*.pt") if p != newest)
    assert older, "the test needs a second checkpoint"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # truncated (a full disk, a copy cut short)
    caplog.set_level(logging.INFO, logger="stk")
    metrics, _ = run_toy(exp, max_epochs=3)
    assert f"resumed from {older[-1]}" in caplog.text
    assert (ckpts / (newest.name + ".unreadable")).read_bytes() == data[: len(data) // 2]  # never deleted
    assert metrics["epoch"] == 3
    # every checkpoint unreadable: an error naming them, nothing changed
    for p in ckpts.glob("step*.pt"):
        p.write_bytes(b"junk")
    before = sorted(p.name for p in ckpts.iterdir())
    with pytest.raises(CheckpointError, match=r"no checkpoint is readable \(last.pt -> step\d+.pt, step"):
        run_toy(exp, max_epochs=4)
    assert sorted(p.name for p in ckpts.iterdir()) == before
    # starting over on purpose (resume off) keeps the old ones aside
    run_toy(exp, max_epochs=1, resume=False)
    assert sorted(p.name for p in (exp / "checkpoints.prev1").iterdir()) == before
    assert (exp / "checkpoints" / "last.pt").exists()


def test_a_failed_save_leaves_no_partial_file_and_keeps_earlier_ones(tmp_path, monkeypatch):
    import errno

    import stk.checkpoint

    real_save, calls = torch.save, []

    def full_disk(obj, f, *a, **kw):
        calls.append(1)
        if len(calls) == 3:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(stk.checkpoint.torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="No space left on device.*earlier checkpoints are kept"):
        run_toy(tmp_path / "a", max_epochs=2)
    ckpts = tmp_path / "a" / "checkpoints"
    assert not list(ckpts.glob(".*tmp"))
    names = sorted(p.name for p in ckpts.glob("step*.pt"))
    assert names and all(load_checkpoint(ckpts / n)["trainer"]["step"] > 0 for n in names)
    assert load_checkpoint(ckpts / "last.pt")["trainer"]["step"] == 6  # the save before the failed one


def test_sigkill_and_restart_matches_uninterrupted_run(tmp_path):
    _, reference = run_toy(tmp_path / "ref")
    exp = tmp_path / "killed"
    ckpts = exp / "checkpoints"
    stall = ckpts / "step00000006.pt"  # the run stalls right after writing it, and is killed there
    # A forked child process (torch already imported: starting a fresh interpreter costs 10-20 s on the
    # shared machine) that is SIGKILLed mid-epoch, like a preempted job.
    proc = multiprocessing.get_context("fork").Process(target=run_toy, args=(str(exp),), kwargs={"stall_on": str(stall)})
    proc.start()
    try:
        deadline = time.time() + 120
        while not (ckpts / "last.pt").is_symlink() or os.readlink(ckpts / "last.pt") != stall.name:
            assert proc.exitcode is None, "training finished or failed before it could be killed"
            assert time.time() < deadline
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=30)
        assert proc.exitcode == -signal.SIGKILL
    finally:
        if proc.exitcode is None:
            proc.kill()
            proc.join()
    killed = load_checkpoint(ckpts / "last.pt")
    assert killed["trainer"]["step"] == 6 and killed["mixer"]["streams"]["paired"]["consumed"] > 0  # mid-epoch
    final_steps = load_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pt")["trainer"]["step"]
    metrics, resumed = run_toy(exp)  # the restart, in a fresh Trainer with a freshly built model
    assert metrics["step"] == final_steps
    for k, v in reference.items():
        torch.testing.assert_close(resumed[k], v, rtol=1e-5, atol=1e-6)


def _run_toy_until_signal(exp: str) -> None:
    try:
        run_toy(exp, delay=0.02)
    except TrainingInterrupted:
        os._exit(EXIT_INTERRUPTED)
    os._exit(0)


def test_sigterm_finishes_the_step_checkpoints_and_resumes_exactly(tmp_path):
    _, reference = run_toy(tmp_path / "ref")
    final_steps = load_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pt")["trainer"]["step"]
    exp = tmp_path / "term"
    ckpts = exp / "checkpoints"
    proc = multiprocessing.get_context("fork").Process(target=_run_toy_until_signal, args=(str(exp),))
    proc.start()
    try:
        deadline = time.time() + 120
        while not (ckpts / "last.pt").is_symlink():
            assert proc.exitcode is None, "training finished or failed before the signal"
            assert time.time() < deadline
            time.sleep(0.01)
        saved_before = int(os.readlink(ckpts / "last.pt")[4:12])
        os.kill(proc.pid, signal.SIGTERM)  # what Slurm sends before preemption
        proc.join(timeout=60)
        assert proc.exitcode == EXIT_INTERRUPTED
    finally:
        if proc.exitcode is None:
            proc.kill()
            proc.join()
    stopped = load_checkpoint(ckpts / "last.pt")
    assert saved_before < stopped["trainer"]["step"] < final_steps  # the work after the last interval save was kept
    assert (ckpts / "last.pt").resolve().name == f"step{stopped['trainer']['step']:08d}.pt"
    metrics, resumed = run_toy(exp)
    assert metrics["step"] == final_steps
    for k, v in reference.items():
        torch.testing.assert_close(resumed[k], v, rtol=1e-5, atol=1e-6)


def _ddp_worker(rank: int, port: int, exp: str) -> None:
    """One rank, launched like torchrun would (env vars), running the same entry point."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    metrics, state = run_toy(exp, max_epochs=3, find_unused_parameters=True)
    torch.save({"state": state, "step": metrics["step"]}, f"{exp}/rank{rank}.pt")


def test_two_process_gloo_ddp(tmp_path):
    # fork (not spawn/torchrun) to skip re-importing torch in each rank: the shared 2-core machine is slow at it;
    # `torchrun --nproc_per_node 2` of the same run_toy() behaves the same.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exp = tmp_path / "ddp"
    exp.mkdir()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_ddp_worker, args=(r, port, str(exp))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        if p.exitcode is None:
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    r0, r1 = (torch.load(exp / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["step"] == r1["step"] > 0
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k
    last = load_checkpoint(exp / "checkpoints" / "last.pt")
    assert last["trainer"]["history"]["valid"][-1][1] < last["trainer"]["history"]["valid"][0][1]
    assert len(last["rng"]) == 2  # every rank's RNG state is saved for exact resume
