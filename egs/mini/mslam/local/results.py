#!/usr/bin/env python3
"""The default mSLAM table (value [95 % interval] per row and column) and its paired comparisons.

  results.py --title T --notes N --rows "scratch w2v-bert mslam-ctc" --tasks "asr probe lid" \
      'asr|ASR CER synth_test|exp/{row}_asr/decode_synth_test/score.json' ... \
      --compare 'mslam-ctc|scratch|asr|synth_test|exp/compare/asr_mslam-ctc_vs_scratch_synth_test.json' ...

Cells 'TASK|COLUMN|FILE' (FILE a score.json from `stk score --bootstrap N --json`; columns of tasks
not in --tasks are dropped); comparisons 'A|B|TASK|TEST_SET|JSON' (from `stk score --compare`). CER for
asr/probe (lower is better), accuracy for lid (higher is better). A claim "A better than B" holds
when the whole interval of A - B is on A's side of 0, and is "no difference" when it contains 0.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

KEY = {"asr": "cer", "probe": "cer", "lid": "acc", "st": "bleu", "intent": "acc"}
CLAIM = {
    ("asr", "scratch"): "pre-training helps low-resource ASR",
    ("lid", "scratch"): "pre-training helps LID",
    ("probe", "w2v-bert"): "mSLAM-CTC's encoder is closer to text (paper: lower probe CER)",
}


def cell(path: Path, key: str) -> str:
    if not path.is_file():
        return "–"
    res = json.loads(path.read_text())
    ci = (res.get("bootstrap") or {}).get(key)
    return f"{res[key]:.1f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "")


def verdict(res: dict, key: str) -> str:
    """The claim "A better" from `stk score --compare`'s own verdict (no difference / <A> / <B> better)."""
    v = res[key]["verdict"]
    if v == "no difference":
        return v
    return "holds" if v == f"{res['systems'][0]} better" else "does not hold (B better)"


def majority(ref: Path) -> str:
    labels = [line.split(maxsplit=1)[1].strip() for line in ref.read_text().splitlines() if line.strip()]
    label, n = Counter(labels).most_common(1)[0]
    return f"{100.0 * n / len(labels):.1f} % ({label})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--title", required=True)
    p.add_argument("--notes", default="")
    p.add_argument("--rows", required=True)
    p.add_argument("--tasks", required=True)
    p.add_argument("cells", nargs="*")
    p.add_argument("--compare", nargs="*", default=[])
    a = p.parse_args()
    rows, tasks = a.rows.split(), set(a.tasks.split())
    cols = [c.split("|") for c in a.cells]
    cols = [(t, name, f) for t, name, f in cols if t in tasks]
    print(f"\n## {a.title}\n\n{a.notes}\n")
    print("| | " + " | ".join(name for _, name, _ in cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for row in rows:
        print(f"| {row} | " + " | ".join(cell(Path(f.replace("{row}", row)), KEY[t]) for t, _, f in cols) + " |")
    if "lid" in tasks:
        sets = sorted({f.split("decode_")[1].split("/")[0] for t, _, f in cols if t == "lid"})
        maj = [f"{x} {majority(Path('data') / x / 'utt2lang')}" for x in sets if (Path("data") / x / "utt2lang").is_file()]
        if maj:
            print(f"\nLID majority class (always answering the most frequent language): {'; '.join(maj)}.")
    if not a.compare:
        return
    print("\n### Paired comparisons (A − B on the same test utterances, 95 % paired-bootstrap interval)\n")
    print("| task | A − B | test set | claim (A better) | A / B | A − B [95 % CI] | verdict |")
    print("|---|---|---|---|---:|---:|---|")
    n = None
    for spec in a.compare:
        ra, rb, task, x, path = spec.split("|")
        res = json.loads(Path(path).read_text())
        n = res.get("n", n)
        key = KEY[task]
        r = res[key]
        claim = CLAIM.get((task, rb), f"{ra} better than {rb}")
        print(f"| {task} {key.upper()} | {ra} − {rb} | {x} | {claim} | {r['a']:.1f} / {r['b']:.1f} | "
              f"{r['diff']:+.1f} [{r['ci'][0]:+.1f}, {r['ci'][1]:+.1f}] | {verdict(res, key)} |")
    print(f"\nIntervals: `stk score --compare` ({n} paired bootstrap samples over the test utterances), run by "
          "run.sh stage 7; CER: lower is better, accuracy: higher is better.")


if __name__ == "__main__":
    main()
