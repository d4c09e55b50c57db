"""Joint CTC/attention beam search: stk (batched over utterances) vs ESPnet, timed side by side.

Model (the reference sizes of ``shared/notes/anchors-perf.md``): stk's ``encdec`` model with the
reference Conformer encoder (6 layers, d_model 256, 4 heads, FFN 1024, 4x subsampling), a CTC head
and a Transformer decoder of 3 layers, d_model 256, 4 heads, FFN 1024 (stk's default decoder;
``--dec-layers 6 --dec-ffn 2048`` gives ESPnet's default sizes at twice the run time), vocabulary
500, random weights, eval mode. The encoder runs once, untimed, on random 80-dim fbank of 300-500
frames -> T = 75-125 encoder frames per utterance (3-5 s of speech); only the search is timed.

Same model on both sides: the stk decoder's weights are copied into an
``espnet2.asr.decoder.transformer_decoder.TransformerDecoder`` of the same sizes (both pre-norm,
scaled embedding + sinusoidal positions, ReLU FFN; ESPnet's LayerNorm eps is set to stk's 1e-5),
and the script checks that both give the same next-token log-probabilities. Both searches get the
same CTC log-posteriors: ESPnet's ``CTCPrefixScorer`` is handed a stand-in CTC module whose
``log_softmax`` returns stk's precomputed posteriors of the utterance being decoded.

Search: beam 10, CTC weight 0.3 (decoder 0.7), pre-beam of int(1.5 * beam) = 15 tokens chosen
by the decoder score (ESPnet ``pre_beam_score_key="full"``), sos = eos = 2, blank 0.

Implementations (each decodes the same ``--num-utts`` utterances, default 4, per timed call):
  * ``stk batched``: one ``stk.decode.beam_search.batch_beam_search`` call for all N.
  * ``stk per-utt``: the same function, one utterance per call (padding trimmed).
  * ``ESPnet BeamSearch``: ``espnet.nets.beam_search.BeamSearch``, one utterance per call
    (per-hypothesis decoder calls, numpy ``CTCPrefixScore``).
  * ``ESPnet BatchBeamSearch``: ``espnet.nets.batch_beam_search.BatchBeamSearch`` (the class
    ``espnet2.bin.asr_inference`` uses), one utterance per call, beam batched, ``CTCPrefixScoreTH``.

Settings:
  * ``random`` — random weights, flat CTC posteriors; every hypothesis is capped at ``--maxlen``
    tokens (default 30) for both (stk ``maxlen=30``; ESPnet ``maxlenratio=-30``, which also turns
    off its end detection), so both do ~30 search steps per utterance: the equal-work comparison.
  * ``peaked`` — "trained-like": CTC posteriors peaked (p ~ 0.95) on a random transcript of
    T // 4 tokens (18-31) per utterance, and the decoder fine-tuned (teacher forcing, untimed) to
    predict the same transcripts, so decoder and CTC agree. Each toolkit uses its default stopping
    rule (no length cap: stk stops an utterance once its best ended hypothesis beats every live
    one; ESPnet ``maxlenratio=0`` -> ``end_detect``), as a user of each would get.

Each implementation first decodes the median-length utterance untimed (warm-up; with ``--flops``
its FLOPs are counted with ``FlopCounterMode``), then the implementations are timed round-robin
over all utterances (``common.alternate``); the tables give medians of ``--repeats`` calls, throughput
ratios, decoder rows scored per utterance (hypotheses x steps), average output length and how
often the best hypotheses agree. By default the ``peaked`` setting leaves out ESPnet's slow
non-batched ``BeamSearch`` (``--peaked-impls`` adds it) so a default run stays near 3 minutes on a
busy 2-core machine.

Usage:
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/beam_search.py --threads 2
    .venv/bin/python bench/beam_search.py --settings random --num-utts 16 --repeats 2 \
        --impls "stk batched" "ESPnet BatchBeamSearch" --json /tmp/beam_search.json
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import alternate, count_flops, machine_info, markdown_table, median, set_threads, write_json  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

VOCAB, FEATS, D_MODEL, HEADS = 500, 80, 256, 4
ENC_FFN, ENC_LAYERS = 1024, 6
BLANK, SOS_EOS = 0, 2
CTC_WEIGHT = 0.3
IMPLS = ["stk batched", "stk per-utt", "ESPnet BeamSearch", "ESPnet BatchBeamSearch"]


# ----------------------------------------------------------------------------------------- model


def build_stk_model(dec_layers: int, dec_ffn: int, seed: int) -> nn.Module:
    """stk's ``encdec`` model with the reference encoder and the chosen decoder, eval mode."""
    from stk.models import MODELS

    torch.manual_seed(seed)
    conf = {
        "encoder": {"name": "conformer", "conf": {"d_model": D_MODEL, "num_heads": HEADS, "ffn_dim": ENC_FFN,
                                                  "num_layers": ENC_LAYERS}},
        "decoder": {"d_model": D_MODEL, "num_heads": HEADS, "ffn_dim": dec_ffn, "num_layers": dec_layers,
                    "dropout": 0.1},
    }
    return MODELS.build({"name": "encdec", "conf": conf}, vocab_size=VOCAB, input_dim=FEATS).eval()


