"""lhotse interop: Kaldi data dirs to and from lhotse manifests (optional extra ``stk[lhotse]``).

The conversion itself is lhotse's (:func:`lhotse.kaldi.load_kaldi_data_dir`,
:func:`lhotse.kaldi.export_to_kaldi`); stk adds what those leave out. ``utt2lang`` is the
supervision's ``language``; every other per-utterance file — translations ``text.<lang>``,
``utt2intent`` and other ``utt2*`` labels — travels as a supervision ``custom`` field named by
the file (``custom["text.en"]``, ``custom["utt2intent"]``), so a round trip keeps them.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from stk.data.kaldi import DataDirError, load_data_dir, read_kv, spk2utt_from_utt2spk, write_kv

log = logging.getLogger("stk.data")

# per-utterance files lhotse maps itself (or that describe audio/features, not the supervision)
_NATIVE = {"text", "utt2spk", "utt2lang", "utt2dur", "utt2num_frames", "utt2gender", "utt2uniq"}


def _lhotse():
    try:
        import lhotse
    except ImportError:
        raise DataDirError("lhotse is not installed: pip install 'stk[lhotse]'") from None
    return lhotse


def _custom_files(path: Path) -> list[Path]:
    return sorted(f for f in path.iterdir() if f.is_file() and f.name not in _NATIVE
                  and (f.name.startswith("text.") or f.name.startswith("utt2")))


def to_lhotse(data_dir: str | Path, out_dir: str | Path, *, sampling_rate: int = 16000,
              allow_pipes: bool = False) -> tuple[Path, Path]:
    """Write ``OUT/recordings.jsonl.gz`` and ``OUT/supervisions.jsonl.gz`` for a Kaldi data dir.

    Durations come from ``reco2dur``, else (no ``segments``) from ``utt2dur``, else lhotse reads the
    audio — which runs ``wav.scp`` pipe commands, so those need ``allow_pipes``.
    """
    _lhotse()
    from lhotse.kaldi import load_kaldi_data_dir
    from lhotse.utils import fastcopy

    src = Path(data_dir)
    d = load_data_dir(src)
    if d.wav_scp is None:
        raise DataDirError(f"{src}: no wav.scp (lhotse recordings need audio)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".stk-lhotse-") as tmp:
        work = src
        has_durs = (src / "reco2dur").exists()
        if not has_durs and d.segments is None and (src / "utt2dur").exists():
            work = Path(tmp) / "d"  # the same dir, with reco2dur = utt2dur (a recording is an utterance)
            work.mkdir()
            for f in src.iterdir():
                if f.is_file():
                    (work / f.name).symlink_to(f.resolve())
            shutil.copy(src / "utt2dur", work / "reco2dur")
            has_durs = True
        if not has_durs and any(v.rstrip().endswith("|") for v in d.wav_scp.values()) and not allow_pipes:
            raise DataDirError(f"{src}/wav.scp: pipe commands and no reco2dur/utt2dur: lhotse would run the pipes "
                               "to measure durations; pass --allow-pipes or write utt2dur")
        recordings, supervisions, _ = load_kaldi_data_dir(work, sampling_rate=sampling_rate, num_jobs=1)
    if supervisions is None:
        raise DataDirError(f"{src}: lhotse found no supervisions (no segments and no utt2spk)")
    custom = {f.name: read_kv(f) for f in _custom_files(src)}
    if custom:
        from lhotse import SupervisionSet

        supervisions = SupervisionSet.from_segments([
            fastcopy(s, custom={**(s.custom or {}), **{k: v[s.id] for k, v in custom.items() if s.id in v}})
            for s in supervisions])
    rec_path, sup_path = out / "recordings.jsonl.gz", out / "supervisions.jsonl.gz"
    recordings.to_file(rec_path)
    supervisions.to_file(sup_path)
    log.info("%s: %d recordings, %d supervisions (custom: %s) -> %s", src, len(recordings), len(supervisions),
             ", ".join(custom) or "none", out)
    return rec_path, sup_path


def _load_manifests(paths: Sequence[str | Path]):
    """(RecordingSet, SupervisionSet) from manifest files (recordings + supervisions, or a CutSet),
    or from a dir holding exactly those."""
    lhotse = _lhotse()
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.name.endswith((".jsonl.gz", ".jsonl", ".json")))
        elif p.exists():
            files.append(p)
        else:
            raise DataDirError(f"{p}: no such lhotse manifest")
    recs, sups = [], []
    for f in files:
        try:
            m = lhotse.load_manifest(f)
        except Exception as e:
            raise DataDirError(f"{f}: not a lhotse manifest ({type(e).__name__}: {e})") from None
        if isinstance(m, lhotse.CutSet):
            r, s, _ = m.decompose()
            recs.append(r)
            sups.append(s)
        elif isinstance(m, lhotse.RecordingSet):
            recs.append(m)
        elif isinstance(m, lhotse.SupervisionSet):
            sups.append(m)
        else:
            log.warning("%s: a %s manifest, ignored", f, type(m).__name__)
    if not recs or not sups:
        raise DataDirError(f"{', '.join(map(str, paths))}: need recordings and supervisions (or cuts); found "
                           f"{len(recs)} recording and {len(sups)} supervision manifest(s)")
    r = recs[0] if len(recs) == 1 else lhotse.combine(*recs)
    s = sups[0] if len(sups) == 1 else lhotse.combine(*sups)
    return r, s


def from_lhotse(manifests: Sequence[str | Path], out_dir: str | Path, *, prefix_spk_id: bool = False) -> Path:
    """Write a Kaldi data dir (wav.scp, segments, text, utt2spk, spk2utt, utt2lang, utt2dur, …, plus one
    file per supervision ``custom`` field: ``text.<lang>``, ``utt2intent``…) from lhotse manifests."""
    _lhotse()
    from lhotse.kaldi import export_to_kaldi

    recordings, supervisions = _load_manifests(manifests)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise DataDirError(f"{out}: exists and is not empty")
    export_to_kaldi(recordings, supervisions, out, prefix_spk_id=prefix_spk_id)
    sup_list = list(supervisions)
    ids = {s.id: (f"{s.speaker}-{s.id}" if prefix_spk_id else s.id) for s in sup_list}
    if all(s.text is None for s in sup_list):
        (out / "text").unlink(missing_ok=True)
    custom: dict[str, dict[str, str]] = {}
    for s in sup_list:
        for k, v in (s.custom or {}).items():
            if isinstance(v, (str, int, float)) and (k.startswith("text.") or k.startswith("utt2")):
                custom.setdefault(k, {})[ids[s.id]] = str(v)
    for name, kv in custom.items():
        write_kv(out / name, kv)
    # stk's conventions: byte-sorted files (rewritten by stk), spk2utt from utt2spk
    for f in out.iterdir():
        if f.is_file():
            write_kv(f, read_kv(f))
    if (out / "utt2spk").exists():
        utt2spk = read_kv(out / "utt2spk")
        write_kv(out / "spk2utt", spk2utt_from_utt2spk(utt2spk))
        if not all(u.startswith(s) for u, s in utt2spk.items()) and not prefix_spk_id:
            log.warning("%s: speaker ids do not prefix utterance ids (Kaldi sorts by both): re-run with "
                        "--prefix-spk-id, or validate with --no-spk-sort", out)
    log.info("%d recordings, %d supervisions -> %s (custom files: %s)", len(recordings), len(sup_list), out,
             ", ".join(custom) or "none")
    return out
