"""Independent judges of generated speech: models stk does not train.

- :mod:`stk.judges.whisper`: Whisper base (faster-whisper, CTranslate2 int8) — the ASR judge of
  ASR-BLEU and judge WER.
- :mod:`stk.judges.speaker`: resemblyzer's speaker encoder — an independent speaker-similarity judge.
- PESQ (``pesq``) and STOI (``pystoi``) are wrapped in :mod:`stk.metrics_speech`.

They are an optional extra (``bash tools/install_judges.sh``); nothing here is imported by the core,
and each judge raises :class:`JudgeNotInstalled` with the install command when its package is missing.
"""

from __future__ import annotations

import importlib
from types import ModuleType

INSTALL_CMD = "bash tools/install_judges.sh  (or: STK_JUDGES=1 bash tools/setup.sh)"


class JudgeNotInstalled(ImportError):
    """A judge's package is missing; the message gives the install command."""


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` or raise :class:`JudgeNotInstalled` naming ``what`` needs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise JudgeNotInstalled(
            f"{what} needs the Python package {module!r}, which is not installed ({e}); "
            f"install the judges extra: {INSTALL_CMD}") from None
