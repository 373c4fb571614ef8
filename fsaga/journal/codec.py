"""How results and inputs become bytes in a journal, and back: a `Codec`, JSON by default.

A durable run stores each step's result so a recovery can feed it to the ``bind`` continuation
instead of running the step again. The journal itself only stores bytes; the codec decides what
those bytes mean. `JsonCodec` is the default: readable with any tool, and stable across Python
versions. Values of your own types are stored once registered with it (`JsonCodec.types`,
`JsonType`).

>>> codec = JsonCodec()
>>> codec.encode({"order": 7, "items": ["book", "pen"]})
b'{"items":["book","pen"],"order":7}'
>>> codec.decode(b'{"items":["book","pen"],"order":7}')
{'items': ['book', 'pen'], 'order': 7}
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar, final

__all__ = ["TYPE_TAG", "Codec", "CodecError", "JsonCodec", "JsonType"]

_T = TypeVar("_T")

TYPE_TAG: Final = "__fsaga__"
"""The key of the JSON object that holds a value of a registered type:
``{"__fsaga__": [tag, data]}``. A plain dict that has this key itself is stored as
``{"__fsaga__": ["dict", [[key, value], ...]]}``, so the two are never confused."""

_DICT_TAG: Final = "dict"


class CodecError(TypeError):
    """A value the codec cannot encode, or bytes it cannot decode.

    The durable runner says what the value was (a saga's input, a step's result, a saga's
    final value) and fails the run with it rather than lose a record.
    """


class Codec(Protocol):
    """Turns values into bytes for the journal and back.

    ``decode(encode(value))`` must give back a value the saga's continuation treats like the
    original: a replay after a crash sees the decoded value, never the original object.
    """

    def encode(self, value: object, /) -> bytes:
        """The bytes for `value`; raises `CodecError` when the value cannot be stored."""
        ...

    def decode(self, data: bytes, /) -> object:
        """The value `data` encodes; raises `CodecError` when the bytes are not an encoding."""
        ...


@final
class JsonType:
    """How `JsonCodec` stores the values of one type of yours: a tag and an encode/decode pair.

    `encode` turns a value into something `JsonCodec` can store (JSON-shaped data, which may
    hold values of other registered types); `decode` gets that data back, decoded, and
    rebuilds the value. A dataclass needs no `JsonType`: register the class itself.

    Args:
        cls: the type; only values of exactly this type use this entry (not subclasses).
        encode: the value as storable data.
        decode: the value back from that data.
        tag: the name the journal stores values under (default: the class's qualified
            name). Keep it when the class is renamed or moved, or old journals stop decoding.

    >>> from decimal import Decimal
    >>> money = JsonType(Decimal, encode=str, decode=lambda text: Decimal(str(text)))
    >>> codec = JsonCodec(types=[money])
    >>> codec.encode({"total": Decimal("9.90")})
    b'{"total":{"__fsaga__":["Decimal","9.90"]}}'
    >>> codec.decode(codec.encode({"total": Decimal("9.90")}))
    {'total': Decimal('9.90')}
    """

    __slots__ = ("_decode", "_encode", "cls", "tag")

    def __init__(
        self,
        cls: type[_T],
        *,
        encode: Callable[[_T], object],
        decode: Callable[[object], _T],
        tag: str | None = None,
    ) -> None:
        given: object = cls
        if not isinstance(given, type):
            raise TypeError(f"JsonType needs a class, got {cls!r}")
        name = cls.__qualname__ if tag is None else tag
        given_tag: object = name
        if not isinstance(given_tag, str) or not name:
            raise ValueError(f"the tag of {cls.__qualname__} must be a non-empty str, got {tag!r}")
        if name == _DICT_TAG:
            raise ValueError(f"the tag {_DICT_TAG!r} is reserved for plain dicts; choose another")
        self.cls: type[object] = cls
        """The registered type."""
        self.tag: str = name
        """What the journal stores its values under."""
        self._encode: Callable[[Any], object] = encode
        self._decode: Callable[[object], object] = decode

    def __repr__(self) -> str:
        return f"JsonType({self.cls.__qualname__}, tag={self.tag!r})"

    def encode(self, value: object) -> object:
        """`value` as storable data."""
        return self._encode(value)

    def decode(self, data: object) -> object:
        """The value `data` stands for."""
        return self._decode(data)


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class JsonCodec:
    """UTF-8 JSON, keys sorted, no spaces: the same value always gives the same bytes.

    JSON has fewer shapes than Python, so some values come back changed: a tuple decodes as a
    list, a dict key that is not a string decodes as a string, and a set, a `datetime` or an
    object of a type not in `types` cannot be encoded at all (`CodecError`, naming the type
    that failed, even deep inside the value). After a crash the saga's continuations see the
    decoded value: a continuation that got a tuple on the first run and a list on the replay
    may take another path.

    Floats that JSON cannot represent (``nan``, ``inf``) are refused, so the journal stays valid
    JSON for other tools.

    Attributes:
        exact: also refuse a value that would not decode back equal to itself (a tuple, a
            non-string key), instead of storing its JSON form. This turns a bug that would only
            show after a crash into an error on the first run.
        types: your types the codec stores, each a dataclass (stored as its fields) or a
            `JsonType`. A value of one is stored as ``{"__fsaga__": [tag, data]}`` (see
            `TYPE_TAG`) and decodes as the value again. Without types the codec writes plain
            JSON, the same bytes as ever.

    >>> JsonCodec().decode(JsonCodec().encode((1, 2)))
    [1, 2]
    >>> JsonCodec(exact=True).encode((1, 2))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fsaga.journal.codec.CodecError: a value of type tuple would decode as list: ...
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Receipt:
    ...     id: str
    ...     cents: int
    >>> codec = JsonCodec(types=[Receipt])
    >>> codec.encode([Receipt("R-1", 450)])
    b'[{"__fsaga__":["Receipt",{"cents":450,"id":"R-1"}]}]'
    >>> codec.decode(codec.encode([Receipt("R-1", 450)]))
    [Receipt(id='R-1', cents=450)]
    """

    exact: bool = False
    types: Sequence[type[object] | JsonType] = ()
    _by_type: dict[type[object], JsonType] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    _by_tag: dict[str, JsonType] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        entries = [_entry(given) for given in self.types]
        object.__setattr__(self, "types", tuple(self.types))
        for entry in entries:
            if entry.cls in self._by_type:
                raise ValueError(f"JsonCodec(types=...) names {entry.cls.__qualname__} twice")
            if entry.tag in self._by_tag:
                raise ValueError(
                    f"JsonCodec(types=...): {entry.cls.__qualname__} and "
                    f"{self._by_tag[entry.tag].cls.__qualname__} share the tag {entry.tag!r}; "
                    "give one of them JsonType(..., tag=...)"
                )
            self._by_type[entry.cls] = entry
            self._by_tag[entry.tag] = entry

    def encode(self, value: object, /) -> bytes:
        """The JSON bytes for `value`.

        Raises:
            CodecError: json cannot serialise the value (the message names the type that
                failed), or, with ``exact=True``, the value would not decode back equal to
                itself.
        """
        try:
            storable = self._tagged(value) if self._by_type else value
            text = json.dumps(
                storable,
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=False,
                allow_nan=False,
                default=_refuse,
            )
        except _Unencodable as error:
            raise CodecError(
                f"cannot encode a value of type {error.kind} as JSON: {error.detail}"
            ) from None
        except ValueError as error:
            # Out-of-range floats are json's only ValueError that names no type; others (a
            # circular reference) are about the value as a whole.
            kind = "float" if "float" in str(error) else type(value).__qualname__
            raise CodecError(f"cannot encode a value of type {kind} as JSON: {error}") from error
        except (TypeError, RecursionError) as error:
            raise CodecError(
                f"cannot encode a value of type {type(value).__qualname__} as JSON: {error}"
            ) from error
        data = text.encode("utf-8")
        if self.exact:
            decoded = self.decode(data)
            if decoded != value:
                before, after = _first_difference(value, decoded)
                raise CodecError(
                    f"a value of type {type(before).__qualname__} would decode as "
                    f"{type(after).__qualname__}: {_shorten(before)} comes back as "
                    f"{_shorten(after)}; store lists instead of tuples and dicts with str keys"
                )
        return data

    def decode(self, data: bytes, /) -> object:
        """The value encoded in `data`.

        Raises:
            CodecError: `data` is not UTF-8 JSON, or holds a tag that no registered type has.
        """
        try:
            text = data.decode("utf-8")
            if not self._by_tag:
                return json.loads(text)
            return json.loads(text, object_hook=self._untagged)
        except CodecError:
            raise
        except (UnicodeDecodeError, ValueError) as error:
            raise CodecError(f"cannot decode {_shorten(data)} as JSON: {error}") from error

    def _tagged(self, value: object) -> object:
        """`value` with the values of registered types, and dicts that use the tag key
        themselves, replaced by tagged objects; the rest is left to json."""
        entry = self._by_type.get(type(value))
        if entry is not None:
            return {TYPE_TAG: [entry.tag, self._tagged(entry.encode(value))]}
        if isinstance(value, dict):
            items = {key: self._tagged(item) for key, item in value.items()}
            if TYPE_TAG in value:
                pairs = [[key, item] for key, item in sorted(items.items())]
                return {TYPE_TAG: [_DICT_TAG, pairs]}
            return items
        if isinstance(value, list | tuple):
            return [self._tagged(item) for item in value]
        return value

    def _untagged(self, document: dict[str, object]) -> object:
        if TYPE_TAG not in document:
            return document
        tagged = document[TYPE_TAG]
        if len(document) != 1 or not isinstance(tagged, list) or len(tagged) != 2:
            raise CodecError(f"malformed tagged value {_shorten(document)}")
        tag, data = tagged
        if tag == _DICT_TAG:
            if not isinstance(data, list) or not all(_is_pair(pair) for pair in data):
                raise CodecError(f"malformed tagged dict {_shorten(document)}")
            return {pair[0]: pair[1] for pair in data}
        entry = self._by_tag.get(tag) if isinstance(tag, str) else None
        if entry is None:
            raise CodecError(
                f"cannot decode a value tagged {tag!r}: no type registered with this codec has "
                f"that tag (registered: {', '.join(map(repr, self._by_tag)) or 'none'})"
            )
        try:
            return entry.decode(data)
        except Exception as error:
            raise CodecError(
                f"cannot rebuild a {entry.cls.__qualname__} from {_shorten(data)}: {error}"
            ) from error


class _Unencodable(Exception):
    """json met a value it cannot store (raised by the `default` hook, which sees it even
    deep inside the value)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def _refuse(value: object) -> object:
    kind = type(value).__qualname__
    raise _Unencodable(
        kind,
        f"{_shorten(value)} is not JSON (None, bool, int, float, str, list, or dict with str "
        "keys); register its type with JsonCodec(types=...) to store it",
    )


