"""Data dirs, audio and datasets: each bad input gets a clear error naming the file or utterance."""

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_data_dir, make_wav
from stk.data.audio import AudioError, read_audio
from stk.data.dataset import KaldiDataset
from stk.data.kaldi import DataDirError, fix_data_dir, read_kv, validate_data_dir, write_kv


def test_valid_dir_passes(data_dir):
    d = validate_data_dir(data_dir)
    assert len(d.utt_ids) == 4
    assert read_kv(data_dir / "spk2utt")["spk0"] == "spk0-utt000 spk0-utt002"


def test_missing_wav(data_dir):
    wav = read_kv(data_dir / "wav.scp")
    Path(wav["spk0-utt002"]).unlink()
    with pytest.raises(DataDirError, match="spk0-utt002.*not found"):
        validate_data_dir(data_dir)


def test_truncated_wav(data_dir):
    p = Path(read_kv(data_dir / "wav.scp")["spk1-utt001"])
    p.write_bytes(p.read_bytes()[:2000])
    with pytest.raises(DataDirError, match="spk1-utt001.*truncated"):
        validate_data_dir(data_dir)


def test_empty_wav(data_dir):
    p = Path(read_kv(data_dir / "wav.scp")["spk1-utt001"])
    make_wav(p, 0.0)
    with pytest.raises(DataDirError, match="spk1-utt001.*empty"):
        validate_data_dir(data_dir)


def test_wrong_sample_rate(data_dir):
    p = Path(read_kv(data_dir / "wav.scp")["spk0-utt000"])
    make_wav(p, 0.5, rate=8000)
    with pytest.raises(DataDirError, match="spk0-utt000.*8000 Hz, expected 16000"):
        validate_data_dir(data_dir, expected_rate=16000)


def test_duplicate_ids(data_dir):
    lines = (data_dir / "text").read_text().splitlines()
    (data_dir / "text").write_text("\n".join([lines[0], lines[0]] + lines[1:]) + "\n")
    with pytest.raises(DataDirError, match=r"text:2: duplicate id 'spk0-utt000'"):
        validate_data_dir(data_dir)


def test_unsorted_ids(data_dir):
    lines = (data_dir / "utt2spk").read_text().splitlines()
    (data_dir / "utt2spk").write_text("\n".join(reversed(lines)) + "\n")
    with pytest.raises(DataDirError, match="utt2spk: ids not sorted"):
        validate_data_dir(data_dir)
    fix_data_dir(data_dir)
    validate_data_dir(data_dir)


def test_text_without_wav_entry(data_dir):
    text = read_kv(data_dir / "text")
    text["spk9-utt999"] = "stray line"
    write_kv(data_dir / "text", text)
    with pytest.raises(DataDirError, match="text:5: utterance 'spk9-utt999' has no entry in wav.scp"):
        validate_data_dir(data_dir)


def test_empty_transcript(data_dir):
    text = read_kv(data_dir / "text")
    text["spk1-utt003"] = ""
    write_kv(data_dir / "text", text)
    with pytest.raises(DataDirError, match="'spk1-utt003' has an empty transcript"):
        validate_data_dir(data_dir)


def test_non_utf8_text(data_dir):
    (data_dir / "text").write_bytes(b"spk0-utt000 ok\nspk0-utt002 caf\xe9\n")
    with pytest.raises(DataDirError, match=r"text:2: not valid UTF-8"):
        validate_data_dir(data_dir)


def test_pipe_needs_opt_in(tmp_path):
    wav = make_wav(tmp_path / "a.wav", 0.3)
    spec = f"cat {wav} |"
    with pytest.raises(AudioError, match="--allow-pipes"):
        read_audio(spec)
    x, rate = read_audio(spec, allow_pipes=True)
    assert rate == 16000 and len(x) == 4800


