"""prepare_minds14 and prepare_fleurs on fixtures built here in the corpora's real layouts (wav audio
generated at test time, nothing committed): counts, labels (utt2intent, utt2lang), skipped rows
counted and named, errors naming the file."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
import soundfile as sf

from stk.corpora.fleurs import prepare_fleurs
from stk.corpora.minds14 import prepare_minds14, split_by_hash
from stk.data.kaldi import read_kv, validate_data_dir
from test_corpus_librispeech import tone_speech

MINDS_TEXT = {
    "en-US": {"BALANCE": ["what is my balance", "how much money do i have, please", "check my account balance",
                          "tell me my balance", "balance please"],
              "PAY_BILL": ["i want to pay a bill", "pay my electricity bill", "how do i pay a bill",
                           "can i pay my bill online", "pay the gas bill"]},
    "fr-FR": {"BALANCE": ["quel est mon solde", "combien d'argent ai-je", "consulter mon solde",
                          "donnez-moi mon solde", "mon solde s'il vous plaît"],
              "PAY_BILL": ["je veux payer une facture", "payer ma facture d'électricité", "comment payer une facture",
                           "puis-je payer en ligne", "payer la facture de gaz"]},
}


def make_minds14(root: Path, *, bad_rows: bool = False) -> Path:
    """``root/MInDS-14/{text/<locale>.csv, audio/<locale>~<INTENT>/response_<n>.wav}`` (8 kHz wavs;
    the file names repeat across intents, as in the real en-AU data).

    ``bad_rows`` adds to en-US: a row whose wav is missing (response_9), one with an empty
    transcript (response_8), one with an empty intent (response_7), one whose wav is not audio
    (response_6) and a repeated path."""
    top = root / "MInDS-14"
    (top / "text").mkdir(parents=True)
    k = 0
    for loc, intents in MINDS_TEXT.items():
        rows = [["filepath", "text_asr", "text_translated", "intent"]]
        for intent, texts in intents.items():
            for i, text in enumerate(texts):
                rel = f"{loc}~{intent}/response_{i + 1}.wav"
                (top / "audio" / rel).parent.mkdir(parents=True, exist_ok=True)
                k += 1
                sf.write(top / "audio" / rel, tone_speech(text, 8000, k), 8000, subtype="PCM_16")
                rows.append([rel, text, text if loc.startswith("en") else f"(en) {text}", intent.lower()])
        if bad_rows and loc == "en-US":
            d = top / "audio" / "en-US~BALANCE"
            for n in (8, 7):
                sf.write(d / f"response_{n}.wav", tone_speech("hello", 8000, n), 8000, subtype="PCM_16")
            (d / "response_6.wav").write_bytes(b"RIFF....WAVEjunk")
            rows += [["en-US~BALANCE/response_9.wav", "no audio", "no audio", "balance"],
                     ["en-US~BALANCE/response_8.wav", "", "", "balance"],
                     ["en-US~BALANCE/response_7.wav", "no intent", "no intent", ""],
                     ["en-US~BALANCE/response_6.wav", "broken", "broken", "balance"],
                     ["en-US~BALANCE/response_1.wav", "again", "again", "balance"]]
        with open(top / "text" / f"{loc}.csv", "w", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows(rows)
    return top


FLEURS_TEXT = {
    "en_us": ["The cat sat on the mat.", "Rain fell over the hills.", "Birds sing at dawn.", "A ship left the port."],
    "fr_fr": ["Le chat dort.", "Il pleut sur la ville.", "Les oiseaux chantent.", "Un bateau quitte le port."],
}


def make_fleurs(root: Path, *, bad_rows: bool = False) -> Path:
    """``root/data/<lang>/{<split>.tsv, audio/<split>/<id>.wav}`` (16 kHz; 7 tab-separated fields, no header).

    ``bad_rows`` adds to en_us/dev.tsv: a line with 6 fields (line 3), an empty transcription
    (line 4) and a line whose wav is missing (line 5)."""
    data = root / "data"
    k = 0
    for lang, texts in FLEURS_TEXT.items():
        for s, split in enumerate(("train", "dev", "test")):
            (data / lang / "audio" / split).mkdir(parents=True)
            lines = []
            for i in range(2 if split != "train" else 4):
                k += 1
                text = texts[(i + s) % len(texts)]
                name = f"{1000 + k}.wav"
                x = tone_speech(text, 16000, k)
                sf.write(data / lang / "audio" / split / name, x, 16000, subtype="PCM_16")
                norm = text.lower().rstrip(".")
                lines.append("\t".join([str(100 + i), name, text, norm, "| x y z |", str(len(x)),
                                        "FEMALE" if i % 2 else "MALE"]))
            if bad_rows and lang == "en_us" and split == "dev":
                lines += ["\t".join(["7", "2001.wav", "six fields", "six fields", "p", "16000"]),
                          "\t".join(["8", "2002.wav", "", "", "p", "16000", "MALE"]),
                          "\t".join(["9", "2003.wav", "Missing.", "missing", "p", "16000", "OTHER"])]
            (data / lang / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_minds14(tmp_path, caplog):
    top = make_minds14(tmp_path / "corpus", bad_rows=True)
    with caplog.at_level(logging.WARNING, logger="stk.corpora.minds14"):
        rows = prepare_minds14(top, tmp_path / "out", nj=2)
    assert [r.name for r in rows] == ["train", "dev", "test"]
    # 2 locales x 2 intents x 5 utterances; per (locale, intent) group of 5: 2 train, 1 dev, 2 test
    assert [r.utts for r in rows] == [8, 4, 8] and {r.langs for r in rows} == {"en-US,fr-FR"}
    assert rows[0].skipped == {"missing audio": 1, "empty transcript": 1, "empty intent": 1, "duplicate path": 1,
                               "unreadable audio": 1}
    for line in ("en-US.csv:12 en-US~BALANCE/response_9.wav", "en-US.csv:13", "en-US.csv:14", "response_6.wav",
                 "en-US.csv:16"):
        assert line in caplog.text, line
    seen = {}
    for r in rows:
        d = tmp_path / "out" / r.name
        validate_data_dir(d, expected_rate=16000)  # resampled 8 -> 16 kHz and readable
        intents, langs = read_kv(d / "utt2intent"), read_kv(d / "utt2lang")
        assert set(intents.values()) == {"balance", "pay_bill"} and set(langs.values()) == {"en-US", "fr-FR"}
        seen.update(read_kv(d / "text"))
        assert read_kv(d / "utt2spk") == {u: u for u in intents}
    # the same file name under two intents gives two utterances; quoted commas survive
    assert "en_US-BALANCE_response_1" in seen and "en_US-PAY_BILL_response_1" in seen
    assert seen["en_US-BALANCE_response_2"] == "how much money do i have, please"
    # the split is stable and the 8 kHz originals can be listed instead
    again = prepare_minds14(top, tmp_path / "out2", convert=False)
    assert [r.utts for r in again] == [8, 4, 8]
    assert read_kv(tmp_path / "out2/dev/text") == read_kv(tmp_path / "out/dev/text")
    assert all(v.endswith(".wav") and "/audio/" in v for v in read_kv(tmp_path / "out2/dev/wav.scp").values())


def test_minds14_errors(tmp_path):
    top = make_minds14(tmp_path / "corpus")
    with pytest.raises(ValueError, match="fractions"):
        prepare_minds14(top, tmp_path / "o", fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="unknown locale"):
        prepare_minds14(top, tmp_path / "o", locales=["xx-XX"])
    with pytest.raises(ValueError, match=r"MInDS-14/audio/"):
        prepare_minds14(tmp_path, tmp_path / "o")
    (top / "text" / "de-DE.csv").write_text("filepath,text_asr,text_translated,intent\nde-DE~BALANCE/a.wav,kurz\n")
    with pytest.raises(ValueError, match=r"de-DE\.csv:2: 2 field\(s\)"):
        prepare_minds14(top, tmp_path / "o", locales=["de-DE"])


def test_split_by_hash():
    ids = [f"u{i}" for i in range(10)]
    got = split_by_hash(ids, (0.3, 0.2, 0.5))
    assert [got.count(s) for s in ("train", "dev", "test")] == [3, 2, 5]
    assert split_by_hash(list(reversed(ids)), (0.3, 0.2, 0.5)) == list(reversed(got))  # order-free


def test_fleurs(tmp_path, caplog):
    root = make_fleurs(tmp_path / "fleurs", bad_rows=True)
    with caplog.at_level(logging.WARNING, logger="stk.corpora.fleurs"):
        rows = prepare_fleurs(root, tmp_path / "out")  # the parent of data/ is accepted
    assert [(r.name, r.utts, r.langs) for r in rows] == [("train", 8, "en_us,fr_fr"), ("dev", 4, "en_us,fr_fr"),
                                                        ("test", 4, "en_us,fr_fr")]
    assert rows[1].skipped == {"not 7 tab-separated fields": 1, "empty transcript": 1, "missing audio": 1}
    for where in ("en_us/dev.tsv:3", "en_us/dev.tsv:4", "en_us/dev.tsv:5 2003.wav"):
        assert where in caplog.text, where
    d = tmp_path / "out" / "train"
    validate_data_dir(d, expected_rate=16000)
    langs = read_kv(d / "utt2lang")
    assert sorted(set(langs.values())) == ["en_us", "fr_fr"] and all(u.startswith(v + "-") for u, v in langs.items())
    text = read_kv(d / "text")
    assert text["en_us-1001"] == "the cat sat on the mat"
    assert set(read_kv(d / "utt2gender").values()) == {"male", "female"}
    raw = prepare_fleurs(root / "data", tmp_path / "raw", langs=["en_us"], splits=["train"],
                         text_field="raw_transcription")
    assert raw[0].utts == 4 and read_kv(tmp_path / "raw/train/text")["en_us-1001"] == "The cat sat on the mat."


def test_fleurs_errors(tmp_path):
    root = make_fleurs(tmp_path / "fleurs")
    with pytest.raises(ValueError, match="unknown split"):
        prepare_fleurs(root, tmp_path / "o", splits=["validation"])
    with pytest.raises(ValueError, match=r"xx_xx: language dir not found"):
        prepare_fleurs(root, tmp_path / "o", langs=["xx_xx"])
    (root / "data/en_us/test.tsv").unlink()
    with pytest.raises(ValueError, match=r"en_us/test\.tsv: file not found"):
        prepare_fleurs(root, tmp_path / "o", langs=["en_us"])


def test_cli(tmp_path):
    from typer.testing import CliRunner

    from stk.cli import app

    top = make_minds14(tmp_path / "m")
    res = CliRunner().invoke(app, ["corpus", "minds14", "--corpus-dir", str(top), "--out", str(tmp_path / "mo"),
                                   "--locales", "fr-FR", "--fractions", "0.4,0.2,0.4"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "mo/dev/utt2intent").is_file()
    root = make_fleurs(tmp_path / "f")
    res = CliRunner().invoke(app, ["corpus", "fleurs", "--corpus-dir", str(root / "data"),
                                   "--out", str(tmp_path / "fo"), "--splits", "dev"])
    assert res.exit_code == 0, res.output
    assert len(read_kv(tmp_path / "fo/dev/utt2lang")) == 4
    res = CliRunner().invoke(app, ["corpus", "fleurs", "--corpus-dir", str(root), "--out", str(tmp_path / "fo"),
                                   "--langs", "xx_xx"])
    assert res.exit_code == 1 and "language dir not found" in " ".join(res.output.split())


CLS_CONFIG = """
model:
  name: classifier
  conf:
    encoder:
      name: conformer
      conf: {{d_model: 32, num_heads: 4, ffn_dim: 64, num_layers: 1, kernel_size: 7, subsampling_channels: 16}}
    label: {label}
