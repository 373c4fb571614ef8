"""The journal's codec (fsaga.journal.codec): `JsonCodec`, its errors, and the types it stores
once registered (dataclasses, `JsonType`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsaga.journal import TYPE_TAG, CodecError, JsonCodec, JsonType

# -- JSON ---------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=50)
@given(json_values)
def test_json_shaped_values_round_trip(value: object) -> None:
    for codec in (JsonCodec(), JsonCodec(exact=True)):
        data = codec.encode(value)
        assert codec.decode(data) == value
        assert codec.encode(codec.decode(data)) == data


def test_json_encoding_is_compact_sorted_utf8() -> None:
    assert JsonCodec().encode({"b": 1, "a": ["é", None]}) == '{"a":["é",null],"b":1}'.encode()


def test_json_turns_tuples_into_lists_unless_exact() -> None:
    assert JsonCodec().decode(JsonCodec().encode({"pair": (1, 2)})) == {"pair": [1, 2]}

    # The part that would not come back, not the value around it.
    with pytest.raises(CodecError, match=r"type tuple would decode as list: \(1, 2\)"):
        JsonCodec(exact=True).encode({"pair": (1, 2)})
    with pytest.raises(CodecError, match="type tuple would decode as list"):
        JsonCodec(exact=True).encode((1, 2))
    with pytest.raises(CodecError, match="decode as dict"):
        JsonCodec(exact=True).encode({1: "one"})


@dataclass(frozen=True)
class Receipt:
    id: str
    cents: int


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ({1, 2}, "type set"),
        ({"when": object()}, "type object"),
        ([{"receipt": Receipt("R-1", 450)}], "type Receipt"),
        (math.nan, "type float"),
        ({"totals": [1.0, math.inf]}, "type float"),
        ({"a": 1, 2: "b"}, "type dict"),
    ],
)
def test_an_unencodable_value_is_a_codec_error_naming_the_type_that_failed(
    value: object, named: str
) -> None:
    """The type named is the one json could not store, however deep in the value (the codec
    named the outermost type, `dict` or `list`, before); the message says nothing about what
    the value was for (the durable runner says that)."""
    with pytest.raises(CodecError, match=f"cannot encode a value of {named} as JSON") as raised:
        JsonCodec().encode(value)

    assert isinstance(raised.value, TypeError)
    assert "step" not in str(raised.value)


# -- codec: registered types -----------------------------------------------------------------


@dataclass(frozen=True)
class Parcel:
    receipt: Receipt
    labels: list[str]


class Money:
    def __init__(self, cents: int) -> None:
        self.cents = cents

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and other.cents == self.cents

    def __hash__(self) -> int:
        return hash(self.cents)


def money_from(data: object) -> Money:
    assert isinstance(data, int)
    return Money(data)


MONEY = JsonType(Money, encode=lambda money: money.cents, decode=money_from, tag="money")
TYPED = JsonCodec(types=[Receipt, Parcel, MONEY])


def test_registered_types_round_trip_nested_and_tagged() -> None:
    value = {"parcel": Parcel(Receipt("R-1", 450), ["fragile"]), "price": [Money(990)]}

    data = TYPED.encode(value)

    assert TYPED.decode(data) == value
    assert data == (
        b'{"parcel":{"__fsaga__":["Parcel",{"labels":["fragile"],'
        b'"receipt":{"__fsaga__":["Receipt",{"cents":450,"id":"R-1"}]}}]},'
        b'"price":[{"__fsaga__":["money",990]}]}'
    )
    assert TYPED.encode(TYPED.decode(data)) == data
    assert JsonCodec(exact=True, types=[Receipt]).encode(Receipt("R-2", 1))


tag_like_dicts = st.dictionaries(
    st.sampled_from([TYPE_TAG, "a", "b"]),
    st.none() | st.integers() | st.lists(st.sampled_from(["Receipt", "dict", "x"]), max_size=2),
    max_size=3,
)


@settings(max_examples=50)
@given(
    st.recursive(
        tag_like_dicts,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from([TYPE_TAG, "c"]), inner, max_size=2)
        ),
        max_leaves=8,
    )
)
def test_a_plain_dict_that_uses_the_tag_key_is_never_taken_for_a_registered_value(
    value: object,
) -> None:
    assert TYPED.decode(TYPED.encode(value)) == value


def test_registered_types_are_refused_by_a_codec_that_does_not_know_them() -> None:
    data = TYPED.encode(Receipt("R-1", 450))

    with pytest.raises(CodecError, match="type Receipt"):
        JsonCodec().encode(Receipt("R-1", 450))
    with pytest.raises(CodecError, match=r"tagged 'Receipt'.*registered: 'money'"):
        JsonCodec(types=[MONEY]).decode(data)
    assert JsonCodec().decode(data) == {TYPE_TAG: ["Receipt", {"cents": 450, "id": "R-1"}]}


def test_a_tagged_value_that_cannot_be_rebuilt_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="cannot rebuild a Receipt"):
        TYPED.decode(b'{"__fsaga__":["Receipt",{"id":"R-1"}]}')
    with pytest.raises(CodecError, match="malformed"):
        TYPED.decode(b'{"__fsaga__":["Receipt"]}')


@pytest.mark.parametrize(
    ("types", "error"),
    [
        ([Money], "takes dataclasses and JsonType entries"),
        ([Receipt, Receipt], "names Receipt twice"),
        ([MONEY, JsonType(Receipt, encode=str, decode=str, tag="money")], "share the tag"),  # type: ignore[arg-type]
    ],
)
def test_a_codec_refuses_types_it_cannot_register(types: list[object], error: str) -> None:
    with pytest.raises((TypeError, ValueError), match=error):
        JsonCodec(types=types)  # type: ignore[arg-type]


def test_the_dict_tag_is_reserved() -> None:
    with pytest.raises(ValueError, match="reserved"):
        JsonType(Money, encode=lambda money: money.cents, decode=money_from, tag="dict")


def test_undecodable_bytes_are_a_codec_error() -> None:
    for data in (b"\xff\xfe", b"{not json", b""):
        with pytest.raises(CodecError, match="cannot decode"):
            JsonCodec().decode(data)
