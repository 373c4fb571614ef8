"""The keys, the Lua script and the operations of `RedisStore` and `AsyncRedisStore`, written once.

A store's data lives under keys that share one hash tag, ``{PREFIX:NAME}``, so a Redis Cluster
keeps them in one slot (the script touches several of them at once):

- ``{P:N}:meta``: a hash of the store's key type, schema version and version counter
  (``last_version``);
- ``{P:N}:values``: a hash of each key's encoded value;
- ``{P:N}:versions``: a hash of each key's version: its value's, or its deletion's when it has
  no value (a key with neither never held one);
- ``{P:N}:write:WRITE_ID``: a hash of what a write id recorded (the key, the states before and
  after, whether it was undone), and ``{P:N}:writes``, a sorted set of the write ids, for
  `forget_writes`.

A write reads the key's state and its write id's record (the `READ` script), decides in Python
(`fsaga.stores._writes`, as every store does), and applies the decision with one Lua script,
`SET_IF_UNCHANGED`: a compare-and-set that writes only if the key's version and the write
id's record are still what was read, takes the next version, writes the key and records the
change, atomically. When something changed in between it writes nothing and the write starts
over from the read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, TypeAlias, final

from fsaga.stores._writes import Decide, Operation, RawState, Receipt, Write, Written
from fsaga.stores.errors import StoreError
from fsaga.stores.protocol import Change, Deleted, Versioned

__all__ = [
    "FORGET",
    "READ",
    "REGISTER",
    "SCHEMA_VERSION",
    "SCRIPTS",
    "SET_IF_UNCHANGED",
    "SNAPSHOT",
    "Found",
    "Keys",
    "Range",
    "Request",
    "Run",
    "ScriptName",
    "check_prefix",
    "forget_writes",
    "get",
    "read",
    "registered",
    "snapshot",
    "write",
]

SCHEMA_VERSION: Final = 1

SET_IF_UNCHANGED: Final = """
-- KEYS: meta, values, versions, write ids, the write id's record (the meta key when none)
-- ARGV: key, version read (0: none), record read ('-': no write id; '0' none, '1', '2' undone),
--       to ('value', 'deleted', 'absent', 'same'), data, version ('' takes the next one),
--       record ('none', 'change', 'undone'), write id,
--       state before: kind ('n', 'v', 'd'), data, version
local key = ARGV[1]
if tonumber(redis.call('HGET', KEYS[3], key) or '0') ~= tonumber(ARGV[2]) then
  return false
end
if ARGV[3] ~= '-' then
  local undone = redis.call('HGET', KEYS[5], 'undone')
  local seen = '0'
  if undone == '1' then seen = '2' elseif undone then seen = '1' end
  if seen ~= ARGV[3] then return false end
end
local to, version = ARGV[4], ARGV[6]
if (to == 'value' or to == 'deleted') and version == '' then
  version = tostring(redis.call('HINCRBY', KEYS[1], 'last_version', 1))
end
if to == 'value' then
  redis.call('HSET', KEYS[2], key, ARGV[5])
  redis.call('HSET', KEYS[3], key, version)
elseif to == 'deleted' then
  redis.call('HDEL', KEYS[2], key)
  redis.call('HSET', KEYS[3], key, version)
elseif to == 'absent' then
  redis.call('HDEL', KEYS[2], key)
  redis.call('HDEL', KEYS[3], key)
end
if ARGV[7] == 'change' then
  local kind, data, number = ARGV[9], ARGV[10], ARGV[11]
  if to == 'value' then kind, data, number = 'v', ARGV[5], version
  elseif to == 'deleted' then kind, data, number = 'd', '', version end
  redis.call('HSET', KEYS[5], 'key', key, 'applied', '1', 'undone', '0',
    'bk', ARGV[9], 'bv', ARGV[10], 'bn', ARGV[11], 'ak', kind, 'av', data, 'an', number)
  redis.call('ZADD', KEYS[4], 0, ARGV[8])
elseif ARGV[7] == 'undone' then
  if redis.call('EXISTS', KEYS[5]) == 0 then
    redis.call('HSET', KEYS[5], 'key', key, 'applied', '0')
  end
  redis.call('HSET', KEYS[5], 'undone', '1')
  redis.call('ZADD', KEYS[4], 0, ARGV[8])
