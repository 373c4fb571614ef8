"""The `Store` protocol as every store keeps it, and what only `SqliteStore` does (its file, its
schema, its locks).

Shared behaviour is tested on every store through the `make_store` fixture: `MemoryStore`,
`SqliteStore`, `PostgresStore` and `RedisStore`, and the async twins of the last two driven
through a blocking portal (tests/store_backends.py); values are JSON-shaped so every store gives
them back alike. What only the database stores do is in test_stores_databases.py.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import pytest
from store_backends import ALL_KINDS, AnyStore, backend

from fsaga.journal import CodecError, JsonCodec
from fsaga.stores import (
    ABSENT,
    Change,
    Deleted,
    MemoryStore,
    MissingKeyError,
    ReusedWriteIdError,
    SqliteStore,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
    VersionConflictError,
    Versioned,
)


class MakeStore(Protocol):
    def __call__(
        self, name: str = "orders", initial: Mapping[str, object] | None = None
    ) -> AnyStore: ...


@pytest.fixture(params=ALL_KINDS)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    """Opens stores of one kind; SQLite ones share one file, PostgreSQL ones a schema, Redis
    ones a key prefix, each the test's own. Initial values get versions 1, 2, ... in order, in
    every kind."""
    with backend(request.param, request, tmp_path) as opened:
        yield opened.open


@pytest.fixture
def store(make_store: MakeStore) -> AnyStore:
    return make_store()


def raw(path: Path, sql: str, *parameters: object) -> list[tuple[Any, ...]]:
    """Run `sql` over a separate connection to the file, committing, and return its rows."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        return connection.execute(sql, parameters).fetchall()
    finally:
        connection.close()


# -- put, get, delete, update ---------------------------------------------------------------


def test_put_creates_then_replaces_with_a_higher_version(store: AnyStore) -> None:
    created = store.put("o-1", "placed")
    replaced = store.put("o-1", "paid")

    assert created == Change(None, Versioned("placed", 1))
    assert replaced == Change(Versioned("placed", 1), Versioned("paid", 2))
    assert store.get("o-1") == Versioned("paid", 2)


def test_get_of_a_key_that_holds_nothing_is_none(store: AnyStore) -> None:
    assert store.get("nothing") is None


def test_versions_come_from_one_counter_for_every_key(store: AnyStore) -> None:
    versions = [store.put(key, 0).after for key in ("a", "b", "a", "c")]

    assert [state.version for state in versions if state is not None] == [1, 2, 3, 4]


def test_delete_removes_the_value_and_reports_it(store: AnyStore) -> None:
    store.put("o-1", {"status": "placed"})

    change = store.delete("o-1")

    assert change == Change(Versioned({"status": "placed"}, 1), Deleted(2))
    assert store.get("o-1") is None


def test_deleting_a_key_that_holds_nothing_changes_nothing(store: AnyStore) -> None:
    assert store.delete("nothing") == Change(None, None)
    assert store.put("o-1", "placed").after == Versioned("placed", 1)


def test_a_value_deleted_and_written_again_never_gets_its_old_version_back(
    store: AnyStore,
) -> None:
    store.put("o-1", "placed")
    store.delete("o-1")

    again = store.put("o-1", "placed")

    assert again.after == Versioned("placed", 3)  # the delete took version 2
    with pytest.raises(VersionConflictError):
        store.put("o-1", "stale", expected=1)  # the old version names the old value only


def test_a_none_value_is_a_value(store: AnyStore) -> None:
    store.put("o-1", None)

    assert store.get("o-1") == Versioned(None, 1)


def test_update_replaces_the_value_with_the_function_of_it(store: AnyStore) -> None:
    store.put("sku-1", 10)

    change = store.update("sku-1", lambda count: count - 3)

    assert change == Change(Versioned(10, 1), Versioned(7, 2))
    assert store.get("sku-1") == Versioned(7, 2)


def test_update_of_a_key_that_holds_nothing_is_a_missing_key_error(store: AnyStore) -> None:
    with pytest.raises(MissingKeyError) as caught:
        store.update("sku-9", lambda count: count + 1)

    error = caught.value
    assert isinstance(error, KeyError)
    assert isinstance(error, StoreError)
    assert (error.store, error.key) == ("orders", "sku-9")
    assert str(error) == "store 'orders' holds no value under key 'sku-9' to update"
    assert store.get("sku-9") is None


