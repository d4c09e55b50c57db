"""RNN-T training cost: torchaudio's full-lattice loss vs stk's two-column and pruned losses, and whole updates.

Part 1, the loss alone (forward + backward into the encoder output and every head parameter), on
the same joint network (stk's ``RNNTHead``: LSTM predictor, joiner ``out(tanh(W_e enc + W_p pred))``):

* ``torchaudio full``: the (B, T, U + 1, V) logits into ``rnnt_loss`` with ``fused_log_softmax=True``
  (the usual call, as ESPnet's and torchaudio's recipes make it);
* ``stk two-column`` (``RNNTHead(loss="full")``, stk's default): log_softmax over V and a gather of
  [blank, next token] in PyTorch, then torchaudio's kernel on a (B, T, U + 1, 2) lattice;
* ``stk pruned S`` (``RNNTHead(loss="pruned", prune_range=S)``): k2's pruned RNN-T — the simple
  additive joiner's smoothed loss, per-frame bands of S symbols from its occupancy, the joiner on the
  (B, T, S) band only (:mod:`stk.modules.rnnt_pruned`); the simple and pruned losses both count.

Checks first: the two-column loss and gradients equal the full call's, and the pruned loss with
S = U + 1 (the band is the whole lattice) equals it as well.

Part 2 (``--update``), a whole training update (forward, backward, Adam step) of stk's ``transducer``
model with egs/mini/maestro/conf/finetune_asr.yaml's sizes (MAESTRO encoder d_model 96, 2 + 2
Conformer layers, SpecAugment, dropout 0.1; predictor 96, joint 128; auxiliary CTC 0.3) on a batch
shaped like that recipe's batches of character targets (``--update-batch`` utterances of 300-490 fbank
frames, ~0.66 characters per encoder frame, vocabulary 97, as the mini corpus' egs/mini/asr/dump/train),
default loss vs pruned. All timings alternate (``common.alternate``).

Usage:
  .venv/bin/python bench/rnnt_loss.py --threads 1 --steps 5 --update --json bench/out/rnnt_loss.json
"""

from __future__ import annotations

import argparse

import common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
import torch
import torchaudio

from stk.modules.rnnt import RNNTHead

SHAPES = [  # (V, U): BPE 500, BPE 200, characters
    (500, 24), (200, 30), (100, 60),
]
MAESTRO_ASR = {  # egs/mini/maestro/conf/finetune_asr.yaml
    "encoder": {"name": "maestro", "conf": {"d_model": 96, "num_heads": 4, "ffn_dim": 256, "num_speech_layers": 2,
                                            "num_shared_layers": 2, "kernel_size": 15, "dropout": 0.1,
                                            "subsampling_factor": 4, "subsampling_channels": 32}},
    "rnnt": {"embed_dim": 96, "pred_dim": 96, "joint_dim": 128},
    "ctc_weight": 0.3,
    "specaug": {"num_freq_masks": 2, "freq_mask_width": 15, "num_time_masks": 2, "time_mask_width": 25},
}


def rel_err(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max() / x.abs().max()) for x, y in zip(a, b))


