"""Language-model scoring interface shared by the beam searches (shallow fusion).

A beam search that fuses an external LM keeps one LM state per hypothesis and, at each step,
adds ``lm_weight * log p_lm(token | prefix)`` to the score of every candidate extension::

    state = scorer.init_state(N)                 # N hypotheses, all at <sos>
    lp = scorer.score(state)                     # (N, V) log-probs of the next token
    state = scorer.select(state, parent_rows)    # (M,) rows: reorder / duplicate hypotheses
    state = scorer.advance(state, tokens)        # (M,) tokens appended to each hypothesis

The LM vocabulary is the ASR model's token vocabulary (same tokenizer); ``vocab_size`` lets a
search check that. ``score`` includes the LM's end-of-sentence token at its own index (the
tokenizer's ``eos``), so a search may add the LM's end probability when a hypothesis ends.
States are opaque to the search: only the four methods touch them. Implementations:
:class:`stk.models.lm.TransformerLM` (``model.scorer()``).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

__all__ = ["LMScorer"]


@runtime_checkable
class LMScorer(Protocol):
    """Incremental next-token scoring for beam searches (see module docstring)."""

    vocab_size: int

    def init_state(self, batch_size: int) -> Any:
        """State of ``batch_size`` hypotheses that all start at <sos> (no token emitted)."""
        ...

    def score(self, state: Any) -> Tensor:
        """(N, V) log-probabilities of the next token of each of the N hypotheses."""
        ...

    def advance(self, state: Any, tokens: Tensor) -> Any:
        """New state after appending ``tokens`` (N,) long to the N hypotheses."""
        ...

    def select(self, state: Any, index: Tensor) -> Any:
        """State of M hypotheses ``index`` (M,) long into the N rows (reorder / duplicate / drop)."""
        ...
