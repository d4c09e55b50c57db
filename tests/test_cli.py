"""CLI behaviour: fast --help, clear errors, the full data -> train -> package -> decode -> score path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import make_data_dir
from stk.cli import app

runner = CliRunner()


def test_help_does_not_import_torch():
    code = "import sys; from stk.cli import app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def _all_commands() -> list[list[str]]:
    import typer.main

    out: list[list[str]] = []

    def walk(cmd, path: list[str]) -> None:
        assert (cmd.help or "").strip(), f"stk {' '.join(path)}: no help text"
        out.append(path)
        if hasattr(cmd, "commands"):  # a group (typer's own click)
            for name, sub in sorted(cmd.commands.items()):
                walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return out


def test_every_command_has_help():
    cmds = _all_commands()
    assert len(cmds) > 25 and ["data", "fbank"] in cmds and ["package"] in cmds
    for cmd in cmds:
        res = runner.invoke(app, [*cmd, "--help"])
        assert res.exit_code == 0 and "Usage" in res.output, (cmd, res.output)


def fails_cleanly(res, *needles: str) -> None:
    """rc != 0 through typer.Exit (not an escaped exception), one `error:` line, no traceback."""
    assert res.exit_code != 0, res.output
    assert isinstance(res.exception, SystemExit), f"escaped exception: {res.exception!r}"
    assert "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert errors, res.output
    for n in needles:
        assert n in errors[0], (n, errors[0])


def test_validate_reports_problem(tmp_path):
    d = make_data_dir(tmp_path, n=2)
    assert runner.invoke(app, ["data", "validate", str(d)]).exit_code == 0
    (d / "text").write_text("spk0-utt000 hello\nzzz orphan\n")
    res = runner.invoke(app, ["data", "validate", str(d)])
    assert res.exit_code == 1 and "zzz" in res.output


TINY_CONFIG = """
model:
  name: encdec
  conf:
    encoder: {name: conformer, conf: {d_model: 32, num_heads: 4, ffn_dim: 64, num_layers: 2, kernel_size: 5}}
    decoder: {d_model: 32, num_heads: 4, ffn_dim: 64, num_layers: 1}
data:
  tokenizer: tok/char.model
  cmvn: dump/cmvn.json
  train:
    paired: {data_dir: dump/train, batch: {max_frames: 300}}
  valid: {data_dir: dump/train}
