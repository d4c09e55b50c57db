"""Checkpoints: atomic saves survive SIGKILL, weights_only loading, RNG capture, averaging, pruning."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time

import numpy as np
import pytest
import torch
from torch import nn

from stk.checkpoint import (average_best, average_checkpoints, latest_checkpoint, link_last, load_checkpoint,
                            load_weights, prune_checkpoints, rng_state, save_checkpoint, save_weights, select_keep,
                            set_rng_state)

def draw() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_roundtrip_weights_only_and_rng(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": [rng_state()], "step": 7,
             "best": {"step00000007.pt": 1.5, "step00000003.pt": None}}
    expected = draw()
    save_checkpoint(tmp_path / "c.pt", state)
    ck = load_checkpoint(tmp_path / "c.pt")  # weights_only=True inside
    assert ck["step"] == 7 and ck["best"]["step00000003.pt"] is None
    for k, v in model.state_dict().items():
        assert torch.equal(ck["model"][k], v)
    draw()
    set_rng_state(ck["rng"][0])
    assert draw() == expected
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")


def test_safetensors_weights_with_tied_params(tmp_path):
    emb = nn.Embedding(5, 3)
    head = nn.Linear(3, 5, bias=False)
    head.weight = emb.weight
    model = nn.ModuleDict({"emb": emb, "head": head})
    save_weights(tmp_path / "m.safetensors", model.state_dict(), metadata={"arch": "toy"})
    loaded = load_weights(tmp_path / "m.safetensors")
    assert set(loaded) == {"emb.weight", "head.weight"}
    assert torch.equal(loaded["head.weight"], emb.weight.detach())


def test_average_checkpoints_and_best(tmp_path):
    ckpt_dir = tmp_path / "exp" / "checkpoints"
    paths, models = [], []
    for i, loss in enumerate([3.0, 1.0, 2.0, 0.5]):
        torch.manual_seed(i)
        m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
        m[1].num_batches_tracked.fill_(10 * i)
        models.append(m)
        p = ckpt_dir / f"step{i:08d}.pt"
        save_checkpoint(p, {"model": m.state_dict(), "trainer": {"best": {
            f"step{j:08d}.pt": v for j, v in enumerate([3.0, 1.0, 2.0, 0.5][: i + 1])}}})
        paths.append(p)
    avg = average_checkpoints(paths[:2])
    w = (models[0][0].weight + models[1][0].weight) / 2
    assert torch.allclose(avg["0.weight"], w)
    assert avg["1.num_batches_tracked"].item() == 10 and avg["1.num_batches_tracked"].dtype == torch.int64
    link_last(ckpt_dir, paths[-1].name)
    best2 = average_best(tmp_path / "exp", 2)  # losses 0.5 (step3) and 1.0 (step1)
    assert torch.allclose(best2["0.weight"], (models[3][0].weight + models[1][0].weight) / 2)
    save_weights(tmp_path / "a.safetensors", models[2].state_dict())
    assert torch.allclose(average_checkpoints([tmp_path / "a.safetensors"])["0.weight"], models[2][0].weight)
    with pytest.raises(ValueError):
        average_checkpoints([])


def test_keep_and_prune(tmp_path):
    losses = {"step00000001.pt": 3.0, "step00000002.pt": None, "step00000003.pt": 1.0, "step00000004.pt": 2.0}
    assert sorted(select_keep(losses, nbest=2, last="step00000005.pt")) == [
        "step00000003.pt", "step00000004.pt", "step00000005.pt"]
    assert len(select_keep(losses, nbest=0, last="step00000004.pt")) == 4
    for name in [*losses, "step00000005.pt", ".step00000006.pt.abc.tmp"]:
        (tmp_path / name).write_bytes(b"x")
    link_last(tmp_path, "step00000005.pt")
    removed = prune_checkpoints(tmp_path, ["step00000003.pt", "step00000005.pt"])
    assert sorted(p.name for p in removed) == ["step00000001.pt", "step00000002.pt", "step00000004.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "step00000003.pt", "step00000005.pt"]
    assert (tmp_path / "last.pt").resolve().name == "step00000005.pt"


def test_latest_checkpoint_skips_unreadable(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    save_checkpoint(tmp_path / "step00000001.pt", {"step": 1})
    (tmp_path / "step00000002.pt").write_bytes(b"garbage")
    path, ck = latest_checkpoint(tmp_path)
    assert path.name == "step00000001.pt" and ck["step"] == 1


def _save_forever(out: str) -> None:
    big = torch.randn(4_000_000)  # 16 MB: a save takes long enough to be killed in the middle of one
    i = 0
    while True:
        save_checkpoint(f"{out}/step{i % 3:08d}.pt", {"step": i, "w": big + i})
        i += 1


def test_sigkill_during_saves_never_leaves_a_corrupt_file(tmp_path):
    # A child process saving in a loop, SIGKILLed at an arbitrary moment. "spawn", not "fork": a
    # forked child of a process whose OpenMP pool has run can hang in its first parallel region.
    proc = multiprocessing.get_context("spawn").Process(target=_save_forever, args=(str(tmp_path),))
    proc.start()
    try:
        deadline = time.time() + 120
        while len(list(tmp_path.glob("*.pt"))) < 3:
            assert proc.exitcode is None and time.time() < deadline, "writer died or hangs"
            time.sleep(0.005)
        time.sleep(0.137)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=30)
        assert proc.exitcode == -signal.SIGKILL
    finally:
        if proc.exitcode is None:
            proc.kill()
            proc.join()
    bases = []
    for p in sorted(tmp_path.glob("*.pt")):
        ck = load_checkpoint(p)  # every visible checkpoint is complete and consistent
        assert ck["w"].numel() == 4_000_000
        bases.append(ck["w"] - ck["step"])
    assert len(bases) == 3
    assert all(torch.allclose(b, bases[0], atol=1e-3) for b in bases)


def test_prune_only_touches_the_rotation_and_mismatch_is_described(tmp_path):
    for name in ("step00000001.pt", "step00000002.pt", "step00000003.pt"):
        (tmp_path / name).write_bytes(b"x")
    removed = prune_checkpoints(tmp_path, ["step00000003.pt"], only=["step00000002.pt", "step00000003.pt"])
    assert [p.name for p in removed] == ["step00000002.pt"]
    assert (tmp_path / "step00000001.pt").exists()  # not written by this rotation: never deleted
    from stk.checkpoint import state_mismatch

    model = nn.Linear(3, 4).state_dict()
    assert state_mismatch(model, model) is None
    msg = state_mismatch(model, {"weight": torch.zeros(5, 3), "extra": torch.zeros(1)})
    assert "weight (5, 3) vs (4, 3)" in msg and "missing, e.g. bias" in msg and "unexpected, e.g. extra" in msg


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": {"w": Payload()}}, tmp_path / "evil.pt")
    from stk.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="refusing to load .*evil.pt.*GLOBAL"):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_weights(tmp_path / "evil.pt")
    assert not marker.exists()


def test_average_best_never_picks_a_nan_valid_loss(tmp_path):
    ckpt_dir = tmp_path / "exp" / "checkpoints"
    best = {"step00000001.pt": float("nan"), "step00000002.pt": 2.0}
    for i, name in enumerate(best):
        m = nn.Linear(2, 2)
        torch.nn.init.constant_(m.weight, float(i))
        save_checkpoint(ckpt_dir / name, {"model": m.state_dict(), "trainer": {"best": best}})
    link_last(ckpt_dir, "step00000002.pt")
    avg = average_best(tmp_path / "exp", 1)
    assert torch.equal(avg["weight"], torch.ones(2, 2))  # step 2, not the NaN-scored step 1
