"""RNN-T decoding real-time factor: stk's greedy and beam search vs ESPnet's transducer search, same weights.

Model: stk's ``transducer`` model with the egs/mini/asr encoder sizes (Conformer, d_model 144,
4 heads, FFN 576, 4 layers, kernel 15, 4x subsampling with 64 channels), vocabulary 300 (the
recipe's BPE size) and an RNN-T head of embedding = LSTM = joint size 256 (one LSTM layer); random
weights, eval mode. Random weights give a near-flat joint output, on which a transducer search
emits symbols on almost every frame (greedy: up to its per-frame cap; beam: up to 100 expansions
per frame), nothing like a trained model. So, untimed, the joint's output layer is made
"trained-like": its weights are scaled by ``--logit-scale`` (default 20, so each frame has a clear
best symbol: mean max posterior ~0.75) and the blank logit's bias is raised until stk's greedy search emits
``--tokens-per-frame`` (default 0.2, i.e. 5 tokens per second of audio at 40 ms frames) on the
calibration utterances. All searches then decode this same model.

Input: ``--num-utts`` (32) utterances with lengths drawn uniformly from ``--min-seconds`` to
``--max-seconds`` (3-10 s; 100 fbank frames per second), N(0, 1) 80-bin fbank. The encoder runs on
length-sorted batches of ``--enc-batch`` (8) utterances; it is timed as its own entry ("encoder") in
the same alternation, and its median is added to each search's to give the RTF with the encoder.

Implementations (each decodes all utterances per timed call):
  * ``stk greedy``: ``stk.decode.rnnt.rnnt_greedy`` on the encoder batches (batched over
    utterances; up to ``--greedy-max-symbols`` symbols per frame, default 5 as stk's decoder), and
    ``stk greedy 1/frame``, the same capped at 1 symbol per frame — ESPnet's greedy rule, so it must
    return exactly ESPnet's greedy output (the table's "same output" column checks it).
  * ``stk beam K``: ``stk.decode.rnnt.rnnt_beam_search(algorithm="torchaudio")`` (torchaudio's
    ``RNNTBeamSearch`` over the stk head through stk's adapter; one utterance at a time, hypotheses
    batched per expansion), ranked by log-probability (``--score-norm``: length-normalised).
  * ``stk batched beam K``: ``rnnt_beam_search`` (stk's default since issue 11: icefall's modified
    beam search, at most one symbol per frame, batched over the encoder batch's utterances and
    hypotheses) on length-sorted batches of ``--beam-batch`` (32) utterances; its "× other" column is
    against ``stk beam K`` (torchaudio's search).
  * ``ESPnet greedy`` / ``ESPnet beam K``: ``espnet2.asr.transducer.beam_search_transducer.
    BeamSearchTransducer`` (the class ``espnet2.bin.asr_inference`` uses) with ``search_type="default"``
    (its default; Graves 2012 beam search, one hypothesis expanded at a time; ``beam_size=1`` is its
    greedy search, at most one symbol per frame), ``score_norm=False`` (rank by log-probability as
    stk), over an ``espnet2.asr.decoder.transducer_decoder.TransducerDecoder`` and an
    ``espnet2.asr_transducer.joint_network.JointNetwork`` holding a copy of the stk head's weights
    (the script checks that both give the same joint log-probabilities), one utterance per call, as
    ``Speech2Text`` decodes.

RTF = median wall time of a call / total audio seconds (lower is better). All entries (and the
encoder) run round-robin (``common.alternate``) after a warm-up call of each on the median-length
utterance.

Usage:
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/rnnt_decode.py --threads 2 --repeats 2
    .venv/bin/python bench/rnnt_decode.py --num-utts 8 --beams 4 --impls stk espnet --json bench/out/rnnt.json
    # a trained transducer package on a data dir with wav.scp + text (adds WER / CER per search):
    .venv/bin/python bench/rnnt_decode.py --package PKG --data data/synth_test --num-utts 128 --beams 4 \
        --impls stk --score-norm --hyp-dir exp/hyps
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import alternate, machine_info, markdown_table, median, set_threads, write_json  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

FEATS, VOCAB, BLANK = 80, 300, 0
ENCODER = {"d_model": 144, "num_heads": 4, "ffn_dim": 576, "num_layers": 4, "kernel_size": 15, "dropout": 0.1,
           "subsampling_factor": 4, "subsampling_channels": 64}  # egs/mini/asr/conf/train.yaml


# ----------------------------------------------------------------------------------------- model


def build_model(pred_dim: int, joint_dim: int, pred_layers: int, seed: int) -> nn.Module:
    """stk's transducer model (random weights, eval mode); predictor embedding size = LSTM size."""
    from stk.models import MODELS

    torch.manual_seed(seed)
    conf = {"encoder": {"name": "conformer", "conf": ENCODER},
            "rnnt": {"embed_dim": pred_dim, "pred_dim": pred_dim, "joint_dim": joint_dim, "num_layers": pred_layers}}
    return MODELS.build({"name": "transducer", "conf": conf}, vocab_size=VOCAB, input_dim=FEATS).eval()