end
return version
"""


def check_prefix(store: str, prefix: object) -> str:
    """`prefix` if it can start a store's keys: a non-empty str without ``{`` or ``}`` (they
    would break the hash tag)."""
    if not isinstance(prefix, str):
        raise TypeError(f"store {store!r}: prefix must be a str, got {prefix!r}")
    if not prefix or "{" in prefix or "}" in prefix:
        raise ValueError(
            f"store {store!r}: prefix must be a non-empty str without '{{' or '}}', got {prefix!r}"
        )
    return prefix


@final
@dataclass(frozen=True, slots=True)
class Keys:
    """The Redis keys of one store, and its key type (``"str"`` or ``"int"``)."""

    name: str
    prefix: str
    key_type: str

    @property
    def tag(self) -> str:
        return f"{{{self.prefix}:{self.name}}}"

    @property
    def meta(self) -> str:
        return f"{self.tag}:meta"

    @property
    def values(self) -> str:
        return f"{self.tag}:values"

    @property
    def versions(self) -> str:
        return f"{self.tag}:versions"

    @property
    def writes(self) -> str:
        return f"{self.tag}:writes"

    def receipt(self, write_id: str) -> str:
        return f"{self.tag}:write:{write_id}"

    def key_of(self, text: bytes) -> object:
        decoded = text.decode()
        return int(decoded) if self.key_type == "int" else decoded


# -- the other scripts: reads, and forgetting write ids ---------------------------------------

READ: Final = """
-- KEYS: values, versions, the write id's record (the values key when none); ARGV: key
local record = {}
if KEYS[3] ~= KEYS[1] then record = redis.call('HGETALL', KEYS[3]) end
return {redis.call('HGET', KEYS[1], ARGV[1]), redis.call('HGET', KEYS[2], ARGV[1]), record}
"""

REGISTER: Final = """
-- KEYS: meta; ARGV: key type, schema version
redis.call('HSETNX', KEYS[1], 'key_type', ARGV[1])
redis.call('HSETNX', KEYS[1], 'schema_version', ARGV[2])
return redis.call('HMGET', KEYS[1], 'key_type', 'schema_version')
"""

SNAPSHOT: Final = """
-- KEYS: values, versions
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
"""

FORGET: Final = """
-- KEYS: write ids, then each write id's record; ARGV: the write ids
local dropped = 0
for index, write_id in ipairs(ARGV) do
  if redis.call('ZREM', KEYS[1], write_id) == 1 then
    redis.call('DEL', KEYS[index + 1])
    dropped = dropped + 1
  end
