"""The envelope every message travels in, and the context that links messages together.

An :class:`Envelope` carries a message with its ``id``, ``type`` name, :class:`Metadata`
(correlation, causation, user, headers) and ``timestamp``; a stored event adds its
``stream_id``, ``version`` and ``position``.

Correlation flows by itself: while the bus runs a handler it makes that handler's envelope
current (a ``contextvars`` variable, so it follows threads the bus starts and ``asyncio``
tasks), and every envelope made meanwhile takes its ``correlation_id`` and uses its ``id``
as ``causation_id``. A message made with nothing current starts a new flow: its
correlation id is its own id.

The bus makes the envelope of a command, a query, or an event with only synchronous
subscribers when something first needs it: a middleware, :func:`current_envelope`, a
message sent or recorded by the handler, an error report. Until then the context holds a
*pending* entry, ``[message, parent, key]``, where ``parent`` is what was current when the
message was sent. The envelope is made from it once (its id and timestamp are taken then,
after its parent's) and appended to it, so every context that sees the entry, copied ones
included, gets the same envelope. Envelopes are made only in this module: the public
constructor, the bus's pending entries, :func:`stamped` and :func:`restored`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs

from . import _ids

__all__ = ["Envelope", "Metadata", "current_envelope", "message_context"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EMPTY: Mapping[str, str] = {}


def _frozen_headers(value: Mapping[str, str] | None) -> Mapping[str, str]:
    if not value:
        return _EMPTY
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"headers must map str to str, got {k!r}: {v!r}")
    return dict(value)


@attrs.frozen
class Metadata:
    """Who and what a message belongs to."""

    correlation_id: str
    """The id of the first message of the flow this message is part of."""
    causation_id: str | None = None
    """The id of the message whose handling produced this one; None for a first message."""
    user_id: str | None = None
    """The user on whose behalf the flow runs, when the application says so."""
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_headers)
    """Free string headers, carried unchanged to stores and brokers."""


# The envelope being handled, or a pending entry ``[message, parent, key]`` (see the module
# doc) whose envelope :func:`_materialize` makes when it is first needed.
_current: contextvars.ContextVar[Envelope | list[Any] | None] = contextvars.ContextVar(
    "eventlite_current_envelope", default=None
)
_current_get = _current.get
_time_ns = _ids._time_ns
_next_seq = _ids._next
_id_int = _ids.id_int
_new_obj = object.__new__


def current_envelope() -> Envelope | None:
    """The envelope of the message being handled in this context, or None."""
    current = _current_get()
    if type(current) is list:
        return _materialize(current)
    return current  # type: ignore[return-value]  # a list was handled above


@contextmanager
def message_context(envelope: Envelope) -> Iterator[Envelope]:
    """Make ``envelope`` current for the block, as the bus does while a handler runs.

    Messages created in the block are correlated to it. Useful in code that handles
    messages outside the bus, such as a broker consumer or a test.
    """
    token = _current.set(envelope)
    try:
        yield envelope
    finally:
        _current.reset(token)


class Envelope:
    """A message with its id, type name, metadata and timestamp; for a stored event, also its
    stream id, version in the stream and global position.

    Envelopes are immutable: make a changed copy with :meth:`replace`. Built from a message
    alone, an envelope gets a new time-ordered id, the current time, and metadata linked to
    the current envelope (see :func:`current_envelope`)::

        env = Envelope(OrderPlaced(order_id="o-1"))
        env.metadata.correlation_id == env.id   # a first message starts its own flow
    """

    # Making an envelope is on the hot path of every dispatch, so the fast constructor sets
    # few slots, and the id string, timestamp and Metadata are built on first read.
    __slots__ = ("_id", "_ns", "_seq", "_ts", "_message", "_ctx", "_meta", "_stored", "_key")

    _id: str | None
    _ns: int
    _seq: int
    _ts: datetime | None
    _message: Any
    # (correlation_id, causation_id, user_id, headers), or None for a first message
    _ctx: tuple[str, str | None, str | None, Mapping[str, str]] | None
    _meta: Metadata | None
    # (stream_id, version, position), or None for a message not in the store
    _stored: tuple[str, int, int | None] | None
    _key: Any

    def __init__(
        self,
        message: Any,
        *,
        id: str | None = None,
        metadata: Metadata | None = None,
        timestamp: datetime | None = None,
        stream_id: str | None = None,
        version: int | None = None,
        position: int | None = None,
        key: Any = None,
    ) -> None:
        if timestamp is None:
            self._ns = _time_ns()
            self._ts = None
        else:
            if timestamp.tzinfo is None:
                raise ValueError("an envelope timestamp must be timezone-aware")
            timestamp = timestamp.astimezone(timezone.utc)
            self._ns = (timestamp - _EPOCH) // timedelta(microseconds=1) * 1000
            self._ts = timestamp
        self._seq = _next_seq()
        self._id = None if id is None else str(id)
        self._message = message
        if metadata is None:
            parent = current_envelope()
            self._ctx = None if parent is None else parent._child_ctx()
            self._meta = None
        else:
            self._ctx = (
                metadata.correlation_id,
                metadata.causation_id,
                metadata.user_id,
                metadata.headers,
            )
            self._meta = metadata
        if stream_id is None:
            if version is not None or position is not None:
                raise ValueError("an envelope with a version or position needs a stream_id")
            self._stored = None
        else:
            if version is None:
                raise ValueError(f"stored event in stream {stream_id!r} needs a version")
            self._stored = (stream_id, version, position)
        self._key = key

    def _child_ctx(self) -> tuple[str, str | None, str | None, Mapping[str, str]]:
        ctx = self._ctx
        if ctx is None:
            own = self.id
            return (own, own, None, _EMPTY)
        return (ctx[0], self.id, ctx[2], _EMPTY)

    @property
    def id(self) -> str:
        """The message id: a UUIDv7-layout string, ordered by creation time."""
        i = self._id
        if i is None:
            i = self._id = _ids.format_id(_id_int(self._ns, self._seq))
        return i

    @property
    def message(self) -> Any:
        """The message object (an instance of a registered attrs class)."""
        return self._message

    @property
    def type(self) -> str:
        """The message's registered type name (the class name for unregistered classes)."""
        cls = type(self._message)
        name: str | None = cls.__dict__.get("__eventlite_name__")
        return name if name is not None else cls.__name__

    @property
    def correlation_id(self) -> str:
        """Shortcut for ``metadata.correlation_id``."""
        ctx = self._ctx
        return self.id if ctx is None else ctx[0]

    @property
    def causation_id(self) -> str | None:
        """Shortcut for ``metadata.causation_id``."""
        ctx = self._ctx
        return None if ctx is None else ctx[1]

    @property
    def metadata(self) -> Metadata:
        """Correlation and causation ids, user id and headers."""
        m = self._meta
        if m is None:
            ctx = self._ctx
            if ctx is None:
                m = Metadata(correlation_id=self.id)
            else:
                m = Metadata(
                    correlation_id=ctx[0], causation_id=ctx[1], user_id=ctx[2], headers=ctx[3]
                )
            self._meta = m
        return m

    @property
    def timestamp(self) -> datetime:
        """When the message was made, timezone-aware UTC, microsecond precision."""
        ts = self._ts
        if ts is None:
            ts = self._ts = _EPOCH + timedelta(microseconds=self._ns // 1000)
        return ts

    @property
    def stream_id(self) -> str | None:
        """The stream a stored event belongs to; None for a message not in the store."""
        s = self._stored
        return None if s is None else s[0]

    @property
    def version(self) -> int | None:
        """A stored event's version in its stream, from 1; None when not stored."""
        s = self._stored
        return None if s is None else s[1]

    @property
    def position(self) -> int | None:
        """A stored event's global position, from 1, gap-free in commit order."""
        s = self._stored
        return None if s is None else s[2]

    @property
    def key(self) -> Any:
        """The ordering key: the one given when published, else the stream id, else None."""
        k = self._key
        if k is None and self._stored is not None:
            return self._stored[0]
        return k

    def replace(self, **changes: Any) -> Envelope:
        """A copy with some fields changed: any of ``message``, ``id``, ``metadata``,
        ``timestamp``, ``stream_id``, ``version``, ``position``, ``key``."""
        fields = {
            "message": self._message,
            "id": self.id,
            "metadata": self.metadata,
            "timestamp": self.timestamp,
            "stream_id": self.stream_id,
            "version": self.version,
            "position": self.position,
            "key": self._key,
        }
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"Envelope has no field(s) {sorted(unknown)}")
        fields.update(changes)
        message = fields.pop("message")
        return Envelope(message, **fields)

    def _astuple(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.type,
            self._message,
            self.metadata,
            self.timestamp,
            self._stored,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Envelope):
            return NotImplemented
        return self._astuple() == other._astuple()

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        s = self._stored
        stored = f", stream_id={s[0]!r}, version={s[1]}, position={s[2]}" if s is not None else ""
        return (
            f"Envelope(id={self.id!r}, type={self.type!r}, message={self._message!r}, "
            f"correlation_id={self.correlation_id!r}, "
            f"causation_id={self.causation_id!r}{stored})"
        )