def test_an_update_whose_function_raises_changes_nothing(store: AnyStore) -> None:
    store.put("sku-1", 10)

    def broken(count: int) -> int:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        store.update("sku-1", broken)

    assert store.get("sku-1") == Versioned(10, 1)
    assert store.put("other", 0).after == Versioned(0, 2)  # no version was used up


def test_snapshot_holds_every_key(make_store: MakeStore) -> None:
    store = make_store(initial={"a": 1, "b": 2})
    store.delete("a")
    store.put("c", 3)

    assert store.snapshot() == {"b": Versioned(2, 2), "c": Versioned(3, 4)}  # deletion: 3


# -- conditional writes -----------------------------------------------------------------------


def test_a_write_expecting_the_current_version_succeeds(store: AnyStore) -> None:
    store.put("o-1", "placed")

    assert store.put("o-1", "paid", expected=1).after == Versioned("paid", 2)
    assert store.delete("o-1", expected=2).before == Versioned("paid", 2)


def test_a_write_expecting_another_version_conflicts_and_changes_nothing(
    store: AnyStore,
) -> None:
    store.put("o-1", "placed")
    store.put("o-1", "paid")

    with pytest.raises(VersionConflictError) as caught:
        store.put("o-1", "shipped", expected=1)

    error = caught.value
    assert (error.store, error.key, error.expected, error.found) == ("orders", "o-1", 1, 2)
    assert str(error) == "store 'orders', key 'o-1': expected version 1, found version 2"
    assert store.get("o-1") == Versioned("paid", 2)
    assert store.put("other", 0).after == Versioned(0, 3)  # no version was used up


def test_expecting_absent_creates_but_never_overwrites(store: AnyStore) -> None:
    assert store.put("o-1", "placed", expected=ABSENT).before is None

    with pytest.raises(VersionConflictError) as caught:
        store.put("o-1", "again", expected=ABSENT)

    assert (caught.value.expected, caught.value.found) == (ABSENT, 1)
    assert str(caught.value) == "store 'orders', key 'o-1': expected no value, found version 1"
    assert store.get("o-1") == Versioned("placed", 1)


def test_expecting_a_version_of_a_key_that_holds_nothing_conflicts(store: AnyStore) -> None:
    with pytest.raises(VersionConflictError) as caught:
        store.put("o-1", "placed", expected=1)

    assert caught.value.found is None
    assert "expected version 1, found no value" in str(caught.value)
    assert store.get("o-1") is None


def test_expecting_none_writes_whatever_the_key_holds(store: AnyStore) -> None:
    store.put("o-1", "placed")

    assert store.put("o-1", "paid", expected=None).after == Versioned("paid", 2)
    assert store.delete("o-1", expected=None).before == Versioned("paid", 2)


def test_a_delete_expecting_another_version_conflicts_and_keeps_the_value(
    store: AnyStore,
) -> None:
    store.put("o-1", "placed")

    with pytest.raises(VersionConflictError):
        store.delete("o-1", expected=7)
    with pytest.raises(VersionConflictError):
        store.delete("o-1", expected=ABSENT)

    assert store.get("o-1") == Versioned("placed", 1)


# -- undo -----------------------------------------------------------------------------------


def test_undo_of_an_overwrite_restores_the_value_and_its_version(store: AnyStore) -> None:
    store.put("o-1", "placed")
    change = store.put("o-1", "paid")

    store.undo("o-1", change)

    assert store.get("o-1") == Versioned("placed", 1)
    assert store.put("o-1", "next").after == Versioned("next", 3)  # the counter never goes back


def test_undo_of_a_create_removes_the_key(store: AnyStore) -> None:
    change = store.put("o-1", "placed")

    store.undo("o-1", change)

    assert store.get("o-1") is None


def test_undo_of_a_delete_restores_the_value_and_its_version(store: AnyStore) -> None:
    store.put("o-1", "placed")
    change = store.delete("o-1")

    store.undo("o-1", change)

    assert store.get("o-1") == Versioned("placed", 1)


def test_undo_of_an_update_restores_the_value_it_replaced(store: AnyStore) -> None:
    store.put("sku-1", 10)
    change = store.update("sku-1", lambda count: count - 1)

    store.undo("sku-1", change)

    assert store.get("sku-1") == Versioned(10, 1)


