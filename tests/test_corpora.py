"""Tests of the mini corpus builders: .mo and transcript parsers on small fixtures, the splits,
text.en alignment, and (marked ``recipe``) a real ``--size tiny`` build from Debian packages."""

from __future__ import annotations

import gettext
import gzip
import importlib.util
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from stk.corpora import asterisk, mini, synth, wesnoth
from stk.data.kaldi import read_kv, validate_data_dir

HAVE_TTS = shutil.which("espeak-ng") is not None and shutil.which("sox") is not None
HAVE_SOX = shutil.which("sox") is not None


# ----------------------------------------------------------------------------- Wesnoth .mo


def test_mo_roundtrip_matches_gettext(tmp_path: Path) -> None:
    cat = {"The orcs are coming to the river!": "Die Orks kommen zum Fluss!", "Ёж": "Ёжик", "Hello": "Hallo"}
    mo = tmp_path / "x.mo"
    wesnoth.write_mo(mo, cat)
    assert wesnoth.read_mo(mo) == cat
    with open(mo, "rb") as f:  # an independent reader agrees
        assert f"{gettext.GNUTranslations(f).gettext('Ёж')}" == "Ёжик"


def test_mo_context_plural_and_empty(tmp_path: Path) -> None:
    mo = tmp_path / "x.mo"
    wesnoth.write_mo(
        mo,
        {
            "female\x04We will hold this bridge until dawn.": "Wir halten diese Brücke bis zum Morgen.",
            "one orc\x00many orcs": "ein Ork\x00viele Orks",
            "Untranslated line here.": "",
        },
    )
    assert wesnoth.read_mo(mo) == {"We will hold this bridge until dawn.": "Wir halten diese Brücke bis zum Morgen."}


def test_mo_bad_file_names_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mo"
    bad.write_bytes(b"\x00" * 40)
    with pytest.raises(ValueError, match="bad.mo"):
        wesnoth.read_mo(bad)


@pytest.mark.parametrize(
    "line, ok",
    [
        ("We must cross the river before nightfall.", True),
        ("Run!", False),  # too short
        ("Give me <b>gold</b> now, you fool!", False),  # markup
        ("You have $gold gold pieces left.", False),  # placeholder
        ("There are 5 orcs over there!", False),  # digits
        ("we must cross the river before nightfall.", False),  # not a sentence start
        ("We must cross the river before nightfall", False),  # no final punctuation
        ("And so the story ends...", False),  # fragment
    ],
)
def test_is_sentence(line: str, ok: bool) -> None:
    assert wesnoth.is_sentence(wesnoth.normalize(line)) is ok


def _fake_wesnoth(root: Path, catalogs: dict[str, dict[str, str]]) -> Path:
    for lang, cat in catalogs.items():
        wesnoth.write_mo(root / f"usr/share/games/wesnoth/1.16/locale/{lang}/LC_MESSAGES/wesnoth-x.mo", cat)
    return root


def test_prepare_wesnoth_aligns_and_filters(tmp_path: Path) -> None:
    both = "We must cross the river before nightfall."
    a = _fake_wesnoth(
        tmp_path / "a",
        {
            "de": {
                both: "Wir müssen den Fluss vor Einbruch der Nacht überqueren.",
                "Only German has this one, friend.": "Nur Deutsch hat diesen, Freund.",
                "This line is left untranslated here.": "This line is left untranslated here.",
                "Bring <b>me</b> the head of the orc!": "Bringt mir den Kopf des Orks!",
            },
            "fr": {both: "Nous devons traverser la rivière avant la nuit.", "Too short.": "Trop court."},
        },
    )
    b = _fake_wesnoth(
        tmp_path / "b",
        {
            "de": {both: "Eine andere Übersetzung, die verlieren muss.", "The dwarves sing of gold and stone.": "Die Zwerge singen von Gold und Stein."},
            "fr": {both: "Une autre traduction qui doit perdre.", "The dwarves sing of gold and stone.": "Les nains chantent l'or et la pierre."},
        },
    )
    out = wesnoth.prepare_wesnoth([a, b], ["en", "de", "fr"])
    by_en = {s.en: s for s in out}
    assert set(by_en) == {both, "The dwarves sing of gold and stone."}
    assert by_en[both].text("de") == "Wir müssen den Fluss vor Einbruch der Nacht überqueren."  # first root wins
    assert by_en[both].text("en") == both and by_en[both].sid == wesnoth.sentence_id(both)
    assert [s.sid for s in out] == sorted(s.sid for s in out)
    with pytest.raises(ValueError, match="no it .mo catalogs"):
        wesnoth.prepare_wesnoth([a], ["en", "it"])


