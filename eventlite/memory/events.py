"""An event store in a Python list: for tests, prototypes and short-lived processes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from ..codec import Codec
from ..envelope import Envelope, stamped
from ..exceptions import StorageError
from ..store.events import (
    DuplicateEventError,
    EventStore,
    LogRecord,
    StreamAppend,
    check_version,
    normalize_appends,
    type_names,
    validate_range,
    validate_read_all,
    validate_records,
    validate_stream_id,
)

__all__ = ["InMemoryEventStore"]

_PAGE = 500

# A stored event: the recorded envelope, its type name, and (with a codec) its schema
# version and JSON text, decoded again on every read as the SQLite store would.
_Record = tuple[Envelope, str, int, str | None]


class InMemoryEventStore(EventStore):
    """The :class:`EventStore` contract in memory; everything is lost with the process.

    Without a ``codec`` it keeps the appended message objects and returns them as they
    are. With one it encodes each message on append and decodes it on every read, like
    the SQLite store: a message that cannot be stored fails here too, and upcasters run.
    """

    def __init__(self, *, codec: Codec | None = None) -> None:
        self.codec = codec
        """The codec messages pass through, or None to keep the objects themselves."""
        self._lock = threading.Lock()
        self._log: list[_Record] = []
        self._streams: dict[str, list[_Record]] = {}
        self._ids: set[str] = set()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the in-memory event store is closed")

    def _type_of(self, envelope: Envelope) -> tuple[str, int, str | None]:
        codec = self.codec
        if codec is None:
            return envelope.type, 1, None
        entry = codec.message_type(envelope.message)
        return entry.name, entry.version, codec.encode(envelope.message)

    def append_many(
        self, appends: Iterable[StreamAppend | tuple[Any, ...]]
    ) -> list[list[Envelope]]:
        """See :meth:`EventStore.append_many`."""
        parts = normalize_appends(appends)
        encoded = [[self._type_of(e) for e in envs] for _, envs, _ in parts]
        with self._lock:
            self._check_open()
            # Check every part against the state the earlier parts leave, then write.
            versions: dict[str, int] = {}
            new_ids: set[str] = set()
            for stream_id, envelopes, expected in parts:
                actual = versions.get(stream_id)
                if actual is None:
                    actual = len(self._streams.get(stream_id, ()))
                check_version(stream_id, expected, actual)
                versions[stream_id] = actual + len(envelopes)
                for env in envelopes:
                    if env.id in self._ids or env.id in new_ids:
                        raise DuplicateEventError(env.id, stream_id)
                    new_ids.add(env.id)
            results: list[list[Envelope]] = []
            position = len(self._log)
            for (stream_id, envelopes, _), types in zip(parts, encoded, strict=True):
                stream = self._streams.setdefault(stream_id, [])
                recorded = []
                for env, (name, schema_version, text) in zip(envelopes, types, strict=True):
                    position += 1
                    rec_env = stamped(env, stream_id, len(stream) + 1, position)
                    record = (rec_env, name, schema_version, text)
                    stream.append(record)
                    self._log.append(record)
                    recorded.append(rec_env)
                results.append(recorded)
            self._ids |= new_ids
        return results

    def _read(self, record: _Record) -> Envelope:
        env, name, schema_version, text = record
        if text is None or self.codec is None:
            return env
        position = env.position
        message = self.codec.decoder(name, schema_version)(text, position)
        assert env.stream_id is not None and env.version is not None and position is not None
        return stamped(env, env.stream_id, env.version, position, message)

    def read_stream(
        self,
        stream_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        *,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[Envelope]:
        """See :meth:`EventStore.read_stream`."""
        validate_stream_id(stream_id)
        validate_range(from_version, to_version, limit)
        with self._lock:
            self._check_open()
            stream = self._streams.get(stream_id, [])
            stop = len(stream) if to_version is None else min(to_version, len(stream))
            selected = stream[from_version - 1 : max(stop, from_version - 1)]
        if backwards:
            selected.reverse()
        if limit is not None:
            selected = selected[:limit]
        return [self._read(r) for r in selected]

    def read_all(
        self,
        from_position: int = 1,
        limit: int | None = None,
        types: Iterable[str | type] | None = None,
    ) -> Iterator[Envelope]:
        """See :meth:`EventStore.read_all`."""
        validate_read_all(from_position, limit)
        names = type_names(types)
        self._check_open()
        return self._iter_all(from_position - 1, limit, names)

    def _iter_all(
        self, index: int, limit: int | None, names: frozenset[str] | None
    ) -> Iterator[Envelope]:
        remaining = limit
        while remaining is None or remaining > 0:
            with self._lock:
                self._check_open()
                page = self._log[index : index + _PAGE]
            if not page:
                return
            index += len(page)
            for record in page:
                if names is not None and record[1] not in names:
                    continue
                yield self._read(record)
                if remaining is not None:
                    remaining -= 1
                    if remaining == 0:
                        return

    def read_records(
        self, after: int = 0, limit: int = 1000, types: frozenset[str] | None = None
    ) -> list[LogRecord]:
        """See :meth:`EventStore.read_records`; ``data`` is the JSON text with a codec, the
        message object without one."""
        validate_records(after, limit)
        out: list[LogRecord] = []
        index = after
        while len(out) < limit:
            with self._lock:
                self._check_open()
                page = self._log[index : index + _PAGE]
            if not page:
                break
            index += len(page)
            out.extend(_record(r) for r in page if types is None or r[1] in types)
        return out[:limit]

    def record_at(self, position: int) -> LogRecord | None:
        """See :meth:`EventStore.record_at`."""
        with self._lock:
            self._check_open()
            if not 1 <= position <= len(self._log):
                return None
            return _record(self._log[position - 1])

    def decode(self, record: LogRecord) -> Envelope:
        """See :meth:`EventStore.decode`."""
        with self._lock:
            self._check_open()
            stored = self._log[record.position - 1]
        return self._read(stored)

    def stream_version(self, stream_id: str) -> int:
        """See :meth:`EventStore.stream_version`."""
        with self._lock:
            self._check_open()
            return len(self._streams.get(stream_id, ()))

    def head_position(self) -> int:
        """See :meth:`EventStore.head_position`."""
        with self._lock:
            self._check_open()
            return len(self._log)

    def close(self) -> None:
        """Forget every event; afterwards every call raises :class:`StorageError`."""
        with self._lock:
            self._closed = True
            self._log = []
            self._streams = {}
            self._ids = set()

    def __repr__(self) -> str:
        return f"<InMemoryEventStore events={len(self._log)}>"


def _record(record: _Record) -> LogRecord:
    env, name, schema_version, text = record
    meta = env.metadata
    assert env.position is not None and env.stream_id is not None and env.version is not None
    return LogRecord(
        env.position,
        env.stream_id,
        env.version,
        env.id,
        name,
        schema_version,
        env.message if text is None else text,
        meta.correlation_id,
        meta.causation_id,
        meta.user_id,
        json.dumps(dict(meta.headers)) if meta.headers else None,
        env._ns // 1000,
    )
