"""DDP is a bigger batch: 2 gloo processes with B utterances each give the loss and gradients of
one process with the 2B utterances together (and so does gradient accumulation of the two halves).

The model is the LibriSpeech Conformer CTC/attention preset (conf/asr/) scaled down; it runs through
the trainer's own code (:class:`stk.trainer.Trainer`: ``init_distributed``, DDP wrapping,
forward/backward with ``no_sync``, the optimizer step). Every utterance has the same length, so
padding is the same in both runs. BatchNorm is kept in eval mode: per-rank batch statistics are
the one intended difference between a DDP step and a single-process step (torch's SyncBatchNorm,
``trainer.sync_batchnorm``, has no CPU kernel).
"""

from __future__ import annotations

import multiprocessing
import os
import socket
from pathlib import Path

import torch

from stk.checkpoint import seed_everything
from stk.config import load_config
from stk.data.mixing import MixedStreams
from stk.experiment import ExperimentConfig, build_model, keep_frozen_in_eval
from stk.trainer import OptimConfig, Trainer, TrainerConfig

PRESET = Path(__file__).resolve().parents[1] / "conf" / "asr" / "librispeech_conformer_ctc_att.yaml"
SCALED = ["model.conf.encoder.conf={d_model: 32, num_heads: 2, ffn_dim: 64, num_layers: 2, kernel_size: 5, "
          "dropout: 0.0, subsampling_factor: 4, subsampling_channels: 8}",
          "model.conf.decoder={d_model: 32, num_heads: 2, ffn_dim: 64, num_layers: 1, dropout: 0.0}",
          "model.conf.specaug=null"]
VOCAB, B, T, U, STEPS = 24, 3, 48, 5, 2


def batches(rank: int | None) -> list[dict]:
    """Step s's utterances: 2B of them; rank r gets the r-th half (None: all 2B)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for s in range(STEPS):
        feats = torch.randn(2 * B, T, 80, generator=g)
        text = torch.randint(4, VOCAB, (2 * B, U), generator=g)
        sl = slice(None) if rank is None else slice(rank * B, (rank + 1) * B)
        n = feats[sl].size(0)
        out.append({"utt_ids": [f"s{s}u{i}" for i in range(2 * B)][sl], "feats": feats[sl],
                    "feats_lens": torch.full((n,), T), "text": text[sl], "text_lens": torch.full((n,), U)})
    return out


def run(exp: str, micro_batches: list[dict], accum_grad: int = 1) -> dict:
    """Train STEPS updates through the Trainer; return each update's gradients and the micro-batch losses."""
    cfg = load_config(ExperimentConfig, PRESET, SCALED)
    seed_everything(0)
    model = build_model(cfg.model, vocab_size=VOCAB, input_dim=80)
    keep_frozen_in_eval(model, {n for n, _ in model.named_parameters() if ".bn." in n})
    losses, grads = [], []
    forward = model.forward

    def recording_forward(batch):
        out = forward(batch)
        losses.append(float(out["loss"].detach()))
        return out

    model.forward = recording_forward
    from stk.trainer import init_distributed

    _, _, device, owns = init_distributed("cpu")
    trainer = Trainer(model, exp_dir=exp, device=device, train_data=MixedStreams({"paired": micro_batches}),
                      optim=OptimConfig(lr=1e-3, scheduler="constant", warmup_steps=0, grad_clip=0.0),
                      config=TrainerConfig(max_steps=STEPS, accum_grad=accum_grad, device="cpu", log_interval=1,
                                           tensorboard=False, progress=False, keep_nbest=0))
    trainer.optimizer.register_step_pre_hook(lambda *_: grads.append(
        {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}))
    metrics = trainer.fit()
    if owns:
        torch.distributed.destroy_process_group()
    return {"grads": grads, "losses": losses, "steps": metrics["step"]}


def _rank(rank: int, port: int, tmp: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.save(run(f"{tmp}/ddp", batches(rank)), f"{tmp}/rank{rank}.pt")


def _check_same(one: dict, other: dict) -> None:
    assert one["steps"] == other["steps"] == STEPS
    assert len(one["grads"]) == len(other["grads"]) == STEPS
    for g1, g2 in zip(one["grads"], other["grads"]):
        assert g1.keys() == g2.keys() and len(g1) > 20
        for name in g1:
            torch.testing.assert_close(g1[name], g2[name], rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")
    # (weights are not compared: Adam's first update is ~lr·sign(grad), so float noise in a ~0 gradient
    # flips a weight by 2·lr; equal gradients at step 2 already show that step 1's updates agreed)


def test_two_process_ddp_equals_one_process_with_the_doubled_batch(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = multiprocessing.get_context("fork")  # fork: no second torch import on the shared 2-core machine
    procs = [ctx.Process(target=_rank, args=(r, port, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        if p.exitcode is None:
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    single = run(str(tmp_path / "single"), batches(None))
    # the loss of the doubled batch is the mean of the two ranks' losses (per-utterance averages)
    for s in range(STEPS):
        assert abs((r0["losses"][s] + r1["losses"][s]) / 2 - single["losses"][s]) <= 1e-5 * abs(single["losses"][s])
    assert r0["losses"] != r1["losses"]  # the ranks saw different utterances
    _check_same(r0, single)
    _check_same(r1, single)


def test_gradient_accumulation_equals_the_doubled_batch(tmp_path):
    halves = [b for s in range(STEPS) for b in (batches(0)[s], batches(1)[s])]
    accumulated = run(str(tmp_path / "accum"), halves, accum_grad=2)
    single = run(str(tmp_path / "single"), batches(None))
    _check_same(accumulated, single)