def make_inputs(num_utts: int, min_s: float, max_s: float, seed: int) -> list[torch.Tensor]:
    """Random fbank (T_i, 80) per utterance, T_i = 100 × uniform(min_s, max_s)."""
    g = torch.Generator().manual_seed(seed)
    lens = (100 * (min_s + (max_s - min_s) * torch.rand(num_utts, generator=g))).long()
    return [torch.randn(int(n), FEATS, generator=g) for n in lens]


def load_trained(package: Path, data: Path, max_utts: int
                 ) -> tuple[nn.Module, list[torch.Tensor], list[str], Any, list[str]]:
    """A packaged transducer, the (CMVN-normalised) fbank of the first ``max_utts`` utterances of
    ``data`` (a data dir with ``wav.scp`` and ``text``; ``max_utts`` <= 0: all) and their references."""
    from stk.data.kaldi import read_kv
    from stk.inference import iter_batches, read_scp_input
    from stk.package import load_package

    lm = load_package(str(package))
    wav_scp, segments = read_scp_input(data)
    text = read_kv(Path(data) / "text", allow_empty_value=True)
    utts = sorted(wav_scp)[: max_utts] if max_utts > 0 else sorted(wav_scp)
    feats: dict[str, torch.Tensor] = {}
    for ids, x, lens in iter_batches(lm, {u: wav_scp[u] for u in utts}, segments, batch_frames=20000,
                                     allow_pipes=False):
        feats.update({u: x[j, : int(lens[j])] for j, u in enumerate(ids)})
    return lm.model, [feats[u] for u in utts], [text[u] for u in utts], lm.tokenizer, utts


def encoder_batches(feats: list[torch.Tensor], batch: int) -> list[tuple[torch.Tensor, torch.Tensor, list[int]]]:
    """Length-sorted padded batches ``(x (B, T, F), lens (B,), utterance indices)``."""
    order = sorted(range(len(feats)), key=lambda i: -feats[i].size(0))
    out = []
    for k in range(0, len(order), batch):
        idx = order[k : k + batch]
        lens = torch.tensor([feats[i].size(0) for i in idx])
        x = torch.zeros(len(idx), int(lens.max()), FEATS)
        for j, i in enumerate(idx):
            x[j, : feats[i].size(0)] = feats[i]
        out.append((x, lens, idx))
    return out


@torch.no_grad()
def encode_all(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor, list[int]]]
               ) -> list[tuple[torch.Tensor, torch.Tensor, list[int]]]:
    """Encoder output per batch: ``(enc (B, T', E), enc_lens (B,), utterance indices)``."""
    out = []
    for x, lens, idx in batches:
        enc, enc_lens = model.encode(x, lens)
        out.append((enc, enc_lens.long(), idx))
    return out


@torch.no_grad()
def calibrate(head: nn.Module, enc: list[tuple[torch.Tensor, torch.Tensor, list[int]]], logit_scale: float,
              tokens_per_frame: float, iters: int = 20) -> dict[str, float]:
    """Scale the joint's output layer and bisect the blank bias until greedy emits ``tokens_per_frame``."""
    from stk.decode.rnnt import rnnt_greedy

    out = head.joiner.out
    out.weight.mul_(logit_scale)
    out.bias.mul_(logit_scale)
    base = float(out.bias[BLANK])
    cal = enc[: 2]  # calibration: the first two encoder batches
    frames = sum(int(l.sum()) for _, l, _ in cal)

    def rate(bias: float) -> float:
        out.bias[BLANK] = base + bias
        return sum(len(t) for e, l, _ in cal for t in rnnt_greedy(head, e, l)) / frames

    lo, hi = -5.0, 40.0
    for _ in range(iters):
        mid = (lo + hi) / 2
        if rate(mid) > tokens_per_frame:
            lo = mid
        else:
            hi = mid
    bias = (lo + hi) / 2
    r = rate(bias)
    return {"logit_scale": logit_scale, "blank_bias_added": bias, "greedy_tokens_per_frame": r,
            "calibration_frames": frames}


