#!/usr/bin/env python3
"""Markdown table of paired comparisons: each argument 'A|B|TEST_SET|JSON' (JSON from `stk score
--compare HYP_A HYP_B --json`); the claim tested is "A is better than B" (lower CER/WER)."""

from __future__ import annotations

import json
import sys

CLAIMS = {
    ("maestro", "paired-only"): "unpaired text helps (MAESTRO's claim)",
    ("maestro", "speech-only"): "MAESTRO beats speech-only pre-training",
    ("paired-only", "speech-only"): "the paired-data objectives help",
}


def verdict(res: dict, metric: str) -> str:
    """The claim "A better" from `stk score --compare`'s own verdict (no difference / <A> / <B> better)."""
    v = res[metric]["verdict"]
    if v == "no difference":
        return v
    return "holds" if v == f"{res['systems'][0]} better" else "does not hold"


def main(specs: list[str]) -> None:
    print("\n### Paired comparisons (RNN-T beam, A − B, 95 % paired-bootstrap interval over utterances)\n")
    print("| A − B | test set | claim (A better) | CER A / B | CER A − B [95 % CI] | CER: claim | WER A / B | WER A − B [95 % CI] | WER: claim |")
    print("|---|---|---|---:|---:|---|---:|---:|---|")
    n = None
    for spec in specs:
        a, b, x, path = spec.split("|")
        res = json.load(open(path))
        n = res.get("n", n)
        claim = CLAIMS.get((a, b), "pre-training helps (low-resource)" if b == "scratch" else f"{a} better")
        cells = []
        for m in ("cer", "wer"):
            r = res[m]
            cells += [f"{r['a']:.1f} / {r['b']:.1f}", f"{r['diff']:+.1f} [{r['ci'][0]:+.1f}, {r['ci'][1]:+.1f}]",
                      verdict(res, m)]
        print(f"| {a} − {b} | {x} | {claim} | " + " | ".join(cells) + " |")
    print(f"\nIntervals: `stk score --compare` ({n} paired bootstrap samples over the test utterances); "
          "a claim holds when the whole interval is below 0, does not hold when it is above 0, "
          "and is 'no difference' when it contains 0.")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: compare_table.py 'A|B|TEST_SET|JSON' ...")
    main(sys.argv[1:])