def test_undo_of_a_delete_that_found_nothing_does_nothing(store: AnyStore) -> None:
    change = store.delete("o-1")

    store.undo("o-1", change)

    assert store.get("o-1") is None


def test_undo_of_a_delete_that_found_nothing_is_no_conflict_after_the_key_was_created(
    store: AnyStore,
) -> None:
    # The delete changed nothing, so its undo has nothing to put back, whatever the key holds
    # now; the saga never wrote the key, so "someone else changed it after this saga wrote it"
    # would be false.
    change = store.delete("o-1")
    store.put("o-1", "created by someone else")

    store.undo("o-1", change)

    assert store.get("o-1") == Versioned("created by someone else", 1)


def test_undoing_a_change_twice_is_harmless(store: AnyStore) -> None:
    store.put("o-1", "placed")
    change = store.put("o-1", "paid")

    store.undo("o-1", change)
    store.undo("o-1", change)

    assert store.get("o-1") == Versioned("placed", 1)


def test_undo_after_someone_else_wrote_conflicts_and_keeps_their_value(store: AnyStore) -> None:
    store.put("o-1", "placed")
    change = store.put("o-1", "paid")
    store.put("o-1", "edited by a clerk")

    with pytest.raises(VersionConflictError) as caught:
        store.undo("o-1", change)

    error = caught.value
    assert (error.store, error.key, error.expected, error.found) == ("orders", "o-1", 2, 3)
    assert str(error) == (
        "store 'orders', key 'o-1': not undone, someone else changed it after this saga wrote it "
        "(the saga left version 2, found version 3); their value was kept"
    )
    assert store.get("o-1") == Versioned("edited by a clerk", 3)


def test_undo_of_a_delete_after_someone_recreated_the_key_conflicts(store: AnyStore) -> None:
    store.put("o-1", "placed")
    change = store.delete("o-1")
    store.put("o-1", "recreated")

    with pytest.raises(VersionConflictError) as caught:
        store.undo("o-1", change)

    assert (caught.value.expected, caught.value.found) == (2, 3)
    assert (caught.value.expected_deleted, caught.value.found_deleted) == (True, False)
    assert "the saga left no value (deleted at version 2), found version 3" in str(caught.value)
    assert str(caught.value).endswith("their value was kept")
    assert store.get("o-1") == Versioned("recreated", 3)


def test_undo_of_a_delete_after_someone_deleted_the_recreated_key_conflicts(
    store: AnyStore,
) -> None:
    # The saga deletes the key and writes it again; someone else deletes it. Undoing the
    # write finds no value either way and does nothing; undoing the delete finds another
    # deletion than its own and keeps it, instead of bringing the value back.
    store.put("o-1", "placed")  # 1
    deleted = store.delete("o-1")  # 2
    written = store.put("o-1", "again")  # 3
    store.delete("o-1")  # 4, someone else

    store.undo("o-1", written)
    with pytest.raises(VersionConflictError) as caught:
        store.undo("o-1", deleted)

    assert (caught.value.expected, caught.value.found) == (2, 4)
    assert (caught.value.expected_deleted, caught.value.found_deleted) == (True, True)
    assert str(caught.value).endswith("their deletion was kept")
    assert store.get("o-1") is None


def test_a_delete_that_found_no_value_takes_no_version(store: AnyStore) -> None:
    assert store.delete("o-1") == Change(None, None)
    store.put("o-1", "placed")
    store.delete("o-1")

    assert store.delete("o-1") == Change(Deleted(2), Deleted(2))
    assert store.put("o-2", "x").after == Versioned("x", 3)


def test_undo_of_a_create_someone_else_deleted_since_does_nothing(store: AnyStore) -> None:
    change = store.put("o-1", "placed")
    store.delete("o-1")

    store.undo("o-1", change)  # the key already holds what the undo would leave

    assert store.get("o-1") is None


# -- write ids ------------------------------------------------------------------------------


def test_a_write_id_is_applied_once_and_asked_again_returns_its_change(
    store: AnyStore,
) -> None:
    first = store.put("o-1", "placed", write_id="s-1/save")

    again = store.put("o-1", "something else", write_id="s-1/save")

    assert again == first == Change(None, Versioned("placed", 1))
    assert store.get("o-1") == Versioned("placed", 1)
    assert store.put("other", 0).after == Versioned(0, 2)  # nothing written in between