end
return dropped
"""

SCRIPTS: Final = {
    "set_if_unchanged": SET_IF_UNCHANGED,
    "read": READ,
    "register": REGISTER,
    "snapshot": SNAPSHOT,
    "forget": FORGET,
}
"""Every script a store registers, by name."""

ScriptName: TypeAlias = Literal["set_if_unchanged", "read", "register", "snapshot", "forget"]


# -- what an operation asks of Redis ----------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class Run:
    """Run a script; answered with its reply."""

    script: ScriptName
    keys: tuple[str, ...]
    arguments: tuple[str | bytes | int, ...] = ()


@final
@dataclass(frozen=True, slots=True)
class Range:
    """``ZRANGEBYLEX key [start (end``: answered with the members, as bytes."""

    key: str
    start: str
    end: str


Request: TypeAlias = Run | Range


@final
@dataclass(frozen=True, slots=True)
class Found:
    """What `READ` found: the key's state, its write id's record, and that record's state as
    `SET_IF_UNCHANGED` checks it (``-``: no write id, ``0``: none, ``1``, ``2``: undone)."""

    state: RawState
    receipt: Receipt | None
    seen: Literal["-", "0", "1", "2"]


def read(keys: Keys, key: str, write_id: str | None) -> Operation[Request, object, Found]:
    """The key's state, and its write id's record."""
    record = keys.values if write_id is None else keys.receipt(write_id)
    reply = yield Run("read", (keys.values, keys.versions, record), (key,))
    assert isinstance(reply, list)
    data, version, fields = reply
    state: RawState = None
    if data is not None:
        state = Versioned(_bytes(data), int(_text(version)))
    elif version is not None:
        state = Deleted(int(_text(version)))
    if write_id is None:
        return Found(state, None, "-")
    assert isinstance(fields, list)
    if not fields:
        return Found(state, None, "0")
    named = {
        _text(name): _bytes(value) for name, value in zip(fields[::2], fields[1::2], strict=True)
    }
    change = None
    if named["applied"] == b"1":
        before = _state_of(named["bk"], named["bv"], named["bn"])
        change = Change(before, _state_of(named["ak"], named["av"], named["an"]))
    undone = named["undone"] == b"1"
    return Found(state, Receipt(keys.key_of(named["key"]), change, undone), "2" if undone else "1")


def registered(keys: Keys, *, check: bool) -> Operation[Request, object, None]:
    """With `check`, register the store if it is new, and check its registration (key type,
    schema version)."""
    if not check:
        return
    reply = yield Run("register", (keys.meta,), (keys.key_type, SCHEMA_VERSION))
    assert isinstance(reply, list)
    key_type, schema_version = (_text(item) for item in reply)
    if int(schema_version) > SCHEMA_VERSION:
        raise StoreError(
            keys.name,
            f"store {keys.name!r} under {keys.tag!r} was created by a newer fsaga (schema "
            f"{schema_version}; this one knows {SCHEMA_VERSION})",
        )
    if key_type != keys.key_type:
        raise StoreError(
            keys.name,
            f"store {keys.name!r} under {keys.tag!r} holds {key_type} keys; it was opened with "
            f"key_type={keys.key_type}",
        )


def get(
    keys: Keys, key: object, *, check: bool
) -> Operation[Request, object, Versioned[bytes] | None]:
    """The key's value, still encoded."""
    yield from registered(keys, check=check)
    found = yield from read(keys, str(key), None)
    return found.state if isinstance(found.state, Versioned) else None


def snapshot(
    keys: Keys, *, check: bool
) -> Operation[Request, object, list[tuple[object, Versioned[bytes]]]]:
    """Every key and its value, still encoded, in key order."""
    yield from registered(keys, check=check)
    reply = yield Run("snapshot", (keys.values, keys.versions))
    assert isinstance(reply, list)
    flat_values, flat_versions = reply
    values = dict(zip(flat_values[::2], flat_values[1::2], strict=True))
    versions = dict(zip(flat_versions[::2], flat_versions[1::2], strict=True))

    def order(text: bytes) -> tuple[int, bytes]:
        return (int(text), b"") if keys.key_type == "int" else (0, text)

    texts = sorted((_bytes(text) for text in values), key=order)
    return [
        (keys.key_of(text), Versioned(_bytes(values[text]), int(_text(versions[text]))))
        for text in texts
    ]


def forget_writes(keys: Keys, saga_id: str, *, check: bool) -> Operation[Request, object, int]:
    """Drop the records of `saga_id`'s write ids; the number dropped."""
    yield from registered(keys, check=check)
    # Every string that starts with "id/" sorts between "id/" and "id0" ("0" follows "/").
    found = yield Range(keys.writes, f"{saga_id}/", f"{saga_id}0")
    assert isinstance(found, list)
    write_ids = [_bytes(write_id).decode() for write_id in found]
    if not write_ids:
        return 0
    records = tuple(keys.receipt(write_id) for write_id in write_ids)
    dropped = yield Run("forget", (keys.writes, *records), tuple(write_ids))
    assert isinstance(dropped, int)
    return dropped


# -- writes ----------------------------------------------------------------------------------


def write(
    keys: Keys, key: object, write_id: str | None, decide: Decide, *, check: bool
) -> Operation[Request, object, Written]:
    """Read, decide and apply, again from the read while something changes in between; with
    `check`, register the store first, or check its registration."""
    yield from registered(keys, check=check)
    text = str(key)
    while True:
        answer = yield from read(keys, text, write_id)
        decision = decide(answer.state, answer.receipt)
        if decision is None:
            return None
        if isinstance(decision, Change):
            return decision, True
        taken = yield _apply(keys, text, decision, answer)
        if taken is not None:
            version = int(_text(taken)) if taken != b"" else None
            return decision.change(version), False


def _apply(keys: Keys, text: str, decision: Write, answer: Found) -> Run:
    write_id = decision.write_id
    receipt = keys.meta if write_id is None else keys.receipt(write_id)
    before_kind, before_data, before_version = _columns(decision.found)
    return Run(
        "set_if_unchanged",
        (keys.meta, keys.values, keys.versions, keys.writes, receipt),
        (
            text,
            _version(decision.found),
            answer.seen,
            decision.to,
            decision.data if decision.data is not None else b"",
            "" if decision.version is None else decision.version,
            decision.record,
            write_id or "",
            before_kind,
            before_data,
            before_version,
        ),
    )


def _version(state: RawState) -> int:
    return 0 if state is None else state.version


def _columns(state: RawState) -> tuple[str, bytes, str]:
    if isinstance(state, Versioned):
        return "v", state.value, str(state.version)
    if isinstance(state, Deleted):
        return "d", b"", str(state.version)
    return "n", b"", ""


def _state_of(kind: bytes, data: bytes, version: bytes) -> RawState:
    if kind == b"v":
        return Versioned(data, int(version))
    if kind == b"d":
        return Deleted(int(version))
    return None


def _bytes(value: object) -> bytes:
    assert isinstance(value, bytes), value
    return value


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
