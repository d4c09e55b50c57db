"""A word n-gram LM in ARPA format, interpolated Kneser–Ney, for ``stk decode --method ctc_beam --lm``.

Written here because no kept ARPA builder installs from this project's registries: KenLM's
``lmplz`` is not packaged by Debian, and the ``kenlm`` PyPI package only queries models; NLTK's
``nltk.lm`` estimates Kneser–Ney but cannot write ARPA. The file is read by KenLM (through
torchaudio's flashlight ``ctc_decoder``).

Estimate (Chen & Goodman, 1999, interpolated KN with one discount per order)::

    p(w | h) = max(a(h w) - D, 0) / a(h •) + D * N1+(h •) / a(h •) * p(w | h')

with ``a`` the raw counts at the highest order and continuation counts ``N1+(• g)`` below it
(raw counts for n-grams starting with ``<s>``), ``D = n1 / (n1 + 2 n2)`` from the counts of
counts of each order, and unigrams interpolated with the uniform distribution over the
vocabulary (``</s>`` and ``<unk>`` included, ``<s>`` excluded). In ARPA terms, a seen n-gram
stores ``log10 p(w | h)`` and a context ``h`` stores the backoff weight
``log10(D * N1+(h •) / a(h •))``, so that an unseen ``w`` gets ``bow(h) * p(w | h')`` — the same
distribution; every context sums to one (tests/test_decode_ctc.py checks it through KenLM).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from stk.utils import atomic_write_text

__all__ = ["NGramCounts", "build_arpa", "write_arpa"]

BOS, EOS, UNK = "<s>", "</s>", "<unk>"


class NGramCounts:
    """Interpolated Kneser–Ney probabilities of word n-grams up to ``order``.

    Args:
        sentences: each a list of words (no ``<s>``/``</s>``).
        order: n-gram order (>= 1).
    """

    def __init__(self, sentences: Iterable[list[str]], order: int = 3) -> None:
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        self.order = order
        raw: list[dict[tuple[str, ...], int]] = [defaultdict(int) for _ in range(order + 1)]
        vocab: set[str] = set()
        n_sent = 0
        for words in sentences:
            for w in words:
                if w in (BOS, EOS):
                    raise ValueError(f"sentence {n_sent + 1}: the word {w!r} is reserved")
            vocab.update(words)
            seq = (BOS, *words, EOS)
            for n in range(1, order + 1):
                for i in range(len(seq) - n + 1):
                    raw[n][seq[i : i + n]] += 1
            n_sent += 1
        if n_sent == 0:
            raise ValueError("no sentences to estimate an n-gram LM from")
        raw[1].pop((BOS,), None)
        self.vocab = sorted(vocab | {EOS, UNK})
        # adjusted counts: raw at the top order and for n-grams that start with <s>, else continuation counts
        adj: list[dict[tuple[str, ...], int]] = [{} for _ in range(order + 1)]
        adj[order] = dict(raw[order])
        for n in range(order - 1, 0, -1):
            cont: dict[tuple[str, ...], int] = defaultdict(int)
            for g in raw[n + 1]:
                cont[g[1:]] += 1
            adj[n] = {g: (c if g[0] == BOS else cont.get(g, 0)) for g, c in raw[n].items()}
            adj[n] = {g: c for g, c in adj[n].items() if c > 0}
        self.counts = adj
        self.discount = [0.0] * (order + 1)
        for n in range(1, order + 1):
            n1 = sum(1 for c in adj[n].values() if c == 1)
            n2 = sum(1 for c in adj[n].values() if c == 2)
            d = n1 / (n1 + 2 * n2) if n1 + n2 > 0 else 0.5
            self.discount[n] = min(max(d, 0.05), 0.95)
        # per context: total adjusted count and number of distinct followers
        self.ctx_total: list[dict[tuple[str, ...], int]] = [{} for _ in range(order + 1)]
        self.ctx_types: list[dict[tuple[str, ...], int]] = [{} for _ in range(order + 1)]
        for n in range(1, order + 1):
            tot: dict[tuple[str, ...], int] = defaultdict(int)
            typ: dict[tuple[str, ...], int] = defaultdict(int)
            for g, c in adj[n].items():
                tot[g[:-1]] += c
                typ[g[:-1]] += 1
            self.ctx_total[n], self.ctx_types[n] = dict(tot), dict(typ)
        self.prob: list[dict[tuple[str, ...], float]] = [{} for _ in range(order + 1)]
        n_words = len(self.vocab)  # every word but <s>
        tot1, typ1 = self.ctx_total[1].get((), 0), self.ctx_types[1].get((), 0)
        d1 = self.discount[1]
        for w in self.vocab:
            self.prob[1][(w,)] = max(adj[1].get((w,), 0) - d1, 0) / tot1 + d1 * typ1 / tot1 / n_words
        for n in range(2, order + 1):
            d = self.discount[n]
            for g, c in adj[n].items():
                h = g[:-1]
                lower = self.prob[n - 1].get(g[1:])
                if lower is None:  # the suffix is always seen; guard a zero continuation count
                    lower = self.backoff_prob(g[1:])
                self.prob[n][g] = (c - d) / self.ctx_total[n][h] + d * self.ctx_types[n][h] / self.ctx_total[n][h] * lower

    def gamma(self, h: tuple[str, ...]) -> float:
        """Interpolation (backoff) weight of context ``h``; 1 for an unseen context."""
        n = len(h) + 1
        tot = self.ctx_total[n].get(h) if n <= self.order else None
        if not tot:
            return 1.0
        return self.discount[n] * self.ctx_types[n][h] / tot

    def backoff_prob(self, g: tuple[str, ...]) -> float:
        """``p(g[-1] | g[:-1])`` for any n-gram (unknown words count as ``<unk>``)."""
        g = tuple(w if (w,) in self.prob[1] or w == BOS else UNK for w in g)[-self.order :]
        if len(g) == 1:
            return self.prob[1][g] if g[0] != BOS else 0.0
        p = self.prob[len(g)].get(g)
        if p is not None:
            return p
        return self.gamma(g[:-1]) * self.backoff_prob(g[1:])


def write_arpa(lm: NGramCounts, path: str | Path) -> Path:
    """Write ``lm`` as an ARPA file (atomically)."""
    lines = ["", "\\data\\"]
    entries: list[list[tuple[tuple[str, ...], float]]] = [[] for _ in range(lm.order + 1)]
    entries[1] = sorted(lm.prob[1].items()) + [((BOS,), 0.0)]
    for n in range(2, lm.order + 1):
        entries[n] = sorted(lm.prob[n].items())
    for n in range(1, lm.order + 1):
        lines.append(f"ngram {n}={len(entries[n])}")
    for n in range(1, lm.order + 1):
        lines += ["", f"\\{n}-grams:"]
        for g, p in entries[n]:
            lp = -99.0 if g == (BOS,) else math.log10(p)
            row = f"{lp:.6f}\t{' '.join(g)}"
            if n < lm.order and g[-1] != EOS:
                bow = lm.gamma(g)
                row += f"\t{math.log10(bow):.6f}"
            lines.append(row)
    lines += ["", "\\end\\", ""]
    out = Path(path)
    atomic_write_text(out, "\n".join(lines))
    return out


def build_arpa(sentences: Iterable[list[str]], path: str | Path, order: int = 3) -> NGramCounts:
    """Estimate an interpolated Kneser–Ney LM from ``sentences`` (lists of words) and write it to ``path``."""
    lm = NGramCounts(sentences, order)
    write_arpa(lm, path)
    return lm
