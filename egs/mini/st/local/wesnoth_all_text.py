#!/usr/bin/env python3
"""Every Wesnoth sentence the mini corpus keeps out of its dev/test buckets, as one text-only data dir.

The MT-ceiling probe of RESULTS.md: how far text MT gets on synth_test with all the offline parallel
text of its domain (all 17 ``wesnoth-1.16-*`` packages, 5,359 aligned sentences, 4,822 outside the
dev/test hash buckets) instead of the small corpus's 1,512 (train + speech_only + text_only). The
buckets are the mini corpus's own (:func:`stk.corpora.mini.partition_sentences` hashes the sentence
id), so no dev or test sentence of any corpus size is written.

    local/wesnoth_all_text.py data/wesnoth_all_raw --langs de,es,fr,it,ru
    stk data combine data/wesnoth_all data/wesnoth_all_raw/text_only --normalize-text --langs de,es,fr,it,ru
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--langs", default="de,es,fr,it,ru", help="source languages (English is the target)")
    args = ap.parse_args()

    from stk.corpora import mini
    from stk.corpora.wesnoth import WESNOTH_LANGS, WESNOTH_PACKAGES, prepare_wesnoth, write_text_only

    langs = args.langs.split(",")
    cache = mini.default_cache_dir()
    names = [p[0] for p in WESNOTH_PACKAGES]
    with mini.cache_lock(cache):
        debs = mini.fetch_debs(names, cache / "debs")
        roots = [mini.extract_deb(debs[p], cache / "wesnoth" / p, mini._wesnoth_member) for p in names]
    # aligned across the mini corpus's languages, as its own partition is (the same sentence ids)
    sentences = prepare_wesnoth(roots, WESNOTH_LANGS)
    held_out = mini.TEST_SHARE + mini.DEV_SHARE
    rest = [s for s in sentences if mini._unit_hash("stk-mini-split:" + s.sid) >= held_out]
    print(f"{len(sentences)} sentences, {len(rest)} outside the dev/test buckets -> {args.out_dir}", file=sys.stderr)
    write_text_only(rest, args.out_dir, langs)


if __name__ == "__main__":
    main()
