"""Parallel text from the Battle for Wesnoth 1.16 gettext catalogs (Debian ``wesnoth-1.16-*``).

Each package ships ``usr/share/games/wesnoth/1.16/locale/<lang>/LC_MESSAGES/wesnoth-<domain>.mo``.
In a catalog the ``msgid`` is the English original and the ``msgstr`` the human translation, so
joining the catalogs of several languages on the ``msgid`` gives multi-way parallel text. Only
sentence-like lines are kept: 4–30 English words, no markup, placeholders or digits, starting
like a sentence and ending with sentence punctuation. License: GPL-2+.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import struct
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from stk.data.kaldi import write_data_dir

log = logging.getLogger(__name__)

#: languages whose catalogs are read (English is the ``msgid`` side)
WESNOTH_LANGS: tuple[str, ...] = ("en", "de", "fr", "es", "it", "ru")

#: Debian packages, best first: (name, .deb size in MB, sentences aligned across en/de/fr/es/it/ru).
#: Measured on Debian bookworm (1:1.16.9-1) with :func:`prepare_wesnoth`; the order is by aligned
#: sentences per downloaded MB, so a size request takes the fewest megabytes (all 16 campaigns
#: together give 4,827 distinct sentences; with ``-data`` 5,359). ``-data`` (146 MB)
#: comes last: it is only fetched when the campaigns do not give enough sentences.
WESNOTH_PACKAGES: tuple[tuple[str, float, int], ...] = (
    ("wesnoth-1.16-nr", 8.1, 616),
    ("wesnoth-1.16-utbs", 13.2, 816),
    ("wesnoth-1.16-dw", 5.2, 243),
    ("wesnoth-1.16-sotbe", 6.7, 306),
    ("wesnoth-1.16-dm", 5.4, 242),
    ("wesnoth-1.16-httt", 12.9, 567),
    ("wesnoth-1.16-did", 5.8, 239),
    ("wesnoth-1.16-sota", 6.7, 257),
    ("wesnoth-1.16-ei", 5.9, 212),
    ("wesnoth-1.16-low", 9.0, 292),
    ("wesnoth-1.16-sof", 7.0, 183),
    ("wesnoth-1.16-trow", 19.6, 441),
    ("wesnoth-1.16-tsg", 8.1, 180),
    ("wesnoth-1.16-thot", 6.5, 118),
    ("wesnoth-1.16-ttb", 6.0, 104),
    ("wesnoth-1.16-l", 5.5, 23),
    ("wesnoth-1.16-data", 146.2, 533),
)

_MO_MAGIC = 0x950412DE
# markup, placeholders, WML/pango syntax, digits and ellipses (fragments) are not sentence-like
_BAD = re.compile(r"[<>{}\[\]$@|~_#*=\\%^`&+/0-9]|\.\.|…")
_START = re.compile(r"^[\"“«¡¿'‘]?[^\W\d_]", re.UNICODE)
_END = re.compile(r"[.!?][\"”»'’]?$")
_QUOTES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'"})


@dataclasses.dataclass(frozen=True)
class Sentence:
    """One English sentence with its translations; ``sid`` is stable (a hash of the English)."""

    sid: str
    en: str
    translations: Mapping[str, str]

    def text(self, lang: str) -> str:
        """The sentence in ``lang`` (``en`` gives the original)."""
        return self.en if lang == "en" else self.translations[lang]


def read_mo(path: str | Path) -> dict[str, str]:
    """Parse a GNU ``.mo`` catalog into ``{msgid: msgstr}`` (singular entries, context dropped).

    Plural entries and the header are skipped; when a ``msgid`` occurs under several contexts
    the first non-empty translation wins. Raises :class:`ValueError` naming the file when it is
    not a valid catalog.
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 20:
        raise ValueError(f"{path}: too short to be a .mo catalog")
    for order in ("<", ">"):
        magic, _rev, n, o_off, t_off = struct.unpack(order + "5I", data[:20])
        if magic == _MO_MAGIC:
            break
    else:
        raise ValueError(f"{path}: not a .mo catalog (bad magic number)")
    if o_off + 8 * n > len(data) or t_off + 8 * n > len(data):
        raise ValueError(f"{path}: truncated .mo catalog ({n} entries announced)")
    raw: list[tuple[bytes, bytes]] = []
    for i in range(n):
        olen, opos = struct.unpack(order + "2I", data[o_off + 8 * i : o_off + 8 * i + 8])
        tlen, tpos = struct.unpack(order + "2I", data[t_off + 8 * i : t_off + 8 * i + 8])
        if opos + olen > len(data) or tpos + tlen > len(data):
            raise ValueError(f"{path}: entry {i} points outside the file")
        raw.append((data[opos : opos + olen], data[tpos : tpos + tlen]))
    charset = "utf-8"
    for key, value in raw:
        if key == b"":
            m = re.search(rb"charset=([-\w]+)", value)
            if m:
                charset = m.group(1).decode("ascii")
    out: dict[str, str] = {}
    for key, value in raw:
        if not key or b"\x00" in key:  # header, or a plural entry
            continue
        try:
            msgid = key.decode(charset).split("\x04", 1)[-1]
            msgstr = value.decode(charset)
        except (UnicodeDecodeError, LookupError) as e:
            raise ValueError(f"{path}: cannot decode entry {key[:40]!r} as {charset}: {e}") from None
        if msgstr and not out.get(msgid):
            out[msgid] = msgstr
    return out


