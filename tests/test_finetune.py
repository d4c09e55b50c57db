"""Fine-tuning pieces: init from pre-trained weights, freezing (also under DDP), the utterance
classifier (train, decode --method classify, score --metric acc), text-input decoding."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import socket
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from conftest import make_data_dir
from stk.checkpoint import load_checkpoint, save_checkpoint, save_weights
from stk.cli import app
from stk.config import ConfigError, from_dict
from stk.experiment import ExperimentConfig, InitConfig, build_model, freeze_parameters, init_from_pretrained
from stk.models import ENCODERS
from stk.modules.conformer import ConformerEncoder
from stk.registry import ComponentSpec
from stk.trainer import train

runner = CliRunner()
TINY_ENC = {"name": "conformer", "conf": {"d_model": 16, "num_heads": 2, "ffn_dim": 32, "num_layers": 2,
                                          "kernel_size": 3, "dropout": 0.0}}


class TextConformer(nn.Module):
    """A test joint encoder: the Conformer speech encoder, plus token embeddings fed to its layers."""

    def __init__(self, *, input_dim: int, vocab_size: int, d_model: int = 16, num_layers: int = 1) -> None:
        super().__init__()
        self.speech = ConformerEncoder(input_dim=input_dim, d_model=d_model, num_heads=2, ffn_dim=32,
                                       num_layers=num_layers, kernel_size=3, dropout=0.0)
        self.embed = nn.Embedding(vocab_size, d_model)
        self.output_dim = d_model

    def min_input_length(self) -> int:
        return self.speech.min_input_length()

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.speech(x, lens)

    def forward_text(self, ids: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.speech.layers(self.embed(ids.clamp(min=0)), lens), lens


if "test_text_conformer" not in ENCODERS:
    ENCODERS.register("test_text_conformer")(TextConformer)


def tiny_encdec(seed: int, vocab_size: int = 20, encoder: dict | None = None):
    torch.manual_seed(seed)
    conf = {"encoder": encoder or TINY_ENC, "decoder": {"d_model": 16, "num_heads": 2, "ffn_dim": 32, "num_layers": 1}}
    return build_model(ComponentSpec("encdec", conf), vocab_size=vocab_size, input_dim=8)


def params(model: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith(prefix)}


# -- init / freeze -------------------------------------------------------------------------------


def test_init_from_trainer_checkpoint(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="stk")
    a, b = tiny_encdec(0), tiny_encdec(1)
    save_checkpoint(tmp_path / "a.pt", {"model": a.state_dict(), "trainer": {"step": 3}})
    loaded = init_from_pretrained(b, [InitConfig(path=str(tmp_path / "a.pt"))])
    assert loaded == set(a.state_dict())
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert f"loaded {len(loaded)} tensors" in caplog.text and "every parameter" in caplog.text


def test_init_from_safetensors_with_prefix_map_and_exclude(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="stk")
    a, b = tiny_encdec(0), tiny_encdec(1)
    before = params(b)
    state = {f"speech_encoder.{k}": v for k, v in a.encoder.state_dict().items()}
    state["speech_encoder.extra.weight"] = torch.zeros(3)  # no counterpart in the model: ignored, warned
    state["text_head.weight"] = torch.zeros(2, 2)  # outside src: not considered
    save_weights(tmp_path / "a.safetensors", state)
    skip = "speech_encoder.layers.layers.1."
    init_from_pretrained(b, [InitConfig(path=str(tmp_path / "a.safetensors"), src="speech_encoder.", dst="encoder.",
                                        exclude=[skip])])
    pa, pb = params(a), params(b)
    for n in pa:
        if n.startswith("encoder.") and not n.startswith("encoder.layers.layers.1."):
            assert torch.equal(pa[n], pb[n]), n
        else:  # excluded layer, decoder, CTC head: untouched (random matrices differ from the source's)
            assert torch.equal(pb[n], before[n]), n
            assert pa[n].dim() < 2 or not torch.equal(pa[n], pb[n]), n
    assert "stay newly initialised" in caplog.text and "encoder.layers.layers.1." in caplog.text
    assert "encoder.extra.weight" in caplog.text  # the ignored tensor is named


def test_init_and_freeze_errors(tmp_path):
    a = tiny_encdec(0)
    save_checkpoint(tmp_path / "a.pt", {"model": a.state_dict()})
    with pytest.raises(ConfigError, match=r"a\.pt.*no tensor matched"):
        init_from_pretrained(tiny_encdec(1), [InitConfig(path=str(tmp_path / "a.pt"), src="nosuch.")])
    with pytest.raises(ConfigError, match=r"a\.pt.*shape mismatch for ctc\.weight"):
        init_from_pretrained(tiny_encdec(1, vocab_size=25), [InitConfig(path=str(tmp_path / "a.pt"))])
    with pytest.raises(ConfigError, match=r"missing\.safetensors.*not found"):
        init_from_pretrained(tiny_encdec(1), [InitConfig(path=str(tmp_path / "missing.safetensors"))])
    with pytest.raises(ConfigError, match="'enc.' matches no parameter"):
        freeze_parameters(tiny_encdec(1), ["enc."])
    with pytest.raises(ConfigError, match="nothing is left to train"):
        freeze_parameters(tiny_encdec(1), ["encoder.", "decoder.", "ctc."])
    base = {"model": {"name": "encdec"}, "data": {"tokenizer": "t.model", "train": {}}}
    with pytest.raises(ConfigError, match=r"init\[0\]\.srcc"):
        from_dict(ExperimentConfig, {**base, "init": [{"path": "a.pt", "srcc": "x"}]})
    with pytest.raises(ConfigError, match="freeze"):
        from_dict(ExperimentConfig, {**base, "freeze": "encoder."})


class ToyDS:
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(n)
        self.lengths = torch.randint(2, 6, (n,), generator=g).tolist()
        self.x = [torch.randn(L, 4, generator=g) for L in self.lengths]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"utt_id": f"u{i}", "x": self.x[i]}

    def collate(self, exs: list[dict]) -> dict:
        x = nn.utils.rnn.pad_sequence([e["x"] for e in exs], batch_first=True)
        return {"utt_ids": [e["utt_id"] for e in exs], "x": x, "y": x.sum((1, 2))}


class ToyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 8)
        self.head = nn.Linear(8, 1)

    def forward(self, batch: dict) -> dict:
        pred = self.head(torch.tanh(self.encoder(batch["x"]))).sum((1, 2))
        loss = ((pred - batch["y"]) ** 2).mean()
        return {"loss": loss, "stats": {}, "weight": float(len(pred))}


def run_frozen(exp: str) -> tuple[dict, dict, dict]:
    torch.manual_seed(0)
    model = ToyNet()
    freeze_parameters(model, ["encoder."])
    before = params(model)
    metrics = train(model, {"toy": ToyDS(16)}, exp_dir=exp, optim={"lr": 0.05, "scheduler": "constant", "warmup_steps": 1},
                    trainer={"max_epochs": 2, "device": "cpu", "num_threads": 1, "log_interval": 1, "tensorboard": False,
                             "progress": False},
                    batch={"toy": {"max_frames": 12}})
    return metrics, before, params(model)


def _check_frozen(before: dict, after: dict) -> None:
    assert torch.equal(before["encoder.weight"], after["encoder.weight"])
    assert torch.equal(before["encoder.bias"], after["encoder.bias"])
    assert not torch.equal(before["head.weight"], after["head.weight"])


def test_frozen_parameters_stay_fixed(tmp_path):
    metrics, before, after = run_frozen(str(tmp_path / "exp"))
    assert metrics["step"] > 2
    _check_frozen(before, after)
    ck = load_checkpoint(tmp_path / "exp" / "checkpoints" / "last.pt")
    assert "encoder.weight" in ck["model"]  # frozen weights are still saved
    assert len(ck["optimizer"]["param_groups"][0]["params"]) == 2  # only the head is optimised


def _ddp_frozen_worker(rank: int, port: int, exp: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    metrics, before, after = run_frozen(exp)
    _check_frozen(before, after)
    torch.save({"after": after, "step": metrics["step"]}, f"{exp}/rank{rank}.pt")


def test_frozen_parameters_under_two_process_ddp(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_ddp_frozen_worker, args=(r, port, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        if p.exitcode is None:
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["step"] == r1["step"] > 0
    for k, v in r0["after"].items():
        assert torch.equal(v, r1["after"][k]), k


# -- classifier ----------------------------------------------------------------------------------


def test_classifier_learns_a_separable_problem():
    torch.manual_seed(0)
    spec = ComponentSpec("classifier", {"label": "intent", "encoder": TINY_ENC, "dropout": 0.0})
    model = build_model(spec, vocab_size=10, input_dim=8, num_labels={"intent": 3, "lang": 2})
    y = torch.arange(12) % 3
    lens = torch.randint(16, 25, (12,))
    feats = 0.5 * torch.randn(12, 24, 8) + (y[:, None, None] - 1.0) * torch.linspace(-1, 1, 8)
    batch = {"feats": feats, "feats_lens": lens, "intent": y}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    hist = []
    for _ in range(30):
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        hist.append(out["stats"])
    assert out["weight"] == 12.0
    assert hist[-1]["loss"] < 0.5 * hist[0]["loss"] and hist[-1]["acc"] > hist[0]["acc"]
    model.eval()
    assert model.classify(feats, lens).tolist() == y.tolist()
    attn = build_model(ComponentSpec("classifier", {"label": "lang", "encoder": TINY_ENC, "pooling": "attention"}),
                       vocab_size=10, input_dim=8, num_labels={"lang": 2})
    attn({"feats": feats, "feats_lens": lens, "lang": y % 2})["loss"].backward()
    with pytest.raises(ConfigError, match="data.label_vocab.intent"):
        build_model(ComponentSpec("classifier", {"label": "intent"}), vocab_size=10, input_dim=8, num_labels=None)
    with pytest.raises(ValueError, match="no 'intent' label ids"):
        model.train()({"feats": feats, "feats_lens": lens})


CLS_CONFIG = """
model:
  name: classifier
  conf:
    label: intent
    encoder: {name: conformer, conf: {d_model: 16, num_heads: 2, ffn_dim: 32, num_layers: 1, kernel_size: 3}}