def loss_rows(args: argparse.Namespace, record: dict) -> list[list]:
    rows = []
    B, T, E = args.batch, args.frames, 144
    for V, U in SHAPES:
        torch.manual_seed(0)
        kw = dict(vocab_size=V, enc_dim=E, embed_dim=256, pred_dim=256, joint_dim=args.joint_dim)
        head = RNNTHead(**kw)
        pruned = {S: RNNTHead(**kw, loss="pruned", prune_range=S, warm_steps=0).train() for S in (args.prune_range, U + 1)}
        for h in pruned.values():  # same predictor and joiner
            h.predictor.load_state_dict(head.predictor.state_dict())
            h.joiner.load_state_dict(head.joiner.state_dict())
        enc = torch.randn(B, T, E, requires_grad=True)
        lens = torch.randint(T * 3 // 4, T + 1, (B,)).sort(descending=True).values
        lens[0] = T
        tlens = torch.randint(U * 3 // 4, U + 1, (B,))
        tlens[0] = U
        ys = torch.randint(1, V, (B, U))
        shared = [enc, *head.predictor.parameters(), *head.joiner.parameters()]

        def full():
            loss = torchaudio.functional.rnnt_loss(head.logits(enc, ys), ys.int(), lens.int(), tlens.int(),
                                                   blank=0, reduction="mean")
            return loss, torch.autograd.grad(loss, shared)

        def ours():
            loss = head.loss(enc, lens, ys, tlens)
            return loss, torch.autograd.grad(loss, shared)

        def prune(S, part="rnnt"):
            h = pruned[S]
            params = [enc, *h.parameters()]
            loss = h.loss_terms(enc, lens, ys, tlens)[part]
            return loss, torch.autograd.grad(loss, params, allow_unused=True)

        (l1, g1), (l2, g2) = full(), ours()
        lw, gw_all = prune(U + 1, "rnnt_pruned")  # the band is the whole lattice: the full loss
        by_name = dict(zip(["enc"] + [n for n, _ in pruned[U + 1].named_parameters()], gw_all))
        gw = [by_name["enc"]] + [by_name[f"predictor.{n}"] for n, _ in head.predictor.named_parameters()] + [
            by_name[f"joiner.{n}"] for n, _ in head.joiner.named_parameters()]
        S = args.prune_range
        times = common.alternate({"full": full, "two": ours, "pruned": lambda: prune(S)}, args.steps)
        t_full, t_two, t_pr = (common.median(times[k]) for k in ("full", "two", "pruned"))
        rows.append([V, U, f"{t_full * 1e3:.0f}", f"{t_two * 1e3:.0f}", f"{t_pr * 1e3:.0f}",
                     f"{t_two / t_full:.2f}", f"**{t_pr / t_two:.2f}**",
                     f"{rel_err(g1, g2):.1e}", f"{abs(float(lw.detach() - l1.detach())):.1e} / {rel_err(g1, gw):.1e}"])
        record["loss"].append(dict(V=V, U=U, B=B, T=T, S=S, full_ms=t_full * 1e3, two_column_ms=t_two * 1e3,
                                   pruned_ms=t_pr * 1e3, times_s=times, two_column_grad_err=rel_err(g1, g2),
                                   pruned_full_band_loss_diff=abs(float(lw.detach() - l1.detach())),
                                   pruned_full_band_grad_err=rel_err(g1, gw)))
    return rows


def update_rows(args: argparse.Namespace, record: dict) -> list[list]:
    from stk.models import MODELS

    V, B = 97, args.update_batch
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(300, 491, (B,), generator=g).sort(descending=True).values
    ulens = (frames // 4 * 0.66).round().long()
    batch = {"feats": torch.randn(B, int(frames.max()), 80, generator=g), "feats_lens": frames,
             "text": torch.randint(1, V, (B, int(ulens.max())), generator=g), "text_lens": ulens}
    models, opts = {}, {}
    for name, rnnt in (("stk default (two-column)", {}),
                       (f"stk pruned S={args.prune_range}", {"loss": "pruned", "prune_range": args.prune_range})):
        torch.manual_seed(0)
        conf = {**MAESTRO_ASR, "rnnt": {**MAESTRO_ASR["rnnt"], **rnnt}}
        models[name] = MODELS.build({"name": "transducer", "conf": conf}, vocab_size=V, input_dim=80).train()
        opts[name] = torch.optim.Adam(models[name].parameters(), lr=1e-4)

    def step(name):
        def run():
            out = models[name](batch)
            out["loss"].backward()
            opts[name].step()
            opts[name].zero_grad(set_to_none=True)
        return run

    times = common.alternate({n: step(n) for n in models}, args.steps)
    base, pr = (common.median(times[n]) for n in models)
    record["update"] = dict(batch=B, frames=frames.tolist(), targets=ulens.tolist(), vocab=V, times_s=times,
                            default_s=base, pruned_s=pr)
    return [[n, f"{common.median(times[n]) * 1e3:.0f}", f"{common.median(times[n]) / base:.2f}"] for n in models]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=160, help="encoder frames per utterance (after subsampling)")
    ap.add_argument("--joint-dim", type=int, default=256)
    ap.add_argument("--prune-range", type=int, default=5)
    ap.add_argument("--update", action="store_true", help="also time whole training updates (part 2)")
    ap.add_argument("--update-batch", type=int, default=12, help="utterances per update batch (max_frames 5000)")
    ap.add_argument("--no-loss", action="store_true", help="skip part 1")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    common.set_threads(args.threads)
    record = {"machine": common.machine_info(args.threads), "loss": []}
    if not args.no_loss:
        rows = loss_rows(args, record)
        print(f"RNN-T loss fwd+bwd, batch {args.batch} x {args.frames} frames, joint {args.joint_dim}, "
              f"{args.threads} thread(s), median of {args.steps} alternated steps")
        print(common.markdown_table(
            ["V", "U", "torchaudio full ms", "stk two-column ms", f"stk pruned S={args.prune_range} ms",
             "two-column / full", "pruned / two-column", "two-column max rel. |Δgrad|",
             "pruned S=U+1: |Δloss| / max rel. |Δgrad|"], rows))
    if args.update:
        rows = update_rows(args, record)
        print(f"\nTraining update (fwd + bwd + Adam) of the MAESTRO fine-tuning transducer, batch "
              f"{args.update_batch}, {args.threads} thread(s), median of {args.steps} alternated steps")
        print(common.markdown_table(["loss", "ms per update", "× default"], rows))
    record["machine_end"] = common.machine_info(args.threads)
    if args.json:
        common.write_json(args.json, record)


if __name__ == "__main__":
    main()