def test_write_text_only(tmp_path: Path) -> None:
    s = [wesnoth.Sentence("w01", "Hold the line, men!", {"de": "Haltet die Stellung, Männer!"})]
    dirs = wesnoth.write_text_only(s, tmp_path, ["en", "de"])
    assert set(dirs) == {"text_only_en", "text_only_de", "text_only"}
    for d in dirs.values():
        validate_data_dir(d)
    assert read_kv(tmp_path / "text_only_de" / "text.en") == {"de-txt-w01": "Hold the line, men!"}
    assert read_kv(tmp_path / "text_only" / "utt2lang") == {"de-txt-w01": "de", "en-txt-w01": "en"}


# ----------------------------------------------------------------------------- Asterisk


def test_parse_transcript_and_clean(tmp_path: Path) -> None:
    gz = tmp_path / "core-sounds-it.txt.gz"
    body = "\ufeff; Core Asterisk Sounds\n\nconf-full: La conferenza ? piena.\nconf-full: duplicate\nbeep: [beep]\n"
    body += "vm-intro: Lasciate un messaggio. (produrre un beep)\nsilence/1: (1 secondo)\ndigits/1: uno\n"
    gz.write_bytes(gzip.compress(body.encode("utf-8")))
    raw = asterisk.parse_transcript(gz)
    assert raw["conf-full"] == "La conferenza ? piena." and "digits/1" in raw and len(raw) == 5
    assert asterisk.clean_text(raw["conf-full"], "it") == "La conferenza è piena."
    assert asterisk.clean_text(raw["vm-intro"], "it") == "Lasciate un messaggio."
    assert asterisk.clean_text(raw["beep"], "it") is None
    assert asterisk.clean_text("Sus saludos [temporales] estan en uso", "es") == "Sus saludos temporales estan en uso"
    with pytest.raises(ValueError, match="nope.txt.gz"):
        asterisk.parse_transcript(tmp_path / "nope.txt.gz")


@pytest.mark.parametrize(
    "pid, intent",
    [("vm-intro", "vm"), ("confbridge-join", "conf"), ("conf-full", "conf"), ("digits/7", "digits"),
     ("dir-intro", "dir"), ("queue-thankyou", "queue"), ("agent-pass", "agent"), ("priv-callee-options", "privacy"),
     ("tt-monkeys", "other"), ("goodbye", "other")],
)  # fmt: skip
def test_intent_of(pid: str, intent: str) -> None:
    assert asterisk.intent_of(pid) == intent


def test_split_by_prompt_id_is_deterministic_and_balanced() -> None:
    ids = [f"vm-prompt{i}" for i in range(2000)]
    splits = [asterisk.split_of(p) for p in ids]
    assert splits == [asterisk.split_of(p) for p in ids]
    assert asterisk.split_of("letters/O") == asterisk.split_of("letters/o")
    share = {s: splits.count(s) / len(ids) for s in asterisk.SPLITS}
    assert 0.75 < share["train"] < 0.85 and 0.07 < share["dev"] < 0.13 and 0.07 < share["test"] < 0.13
    chosen = asterisk.select_prompts(ids, {"train": 5, "dev": 2, "test": 2})
    assert sorted(chosen.values()).count("dev") == 2 and len(chosen) == 9


def _fake_asterisk(root: Path, n: int = 30) -> dict[str, dict[str, str]]:
    """Transcripts + 8 kHz wavs for en (voice Allison) and es (voice Sofia)."""
    import soundfile as sf

    texts = {
        "en": {f"vm-msg{i}": f"You have message number {i}." for i in range(n)},
        "es": {f"vm-msg{i}": f"Tiene el mensaje número {i}." for i in range(n)},
    }
    texts["en"].update({"digits/1": "one", "beep": "[beep]", "silence/1": "(1 second of silence)", "letters/o": "o"})
    texts["es"].update({"digits/1": "uno", "digits/1f": "una", "letters/O": "o"})  # 1f: no English counterpart
    for lang, voice in (("en", "en_US_f_Allison"), ("es", "es_MX_f_Sofia")):
        doc = root / f"usr/share/doc/asterisk-core-sounds-{lang}/core-sounds-{lang}.txt.gz"
        doc.parent.mkdir(parents=True)
        doc.write_bytes(gzip.compress("".join(f"{k}: {v}\n" for k, v in texts[lang].items()).encode()))
        for pid in texts[lang]:
            wav = root / "usr/share/asterisk/sounds" / voice / f"{pid.lower() if pid == 'letters/O' else pid}.wav"
            wav.parent.mkdir(parents=True, exist_ok=True)
            sf.write(wav, (0.1 * np.sin(np.arange(1600) * 0.3)).astype(np.float32), 8000, subtype="PCM_16")
    return texts


