"""Length-bucketed batch sampling with a frames budget, DDP sharding and mid-epoch resume.

:class:`BucketBatchSampler` turns per-example lengths into batches of indices whose *padded*
size (longest example × batch size) stays within ``max_frames``. Each epoch it

1. picks the epoch's examples: every index once, or, with ``weights``, ``len(lengths)`` indices
   drawn with replacement (deterministic from ``seed`` and the epoch),
2. sorts them by length (ties broken randomly when shuffling) and cuts batches greedily,
3. shuffles the batch order (deterministic from ``seed`` and the epoch),
4. shards the batches across ``num_replicas`` ranks so that every rank gets the same number of
   batches (the last few batches are repeated, or dropped with ``drop_last=True``).

It is resumable: :meth:`state_dict` records the epoch and how many of this rank's batches were
handed out, and :meth:`load_state_dict` makes the next iteration continue from there. Pass it
to ``torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=ds.collate)``.

:func:`temperature_weights` gives per-example weights for language-balanced sampling;
:class:`BatchConfig` holds one stream's batching settings, and :func:`make_sampler` /
:func:`make_loader` build the sampler and the ``DataLoader`` from them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np


def temperature_weights(langs: Sequence[str], temperature: float) -> list[float]:
    """Per-example sampling weights with language probabilities ``p_lang ∝ (n_lang / N) ** (1 / T)``.

    Each language's probability is spread evenly over its examples, so the weights sum to 1.
    ``temperature=1`` keeps the natural distribution (uniform weights); larger values flatten
    it towards equal language shares.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if len(langs) == 0:
        raise ValueError("temperature_weights: langs is empty")
    counts = Counter(langs)
    total = len(langs)
    scaled = {lang: (n / total) ** (1.0 / temperature) for lang, n in counts.items()}
    norm = sum(scaled.values())
    return [scaled[lang] / norm / counts[lang] for lang in langs]


class BucketBatchSampler:
    """Batches of indices bucketed by length under a padded-frames budget.

    Args:
        lengths: length (frames or tokens) of each example.
        max_frames: budget for ``max length in batch × batch size``. An example longer than the
            budget on its own forms a batch of one.
        max_batch_size: optional cap on the number of examples per batch.
        shuffle: randomise tie order within lengths and the batch order each epoch.
        seed: base seed; the epoch's randomness derives from ``(seed, epoch)`` only.
        num_replicas: number of DDP ranks; ``rank``: this process's rank.
        drop_last: drop the batches that do not divide evenly over the ranks instead of
            repeating batches from the start of the epoch's list.
        weights: optional per-example sampling weights (need not be normalised); when given,
            each epoch draws ``len(lengths)`` examples with replacement.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        *,
        max_frames: int,
        max_batch_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        weights: Sequence[float] | None = None,
    ) -> None:
        if len(lengths) == 0:
            raise ValueError("BucketBatchSampler: lengths is empty")
        if max_frames <= 0:
            raise ValueError(f"max_frames must be > 0, got {max_frames}")
        if max_batch_size is not None and max_batch_size <= 0:
            raise ValueError(f"max_batch_size must be > 0 or None, got {max_batch_size}")
        if num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if (self.lengths < 0).any():
            raise ValueError("lengths must be >= 0")
        self.probs: np.ndarray | None = None
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != self.lengths.shape:
                raise ValueError(f"weights has {w.size} entries but lengths has {self.lengths.size}")
            if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
                raise ValueError("weights must be finite, >= 0 and not all zero")
            self.probs = w / w.sum()
        self.max_frames = int(max_frames)
        self.max_batch_size = max_batch_size
        self.shuffle = shuffle
        self.seed = int(seed)
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.epoch = 0
        self.position = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    # -- epoch construction -------------------------------------------------------------------

    def _rng(self, epoch: int, purpose: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, purpose])

    def _bucket(self, indices: np.ndarray, epoch: int) -> list[list[int]]:
        if self.shuffle:
            indices = indices[self._rng(epoch, 1).permutation(indices.size)]
        order = indices[np.argsort(self.lengths[indices], kind="stable")]
        batches: list[list[int]] = []
        cur: list[int] = []
        cur_max = 0
        for idx in order.tolist():
            n = int(self.lengths[idx])
            new_max = max(cur_max, n)
            full = self.max_batch_size is not None and len(cur) >= self.max_batch_size
            if cur and (full or new_max * (len(cur) + 1) > self.max_frames):
                batches.append(cur)
                cur, new_max = [], n
            cur.append(idx)
            cur_max = new_max
        if cur:
            batches.append(cur)
        return batches

    def epoch_batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches (lists of example indices) for ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        n = self.lengths.size
        if self.probs is None:
            indices = np.arange(n)
        else:
            indices = self._rng(epoch, 0).choice(n, size=n, replace=True, p=self.probs)
        batches = self._bucket(indices, epoch)
        if self.shuffle:
            perm = self._rng(epoch, 2).permutation(len(batches))
            batches = [batches[i] for i in perm]
        total = len(batches)
        if self.drop_last:
            total = total // self.num_replicas * self.num_replicas
        else:
            total = -(-total // self.num_replicas) * self.num_replicas
        padded = [batches[i % len(batches)] for i in range(total)]
        mine = padded[self.rank :: self.num_replicas]
        self._cache = (epoch, mine)
        return mine

    # -- sampler protocol ---------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (its data order) and start it from the beginning."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)
        self.position = 0

    def __len__(self) -> int:
        return len(self.epoch_batches())

    def __iter__(self) -> Iterator[list[int]]:
        """Yield the rest of the current epoch from :attr:`position`; a finished pass rewinds to 0."""
        batches = self.epoch_batches()
        while self.position < len(batches):
            batch = batches[self.position]
            self.position += 1
            yield list(batch)
        self.position = 0

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "position"}``: position counts the batches handed out in this epoch."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue epoch ``state["epoch"]`` after its first ``state["position"]`` batches."""
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or position < 0:
            raise ValueError(f"invalid sampler state {state!r}")
        self.epoch = epoch
        self.position = position


