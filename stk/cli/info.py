"""``stk info``: versions, registered components, the model store, or a package's settings."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command()(info)


def info(
    model: Annotated[str | None, typer.Argument(help="A package dir or model-store name to describe.")] = None,
) -> None:
    """Show stk/torch versions, registered models and encoders, and packaged models."""
    import torch

    import stk
    from stk.models import ENCODERS, MODELS
    from stk.package import known_models, model_store

    if model is not None:
        import yaml

        from stk.config import ConfigError
        from stk.package import resolve_model

        try:
            path = resolve_model(model)
        except ConfigError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1)
        typer.echo(f"# {path}")
        typer.echo((path / "model.yaml").read_text(encoding="utf-8"))
        return
    try:
        import torchaudio

        ta = torchaudio.__version__
    except Exception as e:  # pragma: no cover - depends on the install
        ta = f"unavailable ({e})"
    typer.echo(f"stk {stk.__version__}, torch {torch.__version__}, torchaudio {ta}, "
               f"cuda {'yes' if torch.cuda.is_available() else 'no'}, threads {torch.get_num_threads()}")
    typer.echo(f"models:   {', '.join(MODELS.names())}")
    typer.echo(f"encoders: {', '.join(ENCODERS.names())}")
    typer.echo(f"model store: {model_store()} ({', '.join(known_models()) or 'empty'})")