def test_a_write_id_answers_with_its_change_even_after_later_writes(store: AnyStore) -> None:
    store.put("sku-1", 10)
    first = store.update("sku-1", lambda count: count - 1, write_id="s-1/update")
    store.put("sku-1", 100)

    again = store.update("sku-1", lambda count: count - 1, write_id="s-1/update")

    assert again == first == Change(Versioned(10, 1), Versioned(9, 2))
    assert store.get("sku-1") == Versioned(100, 3)


def test_a_delete_with_a_write_id_is_applied_once(store: AnyStore) -> None:
    store.put("o-1", "placed")
    first = store.delete("o-1", write_id="s-1/delete")
    store.put("o-1", "recreated")

    again = store.delete("o-1", write_id="s-1/delete")

    assert again == first == Change(Versioned("placed", 1), Deleted(2))
    assert store.get("o-1") == Versioned("recreated", 3)


def test_a_write_that_failed_records_nothing_under_its_write_id(store: AnyStore) -> None:
    store.put("o-1", "placed")
    with pytest.raises(VersionConflictError):
        store.put("o-1", "paid", expected=5, write_id="s-1/save")

    change = store.put("o-1", "paid", expected=1, write_id="s-1/save")

    assert change.after == Versioned("paid", 2)


def test_a_write_id_reused_after_its_write_was_undone_is_refused(store: AnyStore) -> None:
    change = store.put("o-1", "placed", write_id="s-1/save")
    store.undo("o-1", change, write_id="s-1/save")

    with pytest.raises(ReusedWriteIdError) as caught:
        store.put("o-1", "placed", write_id="s-1/save")

    assert caught.value.write_id == "s-1/save"
    assert "'s-1/save'" in str(caught.value)
    assert "undone already" in str(caught.value)
    assert store.get("o-1") is None


def test_a_write_id_undone_before_it_was_applied_is_refused(store: AnyStore) -> None:
    # A compensation that ran for a write cut off before it happened: the write must not
    # happen later under that id.
    store.undo("o-1", Change(None, Versioned("placed", 99)), write_id="s-1/save")

    with pytest.raises(ReusedWriteIdError):
        store.put("o-1", "placed", write_id="s-1/save")

    assert store.get("o-1") is None


def test_a_write_id_given_to_another_key_is_refused(store: AnyStore) -> None:
    store.put("o-1", "placed", write_id="s-1/save")

    with pytest.raises(ReusedWriteIdError) as caught:
        store.put("o-2", "placed", write_id="s-1/save")

    assert "'o-1'" in str(caught.value)
    assert "'o-2'" in str(caught.value)
    assert store.get("o-2") is None


def test_an_undo_repeated_with_its_write_id_after_later_writes_is_no_conflict(
    store: AnyStore,
) -> None:
    store.put("o-1", "placed")
    change = store.put("o-1", "paid", write_id="s-1/save")
    store.undo("o-1", change, write_id="s-1/save")
    store.put("o-1", "edited by a clerk")

    store.undo("o-1", change, write_id="s-1/save")  # a compensation run again after a crash

    assert store.get("o-1") == Versioned("edited by a clerk", 3)


def test_undo_by_write_id_alone_undoes_the_recorded_change(store: AnyStore) -> None:
    store.put("o-1", "placed")
    store.put("o-1", "paid", write_id="s-1/save")

    store.undo("o-1", None, write_id="s-1/save")  # the step's outcome was unknown

    assert store.get("o-1") == Versioned("placed", 1)
    with pytest.raises(ReusedWriteIdError):
        store.put("o-1", "paid", write_id="s-1/save")


def test_undo_by_write_id_of_a_write_that_never_happened_refuses_it_later(
    store: AnyStore,
) -> None:
    store.put("o-1", "placed")

    store.undo("o-1", None, write_id="s-1/save")

    assert store.get("o-1") == Versioned("placed", 1)
    with pytest.raises(ReusedWriteIdError):
        store.put("o-1", "paid", write_id="s-1/save")
    assert store.get("o-1") == Versioned("placed", 1)