@torch.no_grad()
def encode(model: nn.Module, num_utts: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random fbank of 300-500 frames -> encoder output (N, T, D), lengths (N,), CTC log-posteriors (N, T, V)."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(300, 501, (num_utts,), generator=g)
    feats = torch.randn(num_utts, int(lens.max()), FEATS, generator=g)
    enc, enc_lens = model.encode(feats, lens)
    t = int(enc_lens.max())
    enc = enc[:, :t].contiguous()
    return enc, enc_lens.long(), model.ctc_log_probs(enc)


def peaked_posteriors(lengths: torch.Tensor, seed: int, margin: float = 10.0) -> tuple[torch.Tensor, list[list[int]]]:
    """CTC log-posteriors (N, T, V) peaked on a random transcript of ``T_b // 4`` tokens per utterance.

    Each token takes 1-2 frames at a random place in its equal share of the frames (about 4), the
    other frames are blank; logits are N(0, 1) noise plus ``margin`` on the aligned label (p ~ 0.95).
    """
    g = torch.Generator().manual_seed(seed)
    n, t_max = lengths.numel(), int(lengths.max())
    labels = torch.full((n, t_max), BLANK, dtype=torch.long)
    transcripts = []
    for b, t in enumerate(lengths.tolist()):
        u = t // 4
        toks: list[int] = []
        while len(toks) < u:
            c = int(torch.randint(SOS_EOS + 1, VOCAB, (1,), generator=g))
            if not toks or c != toks[-1]:
                toks.append(c)
        bounds = torch.linspace(0, t, u + 1).long().tolist()
        for k, c in enumerate(toks):
            lo, hi = bounds[k], bounds[k + 1]
            width = 1 + int(torch.randint(0, 2, (1,), generator=g))
            start = lo + int(torch.randint(0, max(1, hi - lo - width + 1), (1,), generator=g))
            labels[b, start : min(start + width, hi)] = c
        transcripts.append(toks)
    logits = torch.randn(n, t_max, VOCAB, generator=g)
    logits.scatter_add_(2, labels[..., None], torch.full((n, t_max, 1), margin))
    return logits.log_softmax(-1), transcripts


def fine_tune_decoder(decoder: nn.Module, memory: torch.Tensor, lengths: torch.Tensor,
                      transcripts: list[list[int]], max_steps: int = 200, target_loss: float = 0.1,
                      lr: float = 2e-3) -> dict[str, float]:
    """Teacher-force ``decoder`` on ``transcripts`` (in place, untimed) so it agrees with the peaked CTC.

    Stops at a mean cross-entropy of ``target_loss`` (0.1: the transcript token is the decoder's
    top choice almost everywhere, which is all the pre-beam needs).
    """
    from stk.models.encdec import add_sos_eos

    n = len(transcripts)
    ylens = torch.tensor([len(y) for y in transcripts])
    ys = torch.full((n, int(ylens.max())), -1, dtype=torch.long)
    for b, y in enumerate(transcripts):
        ys[b, : len(y)] = torch.tensor(y)
    ys_in, ys_out = add_sos_eos(ys, ylens, SOS_EOS)
    opt = torch.optim.Adam(decoder.parameters(), lr=lr)
    decoder.train()
    t0, loss, step = time.perf_counter(), float("nan"), 0
    for step in range(1, max_steps + 1):
        logits = decoder(ys_in, ylens + 1, memory, lengths)
        l = F.cross_entropy(logits.transpose(1, 2), ys_out, ignore_index=-1)
        opt.zero_grad(set_to_none=True)
        l.backward()
        opt.step()
        loss = float(l.detach())
        if loss < target_loss:
            break
    decoder.eval()
    for p in decoder.parameters():
        p.requires_grad_(False)
    return {"steps": step, "final_loss": loss, "seconds": time.perf_counter() - t0}


def espnet_decoder_from_stk(dec: nn.Module) -> nn.Module:
    """An ESPnet ``TransformerDecoder`` of the same sizes holding ``dec``'s weights (eval mode)."""
    from espnet2.asr.decoder.transformer_decoder import TransformerDecoder

    layers = len(dec.layers)
    ffn = dec.layers[0].ff[0].out_features
    heads = dec.layers[0].self_attn.num_heads
    if not isinstance(dec.mem_proj, nn.Identity):
        raise ValueError("the ESPnet decoder has no memory projection: need memory_dim == d_model")
    esp = TransformerDecoder(VOCAB, dec.d_model, attention_heads=heads, linear_units=ffn, num_blocks=layers,
                             use_flash_attn=False)

    def cp(dst: nn.Module, src: nn.Module) -> None:
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)
        if isinstance(dst, nn.LayerNorm):
            dst.eps = src.eps

    with torch.no_grad():
        esp.embed[0].weight.copy_(dec.embed.weight)
        for sl, el in zip(dec.layers, esp.decoders):
            for sa, ea in ((sl.self_attn, el.self_attn), (sl.src_attn, el.src_attn)):
                for w, b, lin in zip(sa.in_proj_weight.chunk(3), sa.in_proj_bias.chunk(3),
                                     (ea.linear_q, ea.linear_k, ea.linear_v)):
                    lin.weight.copy_(w)
                    lin.bias.copy_(b)
                cp(ea.linear_out, sa.out_proj)
            cp(el.feed_forward.w_1, sl.ff[0])
            cp(el.feed_forward.w_2, sl.ff[3])
            cp(el.norm1, sl.norm1)
            cp(el.norm2, sl.norm2)
            cp(el.norm3, sl.norm3)
        cp(esp.after_norm, dec.norm)
        cp(esp.output_layer, dec.out)
    esp.eval()
    for p in esp.parameters():
        p.requires_grad_(False)
    return esp