def _fast_envelope(message: Any, key: Any) -> Envelope:
    """The bus's hot-path constructor: the same result as ``Envelope(message, key=key)``."""
    current = _current_get()
    parent = _materialize(current) if isinstance(current, list) else current
    env: Envelope = _new_obj(Envelope)
    env._ns = _time_ns()
    env._seq = _next_seq()
    env._id = env._ts = env._meta = env._stored = None
    env._message = message
    env._ctx = None if parent is None else parent._child_ctx()
    env._key = key
    return env


def _materialize(pending: list[Any]) -> Envelope:
    """The envelope of a pending entry, made on first call and the same on every later one.

    The parent is made first, so a parent's id always sorts before its children's.
    """
    if len(pending) > 3:
        env: Envelope = pending[3]
        return env
    parent = pending[1]
    if type(parent) is list:
        parent = _materialize(parent)
    env = _new_obj(Envelope)
    env._ns = _time_ns()
    env._seq = _next_seq()
    env._id = env._ts = env._meta = env._stored = None
    env._message = pending[0]
    env._ctx = None if parent is None else parent._child_ctx()
    env._key = pending[2]
    # list.append is atomic: when threads sharing a copied context race here, the first
    # append wins and every caller returns that one.
    pending.append(env)
    made: Envelope = pending[3]
    return made


