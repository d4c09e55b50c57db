"""Run reports: the environment block at the top of a RESULTS.md (date, stk git hash, Python/torch
versions, CPU, cores, load) and the markdown score table of ``stk table``/``stk report``."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path


def _git_hash() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown (not a git checkout)"
    return out.stdout.strip() + (" (with local changes)" if dirty.stdout.strip() else "")


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (else what ``platform`` says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, str]:
    """Date, stk version and git hash, Python/torch/torchaudio versions, machine (CPU, cores, load)."""
    import stk

    env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "stk": f"{stk.__version__}, git {_git_hash()}", "python": platform.python_version()}
    try:
        import torch

        env["torch"] = torch.__version__
        env["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except Exception as e:  # pragma: no cover - depends on the install
        env["torch"] = f"unavailable ({e})"
    try:
        import torchaudio

        env["torchaudio"] = torchaudio.__version__
    except Exception as e:  # pragma: no cover
        env["torchaudio"] = f"unavailable ({e})"
    cpu = cpu_name()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    env["machine"] = f"{platform.node()}: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, load {load}"
    return env


def environment_block() -> str:
    """The environment as a markdown list, for the top of a RESULTS.md (like ESPnet's)."""
    env = environment()
    return "## Environment\n\n" + "".join(f"- {k}: {v}\n" for k, v in env.items())


def results_table(rows: list[tuple[str, dict]], metric: str) -> str:
    """Markdown table of scores: one row per test set, then one per (set, language); a 95 % interval
    column when the scores hold one (``stk score --bootstrap``)."""
    ci_key = {"wer": "wer", "acc": "acc", "bleu": "bleu"}[metric] if metric in ("wer", "acc", "bleu") else None
    has_ci = any(ci_key in (r.get("bootstrap") or {}) for _, r in rows)
    ci_head, ci_rule = (" 95 % CI |", "---:|") if has_ci else ("", "")

    def ci(r: dict) -> str:
        if not has_ci:
            return ""
        b = (r.get("bootstrap") or {}).get(ci_key)
        return f" {b[0]:.1f}–{b[1]:.1f} |" if b else " |"

    if metric == "wer":
        head = f"| test set | lang | sents | WER % |{ci_head} CER % |\n|---|---|---:|---:|{ci_rule}---:|\n"
        fmt = lambda name, lang, r: f"| {name} | {lang} | {r['sents']} | {r['wer']:.1f} |{ci(r)} {r['cer']:.1f} |\n"
    elif metric == "acc":
        head = f"| test set | lang | sents | correct | Acc % |{ci_head}\n|---|---|---:|---:|---:|{ci_rule}\n"
        fmt = lambda name, lang, r: f"| {name} | {lang} | {r['sents']} | {r['correct']} | {r['acc']:.1f} |{ci(r)}\n"
    else:
        head = f"| test set | lang | sents | BLEU |{ci_head} chrF |\n|---|---|---:|---:|{ci_rule}---:|\n"
        fmt = lambda name, lang, r: f"| {name} | {lang} | {r['sents']} | {r['bleu']:.1f} |{ci(r)} {r['chrf']:.1f} |\n"
    out = head
    for name, r in rows:
        out += fmt(name, "all", r)
        for lang, lr in r.get("by_lang", {}).items():
            out += fmt(name, lang, lr)
    norms = sorted({r["normalizer"] for _, r in rows if r.get("normalizer")})
    if norms:
        out += f"\nNormalizer: {'; '.join(norms)}\n"
    return out
