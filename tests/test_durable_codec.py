"""What a durable run does with values its codec cannot encode, and with types it registers.

A run reports exactly what it recorded (contract rule 11). A saga whose final value the codec
could not encode used to return ``Success(value)`` and record an encoding error, so a second
start returned a `Success` holding an error; now the value is refused before anything says
Success: the run fails with a `CodecError` naming the saga and the value's type, compensates,
and records that failure. Every codec error says what could not be encoded: the saga's input,
a step's result, or the final value.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from fsaga import Failure, Saga, Success, step
from fsaga.durable import DurableSagas, RecordedError, SagaDefinitions
from fsaga.journal import CodecError, JsonCodec, MemoryJournal


@dataclass(frozen=True)
class Receipt:
    order: str
    cents: int


class Shop:
    def __init__(self) -> None:
        self.ran: Counter[str] = Counter()
        self.undone: list[str] = []

    def order(self, sku: str) -> Saga[Receipt]:
        def act(name: str) -> str:
            self.ran[name] += 1
            return f"{name}-{sku}"

        return (
            step(lambda: act("reserve"), lambda _: self.undone.append("reserve"), name="reserve")
            .then(
                step(lambda: act("charge"), lambda _: self.undone.append("charge"), name="charge")
            )
            .map(lambda charge: Receipt(charge, 450))
        )


def runs_for(shop: Shop, codec: JsonCodec | None = None) -> DurableSagas:
    definitions = SagaDefinitions()
    definitions.saga("order")(shop.order)
    return DurableSagas(MemoryJournal(), definitions, codec=codec)


def test_a_final_value_the_codec_cannot_encode_fails_the_run_and_is_what_it_records() -> None:
    shop = Shop()
    runs = runs_for(shop)

    first = runs.start("order", "sku-1", saga_id="o-1")
    again = runs.start("order", "sku-1", saga_id="o-1")

    assert isinstance(first, Failure)
    assert isinstance(first.error, CodecError)
    message = str(first.error)
    assert message.startswith("saga 'o-1' ('order') finished with a value of type Receipt")
    assert "cannot encode a value of type Receipt as JSON" in message
    assert "type dict" not in message  # the outcome document is not what failed
    assert first.compensated == ("charge", "reserve")
    assert shop.undone == ["charge", "reserve"]
    # The second start reads back what the first reported: the same failure, never a Success.
    assert isinstance(again, Failure)
    assert isinstance(again.error, CodecError)
    assert isinstance(again.error, RecordedError)
    assert again.error.message == message
    assert again.compensated == first.compensated
    record = runs._journal.get("o-1")
    assert record is not None
    assert record.status == "failed"
    assert shop.ran == Counter({"reserve": 1, "charge": 1})


@pytest.mark.anyio
async def test_a_final_value_the_codec_cannot_encode_fails_under_the_async_interpreter() -> None:
    shop = Shop()
    runs = runs_for(shop)

    first = await runs.start_async("order", "sku-1", saga_id="o-1")

    assert isinstance(first, Failure)
    assert isinstance(first.error, CodecError)
    assert first.compensated == ("charge", "reserve")
    assert await runs.start_async("order", "sku-1", saga_id="o-1") == runs.start(
        "order", "sku-1", saga_id="o-1"
    )


def test_a_final_value_of_a_registered_type_is_recorded_and_read_back_as_itself() -> None:
    shop = Shop()
    runs = runs_for(shop, JsonCodec(types=[Receipt]))

    first = runs.start("order", "sku-1", saga_id="o-1")
    again = runs.start("order", "sku-1", saga_id="o-1")

    assert first == again == Success(Receipt("charge-sku-1", 450))
    assert shop.ran == Counter({"reserve": 1, "charge": 1})


def test_a_journal_holding_an_unrecordable_success_reads_back_as_an_error_never_a_success() -> None:
    """What an earlier fsaga recorded for a success whose value it could not encode: reading it
    back raises, saying what happened; it never turns into a `Success` holding an error."""
    journal = MemoryJournal()
    journal.create("o-1", "order", 1, JsonCodec().encode("sku-1"))
    journal.finish(
        "o-1",
        "succeeded",
        b'{"kind":"success","unrecordable":"cannot encode a value of type dict as JSON"}',
    )
    definitions = SagaDefinitions()
    definitions.saga("order")(Shop().order)

    with pytest.raises(CodecError, match="'o-1' succeeded, but its final value was never recorded"):
        DurableSagas(journal, definitions).start("order", "sku-1", saga_id="o-1")


def test_an_input_the_codec_cannot_encode_is_named_as_the_input() -> None:
    runs = runs_for(Shop())

    with pytest.raises(CodecError) as raised:
        runs.start("order", {"sku-1", "sku-2"}, saga_id="o-1")

    message = str(raised.value)
    assert message.startswith("saga 'o-1': its input for definition 'order', a set, cannot be")
    assert "step" not in message
    assert runs._journal.get("o-1") is None


def test_a_recorded_input_the_codec_cannot_decode_is_named_as_the_input() -> None:
    journal = MemoryJournal()
    journal.create("o-1", "order", 1, b"\x80 not json")
    definitions = SagaDefinitions()
    definitions.saga("order")(Shop().order)

    error = DurableSagas(journal, definitions).recover()["o-1"]

    assert isinstance(error, CodecError)
    assert str(error).startswith("saga 'o-1' ('order') cannot be rebuilt: its recorded input")
