"""Registries: components chosen by name, configured by a typed mapping.

A config names a component and gives its keyword arguments::

    encoder: {name: conformer, conf: {num_layers: 6, d_model: 256}}

``ENCODERS.build(spec, **extra)`` looks the name up, checks ``conf`` against the constructor's
typed signature (unknown keys and wrong types are errors naming the key) and checks the
result against the registry's base class.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Generic, TypeVar

from stk.config import ConfigError, check_call_kwargs

T = TypeVar("T")


@dataclasses.dataclass
class ComponentSpec:
    """``{name: ..., conf: {...}}`` in a config file."""

    name: str
    conf: dict[str, Any] = dataclasses.field(default_factory=dict)


class Registry(Generic[T]):
    """Maps names to classes (or factories) that build a subclass of ``base``."""

    def __init__(self, kind: str, base: type | None = None) -> None:
        self.kind = kind
        self.base = base
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(obj: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            if self.base is not None and isinstance(obj, type) and not issubclass(obj, self.base):
                raise TypeError(f"{self.kind} {name!r}: {obj.__name__} is not a {self.base.__name__}")
            self._entries[name] = obj
            return obj

        return deco

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or '(none)'}")
        return self._entries[name]

    def build(self, spec: ComponentSpec | dict[str, Any], where: str | None = None, **extra: Any) -> T:
        """Build the component named in ``spec``; ``extra`` are arguments the caller supplies."""
        where = where or self.kind
        if isinstance(spec, dict):
            from stk.config import from_dict

            spec = from_dict(ComponentSpec, spec, where)
        factory = self.get(spec.name)
        clash = set(spec.conf) & set(extra)
        if clash:
            raise ConfigError(f"{where}.conf: {', '.join(sorted(clash))} is set by the toolkit, remove it")
        kwargs = check_call_kwargs(factory, spec.conf, f"{where}.conf")
        obj = factory(**kwargs, **extra)
        if self.base is not None and not isinstance(obj, self.base):
            raise TypeError(f"{self.kind} {spec.name!r} built {type(obj).__name__}, not a {self.base.__name__}")
        return obj