@torch.no_grad()
def posterior_stats(head: nn.Module, enc: list[tuple[torch.Tensor, torch.Tensor, list[int]]]) -> dict[str, float]:
    """Mean blank posterior and mean max non-blank share at the start state, over all valid frames."""
    tokens = torch.full((1, 1), BLANK, dtype=torch.long)
    pred, _ = head.predictor(tokens)
    pp = head.joiner.project_pred(pred[:, 0])
    blank, top = [], []
    for e, l, _ in enc:
        valid = torch.arange(e.size(1))[None] < l[:, None]
        p = head.joiner.joint(head.joiner.project_enc(e[valid]), pp).float().softmax(-1)
        blank.append(p[:, BLANK])
        nb = p[:, BLANK + 1 :]
        top.append(nb.max(-1).values / nb.sum(-1))
    return {"mean_blank_posterior": float(torch.cat(blank).mean()),
            "mean_top_nonblank_share": float(torch.cat(top).mean())}


# ---------------------------------------------------------------------------------------- ESPnet


def espnet_available() -> str | None:
    """``None`` if ESPnet's transducer search imports, else the reason it does not."""
    try:
        with contextlib.redirect_stdout(sys.stderr):  # espnet prints a flash-attn notice on import
            import espnet2.asr.transducer.beam_search_transducer  # noqa: F401
    except Exception as e:  # ImportError, or a broken install
        return f"{type(e).__name__}: {e}"
    return None


@torch.no_grad()
def espnet_from_stk(head: nn.Module) -> tuple[nn.Module, nn.Module]:
    """ESPnet ``TransducerDecoder`` + ``JointNetwork`` holding copies of the stk head's weights."""
    from espnet2.asr.decoder.transducer_decoder import TransducerDecoder
    from espnet2.asr_transducer.joint_network import JointNetwork

    p, j = head.predictor, head.joiner
    if p.embed.embedding_dim != p.hidden_dim:
        raise ValueError("ESPnet's TransducerDecoder needs embedding size == LSTM size")
    dec = TransducerDecoder(vocab_size=p.vocab_size, rnn_type="lstm", num_layers=p.num_layers,
                            hidden_size=p.hidden_dim, embed_pad=head.blank)
    dec.embed.weight.copy_(p.embed.weight)
    for layer in range(p.num_layers):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(dec.decoder[layer], f"{name}_l0").copy_(getattr(p.lstm, f"{name}_l{layer}"))
    joint = JointNetwork(j.vocab_size, j.enc_proj.in_features, p.hidden_dim, joint_space_size=j.enc_proj.out_features,
                         joint_activation_type="tanh", lin_dec_bias=False)
    joint.lin_enc.load_state_dict(j.enc_proj.state_dict())
    joint.lin_dec.load_state_dict(j.pred_proj.state_dict())
    joint.lin_out.load_state_dict(j.out.state_dict())
    return dec.eval(), joint.eval()


@torch.no_grad()
def joint_max_diff(head: nn.Module, dec: nn.Module, joint: nn.Module, enc: torch.Tensor, steps: int = 20) -> float:
    """Max |Δ log p| of the joint output, stk vs ESPnet, along a random label sequence over ``enc`` (T, E)."""
    from espnet2.asr.transducer.beam_search_transducer import Hypothesis

    g = torch.Generator().manual_seed(1)
    labels = [BLANK] + torch.randint(1, VOCAB, (steps - 1,), generator=g).tolist()
    state, worst, cache = None, 0.0, {}
    yseq, esp_state = [], dec.init_state(1)
    for k, lab in enumerate(labels):
        out, state = head.predictor(torch.tensor([[lab]]), state)
        yseq = yseq + [lab]  # ESPnet's score() feeds yseq[-1] on top of dec_state
        e_out, esp_state, _ = dec.score(Hypothesis(score=0.0, yseq=yseq, dec_state=esp_state), cache)
        t = k % enc.size(0)
        a = head.joiner(enc[t][None, None], out).log_softmax(-1).flatten()
        b = joint(enc[t], e_out).log_softmax(-1)
        worst = max(worst, float((a - b).abs().max()))
    return worst


