#!/usr/bin/env python3
"""Markdown tables for the robustness section of RESULTS.md: CER per test set and language with
95 % bootstrap intervals, a paired comparison of two models (B - A), and the unheard-engine gap
(pico_test - synth_test on the same sentences, per model).

  local/robustness_table.py --exp exp/train_small [--exp-b exp/train_small_voices_sp_babble] \
      [--sets "synth_test real_test pico_test"] [--method ctc_beam] > exp/robustness.md

Reads data/<set>/{text,utt2lang} and <exp>/decode_<method>_<set>/hyp. Intervals: stk.scoring's
percentile bootstrap over utterances (1,000 samples, seed 12345) and its paired bootstrap.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stk.data.kaldi import read_kv
from stk.scoring import Normalizer, bootstrap, compare, error_rates


def _load(data: Path, hyp: Path) -> tuple[list[str], dict[str, str], dict[str, str], dict[str, str]]:
    ref, lang = read_kv(data / "text"), read_kv(data / "utt2lang")
    h = read_kv(hyp)
    missing = [u for u in ref if u not in h]
    if missing:
        raise SystemExit(f"{hyp}: no hypothesis for {len(missing)} utterance(s) of {data}, e.g. {missing[0]}")
    return sorted(ref), ref, h, lang


def _cer(refs: list[str], hyps: list[str], n: int, norm: Normalizer) -> str:
    c = error_rates(refs, hyps, norm)["cer"]
    lo, hi = bootstrap(refs, hyps, "wer", n, norm=norm)["cer"]
    return f"{c:.1f} [{lo:.1f}, {hi:.1f}]"


def _diff(refs: list[str], ha: list[str], hb: list[str], n: int, norm: Normalizer) -> str:
    c = compare(refs, hb, ha, "wer", n, norm=norm, names=("B", "A"))["cer"]
    verdict = {"no difference": "no difference", "B better": "B better", "A better": "A better"}[c["verdict"]]
    return f"{c['diff']:+.1f} [{c['ci'][0]:+.1f}, {c['ci'][1]:+.1f}] {verdict}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp", required=True, help="model A (the baseline)")
    ap.add_argument("--exp-b", help="model B, compared with A (paired)")
    ap.add_argument("--sets", default="synth_test real_test pico_test")
    ap.add_argument("--method", default="ctc_beam")
    ap.add_argument("--data", default="data")
    ap.add_argument("--n", type=int, default=1000, help="bootstrap samples")
    a = ap.parse_args()
    norm = Normalizer()
    exps = [Path(a.exp)] + ([Path(a.exp_b)] if a.exp_b else [])
    hdr = "| test set | lang | sents | CER % A (95 % CI) |" + (" CER % B (95 % CI) | B - A (95 % CI) |" if a.exp_b else "")
    print(f"A = `{exps[0]}`" + (f", B = `{exps[1]}`" if a.exp_b else "") + f"; {a.method} decoding; CER after lowercasing and stripping punctuation.\n")
    print(hdr)
    print("|---|---|---:|---:|" + ("---:|---:|" if a.exp_b else ""))
    loaded = {}
    for s in a.sets.split():
        data = Path(a.data) / s
        runs = [_load(data, e / f"decode_{a.method}_{s}" / "hyp") for e in exps]
        utts, ref, _, lang = runs[0]
        loaded[s] = runs
        for lg in ["all"] + sorted(set(lang.values())):
            us = [u for u in utts if lg == "all" or lang[u] == lg]
            refs = [ref[u] for u in us]
            hs = [[r[2][u] for u in us] for r in runs]
            row = f"| {s} | {lg} | {len(us)} | {_cer(refs, hs[0], a.n, norm)} |"
            if a.exp_b:
                row += f" {_cer(refs, hs[1], a.n, norm)} | {_diff(refs, hs[0], hs[1], a.n, norm)} |"
            print(row)
    if "pico_test" in loaded and "synth_test" in loaded:
        print("\nUnheard engine: the same sentences read by espeak-ng (synth_test, its en/de/es/fr/it part) and by SVOX Pico "
              "(pico_test); paired over sentences, pico - espeak.\n")
        print("| model | lang | sents | CER % espeak-ng | CER % Pico | Pico - espeak-ng (95 % CI) |")
        print("|---|---|---:|---:|---:|---:|")
        for i, e in enumerate(exps):
            p_utts, p_ref, p_hyp, p_lang = loaded["pico_test"][i]
            _, s_ref, s_hyp, s_lang = loaded["synth_test"][i]
            by_sid = {(s_lang[u], u.split("-", 2)[2]): u for u in s_ref}
            for lg in ["all"] + sorted(set(p_lang.values())):
                pairs = [(u, by_sid[(p_lang[u], u.split("-", 2)[2])]) for u in p_utts if lg == "all" or p_lang[u] == lg]
                refs = [p_ref[p] for p, _ in pairs]
                hp, hs = [p_hyp[p] for p, _ in pairs], [s_hyp[q] for _, q in pairs]
                c = compare(refs, hp, hs, "wer", a.n, norm=norm, names=("pico", "espeak"))["cer"]
                print(f"| {'A' if i == 0 else 'B'} | {lg} | {len(pairs)} | {c['b']:.1f} | {c['a']:.1f} | "
                      f"{c['diff']:+.1f} [{c['ci'][0]:+.1f}, {c['ci'][1]:+.1f}] |")


if __name__ == "__main__":
    main()
