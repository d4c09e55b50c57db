"""Scoring: WER/CER with jiwer, BLEU/chrF with sacrebleu, on Kaldi ``utt-id text`` files."""

from __future__ import annotations

import dataclasses
import re
import string
import unicodedata
from pathlib import Path

from stk.data.kaldi import read_kv

_PUNCT = re.compile(rf"[{re.escape(string.punctuation)}¡¿«»“”„‘’…–—]")


@dataclasses.dataclass
class Normalizer:
    """Text normalisation applied to references and hypotheses before error rates."""

    lowercase: bool = True
    remove_punct: bool = True
    strip_accents: bool = False

    def __call__(self, text: str) -> str:
        text = unicodedata.normalize("NFC", text)
        if self.lowercase:
            text = text.lower()
        if self.remove_punct:
            text = _PUNCT.sub(" ", text)
        if self.strip_accents:
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        return " ".join(text.split())


def _paired(ref_file: str | Path, hyp_file: str | Path) -> tuple[list[str], list[str], list[str]]:
    refs, hyps = read_kv(ref_file), read_kv(hyp_file)
    missing = [u for u in refs if u not in hyps]
    if missing:
        raise ValueError(f"{hyp_file}: {len(missing)} utterance(s) of {ref_file} have no hypothesis, e.g. {missing[0]!r}")
    utts = list(refs)
    return utts, [refs[u] for u in utts], [hyps[u] for u in utts]


def error_rates(refs: list[str], hyps: list[str], norm: Normalizer | None = None) -> dict[str, float]:
    """WER and CER in percent (jiwer), with substitution/deletion/insertion counts."""
    import jiwer

    norm = norm or Normalizer()
    r = [norm(x) for x in refs]
    h = [norm(x) for x in hyps]
    # jiwer rejects empty references; score them as all-insertion by a placeholder-free path
    keep = [i for i, x in enumerate(r) if x]
    r, h = [r[i] for i in keep], [h[i] for i in keep]
    if not r:
        raise ValueError("every reference is empty after normalisation")
    w = jiwer.process_words(r, h)
    c = jiwer.process_characters([x.replace(" ", "") for x in r], [x.replace(" ", "") for x in h])
    return {
        "wer": 100 * w.wer, "cer": 100 * c.cer, "sub": w.substitutions, "del": w.deletions, "ins": w.insertions,
        "words": sum(len(x.split()) for x in r), "sents": len(r),
    }


def translation_scores(refs: list[str], hyps: list[str]) -> dict[str, object]:
    """Corpus BLEU and chrF (sacrebleu defaults: 13a tokenisation, mixed case) and their signatures."""
    import sacrebleu

    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    b = bleu.corpus_score(hyps, [refs])
    c = chrf.corpus_score(hyps, [refs])
    return {
        "bleu": b.score, "chrf": c.score, "sents": len(refs),
        "bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature()),
    }


def score_files(
    ref_file: str | Path, hyp_file: str | Path, metric: str, norm: Normalizer | None = None,
    utt2lang: str | Path | None = None,
) -> dict:
    """Score a hypothesis file against a reference file, both ``utt-id text``; ``metric`` is ``wer`` or ``bleu``.

    With ``utt2lang`` the result also has ``by_lang``: the same scores per language.
    """
    if metric not in ("wer", "bleu"):
        raise ValueError(f"metric must be wer or bleu, got {metric!r}")

    def one(refs: list[str], hyps: list[str]) -> dict:
        return error_rates(refs, hyps, norm) if metric == "wer" else translation_scores(refs, hyps)

    utts, refs, hyps = _paired(ref_file, hyp_file)
    res = one(refs, hyps)
    if utt2lang is not None:
        langs = read_kv(utt2lang)
        res["by_lang"] = {}
        for lang in sorted({langs.get(u, "unk") for u in utts}):
            idx = [i for i, u in enumerate(utts) if langs.get(u, "unk") == lang]
            res["by_lang"][lang] = one([refs[i] for i in idx], [hyps[i] for i in idx])
    return res


def results_table(rows: list[tuple[str, dict]], metric: str) -> str:
    """Markdown table of scores: one row per test set, then one per (set, language)."""
    if metric == "wer":
        head = "| test set | lang | sents | WER % | CER % |\n|---|---|---:|---:|---:|\n"
        fmt = lambda name, lang, r: f"| {name} | {lang} | {r['sents']} | {r['wer']:.1f} | {r['cer']:.1f} |\n"
    else:
        head = "| test set | lang | sents | BLEU | chrF |\n|---|---|---:|---:|---:|\n"
        fmt = lambda name, lang, r: f"| {name} | {lang} | {r['sents']} | {r['bleu']:.1f} | {r['chrf']:.1f} |\n"
    out = head
    for name, r in rows:
        out += fmt(name, "all", r)
        for lang, lr in r.get("by_lang", {}).items():
            out += fmt(name, lang, lr)
    return out
