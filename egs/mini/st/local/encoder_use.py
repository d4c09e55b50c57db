#!/usr/bin/env python3
"""Does an attention decoder use its encoder (speech ``encdec`` or text ``mt``)? Teacher-forced validation accuracy of an stk
``encdec`` experiment with the true encoder output and with every utterance's encoder output
swapped for another utterance's (a decoder that ignores the speech scores the same on both).

    local/encoder_use.py exp/st_small [--weights exp/st_small/model.avg1.safetensors]

Prints one line ``acc <true> acc_swapped <swapped> att <loss/utt> att_swapped <loss/utt> (N utts)``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("exp_dir", type=Path)
    ap.add_argument("--weights", type=Path, help="default: the newest checkpoint of EXP_DIR/checkpoints")
    ap.add_argument("--max-utts", type=int, default=300)
    args = ap.parse_args()

    from stk.checkpoint import _model_state, latest_checkpoint
    from stk.config import load_config
    from stk.data.dataset import collate
    from stk.experiment import ExperimentConfig, build_dataset, build_model
    from stk.features.fbank import GlobalCMVN
    from stk.models.encdec import add_sos_eos, label_smoothing_loss
    from stk.tokenizer import Tokenizer

    cfg = load_config(ExperimentConfig, args.exp_dir / "config.yaml")
    tok = Tokenizer(cfg.data.tokenizer)
    cmvn = GlobalCMVN.load(cfg.data.cmvn) if cfg.data.cmvn else None
    model = build_model(cfg.model, vocab_size=tok.vocab_size, input_dim=cfg.data.fbank.num_mel_bins)
    weights = args.weights or latest_checkpoint(args.exp_dir / "checkpoints")[0]
    model.load_state_dict(_model_state(Path(weights)))
    model.eval()
    ds = build_dataset(cfg.data.valid, cfg.data, tok, cmvn, model.min_input_length())
    idx = list(range(len(ds)))[: args.max_utts]
    tot = {"n": 0, "tok": 0, "ok": 0, "ok_sw": 0, "att": 0.0, "att_sw": 0.0}
    key = model.dec_target
    with torch.inference_mode():
        for s in range(0, len(idx), 16):
            b = collate([ds[i] for i in idx[s:s + 16]])
            if len(b["utt_ids"]) < 2:
                continue
            if "feats" in b:
                enc, enc_lens = model.encode(b["feats"], b["feats_lens"])
            else:  # a text model (mt): the source tokens
                enc, enc_lens = model.encode_text(b[model.src_target], b[f"{model.src_target}_lens"])
            ys_in, ys_out = add_sos_eos(b[key], b[f"{key}_lens"])
            valid = ys_out != -1
            for sw in (False, True):
                e, el = (enc.roll(1, 0), enc_lens.roll(1, 0)) if sw else (enc, enc_lens)
                logits = model.decoder(ys_in, b[f"{key}_lens"] + 1, e, el)
                tot["ok_sw" if sw else "ok"] += ((logits.argmax(-1) == ys_out) & valid).sum().item()
                tot["att_sw" if sw else "att"] += label_smoothing_loss(logits, ys_out, 0.0).item()
            tot["tok"] += valid.sum().item()
            tot["n"] += len(b["utt_ids"])
    print(f"acc {tot['ok'] / tot['tok']:.3f} acc_swapped {tot['ok_sw'] / tot['tok']:.3f} "
          f"att {tot['att'] / tot['n']:.1f} att_swapped {tot['att_sw'] / tot['n']:.1f} ({tot['n']} utts, {weights})")


if __name__ == "__main__":
    main()
