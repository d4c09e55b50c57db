"""Scoring: WER/CER with jiwer, BLEU/chrF with sacrebleu, on Kaldi ``utt-id text`` files; accuracy
of utterance labels (``utt2intent``, ``utt2lang``: ``utt-id label``).

Error rates follow Kaldi's ``compute-wer`` and sclite: an empty reference counts, its hypothesis
words are insertions. Text is normalised by a named, kept normaliser (:class:`Normalizer`; the
name goes into ``score.json`` so a RESULTS.md can cite it). 95 % intervals come from bootstrap
resampling over utterances (:func:`bootstrap`, :func:`compare`): percentile intervals of WER/CER
recomputed from per-utterance error counts, and of BLEU/chrF recomputed from sacrebleu's
per-sentence sufficient statistics (the machinery of sacrebleu's paired bootstrap test).
"""

from __future__ import annotations

import dataclasses
import logging
import unicodedata
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from stk.data.kaldi import read_kv

log = logging.getLogger("stk.scoring")

NORMALIZERS = ("jiwer", "whisper_basic", "whisper_english", "none")
DEFAULT_SEED = 12345  # sacrebleu's default bootstrap seed


@dataclasses.dataclass
class Normalizer:
    """Text normalisation applied to references and hypotheses before error rates.

    ``name``: ``jiwer`` (default: Unicode NFC, jiwer's ``ToLowerCase``, ``RemovePunctuation`` — every
    Unicode punctuation character, ASCII and CJK, removed, so ``Don't`` → ``dont`` —
    ``RemoveMultipleSpaces``, ``Strip``); ``whisper_basic`` / ``whisper_english`` (OpenAI Whisper's
    ``BasicTextNormalizer`` / ``EnglishTextNormalizer`` from the ``whisper-normalizer`` package, the
    normalisers of Whisper's evaluation and SeamlessM4T's ASR-BLEU; extra ``stk[whisper]``); or
    ``none``. ``lowercase``/``remove_punct`` switch the jiwer steps off; ``strip_accents`` removes
    diacritics after any normaliser.
    """

    lowercase: bool = True
    remove_punct: bool = True
    strip_accents: bool = False
    name: str = "jiwer"

    def __post_init__(self) -> None:
        if self.name not in NORMALIZERS:
            raise ValueError(f"normalizer must be one of {', '.join(NORMALIZERS)}, got {self.name!r}")
        self._fn = self._build()

    def _build(self) -> Callable[[str], str]:
        if self.name == "jiwer":
            import jiwer

            steps = ([jiwer.ToLowerCase()] if self.lowercase else []) + (
                [jiwer.RemovePunctuation()] if self.remove_punct else []) + [jiwer.RemoveMultipleSpaces(), jiwer.Strip()]
            tr = jiwer.Compose(steps)
            return lambda s: tr(unicodedata.normalize("NFC", s))
        if self.name.startswith("whisper"):
            try:
                if self.name == "whisper_basic":
                    from whisper_normalizer.basic import BasicTextNormalizer as cls
                else:
                    from whisper_normalizer.english import EnglishTextNormalizer as cls
            except ImportError:
                raise ValueError(f"normalizer {self.name} needs the whisper-normalizer package: "
                                 "pip install 'stk[whisper]'") from None
            return cls()
        return lambda s: unicodedata.normalize("NFC", s)

    def __call__(self, text: str) -> str:
        text = self._fn(text)
        if self.strip_accents:
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
            text = unicodedata.normalize("NFC", text)
        return " ".join(text.split())

    @property
    def description(self) -> str:
        """What the normaliser does, with the library version (for score.json and RESULTS.md)."""
        from importlib.metadata import PackageNotFoundError, version

        if self.name == "jiwer":
            steps = ["NFC"] + (["ToLowerCase"] if self.lowercase else []) + (
                ["RemovePunctuation"] if self.remove_punct else []) + ["RemoveMultipleSpaces", "Strip"]
            text = f"jiwer {version('jiwer')} transforms: {', '.join(steps)}"
        elif self.name == "none":
            text = "none (NFC, whitespace)"
        else:
            try:
                v = version("whisper-normalizer")
            except PackageNotFoundError:
                v = "?"
            cls = "BasicTextNormalizer" if self.name == "whisper_basic" else "EnglishTextNormalizer"
            text = f"whisper-normalizer {v} {cls}"
        return text + (" + strip accents" if self.strip_accents else "")