def test_segments(tmp_path):
    from stk.data.kaldi import write_data_dir

    wav = make_wav(tmp_path / "rec.wav", 2.0)
    d = write_data_dir(tmp_path / "seg", wav_scp={"rec1": str(wav)},
                       segments={"rec1-a": "rec1 0.0 0.8", "rec1-b": "rec1 0.8 2.0"},
                       text={"rec1-a": "first", "rec1-b": "second"}, utt2spk={"rec1-a": "rec1", "rec1-b": "rec1"})
    ds = KaldiDataset(d, targets={"text": "text"}, tokenize=lambda s: [3] * len(s))
    assert [e["feats"].shape[0] for e in (ds[0], ds[1])] == [78, 118]


def test_dataset_skips_and_counts_short_and_empty(data_dir, caplog):
    text = read_kv(data_dir / "text")
    text["spk1-utt003"] = " "
    write_kv(data_dir / "text", text)
    ds = KaldiDataset(data_dir, targets={"text": "text"}, tokenize=lambda s: [ord(c) % 50 + 3 for c in s],
                      min_frames=65)
    kept = [it["utt_id"] for it in ds.items]
    assert kept == ["spk0-utt002", "spk1-utt001"]  # utt000 (58 frames) too short, utt003 empty text
    assert "too short" in caplog.text and "spk0-utt000" in caplog.text and "empty transcript" in caplog.text
    batch = ds.collate([ds[0], ds[1]])
    assert batch["feats"].shape[0] == 2 and batch["feats_lens"].tolist() == [78, 68]
    assert (batch["text"][1, batch["text_lens"][1]:] == -1).all()


def test_dataset_names_broken_utterance(data_dir):
    ds = KaldiDataset(data_dir, targets={"text": "text"}, tokenize=lambda s: [3])
    Path(read_kv(data_dir / "wav.scp")["spk1-utt001"]).write_bytes(b"RIFF garbage")
    with pytest.raises(AudioError, match="spk1-utt001"):
        ds[[it["utt_id"] for it in ds.items].index("spk1-utt001")]


def test_text_only_dataset(tmp_path):
    from stk.data.kaldi import write_data_dir

    d = write_data_dir(tmp_path / "t", text={"a": "hello", "b": "hi"}, utt2lang={"a": "en", "b": "en"})
    ds = KaldiDataset(d, speech=False, targets={"text": "text"}, tokenize=lambda s: [3] * len(s))
    assert ds.lengths == [5, 2] and ds.langs == ["en", "en"]
    assert "feats" not in ds.collate([ds[0], ds[1]])


def test_fbank_matches_torchaudio_and_cmvn(tmp_path):
    import torchaudio

    from stk.features.fbank import FbankConfig, GlobalCMVN, compute_fbank

    wav = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    f = compute_fbank(wav, 16000, FbankConfig())
    ref = torchaudio.compliance.kaldi.fbank(torch.from_numpy(wav)[None] * 32768, num_mel_bins=80, dither=0.0,
                                            energy_floor=0.0)
    assert f.shape == (98, 80) and torch.allclose(f, ref)
    c = GlobalCMVN.from_stats(f.double().sum(0).numpy(), (f.double() ** 2).sum(0).numpy(), f.shape[0])
    c.save(tmp_path / "c.json")
    g = GlobalCMVN.load(tmp_path / "c.json")(f)
    assert g.mean(0).abs().max() < 1e-3 and (g.std(0, unbiased=False) - 1).abs().max() < 1e-2
    with pytest.raises(ValueError, match="8000 Hz, expected 16000"):
        compute_fbank(wav, 8000, FbankConfig())


def test_spec_augment_masks_inside_lengths():
    from stk.features.fbank import SpecAugmentConfig, spec_augment

    torch.manual_seed(0)
    x = torch.ones(3, 200, 80)
    lens = torch.tensor([200, 120, 60])
    y = spec_augment(x, lens, SpecAugmentConfig(num_freq_masks=0, time_mask_width=40, time_mask_max_ratio=0.2))
    assert (y == 0).any()
    assert (y[2, 60:] == 1).all() and (y[1, 120:] == 1).all()
