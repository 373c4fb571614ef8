"""How results and inputs become bytes in a journal, and back: a `Codec`, JSON by default.

A durable run stores each step's result so a recovery can feed it to the ``bind`` continuation
instead of running the step again. The journal itself only stores bytes; the codec decides what
those bytes mean. `JsonCodec` is the default: readable with any tool, and stable across Python
versions.

>>> codec = JsonCodec()
>>> codec.encode({"order": 7, "items": ["book", "pen"]})
b'{"items":["book","pen"],"order":7}'
>>> codec.decode(b'{"items":["book","pen"],"order":7}')
{'items': ['book', 'pen'], 'order': 7}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol, final

__all__ = ["Codec", "CodecError", "JsonCodec"]


class CodecError(TypeError):
    """A value the codec cannot encode, or bytes it cannot decode.

    For a step's result this fails the step (and compensates), so nothing is silently lost.
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
@dataclass(frozen=True, slots=True, kw_only=True)
class JsonCodec:
    """UTF-8 JSON, keys sorted, no spaces: the same value always gives the same bytes.

    JSON has fewer shapes than Python, so some values come back changed: a tuple decodes as a
    list, a dict key that is not a string decodes as a string, and a set, a `datetime` or an
    arbitrary object cannot be encoded at all (`CodecError`). A durable step should therefore
    return JSON-shaped values (``None``, bools, numbers, strings, lists, dicts with string keys):
    after a crash the saga's continuations see the decoded value, and a continuation that got a
    tuple on the first run and a list on the replay may take another path.

    Floats that JSON cannot represent (``nan``, ``inf``) are refused, so the journal stays valid
    JSON for other tools.

    Attributes:
        exact: also refuse a value that would not decode back equal to itself (a tuple, a
            non-string key), instead of storing its JSON form. This turns a bug that would only
            show after a crash into an error on the first run.

    >>> JsonCodec().decode(JsonCodec().encode((1, 2)))
    [1, 2]
    >>> JsonCodec(exact=True).encode((1, 2))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fsaga.journal.codec.CodecError: a value of type tuple would decode as list: ...
    """

    exact: bool = False

    def encode(self, value: object, /) -> bytes:
        """The JSON bytes for `value`.

        Raises:
            CodecError: json cannot serialise the value (the message names its type), or, with
                ``exact=True``, the value would not decode back equal to itself.
        """
        try:
            text = json.dumps(
                value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            )
        except (TypeError, ValueError, RecursionError) as error:
            raise CodecError(
                f"cannot encode a value of type {type(value).__qualname__} as JSON: {error}; "
                "a durable step should return JSON-shaped values (None, bool, int, float, str, "
                "list, dict with str keys)"
            ) from error
        data = text.encode("utf-8")
        if self.exact:
            decoded = json.loads(text)
            if decoded != value:
                raise CodecError(
                    f"a value of type {type(value).__qualname__} would decode as "
                    f"{type(decoded).__qualname__}: {_shorten(value)} comes back as "
                    f"{_shorten(decoded)}; return lists instead of tuples and dicts with str keys"
                )
        return data

    def decode(self, data: bytes, /) -> object:
        """The value encoded in `data`.

        Raises:
            CodecError: `data` is not UTF-8 JSON.
        """
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            raise CodecError(f"cannot decode {_shorten(data)} as JSON: {error}") from error


def _shorten(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
