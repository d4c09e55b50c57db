"""Models, registered by name in :data:`MODELS`.

A model is an ``nn.Module`` whose ``forward(batch) -> {"loss", "stats", "weight"}`` (see
``docs/architecture.md``). A new system adds one file here that registers itself, e.g.::

    @MODELS.register("maestro")
    class Maestro(StkModel): ...
"""

from __future__ import annotations

from torch import nn

from stk.registry import Registry


class StkModel(nn.Module):
    """Base class of registered models.

    ``forward(batch: dict) -> dict`` with ``loss`` (scalar tensor), ``stats`` (dict of floats)
    and ``weight`` (float used to average validation stats). ``batch["stream"]`` names the data
    stream (speech-only, text-only, paired …) a multi-task model dispatches on.
    """


MODELS: Registry[StkModel] = Registry("model", base=StkModel)
ENCODERS: Registry[nn.Module] = Registry("encoder", base=nn.Module)


def _register_builtin() -> None:
    from stk.modules.conformer import ConformerEncoder

    ENCODERS.register("conformer")(ConformerEncoder)
    from stk.models import classifier, encdec, transducer  # noqa: F401  (register "classifier", "encdec", "transducer")
    from stk.models import mslam  # noqa: F401  (registers model "mslam" and encoder "mslam")
    from stk.models import maestro  # noqa: F401  (registers model "maestro" and encoder "maestro")
    from stk.models import xvector  # noqa: F401  (registers model "xvector": speaker encoder)
    from stk.models import hifigan  # noqa: F401  (registers model "hifigan": mel vocoder)
    from stk.models import unit_vocoder  # noqa: F401  (registers model "unit_vocoder": units -> log-mel)
    from stk.models import hubert  # noqa: F401  (registers model "hubert" and encoder "hubert")
    from stk.models import lm  # noqa: F401  (registers model "lm")
    from stk.models import mt  # noqa: F401  (registers model "mt" and encoder "text_conformer")


_register_builtin()