def test_undo_needs_a_change_or_a_write_id(store: AnyStore) -> None:
    with pytest.raises(ValueError, match="undo needs a change or a write id"):
        store.undo("o-1", None)


def test_undo_with_the_write_id_of_another_key_is_refused(store: AnyStore) -> None:
    change = store.put("o-1", "placed", write_id="s-1/save")

    with pytest.raises(ReusedWriteIdError, match="was given to key 'o-1', now to key 'o-2'"):
        store.undo("o-2", change, write_id="s-1/save")

    assert store.get("o-1") == Versioned("placed", 1)
    store.undo("o-1", change, write_id="s-1/save")  # the receipt still belongs to o-1
    assert store.get("o-1") is None


def test_forget_writes_drops_the_write_ids_of_one_saga_only(store: AnyStore) -> None:
    store.put("a", 1, write_id="s-1/save:a")
    store.put("b", 1, write_id="s-1/sub/save:b")
    store.put("c", 1, write_id="s-10/save:c")
    store.put("d", 1, write_id="s-1")

    assert store.forget_writes("s-1") == 2
    assert store.forget_writes("s-1") == 0

    assert store.put("a", 2, write_id="s-1/save:a").after == Versioned(2, 5)  # applied afresh
    assert store.put("c", 2, write_id="s-10/save:c").after == Versioned(1, 3)  # still recorded
    assert store.put("d", 2, write_id="s-1").after == Versioned(1, 4)


def test_forget_writes_lets_an_undone_write_id_be_used_again(store: AnyStore) -> None:
    change = store.put("o-1", "placed", write_id="s-1/save")
    store.undo("o-1", change, write_id="s-1/save")

    assert store.forget_writes("s-1") == 1
    assert store.put("o-1", "placed", write_id="s-1/save").after == Versioned("placed", 2)


# -- closing ----------------------------------------------------------------------------------

CALLS: dict[str, Callable[[AnyStore], object]] = {
    "get": lambda store: store.get("o-1"),
    "put": lambda store: store.put("o-1", "x"),
    "delete": lambda store: store.delete("o-1"),
    "update": lambda store: store.update("o-1", lambda value: value),
    "undo": lambda store: store.undo("o-1", Change(None, Versioned("x", 1))),
    "snapshot": lambda store: store.snapshot(),
    "forget_writes": lambda store: store.forget_writes("s-1"),
}


@pytest.mark.parametrize("method", sorted(CALLS))
def test_a_closed_store_refuses_every_call(store: AnyStore, method: str) -> None:
    store.put("o-1", "placed")
    store.close()

    with pytest.raises(StoreClosedError) as caught:
        CALLS[method](store)

    assert caught.value.store == "orders"
    assert str(caught.value) == "store 'orders' is closed"


def test_a_store_closes_at_the_end_of_a_with_block_and_closing_again_is_harmless(
    store: AnyStore,
) -> None:
    def is_closed() -> bool:  # read anew each time (mypy would narrow `store.closed`)
        return store.closed

    with store as same:
        assert same is store
        assert not is_closed()
    assert is_closed()
    store.close()
    assert is_closed()


# -- bad input ------------------------------------------------------------------------------

OPENERS: dict[str, Callable[[object, Path], object]] = {
    "memory": lambda name, _: MemoryStore(name),  # type: ignore[arg-type]
    "sqlite": lambda name, folder: SqliteStore(folder / "s.db", name),  # type: ignore[call-overload]
}


@pytest.mark.parametrize("kind", sorted(OPENERS))
@pytest.mark.parametrize(
    "name", ["", "1st", "my-orders", "my orders", 'or"ders', "sqlite_x", "fsaga_x", "FSAGA_X"]
)
def test_a_name_that_cannot_be_a_table_name_is_refused(
    kind: str, name: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="a store's name must be letters") as caught:
        OPENERS[kind](name, tmp_path)

    assert repr(name) in str(caught.value)


@pytest.mark.parametrize("kind", sorted(OPENERS))
@pytest.mark.parametrize("name", [None, 7, b"orders"])
def test_a_name_that_is_not_a_str_is_a_type_error(kind: str, name: object, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="a store's name must be a str"):
        OPENERS[kind](name, tmp_path)