@torch.no_grad()
def decoder_max_diff(dec: nn.Module, esp: nn.Module, memory: torch.Tensor, length: int, steps: int = 5) -> float:
    """Largest |log p_stk - log p_ESPnet| over ``steps`` incremental steps of a random prefix (one utterance)."""
    from espnet.nets.pytorch_backend.transformer.mask import subsequent_mask

    mem = memory[:1, :length]
    mask = torch.ones(1, length, dtype=torch.bool)
    ys = torch.tensor([[SOS_EOS] + torch.randint(3, VOCAB, (steps - 1,)).tolist()])
    c_stk = c_esp = None
    worst = 0.0
    for i in range(1, steps + 1):
        a, c_stk = dec.score_step(ys[:, :i], mem, mask, c_stk)
        b, c_esp = esp.forward_one_step(ys[:, :i], subsequent_mask(i).unsqueeze(0), mem, cache=c_esp)
        worst = max(worst, float((a - b).abs().max()))
    return worst


class FixedPosteriors(nn.Module):
    """Stand-in for ESPnet's CTC module: ``log_softmax(x)`` returns the posteriors set in ``current``."""

    def __init__(self) -> None:
        super().__init__()
        self.current: torch.Tensor | None = None

    def log_softmax(self, x: torch.Tensor) -> torch.Tensor:
        if self.current is None or self.current.size(0) != x.size(-2):
            raise RuntimeError("FixedPosteriors.current does not match the utterance being decoded")
        return self.current.unsqueeze(0)


# ---------------------------------------------------------------------------------- searchers


class Counter:
    """Decoder calls and rows (hypotheses scored) of one implementation."""

    def __init__(self) -> None:
        self.calls = 0
        self.rows = 0

    def add(self, rows: int) -> None:
        self.calls += 1
        self.rows += rows


class CountingDecoder:
    """An stk decoder whose ``score_step`` also counts calls and rows (one Python call per step)."""

    def __init__(self, dec: nn.Module, counter: Counter) -> None:
        self.dec, self.counter = dec, counter

    def score_step(self, ys, memory, memory_mask, cache):  # noqa: ANN001, ANN201
        self.counter.add(ys.size(0))
        return self.dec.score_step(ys, memory, memory_mask, cache)


