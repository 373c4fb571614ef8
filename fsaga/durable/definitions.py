"""Saga definitions by name: what durable runs are rebuilt from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar, final

from fsaga._numbers import check_count
from fsaga.durable.errors import UnknownDefinitionError
from fsaga.saga import Saga

__all__ = ["SagaDefinitions"]

_LARGEST_VERSION: Final = 2**63 - 1

_I = TypeVar("_I")
_T = TypeVar("_T")


@final
@dataclass(frozen=True, slots=True)
class _Definition:
    name: str
    version: int
    build: Callable[[Any], Saga[object]]


@final
class SagaDefinitions:
    """Saga definitions by name: how `DurableSagas` rebuilds a run from its recorded input."""

    __slots__ = ("_by_name",)

    def __init__(self) -> None:
        self._by_name: dict[str, _Definition] = {}

    def saga(
        self, name: str, *, version: int = 1
    ) -> Callable[[Callable[[_I], Saga[_T]]], Callable[[_I], Saga[_T]]]:
        """Register the decorated function (input -> saga) under `name` and `version`.

        Bump `version` when the steps change: a run started under another version is not
        replayed against the new steps (its `start` raises `DefinitionConflictError`).
        """
        given_name: object = name
        given_version: object = version
        if not isinstance(given_name, str) or not given_name:
            raise ValueError(f"a saga definition needs a non-empty name, got {name!r}")
        check_count(given_version, what=f"saga definition {name!r}: version", minimum=1)
        if version > _LARGEST_VERSION:
            raise ValueError(
                f"saga definition {name!r}: version must be at most {_LARGEST_VERSION} (a "
                f"journal stores it as a 64-bit integer), got {version}"
            )

        def register(build: Callable[[_I], Saga[_T]]) -> Callable[[_I], Saga[_T]]:
            if not callable(build):
                raise TypeError(f"saga definition {name!r} must be a callable, got {build!r}")
            if name in self._by_name:
                raise ValueError(f"a saga definition is already registered as {name!r}")
            self._by_name[name] = _Definition(name, version, build)
            return build

        return register

    def versions(self) -> dict[str, int]:
        """The version registered under each name.

        >>> definitions = SagaDefinitions()
        >>> _ = definitions.saga("order", version=2)(lambda quantity: ...)
        >>> definitions.versions()
        {'order': 2}
        """
        return {name: definition.version for name, definition in self._by_name.items()}

    def lookup(self, name: str) -> tuple[int, Callable[[Any], Saga[object]]]:
        """The version and builder registered under `name`."""
        definition = self._by_name.get(name)
        if definition is None:
            raise UnknownDefinitionError(name, registered=sorted(self._by_name))
        return definition.version, definition.build

    def name_of(self, build: Callable[[Any], Saga[object]]) -> str:
        """The name the builder `build` is registered under.

        Raises:
            UnknownDefinitionError: `build` is not registered here.
            ValueError: `build` is registered under several names.

        >>> from fsaga import pure
        >>> definitions = SagaDefinitions()
        >>> @definitions.saga("greet")
        ... def greet(name: str) -> Saga[str]:
        ...     return pure(f"hello {name}")
        >>> definitions.name_of(greet)
        'greet'
        """
        names = [name for name, definition in self._by_name.items() if definition.build is build]
        if len(names) > 1:
            raise ValueError(
                f"{getattr(build, '__qualname__', build)} is registered under several names "
                f"({', '.join(map(repr, names))}): name the one to run"
            )
        if not names:
            raise UnknownDefinitionError(
                getattr(build, "__qualname__", repr(build)), registered=sorted(self._by_name)
            )
        return names[0]
