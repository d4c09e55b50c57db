"""``stk export``: a packaged CTC or transducer model as ONNX or TorchScript graphs."""

from __future__ import annotations

import enum
import logging
from pathlib import Path
from typing import Annotated

import typer

log = logging.getLogger("stk.export")


class Format(str, enum.Enum):
    onnx = "onnx"
    torchscript = "torchscript"


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    model: Annotated[str, typer.Argument(help="Package directory, or a name in the model store.")],
    out: Annotated[Path, typer.Option(help="Directory to write the graphs, tokens.txt, model.yaml and export.json to.")],
    format: Annotated[Format, typer.Option("--format", help="onnx (needs the `export` extra: onnx, onnxruntime) or torchscript.")] = Format.onnx,
    check: Annotated[bool, typer.Option(help="ONNX: run each graph in onnxruntime and record its largest difference from PyTorch in export.json.")] = True,
) -> None:
    """Export the encoder (+ CTC head, or the transducer's predictor and joiner) of a packaged model.

    CTC models give ctc.onnx (features -> log-probs); transducers give encoder, predictor and
    joiner graphs, as sherpa-onnx runs them. Features are Kaldi fbank (model.yaml's fbank
    settings); the package's CMVN is inside the graph.\n
      stk export exp/asr/package --format onnx --out exp/asr/onnx
    """
    from stk.config import ConfigError
    from stk.export import export_model

    try:
        rec = export_model(model, out, format.value, check=check)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    for name, g in rec["graphs"].items():
        diff = g.get("max_abs_diff")
        extra = f"  (onnxruntime vs torch: max |diff| {max(diff.values()):.2e})" if diff else ""
        typer.echo(f"{out / g['file']}{extra}")
