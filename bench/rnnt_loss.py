"""RNN-T training loss, forward + backward: stk's head vs torchaudio's full-lattice ``rnnt_loss``.

Both compute the same loss on the same joint network (stk's ``RNNTHead``: LSTM predictor, joiner
``out(tanh(W_e enc + W_p pred))``); they differ only in what goes into torchaudio's loss kernel:

* ``torchaudio full lattice``: the (B, T, U + 1, V) logits, ``fused_log_softmax=True`` (the usual
  call, as ESPnet's and torchaudio's recipes make it);
* ``stk two-column``: ``RNNTHead.loss``: log_softmax over V and a gather of [blank, next token] in
  PyTorch, then torchaudio's kernel on a (B, T, U + 1, 2) lattice with ``fused_log_softmax=False``.

The script first checks that losses and gradients agree, then times forward + backward (encoder
output and all head parameters get gradients), alternated (``common.alternate``), for a few
(vocabulary, target length) shapes: BPE-like (V 200-500, U short) and character-like (V ~100, U long).

Usage:
  .venv/bin/python bench/rnnt_loss.py --threads 1 --steps 5 [--json bench/out/rnnt_loss.json]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=160, help="encoder frames per utterance (after subsampling)")
    ap.add_argument("--joint-dim", type=int, default=256)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    common.set_threads(args.threads)
    torch.manual_seed(0)
    rows, record = [], {"machine": common.machine_info(args.threads), "results": []}
    B, T, E = args.batch, args.frames, 144
    for V, U in SHAPES:
        head = RNNTHead(vocab_size=V, enc_dim=E, embed_dim=256, pred_dim=256, joint_dim=args.joint_dim)
        enc = torch.randn(B, T, E, requires_grad=True)
        lens = torch.randint(T * 3 // 4, T + 1, (B,)).sort(descending=True).values
        lens[0] = T
        tlens = torch.randint(U * 3 // 4, U + 1, (B,))
        tlens[0] = U
        ys = torch.randint(1, V, (B, U))
        params = [enc, *head.parameters()]

        def full():
            loss = torchaudio.functional.rnnt_loss(head.logits(enc, ys), ys.int(), lens.int(), tlens.int(),
                                                   blank=0, reduction="mean")
            return loss, torch.autograd.grad(loss, params)

        def ours():
            loss = head.loss(enc, lens, ys, tlens)
            return loss, torch.autograd.grad(loss, params)

        (l1, g1), (l2, g2) = full(), ours()
        max_grad_err = max(float((a - b).abs().max() / a.abs().max()) for a, b in zip(g1, g2))  # relative
        times = common.alternate({"torchaudio full lattice": full, "stk two-column": ours}, args.steps)
        t_full, t_ours = common.median(times["torchaudio full lattice"]), common.median(times["stk two-column"])
        rows.append([V, U, f"{t_full * 1e3:.0f}", f"{t_ours * 1e3:.0f}", f"{t_ours / t_full:.2f}",
                     f"{abs(float(l1.detach() - l2.detach())):.1e}", f"{max_grad_err:.1e}"])
        record["results"].append(dict(V=V, U=U, B=B, T=T, full_ms=t_full * 1e3, stk_ms=t_ours * 1e3,
                                      loss_diff=abs(float(l1.detach() - l2.detach())), max_grad_err=max_grad_err))
    print(f"RNN-T loss fwd+bwd, batch {B} x {T} frames, joint {args.joint_dim}, {args.threads} thread(s), "
          f"median of {args.steps} alternated steps")
    print(common.markdown_table(["V", "U", "torchaudio full ms", "stk ms", "stk / full", "|Δloss|", "max rel. |Δgrad|"], rows))
    if args.json:
        common.write_json(args.json, record)


if __name__ == "__main__":
    main()
