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


def _segmented_pipes(tmp_path):
    """2 recordings x 3 segments behind pipe commands that count their runs in tmp_path/runs."""
    from stk.data.kaldi import write_data_dir

    runs = tmp_path / "runs"
    wav_scp, segments, text, spk = {}, {}, {}, {}
    for r in range(2):
        w = make_wav(tmp_path / f"rec{r}.wav", 1.5, seed=r)
        wav_scp[f"rec{r}"] = f"sh -c 'echo rec{r} >> {runs}; cat {w}' |"
        for k in range(3):
            u = f"rec{r}-seg{k}"
            segments[u] = f"rec{r} {0.5 * k:.2f} {0.5 * k + 0.5:.2f}"
            text[u], spk[u] = "hello", f"rec{r}"
    d = write_data_dir(tmp_path / "seg", wav_scp=wav_scp, segments=segments, text=text, utt2spk=spk)
    return d, runs


def _runs(runs: Path) -> int:
    n = len(runs.read_text().split()) if runs.exists() else 0
    runs.unlink(missing_ok=True)
    return n


def test_segments_read_once_per_recording(tmp_path):
    """fbank dumping, on-the-fly training features and decoding input: 2 recordings x 3 segments -> 2 pipe runs."""
    from typer.testing import CliRunner

    from stk.cli import app
    from stk.data.audio import iter_utterances, load_segment
    from stk.data.kaldi import load_data_dir

    d, runs = _segmented_pipes(tmp_path)
    dd = load_data_dir(d)
    # decoding input reader (stk/inference.py) and the grouped reader behind `stk data fbank`
    got = {u: w for u, w, _ in iter_utterances(dd.wav_scp, list(dd.segments), dd.segments, allow_pipes=True)}
    assert _runs(runs) == 2 and len(got) == 6
    direct = load_segment(dd.wav_scp, "rec1-seg2", dd.segments, allow_pipes=True)[0]
    assert _runs(runs) == 1 and np.array_equal(got["rec1-seg2"], direct)
    res = CliRunner().invoke(app, ["data", "fbank", str(d), str(tmp_path / "dump"), "--allow-pipes"])
    assert res.exit_code == 0, res.output
    assert _runs(runs) == 2
    scp = read_kv(tmp_path / "dump" / "feats.scp")
    assert list(scp) == sorted(scp) and len(scp) == 6 and all(str((tmp_path / "dump").resolve()) in v for v in scp.values())
    assert read_kv(tmp_path / "dump" / "utt2num_frames")["rec0-seg1"] == "48"
    # on-the-fly features in any order (the sampler shuffles): one decode per recording
    ds = KaldiDataset(d, targets={"text": "text"}, tokenize=lambda s: [3] * len(s), allow_pipes=True)
    order = [5, 0, 3, 2, 4, 1]
    feats = [ds[i]["feats"] for i in order]
    assert _runs(runs) == 2 and [f.shape[0] for f in feats] == [48] * 6
    import kaldiio

    assert np.allclose(kaldiio.load_mat(scp[ds.items[5]["utt_id"]]), feats[0].numpy(), atol=1e-5)


def test_plain_file_segments_are_read_by_seeking(tmp_path):
    from stk.data.audio import read_audio, read_audio_slice

    w = make_wav(tmp_path / "long.wav", 3.0)
    part, rate = read_audio_slice(str(w), 1.25, 2.0)
    whole, _ = read_audio(str(w))
    assert rate == 16000 and np.array_equal(part, whole[20000:32000])
    with pytest.raises(AudioError, match="past the end"):
        read_audio_slice(str(w), 5.0, 6.0)


def test_failed_fbank_leaves_no_output_dir(data_dir, tmp_path):
    from typer.testing import CliRunner

    from stk.cli import app

    runner = CliRunner()
    Path(read_kv(data_dir / "wav.scp")["spk1-utt003"]).write_bytes(b"RIFF garbage")
    out = tmp_path / "dump"
    res = runner.invoke(app, ["data", "fbank", str(data_dir), str(out)])
    assert res.exit_code == 1 and "spk1-utt003" in res.output
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".dump")] == []
    # a previous good dump survives a failed re-run and is replaced by a good one
    make_wav(Path(read_kv(data_dir / "wav.scp")["spk1-utt003"]), 0.9, seed=3)
    assert runner.invoke(app, ["data", "fbank", str(data_dir), str(out)]).exit_code == 0
    before = (out / "feats.scp").read_text()
    Path(read_kv(data_dir / "wav.scp")["spk0-utt000"]).unlink()
    assert runner.invoke(app, ["data", "fbank", str(data_dir), str(out)]).exit_code == 1
    assert (out / "feats.scp").read_text() == before and len(read_kv(out / "utt2num_frames")) == 4
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    res = runner.invoke(app, ["data", "fbank", str(data_dir), str(other)])
    assert res.exit_code == 1 and "not an earlier `stk data fbank` output" in res.output
    assert (other / "notes.txt").read_text() == "keep me"


