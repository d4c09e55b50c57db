"""No recipe under egs/ hard-codes where a corpus lives: moving to a real corpus is a change of db.sh
(or an exported variable, or --corpus-dir), never an edit of run.sh or a config.

Checked for every recipe (a dir holding run.sh), outside comments:
- db.sh, if present: every assignment's value is empty or made only of variable references
  (``X=${X:-}``, ``X=${X:-${Y:-}}``), no literal text or path; run.sh sources it.
- run.sh, db.sh, path.sh, cmd.sh, local/*.sh, conf/**/*.yaml: no absolute path (``/data/...``,
  ``/mnt/...``, ``/home/...``, also as a ``${X:-/default}``) and no home-relative path (``~/...``),
  except system ones (``ALLOWED``: ``/dev/``, ``/usr/``, ``/bin/``, ``/etc/``, ``/proc/``, ``/sys/``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

EGS = Path(__file__).resolve().parents[1] / "egs"
RECIPES = sorted(p.parent for p in EGS.glob("**/run.sh") if "utils" not in p.parts)
ALLOWED = ("/dev/", "/usr/", "/bin/", "/etc/", "/proc/", "/sys/")  # system paths, not corpora
# an absolute path starts after a non-path character (so `${exp}/log`, `$(pwd)/x`, `a/b`, `exp/*/hyp`,
# `<set>/log`, `${x%/hyp}`, URLs are not matched), after quotes are dropped (`"/data/x"` is matched,
# `"${d}"/x` is not)
ABS_PATH = re.compile(r"(?<![\w.$})\]/:~\\*>%#])(/[A-Za-z][\w.+-]*(?:/[\w.+-]*)*)")
HOME_PATH = re.compile(r"(?<![\w$}/])~/[\w.-]+")
VAR_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z_0-9]*(?::?-)?|\$[A-Za-z_][A-Za-z_0-9]*|\}")


def _code(text: str) -> list[tuple[int, str]]:
    """(line number, line without its comment) of the non-empty code lines (a ``#`` at the start
    or after a blank starts a comment)."""
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        code = re.sub(r"(^|\s)#.*$", "", line)
        if code.strip():
            out.append((i, code))
    return out


def _files(recipe: Path) -> list[Path]:
    files = [recipe / n for n in ("run.sh", "db.sh", "path.sh", "cmd.sh") if (recipe / n).is_file()]
    files += sorted((recipe / "local").glob("*.sh")) if (recipe / "local").is_dir() else []
    files += sorted((recipe / "conf").glob("**/*.yaml")) if (recipe / "conf").is_dir() else []
    return files


def hard_coded_paths(recipe: Path) -> list[str]:
    """``file:line: path`` for every hard-coded absolute or home path in the recipe's code."""
    bad = []
    for f in _files(recipe):
        for i, code in _code(f.read_text(encoding="utf-8")):
            code = code.replace('"', "").replace("'", "")
            for m in list(ABS_PATH.finditer(code)) + list(HOME_PATH.finditer(code)):
                path = m.group(0).lstrip()
                if not path.startswith(ALLOWED):
                    bad.append(f"{f.relative_to(EGS)}:{i}: {path}")
    return bad


def db_sh_problems(recipe: Path) -> list[str]:
    """Assignments in db.sh whose value is more than variable references; run.sh not sourcing it."""
    db = recipe / "db.sh"
    if not db.is_file():
        return []
    bad = []
    for i, code in _code(db.read_text(encoding="utf-8")):
        m = re.match(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z_0-9]*)=(.*)$", code)
        if not m:
            bad.append(f"{db.relative_to(EGS)}:{i}: not a plain assignment: {code.strip()}")
            continue
        rest = VAR_REF.sub("", m.group(2).strip().strip("\"'"))
        if rest.strip("\"' "):
            bad.append(f"{db.relative_to(EGS)}:{i}: {m.group(1)} has a literal value ({m.group(2).strip()}); "
                       f"leave it empty: {m.group(1)}=${{{m.group(1)}:-}}")
    if not re.search(r"^\s*(\.|source)\s+\.?/?db\.sh", (recipe / "run.sh").read_text(), re.M):
        bad.append(f"{(recipe / 'run.sh').relative_to(EGS)}: does not source db.sh")
    return bad


def test_recipes_found():
    assert EGS / "librispeech" / "asr" in RECIPES and len(RECIPES) >= 3


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(EGS)))
def test_no_hard_coded_corpus_path(recipe):
    assert hard_coded_paths(recipe) == []
    assert db_sh_problems(recipe) == []


def test_the_checks_catch_hard_coded_paths(tmp_path):
    r = tmp_path / "egs" / "x" / "asr"
    (r / "conf").mkdir(parents=True)
    (r / "run.sh").write_text('. ./db.sh\n# ./run.sh --corpus-dir /data/ok-in-a-comment\ncorpus=/data/LibriSpeech\n'
                              'x=${exp}/log; y=$(pwd)/a; z=data/${x}; echo hi >/dev/null\ncp ~/corpora/a .\n')
    (r / "db.sh").write_text("LIBRISPEECH=${LIBRISPEECH:-}\nFLEURS=${FLEURS:-/mnt/fleurs}\nEMPTY=\n")
    (r / "conf" / "train.yaml").write_text("data:\n  train: {data_dir: /export/corpora/train}  # /x\n")
    global EGS
    old, EGS = EGS, tmp_path / "egs"
    try:
        paths = hard_coded_paths(r)
        db = db_sh_problems(r)
    finally:
        EGS = old
    assert paths == ["x/asr/run.sh:3: /data/LibriSpeech", "x/asr/run.sh:5: ~/corpora", "x/asr/db.sh:2: /mnt/fleurs",
                     "x/asr/conf/train.yaml:2: /export/corpora/train"], paths
    assert len(db) == 1 and "FLEURS has a literal value" in db[0]
