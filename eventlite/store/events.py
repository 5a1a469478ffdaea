"""The event store: streams of events, each in its own order, and one global log.

:class:`EventStore` states the contract once; :class:`~eventlite.memory.InMemoryEventStore`
and :class:`~eventlite.sqlite.SQLiteEventStore` implement it, and
``eventlite.testing.store_contract`` checks that they (and any third-party backend) do.

Followers of the log (durable subscribers, projections, the CLI) read it through
:meth:`EventStore.read_records`, which hands out each stored event as a :class:`LogRecord`
before decoding, and decode with :meth:`EventStore.decode`: so a row that cannot be decoded
is still a row they can name, skip or dead-letter. One reader and one decoder per backend.
"""

from __future__ import annotations

import abc
import enum
import json
import math
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple, TypeVar

from ..envelope import Envelope
from ..exceptions import ConcurrencyError, DuplicateEventError

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "DuplicateEventError",
    "EventStore",
    "ExpectedVersion",
    "LogRecord",
    "StreamAppend",
    "StreamInfo",
    "StreamState",
]

_Self = TypeVar("_Self", bound="EventStore")


class StreamState(enum.Enum):
    """The expected versions that are not a number: see :data:`ANY`, :data:`NO_STREAM`,
    :data:`STREAM_EXISTS`."""

    ANY = "ANY"
    NO_STREAM = "NO_STREAM"
    STREAM_EXISTS = "STREAM_EXISTS"

    def __repr__(self) -> str:
        return self.value

    __str__ = __repr__


ANY = StreamState.ANY
"""Append whatever version the stream is at (no concurrency check)."""
NO_STREAM = StreamState.NO_STREAM
"""Append only if the stream has no events yet (the same as ``expected_version=0``)."""
STREAM_EXISTS = StreamState.STREAM_EXISTS
"""Append only if the stream has at least one event."""

ExpectedVersion = int | StreamState
"""What ``expected_version`` accepts: a version (0 for no stream) or a :class:`StreamState`."""


class StreamAppend(NamedTuple):
    """One stream's part of :meth:`EventStore.append_many`; a plain tuple works as well."""

    stream_id: str
    """The stream to append to."""
    events: Sequence[Any]
    """Messages (each wrapped in a new :class:`Envelope`) or envelopes."""
    expected_version: ExpectedVersion = ANY
    """The version the stream must be at, or a :class:`StreamState`."""


class LogRecord(NamedTuple):
    """One stored event as its backend holds it, not yet decoded.

    What :meth:`EventStore.read_records` yields: enough to decode it
    (:meth:`EventStore.decode`), and enough to name it, route it by type or stream, or keep
    it raw in a dead letter (:meth:`raw`) when it cannot be decoded.
    """

    position: int
    """The event's global position."""
    stream_id: str
    """Its stream."""
    version: int
    """Its version within the stream."""
    id: str
    """The event id."""
    type: str
    """The registered type name it was stored under."""
    schema_version: int
    """The schema version of ``data``."""
    data: Any
    """The message as stored: JSON text in a durable backend."""
    correlation_id: str
    """The flow it belongs to."""
    causation_id: str | None
    """The message that caused it, if any."""
    user_id: str | None
    """The user it was recorded for, if any."""
    headers: Any
    """The headers as stored (JSON text, or None for none)."""
    timestamp_us: int
    """When it was recorded, in microseconds since the epoch (UTC)."""

    def raw(self) -> str:
        """The record as one JSON object, for a dead letter when it cannot be decoded.

        Whatever the columns hold (bytes, text that is not valid UTF-8, numbers out of any
        range) the result is valid JSON text that can be stored: bytes become hex, other
        values their ``repr`` when they are not JSON themselves.
        """
        return _raw_json(self)


class StreamInfo(NamedTuple):
    """One stream as :meth:`EventStore.list_streams` gives it."""

    stream_id: str
    """The stream."""
    version: int
    """The version of its last event."""
    last_timestamp_us: int | None
    """When its last event was recorded, in microseconds since the epoch (UTC), as stored
    (like :attr:`LogRecord.timestamp_us`); None when that event cannot be found."""