class Setting:
    """One decoding problem (model, memory, posteriors, length rule) and its four searchers.

    Every searcher decodes the utterances ``idx`` (default all) and returns their best token
    sequences; decoder calls and rows are counted per implementation in :attr:`counters`.
    """

    def __init__(self, name: str, dec: nn.Module, memory: torch.Tensor, lengths: torch.Tensor,
                 ctc_log_probs: torch.Tensor, beam: int, maxlen: int | None) -> None:
        from espnet.nets.batch_beam_search import BatchBeamSearch
        from espnet.nets.beam_search import BeamSearch
        from espnet.nets.scorers.ctc import CTCPrefixScorer

        self.name, self.dec, self.memory, self.lengths, self.lp = name, dec, memory, lengths, ctc_log_probs
        self.beam, self.maxlen = beam, maxlen
        self.counters = {impl: Counter() for impl in IMPLS}
        self.esp_dec = espnet_decoder_from_stk(dec)
        self.shim = FixedPosteriors()
        kw = dict(
            scorers={"decoder": self.esp_dec, "ctc": CTCPrefixScorer(self.shim, SOS_EOS)},
            weights={"decoder": 1.0 - CTC_WEIGHT, "ctc": CTC_WEIGHT}, beam_size=beam, vocab_size=VOCAB,
            sos=SOS_EOS, eos=SOS_EOS, token_list=None, pre_beam_score_key="full",
        )
        self.esp = {"ESPnet BeamSearch": BeamSearch(**kw).eval(), "ESPnet BatchBeamSearch": BatchBeamSearch(**kw).eval()}
        # ESPnet: maxlenratio < 0 is an absolute cap (and disables end detection); 0 = T frames + end_detect.
        self.maxlenratio = -float(maxlen) if maxlen is not None else 0.0
        self._esp_counter = self.counters["ESPnet BeamSearch"]
        orig = self.esp_dec.forward_one_step  # what both ESPnet searches call (score / batch_score)

        def counted(tgt, *a, **k):  # noqa: ANN001, ANN202
            self._esp_counter.add(tgt.size(0))
            return orig(tgt, *a, **k)

        self.esp_dec.forward_one_step = counted

    def _idx(self, idx: list[int] | None) -> list[int]:
        return list(range(self.lengths.numel())) if idx is None else idx

    def _stk(self, impl: str, memory: torch.Tensor, lengths: torch.Tensor, lp: torch.Tensor) -> Any:
        from stk.decode.beam_search import batch_beam_search

        dec = CountingDecoder(self.dec, self.counters[impl])
        return batch_beam_search(dec, memory, lengths, sos=SOS_EOS, eos=SOS_EOS, beam_size=self.beam,
                                 ctc_log_probs=lp, ctc_weight=CTC_WEIGHT, blank=BLANK, maxlen=self.maxlen)

    def stk_batched(self, idx: list[int] | None = None) -> list[list[int]]:
        idx = self._idx(idx)
        sel = torch.tensor(idx)
        lengths = self.lengths[sel]
        t = int(lengths.max())
        hyps = self._stk("stk batched", self.memory[sel, :t], lengths, self.lp[sel, :t])
        return [h[0].tokens for h in hyps]

    def stk_per_utt(self, idx: list[int] | None = None) -> list[list[int]]:
        out = []
        for b in self._idx(idx):
            t = int(self.lengths[b])
            hyps = self._stk("stk per-utt", self.memory[b : b + 1, :t], self.lengths[b : b + 1], self.lp[b : b + 1, :t])
            out.append(hyps[0][0].tokens)
        return out

    @torch.no_grad()  # as espnet2.bin.asr_inference.Speech2Text.__call__
    def espnet(self, which: str, idx: list[int] | None = None) -> list[list[int]]:
        search = self.esp[which]
        self._esp_counter = self.counters[which]
        out = []
        for b in self._idx(idx):
            t = int(self.lengths[b])
            self.shim.current = self.lp[b, :t]
            nbest = search(x=self.memory[b, :t], maxlenratio=self.maxlenratio, minlenratio=0.0)
            out.append(nbest[0].yseq[1:-1].tolist() if nbest else [])
        self.shim.current = None
        return out

    def fn(self, impl: str) -> Callable[..., list[list[int]]]:
        """The searcher of ``impl``: ``fn(idx=None) -> best token sequences``."""
        if impl == "stk batched":
            return self.stk_batched
        if impl == "stk per-utt":
            return self.stk_per_utt
        return lambda idx=None: self.espnet(impl, idx)


# -------------------------------------------------------------------------------------- driver


