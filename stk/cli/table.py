"""``stk table``: a results grid (rows × columns) from score.json files, e.g. a paper's table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command()(table)


def parse_cell(spec: str) -> tuple[str, str, str, Path]:
    """``ROW|COLUMN|KEY|FILE`` -> its four parts (KEY may be dotted: ``by_lang.fr.bleu``)."""
    parts = spec.split("|")
    if len(parts) != 4 or not all(p.strip() for p in parts):
        raise ValueError(f"cell {spec!r} must look like 'ROW|COLUMN|KEY|FILE'")
    row, col, key, path = (p.strip() for p in parts)
    return row, col, key, Path(path)


def expand(specs: list[str], rows: list[str]) -> list[tuple[str, str, str, Path]]:
    """Cells from specs; with ``rows``, each spec is ``COLUMN|KEY|FILE`` with ``{row}`` in it, one cell per row."""
    if not rows:
        return [parse_cell(s) for s in specs]
    for s in specs:
        if len(s.split("|")) != 3:
            raise ValueError(f"with --rows, cell {s!r} must look like 'COLUMN|KEY|FILE' (with {{row}} in it)")
    return [parse_cell(f"{r}|" + s.replace("{row}", r)) for r in rows for s in specs]


def lookup(res: dict, key: str) -> float | None:
    node = res
    for k in key.split("."):
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return float(node) if isinstance(node, (int, float)) else None


def render(cells: list[tuple[str, str, str, Path]]) -> str:
    """Markdown table; rows and columns in order of first appearance; a missing score is ``–``."""
    rows = list(dict.fromkeys(c[0] for c in cells))
    cols = list(dict.fromkeys(c[1] for c in cells))
    values: dict[tuple[str, str], str] = {}
    for row, col, key, path in cells:
        v = lookup(json.loads(path.read_text()), key) if path.exists() else None
        values[(row, col)] = "–" if v is None else f"{v:.1f}"
    lines = ["| | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    lines += ["| " + row + " | " + " | ".join(values.get((row, c), "–") for c in cols) + " |" for row in rows]
    norms = sorted({n for *_, path in cells if path.exists() for n in [json.loads(path.read_text()).get("normalizer")] if n})
    if norms:  # the WER/CER text normaliser, named as every RESULTS.md must
        lines += ["", f"Normalizer (WER/CER): {'; '.join(norms)}"]
    return "\n".join(lines) + "\n"


def table(
    cells: Annotated[list[str], typer.Argument(help="Cells as 'ROW|COLUMN|KEY|FILE': FILE a score.json from `stk score --json`, KEY the value in it (bleu, chrf, cer, wer, acc, or dotted like by_lang.fr.bleu). With --rows: 'COLUMN|KEY|FILE' with {row} in it.")],
    rows: Annotated[str, typer.Option(help="Row names (space- or comma-separated): each cell spec is repeated per row with {row} replaced.")] = "",
    out: Annotated[Path | None, typer.Option(help="Write the markdown here (default: stdout).")] = None,
    title: Annotated[str, typer.Option(help="Heading of the section.")] = "Results",
    notes: Annotated[str, typer.Option(help="Text placed under the heading.")] = "",
    append: Annotated[bool, typer.Option(help="Append to OUT instead of replacing it.")] = False,
) -> None:
    """Lay score.json values out as a markdown grid; a missing file or key shows as '–'.

    Example:\n
      stk table 'w2v-BERT|ST BLEU|bleu|exp/st_w2v/decode_real_test/score.json' \\\n
                'mSLAM-CTC|ST BLEU|bleu|exp/st_ctc/decode_real_test/score.json'\n
      stk table --rows "scratch mslam-ctc" 'ST BLEU|bleu|exp/{row}_st/decode_real_test/score.json'
    """
    try:
        text = f"## {title}\n\n" + (f"{notes}\n\n" if notes else "") + render(expand(cells, rows.replace(",", " ").split()))
    except (ValueError, json.JSONDecodeError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    if out is None:
        typer.echo(text)
    else:
        prev = out.read_text() + "\n" if append and out.exists() else ""
        out.write_text(prev + text)
