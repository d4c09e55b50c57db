"""Datasets over Kaldi data dirs: speech-only, text-only, paired speech–text and parallel text.

One class covers all four: :class:`KaldiDataset` loads features when ``speech=True`` and one
token sequence per entry of ``targets`` (``{"text": "text", "text_en": "text.en"}`` maps a batch
key to a data-dir file) and one integer sequence per entry of ``int_seqs`` (``{"durations":
"durations"}``: ``utt-id int int …`` lines, e.g. ``stk align``'s per-token durations, or
``{"units": "units"}``: discrete speech units from ``stk units dump``, a target without a
tokenizer; with ``units.dur`` as a second key for deduplicated units). Policies, logged with the
utterance ids:

- an utterance too short for the encoder's subsampling (``min_frames``) is skipped and counted;
- an utterance whose target text is empty is skipped and counted;
- an utterance without a line in a ``targets`` or ``int_seqs`` file is skipped and counted;
- a non-integer entry in an ``int_seqs`` file raises :class:`~stk.data.kaldi.DataDirError`;
- a missing, truncated or unreadable wav raises :class:`~stk.data.audio.AudioError` naming it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Callable

import torch

from stk.data.audio import RecordingCache, audio_source, load_segment
from stk.data.kaldi import DataDirError, load_data_dir, read_kv
from stk.features.fbank import FbankConfig, GlobalCMVN, compute_fbank

log = logging.getLogger("stk.data")
_INT = re.compile(r"[+-]?[0-9]+")


class KaldiDataset(torch.utils.data.Dataset):
    """Examples from one data dir.

    Args:
        data_dir: a Kaldi data dir.
        speech: load features (``feats.scp`` if the dir has one, else fbank from ``wav.scp``).
        targets: batch key -> data-dir file to tokenize (``text``, ``text.en`` …).
        tokenize: ``str -> list[int]``.
        fbank: feature settings for on-the-fly extraction.
        cmvn: global CMVN applied to features.
        min_frames / max_frames: keep utterances whose feature length is in range.
        extra_labels: batch key -> data-dir file of one label per utterance (``utt2intent``,
            ``utt2lang``), mapped to ints by ``label_vocab[key]``.
        allow_pipes: let ``wav.scp`` pipe commands run.
        int_seqs: batch key -> data-dir file of ``utt-id int int …`` lines, loaded as they are
            (no tokenizer), e.g. ``{"durations": "durations"}``.

    ``ds[i]`` is a dict ``{"utt_id", "feats" (T, F)?, <target> LongTensor (U,)…, <int_seq> LongTensor (N,)…}``;
    :meth:`collate` pads a list of them into ``feats (B, T, F)``, ``feats_lens (B,)``,
    ``<target> (B, U)`` padded with ``-1`` and ``<target>_lens (B,)`` (the same for each int_seqs key).
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        speech: bool = True,
        targets: dict[str, str] | None = None,
        tokenize: Callable[[str], list[int]] | None = None,
        fbank: FbankConfig | None = None,
        cmvn: GlobalCMVN | None = None,
        min_frames: int = 1,
        max_frames: int | None = None,
        extra_labels: dict[str, str] | None = None,
        label_vocab: dict[str, dict[str, int]] | None = None,
        allow_pipes: bool = False,
        int_seqs: dict[str, str] | None = None,
    ) -> None:
        self.dir = Path(data_dir)
        d = load_data_dir(self.dir)
        self.speech = speech
        self.fbank = fbank or FbankConfig()
        self.cmvn = cmvn
        self.allow_pipes = allow_pipes
        targets = targets or {}
        if targets and tokenize is None:
            raise ValueError("targets given but no tokenize function")
        if speech and d.wav_scp is None and not (self.dir / "feats.scp").exists():
            raise DataDirError(f"{self.dir}: speech=True but there is no wav.scp or feats.scp")
        self.wav_scp, self.segments = d.wav_scp, d.segments
        self.feats_scp = read_kv(self.dir / "feats.scp") if speech and (self.dir / "feats.scp").exists() else None
        # the segments of a pipe/ark recording share one decode of it (LRU of decoded recordings)
        self._recordings = RecordingCache() if self.segments is not None else None
        utts = d.utt_ids if speech else list((d.text or {}).keys())
        if self.feats_scp is not None:
            no_feats = [u for u in utts if u not in self.feats_scp]
            if no_feats:
                raise DataDirError(f"{self.dir}/feats.scp: utterance {no_feats[0]!r} (and {len(no_feats) - 1} more) "
                                   "has no features; re-run `stk data fbank` or `stk data validate` the dir")
            arks = {v.rsplit(":", 1)[0] for v in self.feats_scp.values()}
            gone = sorted(a for a in arks if not Path(a).is_file())
            if gone:
                raise DataDirError(f"{self.dir}/feats.scp: points to {gone[0]}, which does not exist "
                                   f"({len(gone)} missing ark file(s)); re-run `stk data fbank`")
        texts = {key: self._read(name) for key, name in targets.items()}
        int_seqs = int_seqs or {}
        clash = sorted(set(int_seqs) & (set(targets) | set(extra_labels or {}) | {"feats", "utt_id", "length"}))
        if clash:
            raise ValueError(f"int_seqs key(s) {', '.join(clash)} clash with targets, labels or reserved keys")
        seqs = {key: self._read_int_seqs(name) for key, name in int_seqs.items()}
        self.labels = {key: self._read(name) for key, name in (extra_labels or {}).items()}
        self.label_vocab = label_vocab or {}
        langs = d.utt2lang or {}

        frames = self._frame_counts(utts) if speech else {}
        self.items: list[dict[str, Any]] = []
        short, empty, missing = [], [], []
        for utt in utts:
            if speech and (frames[utt] < min_frames or (max_frames is not None and frames[utt] > max_frames)):
                short.append(utt)
                continue
            item: dict[str, Any] = {"utt_id": utt}
            ok = True
            for key, t in texts.items():
                if utt not in t:
                    missing.append(utt)
                    ok = False
                    break
                ids = tokenize(t[utt]) if t[utt].strip() else []
                if not ids:
                    empty.append(utt)
                    ok = False
                    break
                item[key] = ids
            for key, sq in seqs.items():
                if not ok:
                    break
                if utt not in sq:
                    missing.append(utt)
                    ok = False
                    break
                item[key] = sq[utt]
            if not ok:
                continue
            for key, lab in self.labels.items():
                if utt not in lab:
                    raise DataDirError(f"{self.dir}: utterance {utt!r} has no label in {extra_labels[key]}")
            item["length"] = frames[utt] if speech else max(len(item[k]) for k in texts) if texts else 1
            self.items.append(item)
        self._report("too short/long for the encoder (frames outside range)", short)
        self._report("with an empty transcript", empty)
        self._report("without a target (or int_seqs) line", missing)
        if not self.items:
            raise DataDirError(f"{self.dir}: no usable utterances left")
        self.lengths = [it["length"] for it in self.items]
        self.langs = [langs.get(it["utt_id"], "unk") for it in self.items] if langs else None

    def _read(self, name: str) -> dict[str, str]:
        p = self.dir / name
        if not p.exists():
            raise DataDirError(f"{self.dir}: {name} not found")
        return read_kv(p)

    def _read_int_seqs(self, name: str) -> dict[str, list[int]]:
        """``utt-id int int …`` lines -> ``{utt: [int …]}``; DataDirError naming the file and utterance."""
        out = {}
        for utt, v in self._read(name).items():
            vals = v.split()
            bad = [x for x in vals if not _INT.fullmatch(x)]
            if bad:
                raise DataDirError(f"{self.dir / name}: utterance {utt!r}: {bad[0]!r} is not an integer")
            out[utt] = [int(x) for x in vals]
        return out

    def _frame_counts(self, utts: list[str]) -> dict[str, int]:
        """Feature frames per utterance from utt2num_frames, utt2dur or the audio headers."""
        if (self.dir / "utt2num_frames").exists():
            path = self.dir / "utt2num_frames"
            counts = read_kv(path)
            for u in utts:
                if u not in counts:
                    raise DataDirError(f"{path}: utterance {u!r} is missing; re-run `stk data fbank`")
                if not _INT.fullmatch(counts[u]):
                    raise DataDirError(f"{path}: utterance {u!r}: {counts[u]!r} is not an integer")
            return {u: int(counts[u]) for u in utts}
        if (self.dir / "utt2dur").exists():
            durs = read_kv(self.dir / "utt2dur")
            return {u: self.fbank.num_frames(int(float(durs[u]) * self.fbank.sample_rate)) for u in utts if u in durs} | {
                u: 0 for u in utts if u not in durs
            }
        from stk.data.audio import read_audio_info

        out = {}
        for u in utts:
            if self.segments is not None:
                _, s, e = self.segments[u]
                out[u] = self.fbank.num_frames(int((e - s) * self.fbank.sample_rate))
            else:
                rate, n = read_audio_info(self.wav_scp[u], allow_pipes=self.allow_pipes)
                out[u] = self.fbank.num_frames(int(n * self.fbank.sample_rate / rate))
        return out

    def _report(self, what: str, utts: list[str]) -> None:
        if utts:
            log.warning("%s: skipped %d utterance(s) %s: %s%s", self.dir, len(utts), what,
                        ", ".join(utts[:5]), " …" if len(utts) > 5 else "")

    def __len__(self) -> int:
        return len(self.items)

    def load_feats(self, utt: str) -> torch.Tensor:
        """Features ``(T, F)`` of one utterance (CMVN applied)."""
        try:
            if self.feats_scp is not None:
                import kaldiio

                feats = torch.from_numpy(kaldiio.load_mat(self.feats_scp[utt]).copy()).float()
            else:
                with audio_source(str(self.dir)):  # names the dir in the once-per-dir stereo notice
                    wav, rate = load_segment(self.wav_scp, utt, self.segments, allow_pipes=self.allow_pipes,
                                             cache=self._recordings)
                feats = compute_fbank(wav, rate, self.fbank)
        except Exception as e:
            raise type(e)(f"utterance {utt!r} in {self.dir}: {e}") from None
        return self.cmvn(feats) if self.cmvn is not None else feats

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.items[i]
        ex: dict[str, Any] = {"utt_id": item["utt_id"]}
        if self.speech:
            ex["feats"] = self.load_feats(item["utt_id"])
        for key, v in item.items():
            if isinstance(v, list):
                ex[key] = torch.tensor(v, dtype=torch.long)
        for key, lab in self.labels.items():
            vocab = self.label_vocab.get(key)
            value = lab[item["utt_id"]]
            if vocab is not None:
                if value not in vocab:
                    raise DataDirError(f"utterance {item['utt_id']!r}: label {value!r} not in the {key} vocabulary")
                ex[key] = torch.tensor(vocab[value])
            else:
                ex[key] = value
        return ex

    @staticmethod
    def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
        return collate(examples)


def pad_list(seqs: list[torch.Tensor], pad_value: float | int) -> torch.Tensor:
    """Pad ``[(L_i, ...)]`` to ``(B, max L, ...)``."""
    return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=pad_value)


def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad a list of examples into a batch (see :class:`KaldiDataset`)."""
    batch: dict[str, Any] = {"utt_ids": [e["utt_id"] for e in examples]}
    for key in examples[0]:
        if key == "utt_id":
            continue
        vals = [e[key] for e in examples]
        if key == "feats":
            batch["feats"] = pad_list(vals, 0.0)
            batch["feats_lens"] = torch.tensor([v.size(0) for v in vals])
        elif isinstance(vals[0], torch.Tensor) and vals[0].dim() == 1:
            batch[key] = pad_list(vals, -1)
            batch[f"{key}_lens"] = torch.tensor([v.size(0) for v in vals])
        elif isinstance(vals[0], torch.Tensor):
            batch[key] = torch.stack(vals)
        else:
            batch[key] = vals
    return batch