def test_a_memory_store_refuses_an_unhashable_key() -> None:
    store = MemoryStore[Any, str]("orders")

    with pytest.raises(TypeError, match="store 'orders' cannot hold key \\['o', 1\\]"):
        store.check_key(["o", 1])
    with pytest.raises(TypeError):
        store.put(["o", 1], "placed")

    assert store.snapshot() == {}


def test_a_memory_store_starts_with_its_initial_values_in_order() -> None:
    store = MemoryStore("stock", {"sku-1": 10, "sku-2": 5})

    assert store.snapshot() == {"sku-1": Versioned(10, 1), "sku-2": Versioned(5, 2)}
    assert store.put("sku-3", 1).after == Versioned(1, 3)


@pytest.mark.parametrize("key", [True, 1.5, ("o", 1), 7, b"o-1", None])
def test_a_str_keyed_sqlite_store_refuses_other_keys(key: object, tmp_path: Path) -> None:
    with SqliteStore[str, str](tmp_path / "s.db", "orders") as store:
        with pytest.raises(TypeError, match="store 'orders' holds str keys, got") as caught:
            store.check_key(key)
        assert repr(key) in str(caught.value)
        with pytest.raises(TypeError):
            store.put(key, "placed")  # type: ignore[arg-type]

        assert store.snapshot() == {}


@pytest.mark.parametrize("key", [True, False, 1.0, "1"])
def test_an_int_keyed_sqlite_store_refuses_other_keys(key: object, tmp_path: Path) -> None:
    with (
        SqliteStore[int, str](tmp_path / "s.db", "orders", key_type=int) as store,
        pytest.raises(TypeError, match="holds int keys"),
    ):
        store.put(key, "placed")  # type: ignore[arg-type]


@pytest.mark.parametrize("key", [2**63, -(2**63) - 1, 10**30])
def test_an_int_key_over_64_bits_is_refused(key: int, tmp_path: Path) -> None:
    with (
        SqliteStore[int, str](tmp_path / "s.db", "orders", key_type=int) as store,
        pytest.raises(TypeError, match="does not fit in 64 bits"),
    ):
        store.put(key, "placed")


@pytest.mark.parametrize("key_type", [bool, float, bytes, object, "str"])
def test_a_key_type_other_than_str_or_int_is_refused(key_type: object, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="key_type must be str or int"):
        SqliteStore(tmp_path / "s.db", "orders", key_type=key_type)  # type: ignore[call-overload]

    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"synchronous": "OFF"}, ValueError),
        ({"busy_timeout": -1}, ValueError),
        ({"busy_timeout": True}, TypeError),
        ({"busy_timeout": "5"}, TypeError),
        ({"codec": object()}, TypeError),
    ],
)
def test_bad_sqlite_options_are_refused(
    options: dict[str, object], error: type[Exception], tmp_path: Path
) -> None:
    with pytest.raises(error, match="store 'orders'"):
        SqliteStore(tmp_path / "s.db", "orders", **options)  # type: ignore[call-overload]


def test_a_value_the_codec_cannot_encode_fails_the_write_and_writes_nothing(
    tmp_path: Path,
) -> None:
    with SqliteStore[str, object](tmp_path / "s.db", "orders") as store:
        store.put("o-1", "placed")

        with pytest.raises(CodecError) as caught:
            store.put("o-1", {"tags": {"a", "b"}}, write_id="s-1/save")
        with pytest.raises(CodecError):
            store.update("o-1", lambda _: {1, 2})

        assert isinstance(caught.value, TypeError)
        assert "store 'orders', key 'o-1'" in str(caught.value)
        assert store.get("o-1") == Versioned("placed", 1)
        # nothing recorded under the write id, and no version used up
        assert store.put("o-1", "paid", write_id="s-1/save").after == Versioned("paid", 2)


# -- threads --------------------------------------------------------------------------------