def write_mo(path: str | Path, catalog: Mapping[str, str]) -> None:
    """Write ``{msgid: msgstr}`` as a little-endian GNU ``.mo`` file (UTF-8 header included)."""
    entries = {"": "Content-Type: text/plain; charset=UTF-8\n"}
    entries.update(catalog)
    keys = sorted(entries, key=lambda k: k.encode("utf-8"))
    ids = [k.encode("utf-8") for k in keys]
    strs = [entries[k].encode("utf-8") for k in keys]
    n = len(keys)
    o_off, t_off = 28, 28 + 8 * n
    pos = t_off + 8 * n
    otab, ttab, blob = b"", b"", b""
    for table_is_ids, items in ((True, ids), (False, strs)):
        for b in items:
            entry = struct.pack("<2I", len(b), pos + len(blob))
            if table_is_ids:
                otab += entry
            else:
                ttab += entry
            blob += b + b"\x00"
    header = struct.pack("<7I", _MO_MAGIC, 0, n, o_off, t_off, 0, pos)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(header + otab + ttab + blob)


def normalize(text: str) -> str:
    """Collapse whitespace (also no-break spaces) and map typographic apostrophes to ``'``."""
    return " ".join(text.translate(_QUOTES).split())


def is_sentence(text: str, min_words: int = 4, max_words: int = 30) -> bool:
    """A normalized line that reads as a sentence: word count in range, no markup, punctuated."""
    if not text or _BAD.search(text):
        return False
    if not min_words <= len(text.split()) <= max_words:
        return False
    return bool(_START.match(text) and _END.search(text) and text[0].upper() == text[0])


def sentence_id(en: str) -> str:
    """Stable id of an English sentence: ``w`` + 10 hex digits of its SHA-1."""
    return "w" + hashlib.sha1(en.encode("utf-8")).hexdigest()[:10]


def find_catalogs(root: str | Path, lang: str) -> list[Path]:
    """The ``.mo`` files of ``lang`` under an extracted package ``root`` (sorted)."""
    return sorted(Path(root).glob(f"usr/share/games/wesnoth/*/locale/{lang}/LC_MESSAGES/*.mo"))


def prepare_wesnoth(
    roots: Sequence[str | Path],
    langs: Iterable[str] = WESNOTH_LANGS,
    *,
    min_words: int = 4,
    max_words: int = 30,
) -> list[Sentence]:
    """Sentences aligned across ``langs`` from extracted ``wesnoth-1.16-*`` package ``roots``.

    ``roots`` are read in order; a ``msgid`` seen in an earlier root keeps that root's
    translations. English lines must be sentences of ``min_words``–``max_words`` words, and each
    translation a sentence of 1–``max_words * 3 // 2`` words different from the English. Only
    sentences translated into every non-English language in ``langs`` are returned, sorted by id.
    """
    targets = [lang for lang in dict.fromkeys(langs) if lang != "en"]
    unknown = [lang for lang in targets if lang not in WESNOTH_LANGS]
    if unknown:
        raise ValueError(f"Wesnoth catalogs: unsupported language(s) {unknown}; choose from {list(WESNOTH_LANGS)}")
    table: dict[str, dict[str, str]] = {}
    english: set[str] = set()
    for root in roots:
        if not Path(root).is_dir():
            raise ValueError(f"Wesnoth package dir not found: {root}")
        seen_here: dict[str, dict[str, str]] = {}
        for lang in targets or ["de"]:
            mos = find_catalogs(root, lang)
            if not mos:
                raise ValueError(f"{root}: no {lang} .mo catalogs under usr/share/games/wesnoth/*/locale/{lang}")
            for mo in mos:
                for msgid, msgstr in read_mo(mo).items():
                    en = normalize(msgid)
                    if en in english or not is_sentence(en, min_words, max_words):
                        continue
                    if lang in seen_here.get(en, {}):
                        continue
                    tr = normalize(msgstr)
                    if tr == en or not is_sentence(tr, 1, max_words * 3 // 2):
                        continue
                    seen_here.setdefault(en, {})[lang] = tr
        for en, trs in seen_here.items():
            english.add(en)
            table[en] = {lang: trs[lang] for lang in targets if lang in trs}
    out = [
        Sentence(sentence_id(en), en, trs)
        for en, trs in table.items()
        if all(lang in trs for lang in targets)
    ]
    ids: dict[str, str] = {}
    for s in out:
        if s.sid in ids:
            raise ValueError(f"sentence id collision {s.sid}: {ids[s.sid]!r} / {s.en!r}")
        ids[s.sid] = s.en
    out.sort(key=lambda s: s.sid)
    log.info("wesnoth: %d sentences aligned across %s from %d package(s)", len(out), ["en", *targets], len(roots))
    return out


def write_text_only(sentences: Sequence[Sentence], out_dir: str | Path, langs: Sequence[str]) -> dict[str, Path]:
    """Write ``text_only_<lang>`` (text, utt2lang, text.en) and the pooled ``text_only``.

    Utterance ids are ``<lang>-txt-<sid>``. Returns ``{dir name: path}``.
    """
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    pooled: dict[str, dict[str, str]] = {"text": {}, "utt2lang": {}, "text.en": {}}
    for lang in langs:
        text = {f"{lang}-txt-{s.sid}": s.text(lang) for s in sentences}
        utt2lang = {u: lang for u in text}
        text_en = {f"{lang}-txt-{s.sid}": s.en for s in sentences}
        name = f"text_only_{lang}"
        written[name] = write_data_dir(out_dir / name, text=text, utt2lang=utt2lang, extra={"text.en": text_en})
        pooled["text"].update(text)
        pooled["utt2lang"].update(utt2lang)
        pooled["text.en"].update(text_en)
    written["text_only"] = write_data_dir(
        out_dir / "text_only", text=pooled["text"], utt2lang=pooled["utt2lang"], extra={"text.en": pooled["text.en"]}
    )
    return written