def test_dataset_feats_scp_missing_utterance_is_named(data_dir, tmp_path):
    from typer.testing import CliRunner

    from stk.cli import app

    assert CliRunner().invoke(app, ["data", "fbank", str(data_dir), str(tmp_path / "dump")]).exit_code == 0
    scp = read_kv(tmp_path / "dump" / "feats.scp")
    del scp["spk0-utt002"]
    write_kv(tmp_path / "dump" / "feats.scp", scp)
    with pytest.raises(DataDirError, match=r"feats.scp: utterance 'spk0-utt002'.*has no features"):
        KaldiDataset(tmp_path / "dump", targets={"text": "text"}, tokenize=lambda s: [3])


@pytest.fixture
def ctc_package(tmp_path):
    """An untrained (seeded) tiny CTC package: decoding it is deterministic, enough to compare inputs."""
    from typer.testing import CliRunner

    from stk.cli import app
    from stk.experiment import build_model
    from stk.package import DecodeOptions, PackageMeta, write_package
    from stk.registry import ComponentSpec
    from stk.tokenizer import Tokenizer

    d = make_data_dir(tmp_path, n=4, name="train")
    res = CliRunner().invoke(app, ["tokenizer", "train", str(d / "text"), "--out", str(tmp_path / "tok"),
                                   "--vocab-size", "20", "--model-type", "char"])
    assert res.exit_code == 0, res.output
    vocab = Tokenizer(tmp_path / "tok.model").vocab_size
    spec = ComponentSpec("encdec", {"encoder": {"name": "conformer", "conf": {"d_model": 16, "num_heads": 2,
                                    "ffn_dim": 32, "num_layers": 1, "kernel_size": 3}}, "decoder": None})
    torch.manual_seed(0)
    model = build_model(spec, vocab_size=vocab, input_dim=80)
    meta = PackageMeta(model=spec, vocab_size=vocab, decode=DecodeOptions(method="ctc_greedy"), uses_cmvn=False)
    return write_package(tmp_path / "pkg", meta=meta, state_dict=model.state_dict(), tokenizer=tmp_path / "tok.model",
                         cmvn=None), d


def test_decode_accepts_feats_scp_and_one_wav_and_reads_segments_once(ctc_package, tmp_path):
    from typer.testing import CliRunner

    from stk.cli import app

    runner = CliRunner()
    pkg, d = ctc_package

    def decode(src, *extra) -> dict[str, str]:
        out = tmp_path / "hyp"
        res = runner.invoke(app, ["decode", "--model", str(pkg), str(src), "--out", str(out), *extra])
        assert res.exit_code == 0, res.output
        return read_kv(out)

    ref = decode(d)
    assert runner.invoke(app, ["data", "fbank", str(d), str(tmp_path / "dump")]).exit_code == 0
    assert decode(tmp_path / "dump" / "feats.scp") == ref
    wav = read_kv(d / "wav.scp")["spk1-utt001"]
    assert decode(wav) == {"spk1-utt001": ref["spk1-utt001"]}
    # segmented pipes: one run per recording
    seg, runs = _segmented_pipes(tmp_path / "s")
    hyps = decode(seg, "--allow-pipes")
    assert _runs(runs) == 2 and len(hyps) == 6
    bad = tmp_path / "feats13.scp"
    import kaldiio

    with kaldiio.WriteHelper(f"ark,scp:{tmp_path / 'f13.ark'},{bad}") as w:
        w("u1", np.zeros((50, 13), dtype=np.float32))
    res = runner.invoke(app, ["decode", "--model", str(pkg), str(bad)])
    assert res.exit_code == 1 and "13-dim features" in res.output