# ------------------------------------------------------------------------------------- searchers


class Searchers:
    """The timed searchers over fixed encoder output; each returns token ids per utterance (input order)."""

    def __init__(self, head: nn.Module, enc: list[tuple[torch.Tensor, torch.Tensor, list[int]]], num_utts: int,
                 espnet: tuple[nn.Module, nn.Module] | None, greedy_max_symbols: int = 5, norm: bool = False,
                 beam_batch: int = 32) -> None:
        self.head, self.enc, self.n, self.norm, self.beam_batch = head, enc, num_utts, norm, beam_batch
        self.max_symbols = greedy_max_symbols
        self.utts: list[tuple[int, torch.Tensor]] = [
            (i, e[j, : int(l[j])]) for e, l, idx in enc for j, i in enumerate(idx)]
        self.espnet = espnet
        self._esp_search: dict[int, Any] = {}

    def esp_search(self, beam: int) -> Any:
        from espnet2.asr.transducer.beam_search_transducer import BeamSearchTransducer

        if beam not in self._esp_search:
            dec, joint = self.espnet
            self._esp_search[beam] = BeamSearchTransducer(decoder=dec, joint_network=joint, beam_size=beam,
                                                          search_type="default", score_norm=False)
        return self._esp_search[beam]

    def _order(self, pairs: list[tuple[int, list[int]]]) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in range(self.n)]
        for i, toks in pairs:
            out[i] = toks
        return out

    def stk_greedy(self, only: int | None = None, max_symbols: int | None = None) -> list[list[int]]:
        from stk.decode.rnnt import rnnt_greedy

        k = max_symbols or self.max_symbols
        if only is not None:
            i, e = self.utts[only]
            return [rnnt_greedy(self.head, e[None], torch.tensor([e.size(0)]), k)[0]]
        pairs = []
        for e, l, idx in self.enc:
            pairs += list(zip(idx, rnnt_greedy(self.head, e, l, k)))
        return self._order(pairs)

    def stk_beam(self, beam: int, only: int | None = None) -> list[list[int]]:
        from stk.decode.rnnt import rnnt_beam_search

        utts = self.utts if only is None else [self.utts[only]]
        pairs = [(i, rnnt_beam_search(self.head, e[None], torch.tensor([e.size(0)]), beam_size=beam,
                                      length_normalise=self.norm, algorithm="torchaudio")[0]) for i, e in utts]
        return self._order(pairs) if only is None else [t for _, t in pairs]

    def stk_modified(self, beam: int, only: int | None = None) -> list[list[int]]:
        """The batched modified beam search on the encoder batches."""
        from stk.decode.rnnt import rnnt_beam_search

        if only is not None:
            i, e = self.utts[only]
            return rnnt_beam_search(self.head, e[None], torch.tensor([e.size(0)]), beam_size=beam,
                                    length_normalise=self.norm)
        pairs = []
        for k in range(0, len(self.utts), self.beam_batch):  # length-sorted batches of beam_batch utterances
            part = self.utts[k : k + self.beam_batch]
            lens = torch.tensor([e.size(0) for _, e in part])
            e = torch.zeros(len(part), int(lens.max()), part[0][1].size(1))
            for j, (_, x) in enumerate(part):
                e[j, : x.size(0)] = x
            pairs += list(zip([i for i, _ in part],
                              rnnt_beam_search(self.head, e, lens, beam_size=beam, length_normalise=self.norm)))
        return self._order(pairs)

    @torch.no_grad()  # as espnet2.bin.asr_inference.Speech2Text.__call__
    def esp(self, beam: int, only: int | None = None) -> list[list[int]]:
        search = self.esp_search(beam)
        utts = self.utts if only is None else [self.utts[only]]
        pairs = [(i, search(e)[0].yseq[1:]) for i, e in utts]
        return self._order(pairs) if only is None else [t for _, t in pairs]

    def fn(self, impl: str) -> Callable[..., list[list[int]]]:
        """The searcher of ``impl`` (``stk greedy``, ``stk beam K``, ``ESPnet greedy``, ``ESPnet beam K``)."""
        if impl == "stk greedy":
            return self.stk_greedy
        if impl == "stk greedy 1/frame":
            return lambda only=None: self.stk_greedy(only, max_symbols=1)
        if impl.startswith("stk batched beam "):
            return lambda only=None, k=int(impl.split()[-1]): self.stk_modified(k, only)
        if impl.startswith("stk beam "):
            return lambda only=None, k=int(impl.split()[-1]): self.stk_beam(k, only)
        if impl == "ESPnet greedy":
            return lambda only=None: self.esp(1, only)
        if impl.startswith("ESPnet beam "):
            return lambda only=None, k=int(impl.split()[-1]): self.esp(k, only)
        raise ValueError(impl)


