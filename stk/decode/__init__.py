"""Search algorithms: CTC greedy/prefix beam, joint CTC/attention beam search, RNN-T greedy/beam
(and ``classify`` for utterance classifiers)."""

import enum


class DecodeMethod(str, enum.Enum):
    """Decoding methods a packaged model can be searched with (``stk decode --method``)."""

    attention = "attention"
    ctc_greedy = "ctc_greedy"
    ctc_beam = "ctc_beam"
    rnnt_greedy = "rnnt_greedy"
    rnnt_beam = "rnnt_beam"
    classify = "classify"


class RnntSearch(str, enum.Enum):
    """RNN-T beam search algorithms (``stk decode --rnnt-search``)."""

    modified = "modified"  # stk: batched over utterances, at most one symbol per frame, LM fusion
    torchaudio = "torchaudio"  # torchaudio's RNNTBeamSearch, one utterance at a time