class EventStore(abc.ABC):
    """Streams of events with a global, gap-free order. The contract every backend keeps.

    **Streams.** A stream is a sequence of events under a ``stream_id`` (a non-empty
    string), numbered by ``version`` from 1 with no gap. A stream exists from its first
    event; its version is then the version of its last event, and 0 before that.

    **Positions.** Every stored event also has a ``position`` in the store's single log:
    1, 2, 3, … with no gap, in commit order. Positions are given at commit, so a reader that
    has seen position N never later finds a new event below N: a consumer can remember
    the last position it handled and resume after it.

    **Envelopes.** Appended events are messages (wrapped in a new :class:`Envelope`, so
    they take their correlation from the message being handled) or envelopes (whose id,
    metadata and timestamp are kept). Reads return envelopes whose ``id``, ``type``,
    ``message``, ``metadata`` and ``timestamp`` (microsecond precision) equal what was
    appended, with ``stream_id``, ``version`` and ``position`` set.

    **Expected versions.** Each append names the version it expects the stream to be at:
    an ``int`` (0 meaning the stream does not exist), :data:`ANY` (no check),
    :data:`NO_STREAM` or :data:`STREAM_EXISTS`. If the stream is elsewhere the append
    raises :class:`ConcurrencyError` with the stream id, what was expected and the actual
    version, and writes nothing. A negative int raises ``ValueError``; anything else that
    is not an int or a :class:`StreamState` raises ``TypeError``.

    **Atomicity.** :meth:`append_many` writes several streams in one transaction: all or
    nothing, and a failed batch uses no position. Within one call the parts are applied in
    order, so two parts may append to the same stream.

    **Errors.** Event ids are unique in the store: appending a stored id raises
    :class:`DuplicateEventError`. A stored event that cannot be decoded raises
    :class:`UnknownMessageType` or :class:`MessageDecodeError` naming its position. The
    storage underneath failing raises :class:`StorageError`. Using a closed store raises
    :class:`StorageError`.

    **Threads.** Every method may be called from any thread at any time.
    """

    def append(
        self,
        stream_id: str,
        events: Sequence[Any],
        *,
        expected_version: ExpectedVersion = ANY,
    ) -> list[Envelope]:
        """Append ``events`` to the end of one stream, atomically; returns them as recorded.

        The result has one envelope per event, in order, with ``stream_id``, ``version``
        and ``position`` set; the events of one call get consecutive versions and
        consecutive positions. An empty ``events`` checks ``expected_version`` and writes
        nothing. Raises :class:`ConcurrencyError` (nothing written) when the stream is not
        at ``expected_version``.
        """
        return self.append_many([StreamAppend(stream_id, events, expected_version)])[0]

    @abc.abstractmethod
    def append_many(
        self, appends: Iterable[StreamAppend | tuple[Any, ...]]
    ) -> list[list[Envelope]]:
        """Append to several streams in one atomic transaction; one result list per part.

        Each part is a :class:`StreamAppend` or a ``(stream_id, events)`` or
        ``(stream_id, events, expected_version)`` tuple. Parts are checked and written in
        order; if any raises (:class:`ConcurrencyError`, :class:`DuplicateEventError`, …)
        nothing of the call is written and no position is used.
        """

    @abc.abstractmethod
    def read_stream(
        self,
        stream_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        *,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[Envelope]:
        """The events of one stream with ``from_version <= version <= to_version``.

        ``to_version=None`` means up to the last event. Forwards the list is in version
        order and ``limit`` keeps the first (oldest) events of the range; with
        ``backwards=True`` it is newest first and ``limit`` keeps the newest, so
        ``read_stream(s, backwards=True, limit=1)`` is the last event. A missing stream or
        an empty range gives ``[]``. The list is one consistent snapshot; read long streams
        in slices with ``from_version``. Raises ``ValueError`` for ``from_version < 1`` or
        a negative ``limit``.
        """

    @abc.abstractmethod
    def read_all(
        self,
        from_position: int = 1,
        limit: int | None = None,
        types: Iterable[str | type] | None = None,
    ) -> Iterator[Envelope]:
        """The global log from ``from_position``, in position order, as a lazy iterator.

        ``limit`` caps how many events are yielded; ``types`` keeps only events of these
        registered type names (or classes). Events are fetched in pages, so memory does not
        grow with the log, and the iterator holds no lock or snapshot between pages: it
        sees events committed while it runs, and, positions being given in commit order,
        never misses one below a position it has already yielded. Raises ``ValueError``
        for ``from_position < 1`` or a negative ``limit``.
        """

    @abc.abstractmethod
    def read_records(
        self, after: int = 0, limit: int = 1000, types: frozenset[str] | None = None
    ) -> list[LogRecord]:
        """Up to ``limit`` stored events with a position above ``after``, in position
        order, undecoded; with ``types``, only those stored under these type names.

        The log reader of followers: unlike :meth:`read_all` it never fails on a row that
        cannot be decoded. Raises ``ValueError`` for ``after < 0`` or ``limit < 1``.
        """

    @abc.abstractmethod
    def record_at(self, position: int) -> LogRecord | None:
        """The stored event at ``position``, undecoded; None when there is none."""

    @abc.abstractmethod
    def decode(self, record: LogRecord) -> Envelope:
        """The envelope of a record from :meth:`read_records`, as :meth:`read_all` would
        give it. Raises :class:`UnknownMessageType` or :class:`MessageDecodeError` naming
        the record's position when it cannot be decoded."""

    def read_messages(
        self, after: int = 0, limit: int = 1000, types: frozenset[str] | None = None
    ) -> list[tuple[int, Any]]:
        """``(position, message)`` of the events :meth:`read_records` would return, decoded
        as :meth:`decode` would, without building their envelopes: the cheaper read for
        followers that need only the message (projections).

        Raises like :meth:`decode` at the first event that cannot be decoded, and like
        :meth:`read_records` for bad arguments. Backends may override it with a leaner
        query; the default decodes what :meth:`read_records` returns.
        """
        return [
            (r.position, self.decode(r).message) for r in self.read_records(after, limit, types)
        ]

    def find_records(
        self,
        after: int = 0,
        limit: int = 1000,
        *,
        types: Collection[str] | None = None,
        streams: Collection[str] | None = None,
        correlation_ids: Collection[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[LogRecord]:
        """Up to ``limit`` stored events with a position above ``after`` that match every
        filter given, in position order, undecoded (like :meth:`read_records`): stored
        under one of ``types``, in one of ``streams``, in one of the flows
        ``correlation_ids``, recorded at or after ``since`` and before ``until`` (aware
        datetimes; a row whose time is not a number matches no time filter). An empty
        collection matches nothing.

        The search of tools and operators (the CLI's ``events`` and ``trace``): a backend
        answers it from an index where it has one, else by reading the log from ``after``
        on, so page through a long log with ``after``. Raises ``ValueError`` like
        :meth:`read_records`, and for a naive datetime. The default reads
        :meth:`read_records` and filters; backends override it with a query.
        """
        validate_records(after, limit)
        match = RecordFilter(types, streams, correlation_ids, since, until)
        if match.empty:
            return []
        out: list[LogRecord] = []
        while len(out) < limit:
            page = self.read_records(after, 1000, match.types)
            if not page:
                break
            out.extend(r for r in page if match(r))
            after = page[-1].position
        return out[:limit]

    def record_by_id(self, event_id: str) -> LogRecord | None:
        """The stored event whose id is ``event_id``, undecoded; None when there is none.

        The default reads the whole log; backends override it with an indexed lookup.
        """
        if not isinstance(event_id, str):
            raise TypeError(f"event_id must be a str, got {type(event_id).__name__}")
        after = 0
        while True:
            page = self.read_records(after, 1000)
            if not page:
                return None
            for record in page:
                if record.id == event_id:
                    return record
            after = page[-1].position

    def list_streams(
        self, *, prefix: str | None = None, after: str | None = None, limit: int = 1000
    ) -> list[StreamInfo]:
        """Up to ``limit`` streams in the order of their ids (by code point), each with its
        version and the time of its last event: those whose id starts with ``prefix``,
        and comes after ``after`` (to page through many streams). Raises ``ValueError``
        for ``limit < 1``.

        The default reads the whole log; backends override it with a query.
        """
        validate_streams(prefix, after, limit)
        last: dict[str, tuple[int, Any]] = {}
        position = 0
        while True:
            page = self.read_records(position, 1000)
            if not page:
                break
            for r in page:
                if type(r.stream_id) is str and type(r.version) is int:
                    known = last.get(r.stream_id)
                    if known is None or r.version > known[0]:
                        last[r.stream_id] = (r.version, r.timestamp_us)
            position = page[-1].position
        ids = sorted(
            s
            for s in last
            if (prefix is None or s.startswith(prefix)) and (after is None or s > after)
        )
        return [StreamInfo(s, last[s][0], last[s][1]) for s in ids[:limit]]

    def count_streams(self) -> int:
        """How many streams the store holds. The default counts :meth:`list_streams`."""
        n = 0
        after: str | None = None
        while True:
            page = self.list_streams(after=after, limit=1000)
            if not page:
                return n
            n += len(page)
            after = page[-1].stream_id

    @abc.abstractmethod
    def stream_version(self, stream_id: str) -> int:
        """The version of the stream's last event; 0 when the stream does not exist."""

    @abc.abstractmethod
    def head_position(self) -> int:
        """The position of the last committed event; 0 for an empty store."""

    def lock_log(self) -> None:
        """Keep every other writer, in any process, from appending to the log until the
        calling thread's open ``storage.transaction()`` ends: the head read after this
        call stays the head until that commit (or rollback). A follower that must hand
        over at the head without a commit slipping in between (a projection going live
        after a rebuild) calls it first in its transaction.

        The default does nothing, which is right for a backend whose write transaction
        already shuts out every other writer (SQLite, memory); PostgreSQL takes the log's
        append lock, and raises :class:`StorageError` outside a transaction.
        """
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store's resources; idempotent. Afterwards every call raises
        :class:`StorageError`."""

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- helpers shared by the backends ------------------------------------------------------


def check_version(stream_id: str, expected: ExpectedVersion, actual: int) -> None:
    """Raise :class:`ConcurrencyError` unless a stream at ``actual`` meets ``expected``."""
    if expected is ANY:
        return
    if expected is NO_STREAM:
        ok = actual == 0
    elif expected is STREAM_EXISTS:
        ok = actual > 0
    else:
        ok = expected == actual
    if not ok:
        raise ConcurrencyError(stream_id, expected, actual)


def validate_expected(expected: object) -> ExpectedVersion:
    """``expected`` if it is a valid expected version; else ``TypeError``/``ValueError``."""
    if isinstance(expected, StreamState):
        return expected
    if isinstance(expected, bool) or not isinstance(expected, int):
        raise TypeError(
            f"expected_version must be an int, ANY, NO_STREAM or STREAM_EXISTS, got {expected!r}"
        )
    if expected < 0:
        raise ValueError(f"expected_version must be >= 0, got {expected}")
    return expected


def validate_stream_id(stream_id: object) -> str:
    """``stream_id`` if it is a non-empty string; else ``TypeError``/``ValueError``."""
    if not isinstance(stream_id, str):
        raise TypeError(f"stream_id must be a str, got {type(stream_id).__name__}")
    if not stream_id:
        raise ValueError("stream_id must not be empty")
    return stream_id


def normalize_appends(
    appends: Iterable[StreamAppend | tuple[Any, ...]],
) -> list[tuple[str, list[Envelope], ExpectedVersion]]:
    """Check each part of an ``append_many`` call and wrap its messages in envelopes."""
    out: list[tuple[str, list[Envelope], ExpectedVersion]] = []
    for part in appends:
        if type(part) is not StreamAppend and (
            not isinstance(part, tuple) or len(part) not in (2, 3)
        ):
            raise TypeError(
                "each append is (stream_id, events) or (stream_id, events, expected_version), "
                f"got {part!r}"
            )
        stream_id = part[0]
        if type(stream_id) is not str or not stream_id:
            stream_id = validate_stream_id(stream_id)
        expected = part[2] if len(part) == 3 else ANY
        if type(expected) is not StreamState:
            expected = validate_expected(expected)
        events = part[1]
        # a list (what the unit of work hands over) needs no look at its type; anything
        # else must be an iterable of messages, and text or a mapping is not one
        if type(events) is not list and (
            isinstance(events, (str, bytes, Mapping)) or not isinstance(events, Iterable)
        ):
            raise TypeError(f"events must be a sequence of messages, got {type(events).__name__}")
        envelopes = [
            e if type(e) is Envelope or isinstance(e, Envelope) else Envelope(e) for e in events
        ]
        out.append((stream_id, envelopes, expected))
    return out


def validate_range(from_version: int, to_version: int | None, limit: int | None) -> None:
    """``ValueError`` for arguments :meth:`EventStore.read_stream` refuses."""
    if from_version < 1:
        raise ValueError(f"from_version must be >= 1, got {from_version}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    del to_version


def validate_read_all(from_position: int, limit: int | None) -> None:
    """``ValueError`` for arguments :meth:`EventStore.read_all` refuses."""
    if from_position < 1:
        raise ValueError(f"from_position must be >= 1, got {from_position}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")


def type_names(types: Iterable[str | type] | None) -> frozenset[str] | None:
    """The type names a ``types=`` filter selects (classes by their registered name)."""
    if types is None:
        return None
    if isinstance(types, (str, type)):
        types = [types]
    names = set()
    for t in types:
        if isinstance(t, str):
            names.add(t)
        elif isinstance(t, type):
            names.add(t.__dict__.get("__eventlite_name__", t.__name__))
        else:
            raise TypeError(f"types must hold type names or classes, got {t!r}")
    return frozenset(names)


def validate_records(after: int, limit: int) -> None:
    """``ValueError`` for arguments :meth:`EventStore.read_records` refuses."""
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise ValueError(f"after must be an int >= 0, got {after!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an int >= 1, got {limit!r}")


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"hex": bytes(value).hex()}
    return repr(value)


def _raw_json(record: LogRecord) -> str:
    fields = {name: _json_safe(getattr(record, name)) for name in LogRecord._fields}
    return json.dumps(fields, ensure_ascii=False, allow_nan=False)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MAX_INT = (1 << 63) - 1


def micros(moment: datetime, what: str = "a time") -> int:
    """An aware datetime as microseconds since the epoch, the unit the log stores times
    in; ``ValueError`` for a naive one (for backends)."""
    if not isinstance(moment, datetime):
        raise TypeError(f"{what} must be a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime (with a time zone), got {moment!r}")
    return (moment - _EPOCH) // timedelta(microseconds=1)


def validate_streams(prefix: object, after: object, limit: object) -> None:
    """``ValueError``/``TypeError`` for arguments :meth:`EventStore.list_streams` refuses."""
    for name, value in (("prefix", prefix), ("after", after)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_INT:
        raise ValueError(f"limit must be an int from 1 to 2**63 - 1, got {limit!r}")


def prefix_end(prefix: str) -> str | None:
    """The first string after every string that starts with ``prefix``, in code point
    order (None when there is none): ``s >= prefix and s < prefix_end(prefix)`` selects the
    strings with that prefix with a range an index can serve (for backends)."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code == 0xD800:
            code = 0xE000  # surrogates are not text a store holds
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def _strings(values: Collection[str] | None, what: str) -> frozenset[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        raise TypeError(f"{what} must be a collection of str, not one str")
    out = frozenset(values)
    for value in out:
        if not isinstance(value, str):
            raise TypeError(f"{what} must hold str, got {value!r}")
    return out


class RecordFilter:
    """The filters of :meth:`EventStore.find_records`, checked; call it with a record to
    know whether it matches (for backends that filter in Python)."""

    __slots__ = ("correlation_ids", "since", "streams", "types", "until")

    def __init__(
        self,
        types: Collection[str] | None,
        streams: Collection[str] | None,
        correlation_ids: Collection[str] | None,
        since: datetime | None,
        until: datetime | None,
    ) -> None:
        self.types = _strings(types, "types")
        """The type names, or None for any."""
        self.streams = _strings(streams, "streams")
        """The stream ids, or None for any."""
        self.correlation_ids = _strings(correlation_ids, "correlation_ids")
        """The flows, or None for any."""
        self.since = None if since is None else micros(since, "since")
        """The earliest time in microseconds, or None."""
        self.until = None if until is None else micros(until, "until")
        """The time in microseconds before which events must be, or None."""

    @property
    def empty(self) -> bool:
        """Whether nothing can match (an empty collection was given)."""
        return any(
            f is not None and not f for f in (self.types, self.streams, self.correlation_ids)
        )

    def __call__(self, record: LogRecord) -> bool:
        if self.types is not None and record.type not in self.types:
            return False
        if self.streams is not None and record.stream_id not in self.streams:
            return False
        if self.correlation_ids is not None and record.correlation_id not in self.correlation_ids:
            return False
        if self.since is not None or self.until is not None:
            ts = record.timestamp_us
            if type(ts) is not int:
                return False
            if self.since is not None and ts < self.since:
                return False
            if self.until is not None and ts >= self.until:
                return False
        return True