@dataclass
class BatchConfig:
    """Batching of one data stream.

    ``max_frames``/``max_batch_size``: see :class:`BucketBatchSampler`; ``ratio``: the stream's
    share of steps when mixing streams (0 disables the stream); ``temperature``: language-temperature resampling
    (0 = off: every example once per epoch; needs ``dataset.langs`` otherwise).
    """

    max_frames: int
    max_batch_size: int | None = None
    ratio: float = 1.0
    temperature: float = 0.0
    shuffle: bool = True
    drop_last: bool = False

    def __post_init__(self) -> None:
        if self.max_frames <= 0:
            raise ValueError(f"batch.max_frames must be > 0, got {self.max_frames}")
        if not self.ratio >= 0:
            raise ValueError(f"batch.ratio must be >= 0 (0 disables the stream), got {self.ratio}")
        if self.temperature < 0:
            raise ValueError(f"batch.temperature must be >= 0, got {self.temperature}")


def make_sampler(dataset: Any, cfg: BatchConfig, *, seed: int = 0, num_replicas: int = 1, rank: int = 0) -> BucketBatchSampler:
    """A :class:`BucketBatchSampler` over ``dataset.lengths`` with ``cfg``'s settings."""
    weights = None
    if cfg.temperature > 0:
        langs = getattr(dataset, "langs", None)
        if langs is None:
            raise ValueError("temperature sampling needs dataset.langs")
        weights = temperature_weights(langs, cfg.temperature)
    return BucketBatchSampler(dataset.lengths, max_frames=cfg.max_frames, max_batch_size=cfg.max_batch_size,
                              shuffle=cfg.shuffle, seed=seed, num_replicas=num_replicas, rank=rank,
                              drop_last=cfg.drop_last, weights=weights)


def make_loader(dataset: Any, batch_sampler: Iterable[list[int]], *, seed: int = 0, num_workers: int = 0,
                pin_memory: bool = False) -> Any:
    """``DataLoader(dataset, batch_sampler=…, collate_fn=dataset.collate)`` with a private generator,
    so that creating its iterators never draws from the global torch RNG (keeps resume exact)."""
    import torch

    return torch.utils.data.DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=dataset.collate,
                                       num_workers=num_workers, pin_memory=pin_memory,
                                       generator=torch.Generator().manual_seed(seed))