def _paired(ref_file: str | Path, hyp_file: str | Path) -> tuple[list[str], list[str], list[str]]:
    refs, hyps = read_kv(ref_file), read_kv(hyp_file)
    missing = [u for u in refs if u not in hyps]
    if missing:
        raise ValueError(f"{hyp_file}: {len(missing)} utterance(s) of {ref_file} have no hypothesis, e.g. {missing[0]!r}")
    extra = [u for u in hyps if u not in refs]
    if extra:  # not scored: say so (a hypothesis file of another test set, or a renamed utterance)
        log.warning("%s: %d hypothesis id(s) are not in %s and are not scored, e.g. %s", hyp_file, len(extra),
                    ref_file, ", ".join(repr(u) for u in extra[:3]))
    utts = list(refs)
    return utts, [refs[u] for u in utts], [hyps[u] for u in utts]


# ---------------------------------------------------------------------------------------------
# error rates


def _counts(out) -> np.ndarray:
    """Per-sentence ``[hits, sub, del, ins]`` (an ``(N, 4)`` int array) from a jiwer output."""
    rows = []
    for chunks in out.alignments:
        c = [0, 0, 0, 0]
        for ch in chunks:
            n_ref, n_hyp = ch.ref_end_idx - ch.ref_start_idx, ch.hyp_end_idx - ch.hyp_start_idx
            if ch.type == "equal":
                c[0] += n_ref
            elif ch.type == "substitute":
                c[1] += n_ref
            elif ch.type == "delete":
                c[2] += n_ref
            else:
                c[3] += n_hyp
        rows.append(c)
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def _jiwer_words(r: list[str], h: list[str]):
    import jiwer

    if not any(r):  # jiwer needs one non-empty reference; every word of h is an insertion
        return None
    return jiwer.process_words(r, h)


@dataclasses.dataclass
class ErrorCounts:
    """Per-utterance word and character counts ``[hits, sub, del, ins]`` (``(N, 4)`` each), the
    material for WER/CER and their bootstrap intervals."""

    words: np.ndarray
    chars: np.ndarray
    refs: list[str]
    hyps: list[str]
    word_out: object = None  # jiwer WordOutput (alignments for result.txt), None if every ref is empty

    @classmethod
    def compute(cls, refs: Sequence[str], hyps: Sequence[str], norm: Normalizer | None = None) -> "ErrorCounts":
        import jiwer

        norm = norm or Normalizer()
        r = [norm(x) for x in refs]
        h = [norm(x) for x in hyps]
        w = _jiwer_words(r, h)
        words = _counts(w) if w is not None else np.array([[0, 0, 0, len(x.split())] for x in h]).reshape(-1, 4)
        rc, hc = [x.replace(" ", "") for x in r], [x.replace(" ", "") for x in h]
        chars = (_counts(jiwer.process_characters(rc, hc)) if any(rc)
                 else np.array([[0, 0, 0, len(x)] for x in hc]).reshape(-1, 4))
        return cls(words, chars, r, h, w)


def _rate(c: np.ndarray) -> float:
    """Error rate in percent from summed ``[hits, sub, del, ins]``: (S + D + I) / (H + S + D)."""
    n = c[..., 0] + c[..., 1] + c[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):  # a resample of empty references only: NaN
        return np.where(n > 0, 100.0 * (c[..., 1] + c[..., 2] + c[..., 3]) / np.maximum(n, 1), np.nan)


