"""The offline mini corpus: real Asterisk prompts + espeak-ng Wesnoth sentences + Wesnoth text.

Everything is built from Debian packages fetched with ``apt-get download`` into a cache
(``$STK_CACHE`` or ``~/.cache/stk``), so a fresh machine rebuilds the same corpus without any
dataset hub. See ``egs/mini/README.md`` for the layout, the sizes and the licenses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

from stk.corpora.asterisk import ASTERISK_LANGS, ProgressFn, no_progress, prepare_asterisk
from stk.corpora.heldout import build_heldout
from stk.corpora.voices import build_voices
from stk.corpora.synth import SYNTH_LANGS, prepare_synth
from stk.corpora.wesnoth import WESNOTH_LANGS, WESNOTH_PACKAGES, Sentence, prepare_wesnoth, write_text_only
from stk.data.kaldi import read_kv
from stk.utils import atomic_write_text

log = logging.getLogger(__name__)

DEFAULT_LANGS: tuple[str, ...] = ("en", "de", "es", "fr", "it", "ru")
_FORMAT_VERSION = 2  # bump when the content of a size changes, so old builds are redone
#: share of the sentence pool hashed into synthetic dev / test (the rest feeds train,
#: speech-only and text-only, in that order)
DEV_SHARE, TEST_SHARE = 0.05, 0.05


@dataclasses.dataclass(frozen=True)
class SizeSpec:
    """How much of each part a corpus size holds (synthetic and text counts are per language)."""

    real_per_split: dict[str, int] | None  # None: all real prompts
    real_max_chars: int | None  # with real_per_split: only prompts whose English is this short
    synth: dict[str, int]
    speech_only: int
    text_only: int


SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec({"train": 24, "dev": 6, "test": 6}, 60, {"train": 32, "dev": 8, "test": 8}, 16, 200),
    "small": SizeSpec(None, None, {"train": 384, "dev": 48, "test": 48}, 128, 1000),
    "full": SizeSpec(None, None, {"train": 1536, "dev": 96, "test": 96}, 384, 1500),
}

_OUR_DIRS = re.compile(r"^((real|synth)_(train|dev|test)(_[a-z]{2})?|speech_only_train|text_only(_[a-z]{2})?)$")


def default_cache_dir() -> Path:
    """``$STK_CACHE`` or ``~/.cache/stk``."""
    return Path(os.environ.get("STK_CACHE") or Path.home() / ".cache" / "stk")


@contextlib.contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``cache`` (builders sharing it download and extract in turn)."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(cmd: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise RuntimeError(
            f"{cmd[0]} not found: the mini corpus is built from Debian packages and needs apt-get and "
            f"dpkg-deb (on another system, put the .deb files in the cache's debs/ dir yourself)"
        ) from None


def fetch_debs(packages: Sequence[str], deb_dir: Path) -> dict[str, Path]:
    """``.deb`` files of ``packages`` in ``deb_dir``, downloading the missing ones with apt-get.

    A failed download runs ``apt-get update`` once and retries; the error names the packages.
    """
    deb_dir.mkdir(parents=True, exist_ok=True)

    def present() -> dict[str, Path]:
        found = {}
        for pkg in packages:
            debs = sorted(deb_dir.glob(f"{pkg}_*.deb"))
            if debs:
                found[pkg] = debs[-1]
        return found

    have = present()
    missing = [p for p in packages if p not in have]
    if not missing:
        return have
    partial = deb_dir / f".partial-{os.getpid()}"
    partial.mkdir(exist_ok=True)
    sandbox = ["-o", "APT::Sandbox::User=root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    t0 = time.time()
    try:
        for attempt in range(2):
            proc = _run(["apt-get", *sandbox, "download", *missing], cwd=partial)
            if proc.returncode == 0:
                break
            if attempt == 0:
                log.warning("apt-get download failed (%s); running apt-get update once", proc.stderr.strip()[-200:])
                upd = _run(["apt-get", "update"])
                if upd.returncode != 0:
                    raise RuntimeError(f"apt-get update failed: {upd.stderr.strip()[-400:]}")
        else:
            raise RuntimeError(f"apt-get download {' '.join(missing)} failed: {proc.stderr.strip()[-400:]}")
        for f in partial.glob("*.deb"):
            os.replace(f, deb_dir / f.name)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    have = present()
    still = [p for p in packages if p not in have]
    if still:
        raise RuntimeError(f"apt-get download did not produce {still} in {deb_dir}")
    size = sum(have[p].stat().st_size for p in missing) / 1e6
    log.info("downloaded %d package(s), %.1f MB in %.1f s: %s", len(missing), size, time.time() - t0, " ".join(missing))
    return have


def extract_deb(deb: Path, dest: Path, want: Callable[[str], bool] | None = None) -> Path:
    """Extract ``deb`` into ``dest`` once (marker ``dest/.done.<file name>``); ``want`` filters paths."""
    marker = dest / f".done.{deb.name}"
    if marker.exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    if want is None:
        proc = _run(["dpkg-deb", "-x", str(deb), str(dest)])
        if proc.returncode != 0:
            raise RuntimeError(f"dpkg-deb -x {deb} failed: {proc.stderr.strip()[-300:]}")
    else:
        try:
            pipe = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise RuntimeError("dpkg-deb not found: it is needed to unpack the Debian packages") from None
        assert pipe.stdout is not None
        with tarfile.open(fileobj=pipe.stdout, mode="r|*") as tar:
            for member in tar:
                if member.isfile() and want(member.name):
                    tar.extract(member, dest, filter="data")
        err = pipe.stderr.read().decode(errors="replace") if pipe.stderr else ""
        if pipe.wait() != 0:
            raise RuntimeError(f"dpkg-deb --fsys-tarfile {deb} failed: {err.strip()[-300:]}")
    atomic_write_text(marker, f"{deb.name}\n")
    return dest


def _wesnoth_member(name: str) -> bool:
    m = re.search(r"/locale/([^/]+)/LC_MESSAGES/[^/]+\.mo$", name)
    return bool(m and m.group(1) in WESNOTH_LANGS)


def _unit_hash(key: str) -> float:
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:15], 16) / 16**15


def partition_sentences(sentences: Sequence[Sentence], spec: SizeSpec) -> dict[str, list[Sentence]] | None:
    """Split the pool into disjoint ``train``/``dev``/``test``/``speech_only``/``text_only`` lists.

    A sentence's bucket (dev, test or the rest) depends only on its id; within a bucket the
    order is a second hash. Returns ``None`` when the pool is too small for ``spec``.
    """
    buckets: dict[str, list[Sentence]] = {"dev": [], "test": [], "rest": []}
    for s in sentences:
        u = _unit_hash("stk-mini-split:" + s.sid)
        buckets["test" if u < TEST_SHARE else "dev" if u < TEST_SHARE + DEV_SHARE else "rest"].append(s)
    for b in buckets.values():
        b.sort(key=lambda s: (_unit_hash("stk-mini-order:" + s.sid), s.sid))
    n_train = spec.synth["train"]
    need_rest = n_train + spec.speech_only + spec.text_only
    rest = buckets["rest"]
    if len(buckets["dev"]) < spec.synth["dev"] or len(buckets["test"]) < spec.synth["test"] or len(rest) < need_rest:
        return None
    return {
        "train": rest[:n_train],
        "dev": buckets["dev"][: spec.synth["dev"]],
        "test": buckets["test"][: spec.synth["test"]],
        "speech_only": rest[n_train : n_train + spec.speech_only],
        "text_only": rest[n_train + spec.speech_only : need_rest],
    }


def _wesnoth_partition(spec: SizeSpec, langs: Sequence[str], cache: Path) -> dict[str, list[Sentence]]:
    """Fetch the fewest Wesnoth packages (in :data:`WESNOTH_PACKAGES` order) that fill ``spec``."""
    need = max(
        (spec.synth["train"] + spec.speech_only + spec.text_only) / (1 - DEV_SHARE - TEST_SHARE),
        spec.synth["dev"] / DEV_SHARE,
        spec.synth["test"] / TEST_SHARE,
    )
    n, total = 0, 0
    while n < len(WESNOTH_PACKAGES) and total < need:
        total += WESNOTH_PACKAGES[n][2]
        n += 1
    while True:
        names = [p[0] for p in WESNOTH_PACKAGES[:n]]
        with cache_lock(cache):
            debs = fetch_debs(names, cache / "debs")
            roots = [extract_deb(debs[p], cache / "wesnoth" / p, _wesnoth_member) for p in names]
        sentences = prepare_wesnoth(roots, langs)
        parts = partition_sentences(sentences, spec)
        if parts is not None:
            log.info("wesnoth: %d package(s) give %d sentences: %s", n, len(sentences), " ".join(names))
            return parts
        if n == len(WESNOTH_PACKAGES):
            raise ValueError(
                f"all {n} wesnoth-1.16-* packages give only {len(sentences)} aligned sentences for {list(langs)}; "
                "too few for the requested size"
            )
        n += 1


@dataclasses.dataclass(frozen=True)
class DirStats:
    """Size of one data dir."""

    name: str
    langs: str
    utts: int
    speakers: int
    hours: float


def summarize(out_dir: str | Path) -> list[DirStats]:
    """Utterances, speakers and hours of every mini-corpus data dir under ``out_dir``."""
    out_dir = Path(out_dir)
    rows = []
    for d in sorted(p for p in out_dir.iterdir() if p.is_dir() and _OUR_DIRS.match(p.name)):
        lang_file = d / "utt2lang"
        langs = sorted(set(read_kv(lang_file).values())) if lang_file.exists() else []
        ids = read_kv(d / "text") if (d / "text").exists() else read_kv(d / "utt2dur")
        hours = sum(float(v) for v in read_kv(d / "utt2dur").values()) / 3600 if (d / "utt2dur").exists() else 0.0
        spks = len(set(read_kv(d / "utt2spk").values())) if (d / "utt2spk").exists() else 0
        rows.append(DirStats(d.name, ",".join(langs), len(ids), spks, hours))
    return rows


def _clean_stale(out: Path, written: set[str]) -> None:
    """Remove data dirs and wavs of an earlier build of another size or language set."""
    for d in out.iterdir():
        if d.is_dir() and _OUR_DIRS.match(d.name) and d.name not in written:
            shutil.rmtree(d)
    used: set[str] = set()
    for name in written:
        scp = out / name / "wav.scp"
        if scp.exists():
            used.update(read_kv(scp).values())
    for sub in ("real", "synth"):
        for wav in (out / "wav" / sub).glob("*/*.wav"):
            if str(wav.resolve()) not in used:
                wav.unlink()
        for tmp in (out / "wav" / sub).glob("*/.*.tmp.wav"):
            tmp.unlink()


def build_mini(
    out_dir: str | Path,
    size: str = "small",
    cache_dir: str | Path | None = None,
    langs: Sequence[str] = DEFAULT_LANGS,
    *,
    nj: int | None = None,
    progress: ProgressFn = no_progress,
) -> list[DirStats]:
    """Build the mini corpus of ``size`` (tiny, small, full) for ``langs`` under ``out_dir``.

    Real speech covers ``langs`` ∩ en/es/fr/it/ru, synthetic speech and text ``langs`` ∩
    en/de/fr/es/it/ru. Deterministic: the same arguments give the same corpus. ``out_dir/.done``
    is written last; a rerun with the same size and languages returns at once, another size
    rebuilds (reusing the wavs it can) and removes what the new size does not use.
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {list(SIZES)}")
    bad = [lang for lang in langs if lang not in DEFAULT_LANGS]
    if not langs or bad:
        raise ValueError(f"unsupported language(s) {bad or '(none)'}; choose from {list(DEFAULT_LANGS)}")
    langs = [lang for lang in DEFAULT_LANGS if lang in set(langs)]  # canonical order
    spec = SIZES[size]
    out = Path(out_dir)
    stamp = json.dumps({"size": size, "langs": langs, "version": _FORMAT_VERSION}, sort_keys=True)
    done = out / ".done"
    if done.exists() and done.read_text().strip() == stamp:
        log.info("%s is already built (%s, %s)", out, size, ",".join(langs))
        build_heldout(out, nj=nj or min(2, os.cpu_count() or 1), progress=progress)  # adds pico_test once pico2wave is installed
        build_voices(out, nj=nj or min(2, os.cpu_count() or 1), progress=progress)  # voices_train: flite/festival, when installed
        return summarize(out)
    done.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    nj = nj or min(2, os.cpu_count() or 1)
    t0 = time.time()
    written: dict[str, Path] = {}

    real_langs = [lang for lang in langs if lang in ASTERISK_LANGS]
    if real_langs:
        names = sorted({"asterisk-core-sounds-en"} | {f"asterisk-core-sounds-{x}{s}" for x in real_langs for s in ("", "-wav")})
        with cache_lock(cache):
            debs = fetch_debs(names, cache / "debs")
            for name in names:
                extract_deb(debs[name], cache / "asterisk")
        written.update(
            prepare_asterisk(
                cache / "asterisk", out, real_langs, max_per_split=spec.real_per_split,
                max_chars=spec.real_max_chars, nj=nj, progress=progress,
            )
        )
    synth_langs = [lang for lang in langs if lang in SYNTH_LANGS]
    parts = _wesnoth_partition(spec, synth_langs, cache)
    written.update(write_text_only(parts.pop("text_only"), out, synth_langs))
    written.update(prepare_synth(parts, out, synth_langs, nj=nj, progress=progress))

    _clean_stale(out, set(written))
    atomic_write_text(done, stamp + "\n")
    log.info("mini corpus (%s) built in %s in %.1f s", size, out, time.time() - t0)
    build_heldout(out, nj=nj, progress=progress)  # held-out-engine test sets (never trained on), when installed
    build_voices(out, nj=nj, progress=progress)  # more training voices (flite/festival), when installed
    return summarize(out)
