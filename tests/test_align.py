"""CTC forced alignment -> per-token durations (MAESTRO), `stk align`, and int_seqs streams."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import make_data_dir
from stk.align import ctc_token_durations, min_ctc_frames, path_to_durations
from stk.cli import app
from stk.data.dataset import KaldiDataset
from stk.data.kaldi import DataDirError, read_kv

runner = CliRunner()


def peaked(path: list[int], vocab: int = 6, p: float = 0.9) -> torch.Tensor:
    """(T, V) log-probs whose per-frame argmax is ``path`` (``p`` on it, the rest shared)."""
    probs = torch.full((len(path), vocab), (1 - p) / (vocab - 1))
    probs[torch.arange(len(path)), torch.tensor(path)] = p
    return probs.log()


# -- the alignment itself ------------------------------------------------------------------------


@pytest.mark.parametrize("path,tokens,expected", [
    # "a a b": leading blank to the first token; the blank separating the repeat goes to the first "a"
    ([0, 3, 3, 0, 3, 4, 4, 0], [3, 3, 4], [4, 1, 3]),
    # no leading blank, trailing blanks to the last token
    ([3, 0, 4, 4, 5, 0, 0], [3, 4, 5], [2, 2, 3]),
    # one token, all blanks around it
    ([0, 0, 5, 0], [5], [4]),
    # the tightest path for a repeat: T == tokens + repeats
    ([3, 0, 3], [3, 3], [2, 1]),
    # "a a a" with long blanks
    ([0, 3, 0, 0, 3, 3, 0, 3], [3, 3, 3], [4, 3, 1]),
])
def test_durations_follow_known_best_path(path, tokens, expected):
    assert path_to_durations(path, len(tokens)) == expected
    durs = ctc_token_durations(peaked(path), tokens)
    assert durs == expected and sum(durs) == len(path)


def test_blank_id_and_float64():
    path = [5, 1, 1, 5, 2]  # blank = 5
    lp = peaked(path).double()
    assert ctc_token_durations(lp, [1, 2], blank=5) == [4, 1]


def test_durations_cover_every_frame_random():
    rng = random.Random(0)
    torch.manual_seed(0)
    for _ in range(200):
        vocab = rng.randint(2, 6)
        tokens = [rng.randint(1, vocab - 1) for _ in range(rng.randint(1, 8))]
        t = min_ctc_frames(tokens) + rng.randint(0, 12)
        lp = torch.randn(t, vocab).mul(3).log_softmax(-1)
        durs = ctc_token_durations(lp, tokens)
        assert len(durs) == len(tokens) and sum(durs) == t and min(durs) >= 1, (tokens, t, durs)


def test_impossible_alignment_errors():
    with pytest.raises(ValueError, match=r"alignment impossible: 2 frame\(s\) for 2 token\(s\).*needs at least 3"):
        ctc_token_durations(torch.zeros(2, 5).log_softmax(-1), [3, 3])
    ctc_token_durations(torch.zeros(2, 5).log_softmax(-1), [3, 4])  # distinct tokens fit in 2 frames
    with pytest.raises(ValueError, match="empty token sequence"):
        ctc_token_durations(torch.zeros(4, 5), [])
    with pytest.raises(ValueError, match="blank"):
        ctc_token_durations(torch.zeros(4, 5), [3, 0])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ctc_token_durations(torch.zeros(4, 5), [7])
    with pytest.raises(ValueError, match=r"\(T, V\)"):
        ctc_token_durations(torch.zeros(1, 4, 5), [3])
    with pytest.raises(ValueError, match="expected 2"):
        path_to_durations([0, 3, 3, 0], 2)


# -- stk align on a tiny CTC model ---------------------------------------------------------------

CTC_CONFIG = """
model:
  name: encdec
  conf:
    ctc_weight: 1.0
    encoder: {name: conformer, conf: {d_model: 16, num_heads: 2, ffn_dim: 32, num_layers: 1, kernel_size: 3}}
data:
  tokenizer: tok/char.model
  cmvn: dump/cmvn.json
  train:
    paired: {data_dir: dump/train, batch: {max_frames: 400}}