# ---------------------------------------------------------------------------------------- driver


def run(args: argparse.Namespace) -> dict[str, Any]:
    set_threads(args.threads)
    logging.getLogger("espnet").setLevel(logging.ERROR)
    notes: list[str] = []
    impls_esp = "espnet" in args.impls
    if impls_esp and (why := espnet_available()) is not None:
        notes.append(f"ESPnet is not installed ({why}); install it with `bash tools/install_peer.sh`. "
                     "Benched stk only.")
        impls_esp = False
    refs = tokenizer = None
    if args.package:  # a trained model on a real test set
        model, feats, refs, tokenizer, utt_ids = load_trained(args.package, args.data, args.num_utts)
        args.num_utts = len(feats)
        impls_esp = False
    else:
        model = build_model(args.pred_dim, args.joint_dim, args.pred_layers, args.seed)
        feats = make_inputs(args.num_utts, args.min_seconds, args.max_seconds, args.seed)
    audio_s = sum(f.size(0) for f in feats) / 100.0
    batches = encoder_batches(feats, args.enc_batch)
    enc = encode_all(model, batches)
    head = model.rnnt
    if args.package:
        cal = {"package": str(args.package), "data": str(args.data)}
    else:
        cal = calibrate(head, enc, args.logit_scale, args.tokens_per_frame)
        cal.update(posterior_stats(head, enc))
    espnet = espnet_from_stk(head) if impls_esp else None
    if espnet is not None:
        cal["joint_logp_max_abs_diff_stk_vs_espnet"] = joint_max_diff(head, *espnet, enc[0][0][0])
    impls: list[str] = []
    if "stk" in args.impls:
        impls += ["stk greedy"] + (["stk greedy 1/frame"] if args.greedy_max_symbols != 1 else []) + [
            f"stk beam {k}" for k in args.beams] + [f"stk batched beam {k}" for k in args.beams]
    if impls_esp:
        impls += ["ESPnet greedy"] + [f"ESPnet beam {k}" for k in args.beams]
    s = Searchers(head, enc, args.num_utts, espnet, args.greedy_max_symbols, norm=args.score_norm,
                  beam_batch=args.beam_batch)
    enc_frames = [int(l) for _, ls, _ in enc for l in ls]
    mid = sorted(range(len(s.utts)), key=lambda k: s.utts[k][1].size(0))[len(s.utts) // 2]
    warm: dict[str, float] = {}
    for impl in impls:  # warm-up on the median-length utterance
        t0 = time.perf_counter()
        s.fn(impl)(only=mid)
        warm[impl] = time.perf_counter() - t0
    outputs: dict[str, list[list[int]]] = {}

    def timed(impl: str) -> Callable[[], None]:
        def call() -> None:
            outputs[impl] = s.fn(impl)()
        return call

    fns: dict[str, Callable[[], Any]] = {"encoder": lambda: encode_all(model, batches)}
    fns.update({impl: timed(impl) for impl in impls})
    times = alternate(fns, steps=args.repeats, warmup=0)
    t_enc = median(times["encoder"])
    total_frames = sum(enc_frames)
    results: dict[str, Any] = {"encoder": {"median_s": t_enc, "times_s": times["encoder"], "rtf": t_enc / audio_s}}
    for impl in impls:
        t = median(times[impl])
        out = outputs[impl]
        r = {"median_s": t, "times_s": times[impl], "warmup_s": warm[impl], "rtf_search": t / audio_s,
             "rtf_with_encoder": (t + t_enc) / audio_s, "tokens_per_frame": sum(map(len, out)) / total_frames}
        if refs is not None:
            from stk.scoring import error_rates

            texts = [tokenizer.decode(ids) for ids in out]
            er = error_rates(refs, texts)
            r["wer"], r["cer"] = er["wer"], er["cer"]
            if args.hyp_dir:  # Kaldi-style hypothesis files for `stk score --compare`
                args.hyp_dir.mkdir(parents=True, exist_ok=True)
                (args.hyp_dir / (impl.replace(" ", "_").replace("/", "per") + ".txt")).write_text(
                    "".join(f"{u} {t}\n" for u, t in zip(utt_ids, texts)))
        peer = peer_of(impl)
        if peer in outputs:
            r[f"time_vs_{peer}"] = t / median(times[peer])
            r[f"same_output_as_{peer}"] = sum(a == b for a, b in zip(out, outputs[peer])) / len(out)
        results[impl] = r
    return {"config": {"num_utts": args.num_utts, "seconds": [args.min_seconds, args.max_seconds],
                       "audio_s": audio_s, "enc_frames": enc_frames, "enc_batch": args.enc_batch,
                       "encoder": ENCODER, "vocab": VOCAB, "pred_dim": args.pred_dim, "joint_dim": args.joint_dim,
                       "pred_layers": args.pred_layers, "greedy_max_symbols": args.greedy_max_symbols,
                       "beams": args.beams, "repeats": args.repeats, "score_norm": args.score_norm,
                       "beam_batch": args.beam_batch,
                       "seed": args.seed},
            "calibration": cal, "machine": machine_info(args.threads), "results": results, "notes": notes}


def peer_of(impl: str) -> str:
    """The other toolkit's search of the same kind (stk greedy, capped or not, pairs with ESPnet greedy);
    stk's batched beam search pairs with torchaudio's (``stk beam K``)."""
    if impl.startswith("stk batched beam "):
        return "stk beam " + impl.split()[-1]
    kind = "greedy" if "greedy" in impl else impl.split(" ", 1)[1]
    return f"ESPnet {kind}" if impl.startswith("stk") else f"stk {kind}"


def table(record: dict[str, Any]) -> str:
    """The markdown table of a record from :func:`run`."""
    res, c, cal, m = record["results"], record["config"], record["calibration"], record["machine"]
    rows = []
    for impl, r in res.items():
        if impl == "encoder":
            continue
        peer = peer_of(impl)
        vs = "—"
        if f"time_vs_{peer}" in r:
            rr = [a / b for a, b in zip(r["times_s"], res[peer]["times_s"])]  # same round of the alternation
            vs = f"{r['time_vs_' + peer]:.2f} ({median(rr):.2f}; {min(rr):.2f}–{max(rr):.2f})"
        same = f"{100 * r['same_output_as_' + peer]:.0f} %" if f"same_output_as_{peer}" in r else "—"
        rows.append([impl, f"{r['rtf_search']:.4f}", f"{r['rtf_with_encoder']:.4f}", f"{r['median_s']:.2f}",
                     f"{c['num_utts'] / r['median_s']:.1f}", vs, f"{r['tokens_per_frame']:.3f}", same]
                    + ([f"{r['wer']:.1f} / {r['cer']:.1f}"] if "wer" in r else []))
    header = ["search", "RTF search only", "RTF with encoder", "s per call (median)", "utterances/s",
              "time × other (per-round median; range)",
              "tokens/frame", "same output as the other"] + (["WER / CER %"] if "wer" in next(
                  v for k, v in res.items() if k != "encoder") else [])
    e = res["encoder"]
    fr = c["enc_frames"]
    if "package" in cal:
        return markdown_table(header, rows) + (
            f"\n\nTrained model {cal['package']} on {c['num_utts']} utterances of {cal['data']} ({c['audio_s']:.0f} s; "
            f"{min(fr)}–{max(fr)} encoder frames); encoder alone RTF {e['rtf']:.4f}; ranking "
            f"{'length-normalised' if c.get('score_norm') else 'by log-probability'}. Median of {c['repeats']} "
            f"alternated calls; {m['threads']} thread(s), {m['cpu']}, load avg {m['load_avg_1_5_15']}, torch {m['torch']}."
        ) + "".join(f"\n- {n}" for n in record["notes"])
    diff = cal.get("joint_logp_max_abs_diff_stk_vs_espnet")
    foot = (f"\n\nencoder alone: RTF {e['rtf']:.4f} ({e['median_s']:.2f} s for {c['audio_s']:.0f} s of audio in batches of "
            f"{c['enc_batch']}). {c['num_utts']} utterances of {c['seconds'][0]:g}–{c['seconds'][1]:g} s "
            f"({c['audio_s']:.0f} s in all; {min(fr)}–{max(fr)} encoder frames), vocab {c['vocab']}, predictor "
            f"{c['pred_layers']}× LSTM {c['pred_dim']}, joint {c['joint_dim']}; joint output ×{cal['logit_scale']:g}, blank "
            f"bias +{cal['blank_bias_added']:.2f} (greedy {cal['greedy_tokens_per_frame']:.3f} tokens/frame on the "
            f"calibration batches; mean blank posterior {cal['mean_blank_posterior']:.2f}, top non-blank holds "
            f"{100 * cal['mean_top_nonblank_share']:.0f} % of the non-blank mass)"
            + (f"; joint |Δlog p| stk vs ESPnet ≤ {diff:.1e}" if diff is not None else "")
            + f"; stk greedy up to {c['greedy_max_symbols']} symbols/frame ('1/frame': capped at 1, ESPnet's rule)"
            + (f"; batched beam on batches of {c['beam_batch']} utterances" if "beam_batch" in c else "")
            + f". Median of {c['repeats']} alternated calls after a warm-up on the median-length utterance; "
            f"{m['threads']} thread(s), {m['cpu']}, load avg {m['load_avg_1_5_15']}, "
            f"OMP_WAIT_POLICY={m['omp_wait_policy'] or 'unset'}, torch {m['torch']}.")
    return markdown_table(header, rows) + foot + "".join(f"\n- {n}" for n in record["notes"])


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    ap.add_argument("--num-utts", type=int, default=32, help="utterances (default 32)")
    ap.add_argument("--min-seconds", type=float, default=3.0, help="shortest utterance (default 3 s)")
    ap.add_argument("--max-seconds", type=float, default=10.0, help="longest utterance (default 10 s)")
    ap.add_argument("--enc-batch", type=int, default=8, help="utterances per encoder (and greedy) batch (default 8)")
    ap.add_argument("--beams", type=int, nargs="+", default=[4, 8], help="beam sizes (default 4 8)")
    ap.add_argument("--impls", nargs="+", default=["stk", "espnet"], choices=["stk", "espnet"])
    ap.add_argument("--repeats", type=int, default=2, help="timed calls per search (default 2)")
    ap.add_argument("--pred-dim", type=int, default=256, help="predictor embedding and LSTM size (default 256)")
    ap.add_argument("--joint-dim", type=int, default=256, help="joint hidden size (default 256)")
    ap.add_argument("--pred-layers", type=int, default=1, help="predictor LSTM layers (default 1)")
    ap.add_argument("--logit-scale", type=float, default=20.0, help="scale of the joint output layer (default 20)")
    ap.add_argument("--greedy-max-symbols", type=int, default=5,
                    help="stk greedy's cap on symbols per frame (default 5, stk's default; ESPnet's greedy has 1)")
    ap.add_argument("--tokens-per-frame", type=float, default=0.2,
                    help="greedy emission rate the blank bias is calibrated to (default 0.2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--package", type=Path, help="decode a trained transducer package instead (with --data)")
    ap.add_argument("--data", type=Path, help="data dir (wav.scp, text) for --package; --num-utts of it (0: all)")
    ap.add_argument("--beam-batch", type=int, default=32,
                    help="utterances per batch of the batched beam search (default 32; stk decode batches by a "
                         "20,000-frame budget, ~50 utterances of 4 s)")
    ap.add_argument("--hyp-dir", type=Path, help="with --package: write each search's hypotheses here")
    ap.add_argument("--score-norm", action="store_true", help="beam searches rank by length-normalised score")
    ap.add_argument("--json", type=Path, help="also write the record (all times, calibration) to this JSON file")
    ap.add_argument("--table-from", type=Path, help="only print the table of a record written by --json")
    args = ap.parse_args(argv)
    if args.table_from:
        print(table(json.loads(args.table_from.read_text())))
        return 0
    record = run(args)
    print(table(record))
    if args.json:
        write_json(args.json, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