def test_concurrent_updates_of_one_key_lose_nothing(store: AnyStore) -> None:
    store.put("counter", 0)
    threads_count, each = 8, 25

    def work() -> None:
        for _ in range(each):
            store.update("counter", lambda count: count + 1)

    threads = [threading.Thread(target=work) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert store.get("counter") == Versioned(threads_count * each, threads_count * each + 1)


def test_concurrent_updates_through_several_connections_to_one_file_lose_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    with SqliteStore[str, int](path, "stock") as first:
        first.put("counter", 0)
    stores = [SqliteStore[str, int](path, "stock", busy_timeout=30.0) for _ in range(4)]
    each = 20

    def work(store: SqliteStore[str, int]) -> None:
        for _ in range(each):
            store.update("counter", lambda count: count + 1)

    threads = [threading.Thread(target=work, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert stores[0].get("counter") == Versioned(4 * each, 4 * each + 1)
    for store in stores:
        store.close()


# -- SqliteStore: the file --------------------------------------------------------------------


def test_values_versions_and_the_counter_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SqliteStore[str, object](path, "orders") as store:
        store.put("o-1", {"status": "placed"})
        store.put("o-2", "gone")
        store.delete("o-2")

    with SqliteStore[str, object](path, "orders") as store:
        assert store.get("o-1") == Versioned({"status": "placed"}, 1)
        assert store.get("o-2") is None
        assert store.put("o-2", "back").after == Versioned("back", 4)  # the delete took 3


def test_write_ids_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SqliteStore[str, str](path, "orders") as store:
        first = store.put("o-1", "placed", write_id="s-1/save")

    with SqliteStore[str, str](path, "orders") as store:
        assert store.put("o-1", "placed", write_id="s-1/save") == first
        store.undo("o-1", first, write_id="s-1/save")
    with SqliteStore[str, str](path, "orders") as store:
        with pytest.raises(ReusedWriteIdError):
            store.put("o-1", "placed", write_id="s-1/save")
        assert store.get("o-1") is None


def test_two_stores_share_a_file_each_with_its_own_table_and_counter(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with (
        SqliteStore[str, str](path, "orders") as orders,
        SqliteStore[str, int](path, "stock") as stock,
    ):
        orders.put("o-1", "placed", write_id="s-1/x")
        stock.put("o-1", 10, write_id="s-1/x")  # write ids are per store

        assert orders.get("o-1") == Versioned("placed", 1)
        assert stock.get("o-1") == Versioned(10, 1)
        assert orders.forget_writes("s-1") == 1
        assert stock.put("o-1", 11, write_id="s-1/x").after == Versioned(10, 1)

    tables = {row[0] for row in raw(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"orders", "stock", "fsaga_stores", "fsaga_store_writes"} <= tables


def test_the_table_holds_the_codecs_bytes(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    value = {"items": ["book", "pen"], "total": 12}
    with SqliteStore[str, object](path, "orders") as store:
        store.put("o-1", value)

    assert raw(path, "SELECT key, value, version FROM orders") == [
        ("o-1", JsonCodec().encode(value), 1)
    ]


def test_an_int_keyed_store_keeps_int_keys(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SqliteStore[int, str](path, "orders", key_type=int) as store:
        store.put(2**63 - 1, "max", write_id="s-1/a")
        store.put(-(2**63), "min")
        store.put(7, "seven")

        assert store.get(7) == Versioned("seven", 3)
        assert store.snapshot() == {
            -(2**63): Versioned("min", 2),
            7: Versioned("seven", 3),
            2**63 - 1: Versioned("max", 1),
        }
        assert store.put(2**63 - 1, "again", write_id="s-1/a").after == Versioned("max", 1)

    assert raw(path, "SELECT typeof(key) FROM orders GROUP BY typeof(key)") == [("integer",)]


def test_an_in_memory_database_works_and_is_private(tmp_path: Path) -> None:
    with SqliteStore[str, str](":memory:", "orders") as first:
        first.put("o-1", "placed")
        with SqliteStore[str, str](":memory:", "orders") as second:
            assert second.get("o-1") is None
        assert first.get("o-1") == Versioned("placed", 1)


@pytest.mark.parametrize("name", ["order", "select", "Table", "_"])
def test_a_store_may_be_named_like_an_sql_keyword(name: str, tmp_path: Path) -> None:
    with SqliteStore[str, int](tmp_path / "s.db", name) as store:
        store.put("k", 1, write_id="s-1/k")

        assert store.snapshot() == {"k": Versioned(1, 1)}
        assert store.forget_writes("s-1") == 1


def test_a_table_of_the_application_with_the_stores_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    raw(path, "CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)")
    raw(path, "INSERT INTO orders (id, total) VALUES (1, 12)")

    with pytest.raises(StoreError, match="not an fsaga store") as caught:
        SqliteStore(path, "Orders")

    assert caught.value.store == "Orders"
    assert raw(path, "SELECT id, total FROM orders") == [(1, 12)]


def test_reopening_a_store_with_another_key_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    SqliteStore[str, str](path, "orders").close()

    with pytest.raises(StoreError, match="holds str keys; it was opened with key_type=int"):
        SqliteStore(path, "orders", key_type=int)


def test_a_store_written_by_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    SqliteStore[str, str](path, "orders").close()
    raw(path, "UPDATE fsaga_stores SET schema_version = 2 WHERE name = 'orders'")

    with pytest.raises(StoreError, match=r"created by a newer fsaga \(schema 2; this one knows 1"):
        SqliteStore(path, "orders")


def test_a_registered_store_whose_table_was_dropped_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    SqliteStore[str, str](path, "orders").close()
    raw(path, "DROP TABLE orders")

    with pytest.raises(StoreError, match="its table is missing"):
        SqliteStore(path, "orders")


def test_opening_a_store_while_another_connection_holds_the_lock_is_unavailable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    SqliteStore[str, str](path, "orders").close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailableError, match="database is locked"):
            SqliteStore(path, "orders", busy_timeout=0)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_file_in_a_missing_directory_is_a_misconfiguration_not_unavailable(
    tmp_path: Path,
) -> None:
    """Not a `StoreUnavailableError` (the retryable kind) saying only "unable to open
    database file": no retry can create the directory."""
    missing = tmp_path / "missing-folder" / "s.db"

    with pytest.raises(StoreError) as caught:
        SqliteStore(missing, "orders")

    assert not isinstance(caught.value, StoreUnavailableError)
    assert str(caught.value) == (
        f"store 'orders': cannot open {str(missing)!r}: its directory "
        f"{str(tmp_path / 'missing-folder')!r} does not exist: create it first"
    )


def test_a_directory_given_as_the_store_file_is_a_misconfiguration(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory, not a database file") as caught:
        SqliteStore(tmp_path, "orders")

    assert not isinstance(caught.value, StoreUnavailableError)


def test_the_default_busy_timeout_is_five_seconds(tmp_path: Path) -> None:
    with SqliteStore[str, str](tmp_path / "s.db", "orders") as store:
        assert store.pragmas() == {"journal_mode": "wal", "synchronous": 2, "busy_timeout": 5_000}


def test_a_file_system_without_wal_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite keeps the old journal mode, silently, where the file system cannot share memory
    between processes. No such file system can be mounted here, so SQLite's answer is stood in
    for at the one place it is read."""
    monkeypatch.setattr("fsaga.stores.sqlite.switch_to_wal", lambda connection, timeout: "delete")

    with pytest.raises(StoreError) as caught:
        SqliteStore(tmp_path / "s.db", "orders")

    assert not isinstance(caught.value, StoreUnavailableError)
    assert str(caught.value) == (
        f"store 'orders': {str(tmp_path / 's.db')!r} cannot use WAL mode (SQLite kept "
        "'delete'); the file system may lack shared memory support"
    )


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not an SQLite database, just some text " * 100)

    with pytest.raises(StoreError) as caught:
        SqliteStore(path, "orders")

    assert not isinstance(caught.value, StoreUnavailableError)
    assert "store 'orders'" in str(caught.value)


def test_an_unreadable_value_is_a_store_error_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SqliteStore[str, str](path, "orders") as store:
        store.put("o-1", "placed")
        raw(path, "UPDATE orders SET value = X'FF00' WHERE key = 'o-1'")

        with pytest.raises(StoreError, match="store 'orders', key 'o-1': unreadable value"):
            store.get("o-1")


def test_a_write_while_another_connection_holds_the_lock_is_unavailable_and_writes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    with SqliteStore[str, str](path, "orders", busy_timeout=0) as store:
        store.put("o-1", "placed")
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreUnavailableError) as caught:
                store.put("o-1", "paid", write_id="s-1/save")
            assert store.get("o-1") == Versioned("placed", 1)  # readers are not blocked
        finally:
            holder.execute("ROLLBACK")
            holder.close()

        assert caught.value.store == "orders"
        assert "store 'orders'" in str(caught.value)
        assert store.get("o-1") == Versioned("placed", 1)
        assert store.put("o-1", "paid", write_id="s-1/save").after == Versioned("paid", 2)