def stamped(
    envelope: Envelope, stream_id: str, version: int, position: int, message: Any = _new_obj
) -> Envelope:
    """A copy of ``envelope`` recorded at ``stream_id``/``version``/``position`` (and
    carrying ``message`` instead, when given).

    The same as ``envelope.replace(stream_id=..., version=..., position=..., key=None)``,
    without re-validating what the envelope already checked.
    """
    env: Envelope = _new_obj(Envelope)
    env._id = envelope.id
    env._ns = envelope._ns
    env._seq = envelope._seq
    env._ts = envelope._ts
    env._message = envelope._message if message is _new_obj else message
    env._ctx = envelope._ctx
    env._meta = envelope._meta
    env._stored = (stream_id, version, position)
    env._key = None
    return env


def restored(
    message: Any,
    event_id: str,
    timestamp_us: int,
    correlation_id: str,
    causation_id: str | None,
    user_id: str | None,
    headers: Mapping[str, str],
    stream_id: str,
    version: int,
    position: int,
) -> Envelope:
    """The envelope of a stored event from its columns, built without re-validation."""
    env: Envelope = _new_obj(Envelope)
    env._id = event_id
    env._ns = timestamp_us * 1000
    env._seq = 0
    env._ts = None
    env._message = message
    env._ctx = (correlation_id, causation_id, user_id, headers)
    env._meta = None
    env._stored = (stream_id, version, position)
    env._key = None
    return env


def received(
    message: Any,
    event_id: str,
    timestamp_us: int | None,
    correlation_id: str,
    causation_id: str | None,
    user_id: str | None,
    headers: Mapping[str, str],
    stream_id: str | None,
    version: int | None,
    position: int | None,
    key: Any,
) -> Envelope:
    """The envelope of a message received from elsewhere (a broker), from parts its decoder
    has checked: the same as ``Envelope(message, id=..., metadata=..., timestamp=...,
    stream_id=..., version=..., position=..., key=...)`` without checking them again. A
    ``timestamp_us`` of None stamps it now; a ``stream_id`` without a ``version`` raises
    ``ValueError``, and without a ``stream_id`` the version and position are dropped."""
    env: Envelope = _new_obj(Envelope)
    env._id = event_id
    if timestamp_us is None:
        env._ns = _time_ns()
    else:
        env._ns = timestamp_us * 1000
    env._seq = _next_seq()
    env._ts = None
    env._message = message
    env._ctx = (correlation_id, causation_id, user_id, headers or _EMPTY)
    env._meta = None
    if stream_id is None:
        env._stored = None
    else:
        if version is None:
            raise ValueError(f"received event in stream {stream_id!r} needs a version")
        env._stored = (stream_id, version, position)
    env._key = key
    return env