optim: {lr: 0.003, warmup_steps: 5}
trainer: {max_epochs: 2, log_interval: 5, keep_nbest: 2, progress: false, tensorboard: false}
"""


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("cli")
    old, old_store = os.getcwd(), os.environ.get("STK_MODEL_STORE")
    os.chdir(tmp_path)
    os.environ["STK_MODEL_STORE"] = str(tmp_path / "store")
    try:
        _train_and_package(tmp_path)
    finally:
        os.chdir(old)
        if old_store is None:
            os.environ.pop("STK_MODEL_STORE")
        else:
            os.environ["STK_MODEL_STORE"] = old_store
    return tmp_path


@pytest.fixture
def trained(trained_dir, monkeypatch):
    monkeypatch.chdir(trained_dir)
    monkeypatch.setenv("STK_MODEL_STORE", str(trained_dir / "store"))
    return trained_dir


def _train_and_package(tmp_path: Path) -> None:
    make_data_dir(tmp_path, n=6, name="train")
    steps = [
        ["tokenizer", "train", "train/text", "--out", "tok/char", "--vocab-size", "30", "--model-type", "char"],
        ["data", "fbank", "train", "dump/train"],
        ["data", "cmvn", "dump/train", "--out", "dump/cmvn.json"],
    ]
    for s in steps:
        res = runner.invoke(app, s)
        assert res.exit_code == 0, res.output
    Path("train.yaml").write_text(TINY_CONFIG)
    res = runner.invoke(app, ["train", "--config", "train.yaml", "--exp-dir", "exp"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["average", "exp", "--n", "2"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["package", "exp", "--weights", "exp/model.avg2.safetensors", "--out", "pkg",
                              "--name", "tiny"])
    assert res.exit_code == 0, res.output


def test_transducer_trains_and_decodes(trained):
    cfg = TINY_CONFIG.replace("name: encdec", "name: transducer").replace(
        "decoder: {d_model: 32, num_heads: 4, ffn_dim: 64, num_layers: 1}",
        "rnnt: {embed_dim: 16, pred_dim: 32, joint_dim: 32}\n    ctc_weight: 0.2")
    Path("rnnt.yaml").write_text(cfg)
    res = runner.invoke(app, ["train", "--config", "rnnt.yaml", "--exp-dir", "exp_rnnt"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["package", "exp_rnnt", "--weights", "exp_rnnt/checkpoints/last.pt", "--out", "pkg_rnnt",
                              "--method", "rnnt_greedy"])
    assert res.exit_code == 0, res.output
    outs = {}
    for method in ("rnnt_greedy", "rnnt_beam"):
        res = runner.invoke(app, ["decode", "--model", "pkg_rnnt", "train", "--method", method, "--beam-size", "4"])
        assert res.exit_code == 0, res.output
        outs[method] = res.output.splitlines()
        assert len(outs[method]) == 6
    res = runner.invoke(app, ["decode", "--model", "pkg_rnnt", "train", "--method", "rnnt_beam", "--no-score-norm"])
    assert res.exit_code == 0 and len(res.output.splitlines()) == 6, res.output
    # --rnnt-search picks the algorithm: torchaudio's RNNTBeamSearch runs only when asked for
    import stk.decode.rnnt as rnnt_mod

    calls = []
    real = rnnt_mod.rnnt_beam_search_hyps
    rnnt_mod.rnnt_beam_search_hyps = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        res = runner.invoke(app, ["decode", "--model", "pkg_rnnt", "train", "--method", "rnnt_beam", "--beam-size", "4"])
        assert res.exit_code == 0 and calls == [], res.output
        res = runner.invoke(app, ["decode", "--model", "pkg_rnnt", "train", "--method", "rnnt_beam", "--beam-size", "4",
                                  "--rnnt-search", "torchaudio"])
        assert res.exit_code == 0 and len(res.output.splitlines()) == 6 and calls, res.output
    finally:
        rnnt_mod.rnnt_beam_search_hyps = real
    res = runner.invoke(app, ["decode", "--model", "pkg_rnnt", "train", "--method", "rnnt_beam", "--rnnt-search", "x"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["decode", "--model", "pkg_rnnt", "train", "--method", "attention"])
    assert res.exit_code == 1 and "no attention decoder" in res.output


def test_train_rejects_unknown_key(trained):
    res = runner.invoke(app, ["train", "--config", "train.yaml", "--exp-dir", "exp2", "model.conf.decoder.num_layer=2"])
    assert res.exit_code == 1 and "num_layer" in res.output


@pytest.mark.parametrize("method", ["attention", "ctc_greedy", "ctc_beam"])
def test_decode_by_name_and_score(trained, method):
    res = runner.invoke(app, ["decode", "--model", "tiny", "train/wav.scp", "--method", method, "--out", "hyp"])
    assert res.exit_code == 0, res.output
    lines = Path("hyp").read_text().splitlines()
    assert [l.split()[0] for l in lines] == sorted(Path("train/wav.scp").read_text().split()[::2])
    res = runner.invoke(app, ["score", "train/text", "hyp"])
    assert res.exit_code == 0 and "WER" in res.output


def test_decode_errors(trained):
    res = runner.invoke(app, ["decode", "--model", "nosuch", "train/wav.scp"])
    assert res.exit_code == 1 and "unknown model 'nosuch'" in res.output and "tiny" in res.output
    Path("bad.scp").write_text("utt1\n")
    res = runner.invoke(app, ["decode", "--model", "tiny", "bad.scp"])
    assert res.exit_code == 1 and "utt1" in res.output
    Path("pipe.scp").write_text("utt1 cat x.wav |\n")
    res = runner.invoke(app, ["decode", "--model", "tiny", "pipe.scp"])
    assert res.exit_code == 1 and "--allow-pipes" in res.output
    Path("missing.scp").write_text("utt1 /nonexistent/a.wav\n")
    res = runner.invoke(app, ["decode", "--model", "tiny", "missing.scp"])
    assert res.exit_code == 1 and "/nonexistent/a.wav" in res.output


def test_package_loads_only_safetensors(trained):
    files = sorted(p.name for p in Path("pkg").iterdir())
    assert files == ["cmvn.json", "model.safetensors", "model.yaml", "tokenizer.model"]
    res = runner.invoke(app, ["info", "tiny"])
    assert res.exit_code == 0 and "encdec" in res.output


def test_combine_langs_subset_and_table(tmp_path):
    a = make_data_dir(tmp_path / "a", n=6)
    (a / "utt2lang").write_text("".join(f"{u} {'fr' if i % 2 else 'de'}\n"
                                        for i, u in enumerate(sorted(l.split()[0] for l in (a / "text").read_text().splitlines()))))
    out = tmp_path / "out"
    res = runner.invoke(app, ["data", "combine", str(out), str(a), "--langs", "fr", "--subset", "2", "--normalize-text"])
    assert res.exit_code == 0, res.output
    utts = (out / "text").read_text().splitlines()
    assert len(utts) == 2 and all(t.split()[1] == t.split()[1].lower() for t in utts)
    langs = dict(l.split() for l in (out / "utt2lang").read_text().splitlines())
    assert set(langs.values()) == {"fr"} and set(langs) == {t.split()[0] for t in utts}
    assert runner.invoke(app, ["data", "validate", str(out)]).exit_code == 0
    # same seed -> same subset
    runner.invoke(app, ["data", "combine", str(tmp_path / "out2"), str(a), "--langs", "fr", "--subset", "2"])
    assert sorted((tmp_path / "out2" / "utt2lang").read_text().split()) == sorted((out / "utt2lang").read_text().split())
    # --exclude: the complement of a subset
    runner.invoke(app, ["data", "combine", str(tmp_path / "rest"), str(a), "--exclude", str(out)])
    rest = set((tmp_path / "rest" / "utt2lang").read_text().split()[::2])
    assert len(rest) == 4 and not rest & set(langs)
    # stk table: rows x columns from score.json files, '–' when missing
    (tmp_path / "s.json").write_text('{"bleu": 12.345, "by_lang": {"fr": {"bleu": 3.0}}}')
    res = runner.invoke(app, ["table", f"A|BLEU|bleu|{tmp_path}/s.json", f"A|fr|by_lang.fr.bleu|{tmp_path}/s.json",
                              f"B|BLEU|bleu|{tmp_path}/missing.json"])
    assert res.exit_code == 0 and "| A | 12.3 | 3.0 |" in res.output and "| B | – | – |" in res.output
    assert runner.invoke(app, ["table", "bad-cell"]).exit_code == 1
    # --rows: one spec per column, {row} filled in per row
    (tmp_path / "A.json").write_text('{"bleu": 1.0}')
    res = runner.invoke(app, ["table", "--rows", "A,B", "BLEU|bleu|" + str(tmp_path / "{row}.json")])
    assert res.exit_code == 0 and "| A | 1.0 |" in res.output and "| B | – |" in res.output
    assert runner.invoke(app, ["table", "--rows", "A", "A|BLEU|bleu|x.json"]).exit_code == 1


def test_package_store_names_force_and_provenance(trained, tmp_path, monkeypatch):
    import torch
    import yaml

    store = tmp_path / "store"
    monkeypatch.setenv("STK_MODEL_STORE", str(store))
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data.txt").write_text("precious")
    args = ["package", "exp", "--weights", "exp/model.avg2.safetensors"]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "p1"), "--name", "a"])
    assert res.exit_code == 0, res.output
    for bad in (".", "..", str(victim), "../victim", "a/b", "-x", ""):
        res = runner.invoke(app, [*args, "--out", str(tmp_path / "p2"), "--name", bad, "--force"])
        fails_cleanly(res, "plain identifier")
    assert (victim / "data.txt").read_text() == "precious" and (store / "a" / "model.yaml").exists()
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "p2"), "--name", "a"])
    fails_cleanly(res, "exists", "--force")
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "p2"), "--name", "a", "--force", "--description", "v2"])
    assert res.exit_code == 0, res.output
    meta = yaml.safe_load((store / "a" / "model.yaml").read_text())
    assert meta["description"] == "v2" and meta["uses_cmvn"] is True
    assert meta["versions"]["torch"] == torch.__version__ and meta["versions"]["stk"]
    assert sorted(p.name for p in store.iterdir()) == ["a"]  # no temporary dirs left behind
    # --out onto something that is not a package is refused, and left alone
    res = runner.invoke(app, [*args, "--out", str(victim)])
    fails_cleanly(res, "not a package directory")
    assert (victim / "data.txt").read_text() == "precious"
    # files honour the umask (0644 under 022), not mkstemp/mkdtemp's private modes
    old = os.umask(0o022)
    try:
        res = runner.invoke(app, [*args, "--out", str(tmp_path / "p3")])
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p3").stat().st_mode & 0o777 == 0o755
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / "p3").iterdir()} == dict.fromkeys(
        ["cmvn.json", "model.safetensors", "model.yaml", "tokenizer.model"], "0o644")


def test_package_checks_the_weights_fit_the_config(trained, tmp_path):
    import shutil

    import yaml

    bad = tmp_path / "exp_bad"
    bad.mkdir()
    cfg = yaml.safe_load(Path("exp/config.yaml").read_text())
    cfg["model"]["conf"]["encoder"]["conf"]["ffn_dim"] = 96
    (bad / "config.yaml").write_text(yaml.safe_dump(cfg))
    res = runner.invoke(app, ["package", str(bad), "--weights", "exp/model.avg2.safetensors", "--out", str(tmp_path / "p")])
    fails_cleanly(res, "does not fit", "(64, 32) vs (96, 32)")
    assert not (tmp_path / "p").exists()
    # a model trained with CMVN is not packaged without its statistics
    shutil.copy("exp/config.yaml", bad / "config.yaml")
    cfg = yaml.safe_load(Path("exp/config.yaml").read_text())
    cfg["data"]["cmvn"] = str(tmp_path / "gone.json")
    (bad / "config.yaml").write_text(yaml.safe_dump(cfg))
    res = runner.invoke(app, ["package", str(bad), "--weights", "exp/model.avg2.safetensors", "--out", str(tmp_path / "p")])
    fails_cleanly(res, "gone.json")


def test_failed_resume_changes_nothing(trained, tmp_path):
    import shutil

    exp = tmp_path / "exp_resume"
    shutil.copytree("exp", exp)
    before = {p.name: p.read_bytes() for p in exp.iterdir() if p.is_file()}
    res = runner.invoke(app, ["train", "--config", "train.yaml", "--exp-dir", str(exp),
                              "model.conf.encoder.conf.ffn_dim=96", "trainer.max_epochs=3"])
    fails_cleanly(res, "does not fit the model", "(64, 32) vs (96, 32)")
    assert {p.name: p.read_bytes() for p in exp.iterdir() if p.is_file()} == before


def _last_weights(exp: Path) -> dict:
    from stk.checkpoint import load_checkpoint

    return load_checkpoint(exp / "checkpoints" / "last.pt")["model"]


def test_same_seed_gives_bit_identical_weights(trained, tmp_path):
    import torch

    runs = {}
    for tag, seed in (("a", 3), ("b", 3), ("c", 4)):
        torch.manual_seed(100 + len(runs))  # whatever the global RNG held before must not matter
        res = runner.invoke(app, ["train", "--config", "train.yaml", "--exp-dir", str(tmp_path / tag),
                                  "trainer.max_steps=1", f"trainer.seed={seed}"])
        assert res.exit_code == 0, res.output
        runs[tag] = _last_weights(tmp_path / tag)
    assert all(torch.equal(v, runs["b"][k]) for k, v in runs["a"].items())
    assert not all(torch.equal(v, runs["c"][k]) for k, v in runs["a"].items())


def test_malicious_pickle_is_refused_on_every_weight_path(trained, tmp_path):
    import shutil

    import torch

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"model": {"w": Payload()}}, evil)
    # stk average: a poisoned last.pt
    exp = tmp_path / "exp_evil"
    (exp / "checkpoints").mkdir(parents=True)
    shutil.copy(evil, exp / "checkpoints" / "last.pt")
    fails_cleanly(runner.invoke(app, ["average", str(exp), "--n", "1"]), "refusing to load", "last.pt")
    # stk package --weights (a .pt and a file named .safetensors)
    fails_cleanly(runner.invoke(app, ["package", "exp", "--weights", str(evil), "--out", str(tmp_path / "p")]),
                  "refusing to load", "evil.pt")
    shutil.copy(evil, tmp_path / "evil.safetensors")
    fails_cleanly(runner.invoke(app, ["package", "exp", "--weights", str(tmp_path / "evil.safetensors"),
                                      "--out", str(tmp_path / "p")]), "not a safetensors file")
    # init: in a training config
    Path("evil_init.yaml").write_text(TINY_CONFIG + f"init:\n  - {{path: {evil}}}\n")
    fails_cleanly(runner.invoke(app, ["train", "--config", "evil_init.yaml", "--exp-dir", str(tmp_path / "e2")]),
                  "refusing to load", "evil.pt")
    # stk decode --model: a package whose model.safetensors is the pickle
    shutil.copytree("pkg", tmp_path / "pkg_evil")
    shutil.copy(evil, tmp_path / "pkg_evil" / "model.safetensors")
    fails_cleanly(runner.invoke(app, ["decode", "--model", str(tmp_path / "pkg_evil"), "train/wav.scp"]),
                  "model.safetensors", "not a safetensors file")
    assert not marker.exists()


def test_sigterm_through_the_cli_checkpoints_and_exits_75(trained, tmp_path):
    import signal
    import time

    from stk.trainer import EXIT_INTERRUPTED

    exp = tmp_path / "exp_term"
    proc = subprocess.Popen([sys.executable, "-m", "stk.cli", "train", "--config", "train.yaml", "--exp-dir", str(exp),
                             "trainer.max_epochs=200", "trainer.save_interval_steps=1"],
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        deadline = time.time() + 180
        while not (exp / "checkpoints" / "last.pt").exists():
            assert proc.poll() is None and time.time() < deadline, "training ended or hangs"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, err[-2000:]
    assert "Traceback" not in err and "SIGTERM" in err and "run the same command again to resume" in err
    assert _last_weights(exp)  # a complete checkpoint