def _entry(given: object) -> JsonType:
    if isinstance(given, JsonType):
        return given
    if isinstance(given, type) and dataclasses.is_dataclass(given):
        return _dataclass_type(given)
    raise TypeError(
        f"JsonCodec(types=...) takes dataclasses and JsonType entries, got {given!r}; "
        "register another type as JsonType(cls, encode=..., decode=...)"
    )


def _dataclass_type(cls: type[Any]) -> JsonType:
    names = [item.name for item in dataclasses.fields(cls) if item.init]

    def encode(value: object) -> object:
        return {name: getattr(value, name) for name in names}

    def decode(data: object) -> object:
        if not isinstance(data, dict):
            raise TypeError(f"expected an object of fields, got {_shorten(data)}")
        return cls(**data)

    return JsonType(cls, encode=encode, decode=decode)


def _is_pair(pair: object) -> bool:
    return isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)


def _first_difference(original: object, decoded: object) -> tuple[object, object]:
    """The outermost parts of `original` and `decoded` that differ in type, keys or length,
    or the two values themselves: what to name when a value would not come back equal."""
    if type(original) is not type(decoded):
        return original, decoded
    if isinstance(original, dict) and isinstance(decoded, dict):
        if original.keys() != decoded.keys():
            return original, decoded
        for key, item in original.items():
            if item != decoded[key]:
                return _first_difference(item, decoded[key])
    if isinstance(original, list) and isinstance(decoded, list):
        if len(original) != len(decoded):
            return original, decoded
        for item, back in zip(original, decoded, strict=True):
            if item != back:
                return _first_difference(item, back)
    return original, decoded


def _shorten(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