data:
  tokenizer: {tok}
  cmvn: {dump}/cmvn.json
  label_vocab: {{{label}: [{labels}]}}
  train:
    paired: {{data_dir: {dump}/train, targets: {{}}, labels: {{{label}: utt2{label}}}, batch: {{max_frames: 4000}}}}
  valid: {{data_dir: {dump}/dev, targets: {{}}, labels: {{{label}: utt2{label}}}, batch: {{max_frames: 20000}}}}
optim: {{lr: 0.002, warmup_steps: 2}}
trainer: {{max_epochs: 0, max_steps: 4, valid_interval_steps: 4, log_interval: 2, keep_nbest: 1, progress: false,
          tensorboard: false}}
"""


@pytest.mark.recipe
def test_prepared_dirs_train_the_classifiers(tmp_path, monkeypatch):
    """The labels the mSLAM classification tasks read (``labels: {intent: utt2intent}``, ``{lang:
    utt2lang}``, as egs/mini/mslam's finetune_cls.yaml) survive feature dumping and drive a classifier:
    train a few steps, decode with ``--method classify``, score accuracy against the prepared labels."""
    import json

    from typer.testing import CliRunner

    from stk.cli import app

    monkeypatch.setenv("STK_MODEL_STORE", str(tmp_path / "store"))
    run = CliRunner().invoke
    for name, label, prepare in (
        ("minds14", "intent", lambda out: prepare_minds14(make_minds14(tmp_path / "m"), out)),
        ("fleurs", "lang", lambda out: prepare_fleurs(make_fleurs(tmp_path / "f"), out)),
    ):
        data, dump, exp = tmp_path / name / "data", tmp_path / name / "dump", tmp_path / name / "exp"
        prepare(data)
        for x in ("train", "dev", "test"):
            assert run(app, ["data", "fbank", str(data / x), str(dump / x)]).exit_code == 0
            assert (dump / x / f"utt2{label}").read_text() == (data / x / f"utt2{label}").read_text()
        assert run(app, ["data", "cmvn", str(dump / "train"), "--out", str(dump / "cmvn.json")]).exit_code == 0
        tok = tmp_path / name / "char"
        res = run(app, ["tokenizer", "train", str(data / "train/text"), "--out", str(tok), "--model-type", "char",
                        "--vocab-size", "100"])
        assert res.exit_code == 0, res.output
        labels = sorted(set(read_kv(data / "train" / f"utt2{label}").values()))
        cfg = tmp_path / name / "cls.yaml"
        cfg.write_text(CLS_CONFIG.format(label=label, labels=", ".join(labels), tok=f"{tok}.model", dump=dump))
        res = run(app, ["train", "--config", str(cfg), "--exp-dir", str(exp)])
        assert res.exit_code == 0, res.output
        res = run(app, ["package", str(exp), "--weights", str(exp / "checkpoints/last.pt"), "--out", str(exp / "pkg")])
        assert res.exit_code == 0, res.output
        hyp = exp / "hyp"
        res = run(app, ["decode", str(data / "test"), "--model", str(exp / "pkg"), "--method", "classify",
                        "--out", str(hyp)])
        assert res.exit_code == 0, res.output
        assert sorted(read_kv(hyp)) == sorted(read_kv(data / "test" / f"utt2{label}"))
        assert set(read_kv(hyp).values()) <= set(labels)
        res = run(app, ["score", "--metric", "acc", str(data / "test" / f"utt2{label}"), str(hyp),
                        "--json", str(exp / "score.json")])
        assert res.exit_code == 0, res.output
        assert 0.0 <= json.loads((exp / "score.json").read_text())["acc"] <= 100.0
