"""CTC beam search: torchaudio's flashlight ``ctc_decoder`` vs stk's own prefix beam search, same posteriors.

Posteriors: a packaged CTC model (default: the mini ASR recipe's ``exp/train_small/package``)
run once over a data dir (default ``synth_test``); only the searches are timed. Both search with
beam ``--beam`` and no LM: stk's ``ctc_prefix_beam_search`` (``token_beam`` = beam; what
``stk decode --method ctc_beam`` runs without ``--lm``) and flashlight lexicon-free
(``stk.decode.ctc.ctc_beam_search_flashlight`` without an LM: torchaudio's ``ZeroLM``). Greedy
decoding is the reference for "same output". Entries alternate round-robin
(``common.alternate``); the table gives the median wall time of decoding every utterance, the
ratio to stk's search, and how many best hypotheses equal stk's and greedy's. With ``--lm
FILE.arpa`` another entry times flashlight with that word LM (lexicon decoding, what
``stk decode --method ctc_beam --lm`` runs).

Usage:
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/ctc_beam.py --threads 1 --repeats 5
    .venv/bin/python bench/ctc_beam.py --model mini-asr --data egs/mini/asr/data/real_test --lm lm.arpa
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, median, set_threads  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "egs/mini/asr/exp/train_small/package"))
    ap.add_argument("--data", default=str(ROOT / "egs/mini/asr/data/synth_test"))
    ap.add_argument("--beam", type=int, default=10)
    ap.add_argument("--lm", default=None, help="also time flashlight with this ARPA word LM")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    set_threads(args.threads)

    from stk.decode.ctc import ctc_beam_search_flashlight, ctc_greedy, ctc_prefix_beam_search, flashlight_decoder
    from stk.inference import iter_batches, read_scp_input
    from stk.package import load_package

    pkg = load_package(args.model)
    wav_scp, segments = read_scp_input(args.data)
    lps, lens = [], []
    with torch.inference_mode():
        for _, feats, flens in iter_batches(pkg, wav_scp, segments, batch_frames=20000, allow_pipes=False):
            enc, elens = pkg.model.encode(feats, flens)
            lps.append(pkg.model.ctc_log_probs(enc))
            lens.append(elens)
    n_utts = sum(int(x.size(0)) for x in lens)
    frames = sum(int(x.sum()) for x in lens)
    fl_dec = flashlight_decoder(pkg.tokenizer, beam_size=args.beam)
    out: dict[str, list] = {}

    def run_stk():
        out["stk"] = [h for lp, n in zip(lps, lens) for h in ctc_prefix_beam_search(lp, n, beam_size=args.beam)]

    def run_fl():
        out["flashlight"] = [h for lp, n in zip(lps, lens)
                             for h in ctc_beam_search_flashlight(lp, n, pkg.tokenizer, decoder=fl_dec)]

    def run_greedy():
        out["greedy"] = [h for lp, n in zip(lps, lens) for h in ctc_greedy(lp, n)]

    fns = {"stk prefix beam": run_stk, "flashlight, no LM": run_fl, "greedy": run_greedy}
    keys = {"stk prefix beam": "stk", "flashlight, no LM": "flashlight", "greedy": "greedy"}
    if args.lm:
        lm_dec = flashlight_decoder(pkg.tokenizer, beam_size=args.beam, lm=args.lm)

        def run_lm():
            out["flashlight+lm"] = [h for lp, n in zip(lps, lens)
                                    for h in ctc_beam_search_flashlight(lp, n, pkg.tokenizer, decoder=lm_dec)]
        fns["flashlight + word LM"] = run_lm
        keys["flashlight + word LM"] = "flashlight+lm"
    times = alternate(fns, args.repeats, warmup=1)
    base = median(times["stk prefix beam"])
    same = {name: (sum(a == b for a, b in zip(out[keys[name]], out["stk"])),
                   sum(a == b for a, b in zip(out[keys[name]], out["greedy"]))) for name in times}
    print(f"{n_utts} utterances, {frames} encoder frames, beam {args.beam}, {args.threads} thread(s), "
          f"{args.repeats} alternated repeats\n")
    print("| search | median s (all utts) | ms / utt | speed × stk | = stk's best | = greedy |\n|---|---:|---:|---:|---:|---:|")
    for name, ts in times.items():
        m = median(ts)
        print(f"| {name} | {m:.3f} | {1000 * m / n_utts:.2f} | {base / m:.2f} | {same[name][0]}/{n_utts} | "
              f"{same[name][1]}/{n_utts} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"times": times, "same_as_stk_greedy": same, "utts": n_utts, "frames": frames}))


if __name__ == "__main__":
    main()
