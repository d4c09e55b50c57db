"""Scoring: WER/CER with jiwer, BLEU/chrF with sacrebleu, on Kaldi ``utt-id text`` files; accuracy
of utterance labels (``utt2intent``, ``utt2lang``: ``utt-id label``)."""

from __future__ import annotations

import dataclasses
import logging
import re
import string
import unicodedata
from pathlib import Path

from stk.data.kaldi import read_kv

log = logging.getLogger("stk.scoring")

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


def _check_labels(ref_file: str | Path, hyp_file: str | Path, utts: list[str], refs: list[str],
                  hyps: list[str]) -> list[str]:
    """One label per line in both files, and a hypothesis label set that overlaps the references' (when
    both have several labels); returns the hypothesis labels that never occur in the references."""
    for name, values in ((ref_file, refs), (hyp_file, hyps)):
        for u, v in zip(utts, values):
            if len(v.split()) != 1:
                raise ValueError(f"{name}: utterance {u!r} has {v!r}, not one label; --metric acc scores "
                                 "`utt-id label` files (utt2intent, utt2lang, `stk decode --method classify`)")
    ref_set, hyp_set = set(refs), set(hyps)
    unknown = sorted(hyp_set - ref_set)
    if not hyp_set & ref_set and len(hyp_set) > 1 and len(ref_set) > 1:
        # several labels on each side and none shared: a file mix-up, not a weak model (a model that
        # collapses to one class, or a one-language test set, is scored: 0 % is the honest figure)
        raise ValueError(f"no label of {hyp_file} occurs in {ref_file} (e.g. {unknown[0]!r} vs {refs[0]!r}): "
                         "do the files hold the same kind of label?")
    if unknown:
        log.warning("%s: %d label(s) never occur in %s: %s", hyp_file, len(unknown), ref_file, ", ".join(unknown[:5]))
    return unknown


def accuracy(refs: list[str], hyps: list[str]) -> dict[str, float]:
    """Label accuracy in percent, with the count of correct and scored utterances."""
    if not refs:
        raise ValueError("no utterances to score")
    correct = sum(r.strip() == h.strip() for r, h in zip(refs, hyps))
    return {"acc": 100.0 * correct / len(refs), "correct": correct, "sents": len(refs)}


def score_files(
    ref_file: str | Path, hyp_file: str | Path, metric: str, norm: Normalizer | None = None,
    utt2lang: str | Path | None = None,
) -> dict:
    """Score a hypothesis file against a reference file, both ``utt-id text`` (``utt-id label`` for
    ``acc``); ``metric`` is ``wer``, ``bleu`` or ``acc``.

    With ``utt2lang`` the result also has ``by_lang``: the same scores per language. ``acc`` results
    list hypothesis labels absent from the references under ``unknown_hyp_labels``.
    """
    scorers = {"wer": lambda r, h: error_rates(r, h, norm), "bleu": translation_scores, "acc": accuracy}
    if metric not in scorers:
        raise ValueError(f"metric must be wer, bleu or acc, got {metric!r}")
    one = scorers[metric]

    utts, refs, hyps = _paired(ref_file, hyp_file)
    unknown = _check_labels(ref_file, hyp_file, utts, refs, hyps) if metric == "acc" else None
    res = one(refs, hyps)
    if unknown:
        res["unknown_hyp_labels"] = unknown
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
    elif metric == "acc":
        head = "| test set | lang | sents | correct | Acc % |\n|---|---|---:|---:|---:|\n"
        fmt = lambda name, lang, r: f"| {name} | {lang} | {r['sents']} | {r['correct']} | {r['acc']:.1f} |\n"
    else:
        head = "| test set | lang | sents | BLEU | chrF |\n|---|---|---:|---:|---:|\n"
        fmt = lambda name, lang, r: f"| {name} | {lang} | {r['sents']} | {r['bleu']:.1f} | {r['chrf']:.1f} |\n"
    out = head
    for name, r in rows:
        out += fmt(name, "all", r)
        for lang, lr in r.get("by_lang", {}).items():
            out += fmt(name, lang, lr)
    return out
