"""BucketBatchSampler, temperature weights and MixedStreams: budgets, coverage, sharding, resume."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from stk.data.mixing import MixedStreams
from stk.data.sampler import BatchConfig, BucketBatchSampler, make_loader, make_sampler, temperature_weights


class ToyDS:
    """Map-style toy dataset: example ``i`` has ``lengths[i]`` frames filled with ``i``."""

    def __init__(self, lengths: list[int], langs: list[str] | None = None, fail_on: int | None = None) -> None:
        self.lengths, self.langs, self.fail_on = list(lengths), langs, fail_on

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> dict:
        if i == self.fail_on:
            raise ValueError(f"utt{i}: cannot read audio")
        return {"utt_id": f"utt{i}", "x": torch.full((self.lengths[i],), float(i))}

    def collate(self, examples: list[dict]) -> dict:
        return {"utt_ids": [e["utt_id"] for e in examples], "idx": [int(e["x"][0]) for e in examples]}


def lengths(n: int = 200, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(1, 50) for _ in range(n)]


def test_frames_budget_and_batch_size_cap():
    lens = lengths()
    s = BucketBatchSampler(lens, max_frames=120, max_batch_size=6, seed=3)
    batches = list(s)
    assert batches
    for b in batches:
        assert max(lens[i] for i in b) * len(b) <= 120
        assert len(b) <= 6
    # an example longer than the budget forms a batch of its own
    s2 = BucketBatchSampler([5, 500, 5], max_frames=100, shuffle=False)
    assert sorted(map(sorted, s2)) == [[0, 2], [1]]


def test_each_example_once_per_epoch_and_order_changes():
    lens = lengths()
    s = BucketBatchSampler(lens, max_frames=100, seed=1)
    seen = []
    for epoch in range(2):
        s.set_epoch(epoch)
        batches = list(s)
        assert sorted(i for b in batches for i in b) == list(range(len(lens)))
        seen.append(batches)
    assert seen[0] != seen[1]
    # the same seed and epoch give the same batches; iterating twice replays the epoch
    s.set_epoch(1)
    assert list(s) == seen[1] == list(s)
    assert len(s) == len(seen[1])


def test_ddp_shards_have_equal_counts():
    lens = lengths(101)
    for drop_last in (False, True):
        shards = [list(BucketBatchSampler(lens, max_frames=90, seed=2, num_replicas=3, rank=r, drop_last=drop_last))
                  for r in range(3)]
        assert len({len(sh) for sh in shards}) == 1
        covered = {i for sh in shards for b in sh for i in b}
        if not drop_last:
            assert covered == set(range(len(lens)))
        full = list(BucketBatchSampler(lens, max_frames=90, seed=2))
        assert sum(len(sh) for sh in shards) == (len(full) // 3 * 3 if drop_last else -(-len(full) // 3) * 3)


def test_mid_epoch_resume_gives_identical_remaining_batches():
    lens = lengths()
    weights = [1.0 + (i % 3) for i in range(len(lens))]
    s = BucketBatchSampler(lens, max_frames=100, seed=7, num_replicas=2, rank=1, weights=weights)
    s.set_epoch(4)
    it = iter(s)
    head = [next(it) for _ in range(3)]
    state = s.state_dict()
    assert state == {"epoch": 4, "position": 3}
    rest = list(it)
    s2 = BucketBatchSampler(lens, max_frames=100, seed=7, num_replicas=2, rank=1, weights=weights)
    s2.load_state_dict(state)
    assert list(s2) == rest
    s2.set_epoch(4)
    assert list(s2) == head + rest


def test_weights_resample_with_replacement_deterministically():
    lens = [10] * 100
    w = [0.0] * 50 + [1.0] * 50
    s = BucketBatchSampler(lens, max_frames=100, seed=5, weights=w)
    idx = [i for b in s for i in b]
    assert len(idx) == 100 and min(idx) >= 50 and len(set(idx)) < 100
    assert idx == [i for b in BucketBatchSampler(lens, max_frames=100, seed=5, weights=w) for i in b]


def test_temperature_weights_math():
    langs = ["en"] * 90 + ["sw"] * 10
    w1 = temperature_weights(langs, 1.0)
    assert all(abs(x - 0.01) < 1e-12 for x in w1)
    w2 = temperature_weights(langs, 2.0)
    p_en, p_sw = sum(w2[:90]), sum(w2[90:])
    z = 0.9 ** 0.5 + 0.1 ** 0.5
    assert p_en == pytest.approx(0.9 ** 0.5 / z) and p_sw == pytest.approx(0.1 ** 0.5 / z)
    assert len(set(w2[:90])) == 1 and len(set(w2[90:])) == 1
    w_inf = temperature_weights(langs, 1e9)
    assert sum(w_inf[90:]) == pytest.approx(0.5, abs=1e-6)
    # the sampler honours the language probabilities
    s = BucketBatchSampler([5] * 100, max_frames=50, weights=w2, seed=0)
    counts = Counter()
    for e in range(20):
        s.set_epoch(e)
        counts.update(langs[i] for b in s for i in b)
    assert counts["sw"] / sum(counts.values()) == pytest.approx(p_sw, abs=0.03)
    with pytest.raises(ValueError):
        temperature_weights(langs, 0.0)


def test_bad_settings_raise():
    for kw in ({"max_frames": 0}, {"max_frames": 10, "rank": 2, "num_replicas": 2},
               {"max_frames": 10, "weights": [1.0]}, {"max_frames": 10, "max_batch_size": 0}):
        with pytest.raises(ValueError):
            BucketBatchSampler([1, 2, 3], **kw)
    with pytest.raises(ValueError):
        BatchConfig(max_frames=10, ratio=-1)
    with pytest.raises(ValueError, match="langs"):
        make_sampler(ToyDS([1, 2]), BatchConfig(max_frames=10, temperature=2.0))


def loaders(fail_on: int | None = None) -> dict:
    a = ToyDS(lengths(60, 1), fail_on=fail_on)
    b = ToyDS(lengths(20, 2))
    return {
        "paired": make_loader(a, make_sampler(a, BatchConfig(max_frames=100), seed=1)),
        "text": make_loader(b, make_sampler(b, BatchConfig(max_frames=60), seed=2)),
        "plain": [{"utt_ids": [f"p{i}"], "idx": [i]} for i in range(3)],
    }


def flatten(mixer: MixedStreams, epochs: int) -> list:
    out = []
    while mixer.epoch < epochs:
        for name, batch in mixer:
            out.append((name, tuple(batch["utt_ids"]), mixer.last_in_epoch(), mixer.epoch))
    return out


def test_mixing_ratios_epochs_and_last_flag():
    ratios = {"paired": 3.0, "text": 1.0, "plain": 0.5}
    m = MixedStreams(loaders(), ratios, seed=0)
    draws = Counter(m.choose(step) for step in range(20000))  # the per-step draw honours the ratios
    for name, r in ratios.items():
        assert draws[name] / 20000 == pytest.approx(r / 4.5, abs=0.01)
    seq = flatten(m, 3)
    names = Counter(n for n, *_ in seq)
    assert names["paired"] / len(seq) == pytest.approx(3 / 4.5, abs=0.12)
    n_paired = len(loaders()["paired"])
    for e in range(3):
        ep = [x for x in seq if x[3] == e]
        assert sum(1 for x in ep if x[0] == "paired") == n_paired
        assert [x[2] for x in ep] == [False] * (len(ep) - 1) + [True]
    for name in ("text", "plain"):  # secondaries cycle through their own epochs
        assert m.stream_epoch(name) == (names[name] - 1) // len(loaders()[name])
    assert m.stream_epoch("plain") >= 1
    single = MixedStreams({"only": loaders()["paired"]}, seed=9)
    assert [tuple(b["utt_ids"]) for _, b in single] == [tuple(b["utt_ids"]) for b in loaders()["paired"]]


def test_mixing_resume_is_exact():
    ratios = {"paired": 2.0, "text": 1.0, "plain": 1.0}
    full = flatten(MixedStreams(loaders(), ratios, seed=4), 2)
    m = MixedStreams(loaders(), ratios, seed=4)
    it = iter(m)
    head = [next(it) for _ in range(23)]
    state = m.state_dict()
    m2 = MixedStreams(loaders(), ratios, seed=4)
    m2.load_state_dict(state)
    rest = flatten(m2, 2)
    assert [(n, tuple(b["utt_ids"])) for n, b in head] + [x[:2] for x in rest] == [x[:2] for x in full]


def test_mixing_errors():
    with pytest.raises(ValueError):
        MixedStreams({"a": [1]}, {"b": 1.0})
    with pytest.raises(ValueError):
        MixedStreams({"a": [1]}, {"a": 0.0})
    with pytest.raises(ValueError, match="no batches"):
        list(MixedStreams({"a": []}))
    m = MixedStreams(loaders(fail_on=5), seed=0)
    with pytest.raises(ValueError, match="utt5") as exc:
        flatten(m, 1)
    assert any("stream 'paired'" in note for note in exc.value.__notes__)