@pytest.mark.skipif(not HAVE_SOX, reason="sox not installed")
def test_prepare_asterisk_on_fixture(tmp_path: Path) -> None:
    texts = _fake_asterisk(tmp_path / "corpus")
    out = tmp_path / "out"
    written = asterisk.prepare_asterisk(tmp_path / "corpus", out, ["en", "es"], nj=2)
    prompt_split: dict[str, str] = {}
    for name, d in written.items():
        validate_data_dir(d, expected_rate=16000)
        split = name.split("_")[1]
        spk = read_kv(d / "utt2spk")
        for utt in read_kv(d / "wav.scp"):
            pid = utt[len(spk[utt]) + 1 :]
            assert prompt_split.setdefault(pid, split) == split, f"prompt {pid} in two splits"
    all_utts = {}
    for split in asterisk.SPLITS:
        if (out / f"real_{split}").exists():
            all_utts.update(read_kv(out / f"real_{split}" / "text.en"))
    assert all_utts["es-sofia-vm-msg3"] == texts["en"]["vm-msg3"]  # X -> en pairs
    assert all_utts["en-allison-vm-msg3"] == texts["en"]["vm-msg3"]
    assert "es-sofia-letters_o" in all_utts  # case-insensitive wav match, shared id
    assert not any(u.endswith(("digits_1f", "beep", "silence_1")) for u in all_utts)
    assert set(asterisk.SPLITS) >= set(prompt_split.values()) and len(set(prompt_split.values())) >= 2
    intents = set()
    for split in asterisk.SPLITS:
        if (out / f"real_{split}").exists():
            intents |= set(read_kv(out / f"real_{split}" / "utt2intent").values())
    assert intents <= {"vm", "digits", "letters"}


# ----------------------------------------------------------------------------- synthetic + partition


def test_voice_roles() -> None:
    sids = [f"w{i:010x}" for i in range(40)]
    train = synth.assign_voices(sids, "de", "train")
    dev = synth.assign_voices(sids, "de", "dev")
    test = synth.assign_voices(sids, "de", "test")
    assert synth.assign_voices(list(reversed(sids)), "de", "test") == test  # order-free, deterministic
    names = lambda a: [v.variant for v in a.values()]  # noqa: E731
    held_dev = {v.variant for v in synth.VOICES if v.role == "dev"}
    held_test = {v.variant for v in synth.VOICES if v.role == "test"}
    assert sorted(set(names(train))) == sorted(v.variant for v in synth.VOICES if v.role == "train")
    assert all(names(train).count(v) == 10 for v in set(names(train)))  # balanced
    assert not set(names(train)) & (held_dev | held_test)
    assert names(test).count(next(iter(held_test))) == 20 and not held_test & set(names(dev))
    assert names(dev).count(next(iter(held_dev))) == 20 and not held_dev & set(names(test))


def _sentences(n: int) -> list[wesnoth.Sentence]:
    return [
        wesnoth.Sentence(wesnoth.sentence_id(f"Sentence {i}."), f"The orcs attack the bridge number {i}.", {"de": f"Die Orks greifen Brücke {i} an."})
        for i in range(n)
    ]


def test_partition_sentences_disjoint() -> None:
    spec = mini.SizeSpec(None, None, {"train": 50, "dev": 5, "test": 5}, 10, 40)
    parts = mini.partition_sentences(_sentences(400), spec)
    assert parts is not None
    assert {k: len(v) for k, v in parts.items()} == {"train": 50, "dev": 5, "test": 5, "speech_only": 10, "text_only": 40}
    ids = [s.sid for v in parts.values() for s in v]
    assert len(ids) == len(set(ids))
    assert mini.partition_sentences(_sentences(60), spec) is None