def error_rates(refs: list[str], hyps: list[str], norm: Normalizer | None = None) -> dict[str, float]:
    """WER and CER in percent (jiwer), with substitution/deletion/insertion counts.

    Empty references count (their hypothesis words are insertions), as in Kaldi's ``compute-wer``;
    ValueError if the references hold no word at all.
    """
    ec = ErrorCounts.compute(refs, hyps, norm)
    return _rates(ec)


def _rates(ec: ErrorCounts) -> dict:
    w, c = ec.words.sum(0), ec.chars.sum(0)
    n_words = int(w[0] + w[1] + w[2])
    if n_words == 0:
        raise ValueError("every reference is empty after normalisation: WER is undefined")
    return {
        "wer": float(_rate(w)), "cer": float(_rate(c)), "sub": int(w[1]), "del": int(w[2]), "ins": int(w[3]),
        "words": n_words, "sents": len(ec.refs),
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
    list hypothesis labels absent from the references under ``unknown_hyp_labels``; ``wer`` results
    name their normaliser under ``normalizer``.
    """
    norm = norm or Normalizer()
    scorers = {"wer": lambda r, h: error_rates(r, h, norm), "bleu": translation_scores, "acc": accuracy}
    if metric not in scorers:
        raise ValueError(f"metric must be wer, bleu or acc, got {metric!r}")
    one = scorers[metric]

    utts, refs, hyps = _paired(ref_file, hyp_file)
    unknown = _check_labels(ref_file, hyp_file, utts, refs, hyps) if metric == "acc" else None
    res = one(refs, hyps)
    if metric == "wer":
        res["normalizer"] = norm.description
    if unknown:
        res["unknown_hyp_labels"] = unknown
    if utt2lang is not None:
        langs = read_kv(utt2lang)
        res["by_lang"] = {}
        for lang in sorted({langs.get(u, "unk") for u in utts}):
            idx = [i for i, u in enumerate(utts) if langs.get(u, "unk") == lang]
            try:
                res["by_lang"][lang] = one([refs[i] for i in idx], [hyps[i] for i in idx])
            except ValueError as e:  # e.g. a language whose references are all empty
                log.warning("%s: language %s not scored: %s", ref_file, lang, e)
    return res


# ---------------------------------------------------------------------------------------------
# bootstrap intervals


def _indices(n: int, n_samples: int, seed: int) -> np.ndarray:
    """``(n_samples, n)`` utterance indices drawn with replacement (numpy, seeded like sacrebleu)."""
    if n_samples < 1:
        raise ValueError(f"bootstrap samples must be >= 1, got {n_samples}")
    if n == 0:
        raise ValueError("no utterances to resample")
    return np.random.default_rng(seed).choice(n, size=(n_samples, n), replace=True)


def _interval(samples: np.ndarray) -> list[float]:
    """The 95 % percentile interval [2.5 %, 97.5 %] of bootstrap samples."""
    lo, hi = np.nanpercentile(samples, [2.5, 97.5])
    return [float(lo), float(hi)]


def _sent_stats(metric_name: str, refs: list[str], hyps: list[str]):
    """(sacrebleu metric, ``(N, k)`` per-sentence sufficient statistics)."""
    import sacrebleu

    metric = sacrebleu.metrics.BLEU() if metric_name == "bleu" else sacrebleu.metrics.CHRF()
    stats = np.asarray(metric._extract_corpus_statistics(hyps, [refs]), dtype=np.float64)
    return metric, stats


def _resampled_mt(metric, stats: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Corpus scores of each resample (the loop of sacrebleu's ``_paired_bs_test``)."""
    return np.array([metric._compute_score_from_stats(stats[row].sum(0)).score for row in idx])


def _resampled_sums(counts: np.ndarray, idx: np.ndarray, chunk: int = 64) -> np.ndarray:
    """``(n_samples, 4)`` summed counts of each resample, in chunks (memory ~ chunk x N x 4)."""
    return np.concatenate([counts[idx[i : i + chunk]].sum(1) for i in range(0, len(idx), chunk)])


def _resampled(metric: str, refs: list[str], hyps: list[str], idx: np.ndarray,
               norm: Normalizer | None) -> dict[str, np.ndarray]:
    """Resampled scores per metric name (wer/cer or bleu/chrf), each ``(n_samples,)``."""
    if metric == "wer":
        ec = ErrorCounts.compute(refs, hyps, norm)
        return {"wer": _rate(_resampled_sums(ec.words, idx)), "cer": _rate(_resampled_sums(ec.chars, idx))}
    if metric == "bleu":
        out = {}
        for name in ("bleu", "chrf"):
            m, st = _sent_stats(name, refs, hyps)
            out[name] = _resampled_mt(m, st, idx)
        return out
    if metric == "acc":
        ok = np.array([r.strip() == h.strip() for r, h in zip(refs, hyps)], dtype=np.float64)
        return {"acc": 100.0 * ok[idx].mean(1)}
    raise ValueError(f"metric must be wer, bleu or acc, got {metric!r}")


def bootstrap(refs: list[str], hyps: list[str], metric: str, n_samples: int = 1000, *,
              norm: Normalizer | None = None, seed: int = DEFAULT_SEED) -> dict:
    """95 % bootstrap intervals over utterances: ``{"n": N, "seed": s, "wer": [lo, hi], "cer": …}``
    (``bleu``/``chrf`` for ``metric="bleu"``, ``acc`` for ``"acc"``)."""
    idx = _indices(len(refs), n_samples, seed)
    res: dict = {"n": n_samples, "seed": seed, "method": "percentile bootstrap over utterances"}
    for name, s in _resampled(metric, refs, hyps, idx, norm).items():
        res[name] = _interval(s)
    return res


LOWER_IS_BETTER = {"wer": True, "cer": True, "bleu": False, "chrf": False, "acc": False}


def compare(refs: list[str], hyps_a: list[str], hyps_b: list[str], metric: str, n_samples: int = 1000, *,
            norm: Normalizer | None = None, seed: int = DEFAULT_SEED, names: tuple[str, str] = ("A", "B")) -> dict:
    """Paired bootstrap of ``A - B`` over the same resampled utterances.

    Returns per metric name ``{"a", "b", "diff", "ci": [lo, hi], "verdict"}``: ``verdict`` is
    ``"no difference"`` when the 95 % interval contains 0, else which system is better. Error rates
    (``metric="wer"``) with B > 0 also get ``"ratio"`` A / B and its paired interval ``"ratio_ci"``
    (resamples where B is 0 are left out).
    """
    if not (len(refs) == len(hyps_a) == len(hyps_b)):
        raise ValueError("references and both hypothesis lists must have the same length")
    idx = _indices(len(refs), n_samples, seed)
    one = {"wer": lambda h: _rates(ErrorCounts.compute(refs, h, norm)), "bleu": lambda h: translation_scores(refs, h),
           "acc": lambda h: accuracy(refs, h)}[metric]
    full_a, full_b = one(hyps_a), one(hyps_b)
    ra, rb = _resampled(metric, refs, hyps_a, idx, norm), _resampled(metric, refs, hyps_b, idx, norm)
    out: dict = {"n": n_samples, "seed": seed, "method": "paired percentile bootstrap over utterances",
                 "systems": list(names)}
    for name in ra:
        lo, hi = _interval(ra[name] - rb[name])
        if lo <= 0.0 <= hi:
            verdict = "no difference"
        else:
            a_better = (hi < 0) == LOWER_IS_BETTER[name]
            verdict = f"{names[0] if a_better else names[1]} better"
        out[name] = {"a": float(full_a[name]), "b": float(full_b[name]), "diff": float(full_a[name] - full_b[name]),
                     "ci": [lo, hi], "verdict": verdict}
        if metric == "wer" and full_b[name] > 0:  # error-rate ratio A / B (a bar such as "<= 2.5x the original's")
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios = np.where(rb[name] > 0, ra[name] / rb[name], np.nan)
            out[name]["ratio"] = float(full_a[name] / full_b[name])
            out[name]["ratio_ci"] = _interval(ratios)
    return out


def compare_files(ref_file: str | Path, hyp_a: str | Path, hyp_b: str | Path, metric: str, n_samples: int = 1000,
                  *, norm: Normalizer | None = None, seed: int = DEFAULT_SEED) -> dict:
    """:func:`compare` on files (the utterances of ``ref_file``, each needing a line in both hypotheses)."""
    utts, refs, ha = _paired(ref_file, hyp_a)
    _, _, hb = _paired(ref_file, hyp_b)
    res = compare(refs, ha, hb, metric, n_samples, norm=norm, seed=seed, names=(str(hyp_a), str(hyp_b)))
    if metric == "wer":
        res["normalizer"] = (norm or Normalizer()).description
    return res


# ---------------------------------------------------------------------------------------------
# sclite-style report, environment block, results tables


def sclite_report(ref_file: str | Path, hyp_file: str | Path, norm: Normalizer | None = None,
                  utt2spk: str | Path | None = None) -> str:
    """sclite/ESPnet-style ``result.txt``: a ``SPKR | # Snt # Wrd | Corr Sub Del Ins Err S.Err``
    table (one row per speaker when ``utt2spk`` is given, then ``Sum/Avg``), then every utterance's
    alignment (jiwer's ``visualize_alignment``) with its ``Scores: (#C #S #D #I)`` line."""
    import jiwer

    norm = norm or Normalizer()
    utts, refs, hyps = _paired(ref_file, hyp_file)
    ec = ErrorCounts.compute(refs, hyps, norm)
    spk = read_kv(utt2spk) if utt2spk is not None else {}
    groups: dict[str, list[int]] = {}
    for i, u in enumerate(utts):
        groups.setdefault(spk.get(u, "all") if spk else "all", []).append(i)
    rows = [(s, ix) for s, ix in sorted(groups.items())] if spk else []
    rows.append(("Sum/Avg", list(range(len(utts)))))

    def row(name: str, ix: list[int]) -> str:
        c = ec.words[ix]
        tot = c.sum(0)
        n = max(int(tot[0] + tot[1] + tot[2]), 1)
        serr = 100.0 * float(((c[:, 1] + c[:, 2] + c[:, 3]) > 0).mean()) if len(ix) else 0.0
        pct = [100.0 * tot[0] / n, 100.0 * tot[1] / n, 100.0 * tot[2] / n, 100.0 * tot[3] / n,
               100.0 * (tot[1] + tot[2] + tot[3]) / n, serr]
        return (f"| {name:<12} | {len(ix):>6} {int(tot[0] + tot[1] + tot[2]):>7} | "
                + " ".join(f"{p:>6.1f}" for p in pct) + " |")

    head = f"| {'SPKR':<12} | {'# Snt':>6} {'# Wrd':>7} | " + " ".join(
        f"{x:>6}" for x in ("Corr", "Sub", "Del", "Ins", "Err", "S.Err")) + " |"
    rule = "|" + "-" * (len(head) - 2) + "|"
    lines = [f"Scoring {hyp_file} against {ref_file}", f"Normalizer: {norm.description}", "",
             "," + "-" * (len(head) - 2) + ".", head, rule]
    lines += [row(s, ix) for s, ix in rows]
    lines += ["`" + "-" * (len(head) - 2) + "'", ""]
    # per-utterance alignments
    vis_by_utt: dict[int, str] = {}
    if ec.word_out is not None:
        text = jiwer.visualize_alignment(ec.word_out, show_measures=False, skip_correct=False)
        for block in text.split("=== SENTENCE ")[1:]:
            num, _, body = block.partition(" ===")
            vis_by_utt[int(num) - 1] = body.strip("\n")
    for i, u in enumerate(utts):
        h, s, d, ins = (int(x) for x in ec.words[i])
        lines.append(f"id: ({u})")
        lines.append(f"Scores: (#C #S #D #I) {h} {s} {d} {ins}")
        lines.append(vis_by_utt.get(i, f"REF: {ec.refs[i]}\nHYP: {ec.hyps[i]}"))
        lines.append("")
    return "\n".join(lines)