optim: {lr: 0.005, warmup_steps: 2}
trainer: {max_epochs: 0, max_steps: 4, log_interval: 2, keep_nbest: 1, progress: false, tensorboard: false}
"""


@pytest.fixture(scope="module")
def aligned_dir(tmp_path_factory):
    """A CTC-only model trained for a few steps through the CLI, packaged, and `stk align` run on
    dump/train."""
    tmp = tmp_path_factory.mktemp("align")
    old = os.getcwd()
    os.chdir(tmp)
    try:
        make_data_dir(tmp, n=6, name="train")
        for s in (["tokenizer", "train", "train/text", "--out", "tok/char", "--vocab-size", "30", "--model-type", "char"],
                  ["data", "fbank", "train", "dump/train"],
                  ["data", "cmvn", "dump/train", "--out", "dump/cmvn.json"]):
            res = runner.invoke(app, s)
            assert res.exit_code == 0, res.output
        Path("ctc.yaml").write_text(CTC_CONFIG)
        res = runner.invoke(app, ["train", "--config", "ctc.yaml", "--exp-dir", "exp"])
        assert res.exit_code == 0, res.output
        res = runner.invoke(app, ["package", "exp", "--weights", "exp/checkpoints/last.pt", "--out", "pkg",
                                  "--method", "ctc_greedy"])
        assert res.exit_code == 0, res.output
        res = runner.invoke(app, ["align", "dump/train", "--model", "pkg", "--batch-frames", "300"])
        assert res.exit_code == 0, res.output
    finally:
        os.chdir(old)
    return tmp


@pytest.fixture
def aligned(aligned_dir, monkeypatch):
    monkeypatch.chdir(aligned_dir)
    return aligned_dir


def test_align_help():
    res = runner.invoke(app, ["align", "--help"])
    assert res.exit_code == 0 and "Usage" in res.output and "stk align" in res.output


def test_align_writes_one_duration_per_token(aligned):
    from stk.package import load_package

    lm = load_package("pkg")
    durs = read_kv("dump/train/durations")
    texts = read_kv("dump/train/text")
    frames = read_kv("dump/train/utt2num_frames")
    assert list(durs) == list(texts)  # every utterance, Kaldi-sorted
    sub = lm.model.encoder.subsampling
    for utt, line in durs.items():
        d = [int(x) for x in line.split()]
        assert len(d) == len(lm.tokenizer.encode(texts[utt])) and min(d) >= 1
        assert sum(d) == int(sub.output_lengths(torch.tensor(int(frames[utt]))))  # = the encoder length
    info = json.loads(Path("dump/train/durations.info").read_text())
    assert info["subsampling"] == 4 and info["frame_shift_ms"] == 40.0 and info["num_utts"] == 6
    assert info["num_skipped"] == 0
    import hashlib

    assert info["tokenizer"] == hashlib.sha256(Path("pkg/tokenizer.model").read_bytes()).hexdigest()


def test_align_skips_unalignable_utterances(aligned, caplog):
    caplog.set_level(logging.INFO, logger="stk")
    shutil.copytree("train", "odd")
    text = read_kv("odd/text")
    utts = list(text)
    text[utts[0]] = "hello world " * 8  # far more tokens than encoder frames
    text[utts[1]] = ""
    del text[utts[2]]
    Path("odd/text").write_text("".join(f"{u} {t}\n" for u, t in text.items()))
    res = runner.invoke(app, ["align", "odd", "--model", "pkg", "--out", "odd_out/durs"])
    assert res.exit_code == 0, res.output
    durs = read_kv("odd_out/durs")
    assert sorted(durs) == sorted(utts[3:])
    info = json.loads(Path("odd_out/durs.info").read_text())
    assert info["num_utts"] == 3 and info["num_skipped"] == 3
    for what in ("fewer encoder frames", "empty transcript", "without a transcript line"):
        assert what in caplog.text
    assert utts[0] in caplog.text and utts[1] in caplog.text and utts[2] in caplog.text


def test_align_errors(aligned):
    from stk.experiment import build_model
    from stk.package import PackageMeta, write_package
    from stk.registry import ComponentSpec
    from stk.tokenizer import Tokenizer

    res = runner.invoke(app, ["align", "nosuch", "--model", "pkg"])
    assert res.exit_code == 1 and "error:" in res.output and "nosuch" in res.output
    res = runner.invoke(app, ["align", "dump/train", "--model", "nosuchmodel"])
    assert res.exit_code == 1 and "unknown model" in res.output
    conf = {"ctc_weight": 0.0, "encoder": {"name": "conformer", "conf": {"d_model": 16, "num_heads": 2, "ffn_dim": 32,
                                                                         "num_layers": 1}},
            "decoder": {"d_model": 16, "num_heads": 2, "ffn_dim": 32, "num_layers": 1}}
    vocab = Tokenizer("tok/char.model").vocab_size
    model = build_model(ComponentSpec("encdec", conf), vocab_size=vocab, input_dim=80)
    write_package("pkg_noctc", meta=PackageMeta(model=ComponentSpec("encdec", conf), vocab_size=vocab),
                  state_dict=model.state_dict(), tokenizer="tok/char.model", cmvn=None)
    res = runner.invoke(app, ["align", "dump/train", "--model", "pkg_noctc", "--out", "x/durations"])
    assert res.exit_code == 1 and "no CTC head" in res.output and not Path("x/durations").exists()
    shutil.copytree("train", "short")
    Path("short/text").write_text("".join(f"{u} {'a b c d e f g h i j ' * 6}\n" for u in read_kv("train/text")))
    res = runner.invoke(app, ["align", "short", "--model", "pkg"])
    assert res.exit_code == 1 and "no utterance could be aligned" in res.output


# -- int_seqs streams ----------------------------------------------------------------------------


def test_dataset_int_seqs_load_and_collate(aligned, caplog):
    from stk.config import from_dict
    from stk.experiment import DataConfig, StreamConfig, build_dataset
    from stk.tokenizer import Tokenizer

    tok = Tokenizer("tok/char.model")
    stream = from_dict(StreamConfig, {"data_dir": "dump/train", "int_seqs": {"durations": "durations"}}, "stream")
    data = DataConfig(tokenizer="tok/char.model", train={"paired": stream})
    ds = build_dataset(stream, data, tok, None, min_frames=7)
    assert len(ds) == 6
    batch = ds.collate([ds[0], ds[1], ds[2]])
    durs = read_kv("dump/train/durations")
    assert batch["durations"].dtype == torch.long
    assert batch["durations_lens"].tolist() == batch["text_lens"].tolist()
    for i, utt in enumerate(batch["utt_ids"]):
        want = [int(x) for x in durs[utt].split()]
        n = len(want)
        assert batch["durations"][i, :n].tolist() == want and (batch["durations"][i, n:] == -1).all()

    # a missing utterance is skipped and counted; a non-integer entry names the file and utterance
    utts = list(durs)
    Path("dump/train/durations.part").write_text("".join(f"{u} {durs[u]}\n" for u in utts[1:]))
    caplog.set_level(logging.WARNING, logger="stk")
    ds = KaldiDataset("dump/train", speech=False, targets={}, int_seqs={"durations": "durations.part"})
    assert len(ds) == 5 and "skipped 1 utterance(s) without a target (or int_seqs) line" in caplog.text
    assert utts[0] in caplog.text
    assert ds[0]["durations"].tolist() == [int(x) for x in durs[utts[1]].split()]
    Path("dump/train/durations.bad").write_text(f"{utts[0]} 3 4\n{utts[1]} 2 x 5\n")
    with pytest.raises(DataDirError, match=rf"durations.bad: utterance '{utts[1]}': 'x' is not an integer"):
        KaldiDataset("dump/train", speech=False, targets={}, int_seqs={"durations": "durations.bad"})
    with pytest.raises(DataDirError, match="nosuch not found"):
        KaldiDataset("dump/train", speech=False, targets={}, int_seqs={"durations": "nosuch"})
    with pytest.raises(ValueError, match="clash"):
        KaldiDataset("dump/train", speech=False, targets={"text": "text"}, tokenize=tok.encode,
                     int_seqs={"text": "durations"})