@pytest.mark.skipif(not HAVE_TTS, reason="espeak-ng/sox not installed")
def test_prepare_synth_small(tmp_path: Path) -> None:
    sents = _sentences(8)
    parts = {"train": sents[:3], "dev": sents[3:5], "test": sents[5:7], "speech_only": sents[7:]}
    written = synth.prepare_synth(parts, tmp_path, ["en", "de"], nj=2)
    for d in written.values():
        validate_data_dir(d, expected_rate=16000)
    assert not (tmp_path / "speech_only_train" / "text").exists()
    text_en = read_kv(tmp_path / "synth_train_de" / "text.en")
    text = read_kv(tmp_path / "synth_train_de" / "text")
    for utt, en in text_en.items():
        s = next(x for x in sents if utt.endswith(x.sid))
        assert en == s.en and text[utt] == s.text("de")
    with pytest.raises(ValueError, match="both"):
        synth.prepare_synth({"train": sents[:2], "test": sents[1:3]}, tmp_path, ["en"])


def _load_cli():
    # load the module by path: `import stk.cli` imports every command module (others' work)
    spec = importlib.util.spec_from_file_location("stk_cli_corpus_test", Path(__file__).parents[1] / "stk/cli/corpus.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    import typer

    app = typer.Typer()
    app.callback()(lambda: None)
    mod.register(app)
    return app


def test_cli_help_and_bad_langs(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    app = _load_cli()
    runner = CliRunner()
    res = runner.invoke(app, ["corpus", "mini", "--help"])
    assert res.exit_code == 0 and "--size" in res.output
    res = runner.invoke(app, ["corpus", "mini", "--out", str(tmp_path), "--langs", "en,xx"])
    assert res.exit_code != 0


# ----------------------------------------------------------------------------- real build


@pytest.mark.recipe
def test_build_tiny_for_real(tmp_path: Path) -> None:
    """``stk corpus mini --size tiny`` from Debian packages (cache: $STK_CACHE or ~/.cache/stk).

    First run downloads ~106 MB (10 asterisk packages + wesnoth-1.16-nr; ~5 s at 40 MB/s,
    ~30 s in all); with the cache it builds in ~15 s.
    """
    if shutil.which("apt-get") is None or not HAVE_TTS:
        pytest.skip("needs apt-get, dpkg-deb, espeak-ng and sox")
    from typer.testing import CliRunner

    out = tmp_path / "mini"
    res = CliRunner().invoke(_load_cli(), ["corpus", "mini", "--out", str(out), "--size", "tiny"])
    assert res.exit_code == 0, res.output
    dirs = [d for d in sorted(out.iterdir()) if d.is_dir() and d.name != "wav"]
    expected = {f"{p}_{s}" for p in ("real", "synth") for s in asterisk.SPLITS}
    expected |= {f"real_{s}_{x}" for s in asterisk.SPLITS for x in asterisk.ASTERISK_LANGS}
    expected |= {f"synth_{s}_{x}" for s in asterisk.SPLITS for x in synth.SYNTH_LANGS}
    expected |= {"speech_only_train", "text_only"} | {f"text_only_{x}" for x in synth.SYNTH_LANGS}
    names = {d.name for d in dirs}
    # the optional sets are built exactly when their engines are installed (pico2wave; flite/festival)
    from stk.corpora.heldout import pico_available
    optional = {n for n in names if n.startswith(("pico_test", "voices_train"))}
    assert names - optional == expected
    assert ("pico_test" in names) == pico_available(), sorted(optional)
    for d in dirs:
        validate_data_dir(d, expected_rate=16000)
    real = {f: read_kv(out / "real_train" / f) for f in ("text.en", "utt2intent", "utt2dur")}
    assert all(len(v) == len(real["text.en"]) for v in real.values())
    # synthetic test sentences are unseen in every training set, and one test voice is unseen
    sid = lambda u: u.rsplit("-", 1)[1]  # noqa: E731
    train_sids = {sid(u) for d in ("synth_train", "speech_only_train", "text_only") for u in read_kv(out / d / "utt2lang")}
    test = read_kv(out / "synth_test" / "utt2spk")
    assert not {sid(u) for u in test} & train_sids
    for lang in synth.SYNTH_LANGS:
        test_spk = set(read_kv(out / f"synth_test_{lang}" / "utt2spk").values())
        assert test_spk - set(read_kv(out / f"synth_train_{lang}" / "utt2spk").values())
    t0 = time.time()
    rows = mini.build_mini(out, "tiny")
    assert time.time() - t0 < 2 and any(r.name == "synth_train" for r in rows)