def run_setting(setting: Setting, impls: list[str], repeats: int, ref: list[list[int]] | None,
                flops: bool) -> dict[str, Any]:
    """Warm up each implementation on the median-length utterance (counting its FLOPs if ``flops``), then time
    ``repeats`` alternated calls over all utterances."""
    n = setting.lengths.numel()
    mid = int(setting.lengths.sort().indices[n // 2])
    results: dict[str, Any] = {impl: {} for impl in impls}
    for impl in impls:
        t0 = time.perf_counter()
        if flops:
            total, _ = count_flops(lambda: setting.fn(impl)([mid]))
            results[impl]["gflop_median_utt"] = total / 1e9
        else:
            setting.fn(impl)([mid])
        results[impl]["warmup_s"] = time.perf_counter() - t0
        setting.counters[impl] = Counter()
    outputs: dict[str, list[list[int]]] = {}

    def timed(impl: str) -> Callable[[], None]:
        def call() -> None:
            outputs[impl] = setting.fn(impl)()
        return call

    times = alternate({impl: timed(impl) for impl in impls}, steps=repeats, warmup=0)
    first = next((i for i in impls if i.startswith("stk")), impls[0])
    for impl in impls:
        t, c, out, r = median(times[impl]), setting.counters[impl], outputs[impl], results[impl]
        r.update({
            "median_s": t, "times_s": times[impl], "utt_per_s": n / t,
            "decoder_calls_per_call": c.calls / repeats, "decoder_rows_per_utt": c.rows / repeats / n,
            "avg_output_len": sum(len(o) for o in out) / n,
            "same_best_as_" + first: sum(a == b for a, b in zip(out, outputs[first])) / n,
        })
        if ref is not None:
            r["same_best_as_transcript"] = sum(a == b for a, b in zip(out, ref)) / n
    return {"results": results, "reference_impl": first, "flops_utt_frames": int(setting.lengths[mid])}


def run(args: argparse.Namespace) -> dict[str, Any]:
    set_threads(args.threads)
    logging.getLogger("espnet").setLevel(logging.ERROR)  # ESPnet warns on every hypothesis hitting maxlen
    model = build_stk_model(args.dec_layers, args.dec_ffn, args.seed)
    memory, lengths, lp = encode(model, args.num_utts, args.seed)
    record: dict[str, Any] = {
        "config": {"num_utts": args.num_utts, "enc_frames": lengths.tolist(), "vocab": VOCAB, "d_model": D_MODEL,
                   "heads": HEADS, "dec_layers": args.dec_layers, "dec_ffn": args.dec_ffn, "beam": args.beam,
                   "ctc_weight": CTC_WEIGHT, "maxlen_random": args.maxlen, "repeats": args.repeats,
                   "seed": args.seed},
        "machine": machine_info(args.threads), "settings": {}, "notes": [],
    }
    for name in args.settings:
        t0 = time.perf_counter()
        ref = None
        if name == "random":
            setting = Setting("random", model.decoder, memory, lengths, lp, args.beam, args.maxlen)
            impls = args.impls
            extra: dict[str, Any] = {"ctc_max_posterior_mean": float(lp.exp().max(-1).values.mean())}
        else:
            plp, ref = peaked_posteriors(lengths, args.seed + 1)
            dec = copy.deepcopy(model.decoder)
            ft = fine_tune_decoder(dec, memory, lengths, ref)
            setting = Setting("peaked", dec, memory, lengths, plp, args.beam, None)
            impls = args.peaked_impls
            valid = torch.arange(plp.size(1))[None] < lengths[:, None]
            extra = {"fine_tune": ft, "transcript_len": sum(map(len, ref)) / len(ref),
                     "ctc_max_posterior_mean": float(plp.exp().max(-1).values[valid].mean())}
        extra["decoder_max_abs_diff_stk_vs_espnet"] = decoder_max_diff(setting.dec, setting.esp_dec, memory,
                                                                       int(lengths[0]))
        rec = run_setting(setting, impls, args.repeats, ref, args.flops)
        rec.update(extra)
        rec["wall_s"] = time.perf_counter() - t0
        record["settings"][name] = rec
    return record


def table(record: dict[str, Any]) -> str:
    """Markdown tables (one per setting) of a record from :func:`run`."""
    parts = []
    cfg = record["config"]
    for name, rec in record["settings"].items():
        res = rec["results"]
        ref = rec["reference_impl"]
        esp = [e for e in ("ESPnet BeamSearch", "ESPnet BatchBeamSearch") if e in res]
        rows = []
        flops = all("gflop_median_utt" in r for r in res.values())
        for impl, r in res.items():
            gflop = [f"{r['gflop_median_utt']:.1f}"] if flops else []
            ratios = [f"{r['utt_per_s'] / res[e]['utt_per_s']:.2f}×" for e in esp]
            same = f"{100 * r['same_best_as_' + ref]:.0f} %"
            if "same_best_as_transcript" in r:
                same += f" / {100 * r['same_best_as_transcript']:.0f} %"
            rows.append([impl, f"{r['utt_per_s']:.2f}", f"{1e3 * r['median_s'] / cfg['num_utts']:.0f}", *ratios,
                         f"{r['avg_output_len']:.1f}", f"{r['decoder_rows_per_utt']:.0f}", *gflop, same])
        header = ["impl", "utt/s", "ms/utt", *[f"× {e}" for e in esp], "avg out len", "decoder rows/utt",
                  *([f"GFLOP/utt ({rec['flops_utt_frames']} frames)"] if flops else []),
                  f"same best as {ref}" + (" / as transcript" if name == "peaked" else "")]
        if name == "random":
            title = (f"**random** — random weights, flat CTC (mean max posterior {rec['ctc_max_posterior_mean']:.3f}), "
                     f"every hypothesis capped at {cfg['maxlen_random']} tokens for both")
        else:
            ft = rec["fine_tune"]
            title = (f"**peaked** (trained-like) — CTC peaked on a {rec['transcript_len']:.1f}-token transcript "
                     f"(mean max posterior {rec['ctc_max_posterior_mean']:.2f}), decoder fine-tuned to it "
                     f"({ft['steps']} steps, loss {ft['final_loss']:.3f}); default stopping rules, no cap")
        parts.append(f"{title}; decoder |Δlog p| stk vs ESPnet ≤ {rec['decoder_max_abs_diff_stk_vs_espnet']:.1e}\n\n"
                     + markdown_table(header, rows))
    m = record["machine"]
    flop_note = " (GFLOP: that call, torch ops only; ESPnet BeamSearch's numpy CTC is not counted)" if any(
        "gflop_median_utt" in r for rec in record["settings"].values() for r in rec["results"].values()) else ""
    foot = (f"\n{cfg['num_utts']} utterances, encoder frames {min(cfg['enc_frames'])}–{max(cfg['enc_frames'])} "
            f"(mean {sum(cfg['enc_frames']) / len(cfg['enc_frames']):.0f}), vocab {cfg['vocab']}, decoder "
            f"{cfg['dec_layers']}×(d {cfg['d_model']}, {cfg['heads']} heads, FFN {cfg['dec_ffn']}), beam {cfg['beam']}, "
            f"CTC weight {cfg['ctc_weight']}; median of {cfg['repeats']} alternated calls over all utterances after a "
            f"warm-up call on the median-length one{flop_note}; {m['threads']} thread(s), {m['cpu']}, "
            f"load avg {m['load_avg_1_5_15']}, "
            f"OMP_WAIT_POLICY={m['omp_wait_policy'] or 'unset'}, torch {m['torch']}.")
    return "\n\n".join(parts) + "\n" + foot + "".join(f"\n- {n}" for n in record["notes"])


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    ap.add_argument("--num-utts", type=int, default=4, help="utterances (default 4)")
    ap.add_argument("--repeats", type=int, default=4, help="timed calls per implementation (default 4)")
    ap.add_argument("--beam", type=int, default=10, help="beam size (default 10)")
    ap.add_argument("--maxlen", type=int, default=30, help="token cap of the 'random' setting (default 30)")
    ap.add_argument("--dec-layers", type=int, default=3, help="decoder layers (default 3, stk's default; ESPnet's is 6)")
    ap.add_argument("--dec-ffn", type=int, default=1024, help="decoder FFN (default 1024, stk's default; ESPnet's 2048)")
    ap.add_argument("--settings", nargs="+", default=["random", "peaked"], choices=["random", "peaked"])
    ap.add_argument("--impls", nargs="+", default=IMPLS, choices=IMPLS,
                    help="implementations of the 'random' setting (default all four)")
    ap.add_argument("--peaked-impls", nargs="+", default=[i for i in IMPLS if i != "ESPnet BeamSearch"],
                    choices=IMPLS, help="implementations of the 'peaked' setting (default all but ESPnet BeamSearch)")
    ap.add_argument("--flops", action="store_true",
                    help="count FLOPs (FlopCounterMode) during the warm-up; slows the warm-up ~3x")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the record (all times) to this JSON file")
    args = ap.parse_args(argv)
    record = run(args)
    print(table(record))
    if args.json:
        write_json(args.json, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
