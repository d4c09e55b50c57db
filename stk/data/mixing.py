"""Mixing several batch streams (e.g. paired, speech-only, text-only data) by ratio.

:class:`MixedStreams` draws, at every step, which stream the next batch comes from. The draw is
a pure function of ``(seed, step)``, so every DDP rank makes the same choices and a resumed run
repeats them. Each stream runs through its own epochs independently: a stream that runs out
starts its next epoch (calling ``set_epoch`` on its batch sampler). One *mixer epoch* is one
full pass over the **primary** stream (the first one given); with a single stream, iterating
the mixer is iterating that stream.

Resume: :meth:`state_dict` records the step and, per stream, its epoch and how many of its
batches were consumed. On :meth:`load_state_dict`, a stream whose batch sampler is a
:class:`~stk.data.sampler.BucketBatchSampler` jumps straight to its position; any other
stream is re-iterated and the consumed batches are skipped (so it must be deterministic).
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping

from stk.data.sampler import BucketBatchSampler

_MASK64 = (1 << 64) - 1


def _uniform(seed: int, step: int) -> float:
    """A uniform number in [0, 1) that depends only on ``(seed, step)`` (splitmix64 mixing)."""
    x = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & _MASK64
    for _ in range(2):
        x = (x + 0x9E3779B97F4A7C15) & _MASK64
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        x = z ^ (z >> 31)
    return (x >> 11) / float(1 << 53)


def _sampler_of(stream: Any) -> Any:
    """The object holding ``set_epoch`` for ``stream`` (its batch sampler, sampler or itself)."""
    for cand in (getattr(stream, "batch_sampler", None), getattr(stream, "sampler", None), stream):
        if cand is not None and hasattr(cand, "set_epoch"):
            return cand
    return None


class MixedStreams:
    """Yield ``(stream_name, batch)`` from several streams, choosing by ratio each step.

    Args:
        streams: name -> DataLoader (or any re-iterable of batches). The first is the primary
            stream: one pass over it is one mixer epoch.
        ratios: name -> relative weight (> 0); defaults to equal weights. Normalised internally.
        seed: seed of the per-step stream choice.
    """

    def __init__(
        self,
        streams: Mapping[str, Iterable[Any]],
        ratios: Mapping[str, float] | None = None,
        *,
        seed: int = 0,
    ) -> None:
        if not streams:
            raise ValueError("MixedStreams needs at least one stream")
        self.streams = dict(streams)
        self.names = list(self.streams)
        ratios = dict(ratios) if ratios is not None else {n: 1.0 for n in self.names}
        if set(ratios) != set(self.names):
            raise ValueError(f"ratios keys {sorted(ratios)} do not match streams {sorted(self.names)}")
        for name, r in ratios.items():
            if not r > 0:
                raise ValueError(f"ratio of stream {name!r} must be > 0, got {r}")
        total = float(sum(ratios.values()))
        self.ratios = {n: ratios[n] / total for n in self.names}
        self._cum: list[tuple[float, str]] = []
        acc = 0.0
        for n in self.names:
            acc += self.ratios[n]
            self._cum.append((acc, n))
        self.seed = int(seed)
        self.step = 0
        self._epochs = {n: 0 for n in self.names}
        self._consumed = {n: 0 for n in self.names}
        self._iters: dict[str, Iterator[Any] | None] = {n: None for n in self.names}

    @property
    def primary(self) -> str:
        """Name of the stream whose passes define the mixer epochs."""
        return self.names[0]

    @property
    def epoch(self) -> int:
        """Current mixer epoch (= the primary stream's epoch)."""
        return self._epochs[self.primary]

    def stream_epoch(self, name: str) -> int:
        return self._epochs[name]

    def choose(self, step: int) -> str:
        """The stream drawn at ``step`` (a pure function of the seed and the step)."""
        if len(self.names) == 1:
            return self.names[0]
        u = _uniform(self.seed, step)
        for edge, name in self._cum:
            if u < edge:
                return name
        return self.names[-1]

    def _open(self, name: str) -> Iterator[Any]:
        stream = self.streams[name]
        epoch, consumed = self._epochs[name], self._consumed[name]
        sampler = _sampler_of(stream)
        skip = consumed
        if isinstance(sampler, BucketBatchSampler):
            sampler.load_state_dict({"epoch": epoch, "position": consumed})
            skip = 0
        elif sampler is not None:
            sampler.set_epoch(epoch)
        it = iter(stream)
        for _ in range(skip):
            next(it)
        return it

    def _next(self, name: str) -> Any | None:
        """Next batch of ``name`` in its current epoch, or None when the epoch is finished."""
        it = self._iters[name]
        if it is None:
            it = self._iters[name] = self._open(name)
        try:
            batch = next(it)
        except StopIteration:
            if self._consumed[name] == 0:
                raise ValueError(f"stream {name!r} yields no batches in its epoch {self._epochs[name]}") from None
            self._iters[name] = None
            self._epochs[name] += 1
            self._consumed[name] = 0
            return None
        except Exception as e:
            e.add_note(
                f"while loading batch {self._consumed[name]} of stream {name!r} (its epoch {self._epochs[name]})"
            )
            raise
        self._consumed[name] += 1
        return batch

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        """Yield ``(name, batch)`` until the primary stream finishes its current pass."""
        while True:
            name = self.choose(self.step)
            batch = self._next(name)
            if batch is None:
                if name == self.primary:
                    return
                batch = self._next(name)
                if batch is None:  # pragma: no cover - _next raises on an empty fresh epoch
                    raise ValueError(f"stream {name!r} yields no batches")
            self.step += 1
            yield name, batch

    def _epoch_len(self, name: str) -> int:
        stream = self.streams[name]
        sampler = _sampler_of(stream)
        if isinstance(sampler, BucketBatchSampler):
            return len(sampler.epoch_batches(self._epochs[name]))
        try:
            return len(stream)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(f"stream {name!r} has no len(); the primary stream must have one") from None

    def last_in_epoch(self) -> bool:
        """Whether the batch just yielded is the last of the current mixer epoch.

        Decided from the next draw and the primary stream's length, without loading data.
        """
        if self.choose(self.step) != self.primary:
            return False
        return self._consumed[self.primary] >= self._epoch_len(self.primary)

    def __len__(self) -> int:
        """Expected number of steps in one mixer epoch (exact with a single stream)."""
        return round(self._epoch_len(self.primary) / self.ratios[self.primary])

    def state_dict(self) -> dict[str, Any]:
        """Plain-typed state: step, and per stream its epoch and consumed batch count."""
        return {
            "step": self.step,
            "streams": {n: {"epoch": self._epochs[n], "consumed": self._consumed[n]} for n in self.names},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the streams reopen lazily at their recorded positions."""
        if set(state["streams"]) != set(self.names):
            raise ValueError(f"mixer state has streams {sorted(state['streams'])}, expected {sorted(self.names)}")
        self.step = int(state["step"])
        for n, s in state["streams"].items():
            self._epochs[n] = int(s["epoch"])
            self._consumed[n] = int(s["consumed"])
            self._iters[n] = None