data:
  tokenizer: tok/char.model
  cmvn: dump/cmvn.json
  label_vocab: {intent: [low, high]}
  train:
    cls: {data_dir: dump/train, targets: {}, labels: {intent: utt2intent}, batch: {max_frames: 400}}
  valid: {data_dir: dump/train, targets: {}, labels: {intent: utt2intent}}
optim: {lr: 0.005, warmup_steps: 3}
trainer: {max_epochs: 3, log_interval: 2, keep_nbest: 1, progress: false, tensorboard: false}
"""


@pytest.fixture(scope="module")
def cls_dir(tmp_path_factory):
    """A data dir with utt2intent (low/high pitch) and utt2lang (en/fr), a tokenizer, CMVN, and a
    classifier trained and packaged through the CLI."""
    tmp = tmp_path_factory.mktemp("finetune")
    old = os.getcwd()
    os.chdir(tmp)
    try:
        d = make_data_dir(tmp, n=8, name="train")
        utts = sorted(l.split()[0] for l in (d / "wav.scp").read_text().splitlines())
        # make_data_dir's utterance i is a (200 + 50 i) Hz tone: intent low/high by pitch
        (d / "utt2intent").write_text("".join(f"{u} {'low' if int(u[-3:]) < 4 else 'high'}\n" for u in utts))
        (d / "utt2lang").write_text("".join(f"{u} {'en' if i % 2 else 'fr'}\n" for i, u in enumerate(utts)))
        for s in (["tokenizer", "train", "train/text", "--out", "tok/char", "--vocab-size", "30", "--model-type", "char"],
                  ["data", "fbank", "train", "dump/train"],
                  ["data", "cmvn", "dump/train", "--out", "dump/cmvn.json"]):
            res = runner.invoke(app, s)
            assert res.exit_code == 0, res.output
        Path("cls.yaml").write_text(CLS_CONFIG)
        res = runner.invoke(app, ["train", "--config", "cls.yaml", "--exp-dir", "exp_cls"])
        assert res.exit_code == 0, res.output
        res = runner.invoke(app, ["package", "exp_cls", "--weights", "exp_cls/checkpoints/last.pt", "--out", "pkg_cls"])
        assert res.exit_code == 0, res.output
    finally:
        os.chdir(old)
    return tmp


@pytest.fixture
def cls(cls_dir, monkeypatch):
    monkeypatch.chdir(cls_dir)
    return cls_dir


def test_classifier_decode_score_report(cls):
    meta = yaml.safe_load(Path("pkg_cls/model.yaml").read_text())
    assert meta["decode"]["method"] == "classify" and meta["label_vocab"] == {"intent": ["low", "high"]}
    assert meta["num_labels"] == {"intent": 2}
    res = runner.invoke(app, ["decode", "--model", "pkg_cls", "train", "--out", "dec/hyp"])
    assert res.exit_code == 0, res.output
    hyp = dict(l.split() for l in Path("dec/hyp").read_text().splitlines())
    assert sorted(hyp) == sorted(Path("train/utt2intent").read_text().split()[::2])
    assert set(hyp.values()) <= {"low", "high"}
    res = runner.invoke(app, ["score", "--metric", "acc", "train/utt2intent", "dec/hyp", "--utt2lang", "train/utt2lang",
                              "--json", "dec/score.json"])
    assert res.exit_code == 0 and "ACC" in res.output, res.output
    score = json.loads(Path("dec/score.json").read_text())
    ref = dict(l.split() for l in Path("train/utt2intent").read_text().splitlines())
    correct = sum(hyp[u] == ref[u] for u in ref)
    assert score["correct"] == correct and score["sents"] == 8 and score["acc"] == pytest.approx(100 * correct / 8)
    assert set(score["by_lang"]) == {"en", "fr"} and sum(r["sents"] for r in score["by_lang"].values()) == 8
    res = runner.invoke(app, ["report", "--metric", "acc", "dec/score.json"])
    assert res.exit_code == 0 and "Acc %" in res.output and "| dec | all | 8 |" in res.output, res.output


def test_acc_scoring_errors(cls):
    Path("bad").mkdir(exist_ok=True)
    ref = Path("train/utt2intent").read_text().splitlines()
    Path("bad/words").write_text("".join(f"{l.split()[0]} hello world\n" for l in ref))
    res = runner.invoke(app, ["score", "--metric", "acc", "train/utt2intent", "bad/words"])
    assert res.exit_code == 1 and "not one label" in res.output
    res = runner.invoke(app, ["score", "--metric", "acc", "train/utt2lang", "train/utt2intent"])
    assert res.exit_code == 1 and "no label of" in res.output and "same kind of label" in res.output
    Path("bad/partial").write_text("".join(f"{l.split()[0]} low\n" for l in ref[:3]))
    res = runner.invoke(app, ["score", "--metric", "acc", "train/utt2intent", "bad/partial"])
    assert res.exit_code == 1 and "have no hypothesis" in res.output
    Path("bad/odd").write_text("".join(f"{l.split()[0]} {'low' if i else 'medium'}\n" for i, l in enumerate(ref)))
    res = runner.invoke(app, ["score", "--metric", "acc", "train/utt2intent", "bad/odd"])
    assert res.exit_code == 0 and "not in the references: medium" in res.output
    # a model that collapsed to one class absent from a one-label test set scores 0 %, not an error
    Path("bad/one_ref").write_text("".join(f"{l.split()[0]} en\n" for l in ref))
    Path("bad/one_hyp").write_text("".join(f"{l.split()[0]} de\n" for l in ref))
    res = runner.invoke(app, ["score", "--metric", "acc", "bad/one_ref", "bad/one_hyp", "--json", "bad/one.json"])
    assert res.exit_code == 0, res.output
    assert json.loads(Path("bad/one.json").read_text())["acc"] == 0.0


def test_classifier_decode_errors(cls):
    res = runner.invoke(app, ["decode", "--model", "pkg_cls", "train", "--method", "attention"])
    assert res.exit_code == 1 and "utterance classifier; use --method classify" in res.output
    res = runner.invoke(app, ["decode", "--model", "pkg_cls", "--text", "train/text"])
    assert res.exit_code == 1 and "attention only" in res.output


def test_probe_init_freeze_and_resume(cls, caplog):
    caplog.set_level(logging.INFO, logger="stk")
    cfg = yaml.safe_load(CLS_CONFIG)
    cfg["trainer"].update(max_epochs=0, max_steps=3)
    cfg["init"] = [{"path": "exp_cls/checkpoints/last.pt", "exclude": ["head."]}]
    cfg["freeze"] = ["encoder."]
    Path("probe.yaml").write_text(yaml.safe_dump(cfg))
    res = runner.invoke(app, ["train", "--config", "probe.yaml", "--exp-dir", "exp_probe"])
    assert res.exit_code == 0, res.output
    assert "init: loaded" in caplog.text and "2 parameter tensors stay newly initialised: head.weight, head.bias" in caplog.text
    assert "freeze:" in caplog.text
    src = load_checkpoint("exp_cls/checkpoints/last.pt")["model"]
    probe = load_checkpoint("exp_probe/checkpoints/last.pt")
    assert probe["trainer"]["step"] == 3
    enc_params = [n for n in src if n.startswith("encoder.") and "running_" not in n and "num_batches" not in n]
    assert enc_params and all(torch.equal(src[n], probe["model"][n]) for n in enc_params)
    # resume: init is not applied again (its file may be gone), freezing is
    cfg["init"] = [{"path": "gone.pt"}]
    cfg["trainer"]["max_steps"] = 5
    Path("probe2.yaml").write_text(yaml.safe_dump(cfg))
    caplog.clear()
    res = runner.invoke(app, ["train", "--config", "probe2.yaml", "--exp-dir", "exp_probe"])
    assert res.exit_code == 0, res.output
    assert "init from pre-trained weights skipped" in caplog.text and "freeze:" in caplog.text
    resumed = load_checkpoint("exp_probe/checkpoints/last.pt")
    assert resumed["trainer"]["step"] == 5
    assert all(torch.equal(src[n], resumed["model"][n]) for n in enc_params)
    assert not torch.equal(probe["model"]["head.weight"], resumed["model"]["head.weight"])
    res = runner.invoke(app, ["train", "--config", "probe2.yaml", "--exp-dir", "exp_fresh"])
    assert res.exit_code == 1 and "gone.pt" in res.output and "not found" in res.output


# -- text-input decoding -------------------------------------------------------------------------


def _package(model, name: str) -> None:
    from stk.package import PackageMeta, write_package
    from stk.tokenizer import Tokenizer

    spec = ComponentSpec("encdec", model._spec_conf)
    meta = PackageMeta(model=spec, vocab_size=Tokenizer("tok/char.model").vocab_size)
    write_package(name, meta=meta, state_dict=model.state_dict(), tokenizer="tok/char.model", cmvn="dump/cmvn.json")


def _tiny_text_model(encoder: dict):
    from stk.tokenizer import Tokenizer

    conf = {"encoder": encoder, "decoder": {"d_model": 16, "num_heads": 2, "ffn_dim": 32, "num_layers": 1}}
    torch.manual_seed(0)
    model = build_model(ComponentSpec("encdec", conf), vocab_size=Tokenizer("tok/char.model").vocab_size, input_dim=80)
    model._spec_conf = conf
    return model


def test_text_input_decoding(cls, caplog):
    caplog.set_level(logging.INFO, logger="stk")
    model = _tiny_text_model({"name": "test_text_conformer"})
    assert model.encoder.embed.num_embeddings == model.vocab_size  # vocab_size reached the encoder
    enc, lens = model.eval().encode_text(torch.tensor([[5, 6, 7], [8, 9, 0]]), torch.tensor([3, 2]))
    assert enc.shape == (2, 3, 16) and lens.tolist() == [3, 2]
    _package(model, "pkg_text")
    res = runner.invoke(app, ["decode", "--model", "pkg_text", "--text", "train/text", "--beam-size", "2",
                              "--out", "dec_text/hyp"])
    assert res.exit_code == 0, res.output
    assert "CTC weight 0.3 -> 0" in caplog.text
    lines = Path("dec_text/hyp").read_text().splitlines()
    assert [l.split()[0] for l in lines] == sorted(l.split()[0] for l in Path("train/text").read_text().splitlines())
    res = runner.invoke(app, ["decode", "--model", "pkg_text", "train", "--beam-size", "2"])  # speech still works
    assert res.exit_code == 0 and len(res.output.splitlines()) == 8, res.output


def test_text_input_errors(cls):
    res = runner.invoke(app, ["decode", "--model", "pkg_cls", "train", "--text", "train/text"])
    assert res.exit_code == 1 and "not both" in res.output
    res = runner.invoke(app, ["decode", "--model", "pkg_cls"])
    assert res.exit_code == 1 and "either SOURCE" in res.output
    model = _tiny_text_model(TINY_ENC)
    with pytest.raises(ValueError, match="encoder has no text input"):
        model.encode_text(torch.tensor([[3, 4]]), torch.tensor([2]))
    _package(model, "pkg_speech_only")
    res = runner.invoke(app, ["decode", "--model", "pkg_speech_only", "--text", "train/text"])
    assert res.exit_code == 1 and "encoder has no text input" in res.output
