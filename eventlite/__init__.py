"""eventlite: event-driven architecture in one Python process.

A threaded in-memory bus for commands, queries and events; one SQLite file that makes them
durable; bridges to real brokers when one process is no longer enough.
"""

from .aggregate import Aggregate, applies
from .app import App
from .backends.memory import InMemoryEventStore
from .backends.sqlite import SQLiteEventStore
from .bus import ErrorHook, MessageBus, Subscription, WorkerStats
from .codec import Codec, make_message_converter
from .envelope import Envelope, Metadata, current_envelope, message_context
from .exceptions import (
    AggregateNotFound,
    BusClosed,
    BusError,
    ConcurrencyError,
    DuplicateEventError,
    DuplicateMessageType,
    EventliteError,
    HandlerAlreadyRegistered,
    MessageDecodeError,
    MessageEncodeError,
    MessageError,
    NoHandlerError,
    NotAMessage,
    SchemaError,
    StorageError,
    StoreError,
    UnknownMessageType,
)
from .messages import (
    MessageKind,
    MessageType,
    Registry,
    Upcaster,
    command,
    default_registry,
    event,
    query,
)
from .middleware import (
    CallNext,
    Middleware,
    TimingCallback,
    logging_middleware,
    retry_middleware,
    timing_middleware,
)
from .repository import Repository
from .retry import RetryPolicy
from .snapshot import InMemorySnapshotStore, Snapshot, SnapshotStore, SQLiteSnapshotStore
from .store import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    EventStore,
    ExpectedVersion,
    StreamAppend,
    StreamState,
)
from .unit_of_work import UnitOfWork

__version__ = "0.1.0"

__all__ = [
    "Aggregate",
    "AggregateNotFound",
    "ANY",
    "App",
    "applies",
    "BusClosed",
    "BusError",
    "CallNext",
    "Codec",
    "command",
    "ConcurrencyError",
    "current_envelope",
    "default_registry",
    "DuplicateEventError",
    "DuplicateMessageType",
    "Envelope",
    "ErrorHook",
    "event",
    "EventliteError",
    "EventStore",
    "ExpectedVersion",
    "HandlerAlreadyRegistered",
    "InMemoryEventStore",
    "InMemorySnapshotStore",
    "logging_middleware",
    "make_message_converter",
    "message_context",
    "MessageBus",
    "MessageDecodeError",
    "MessageEncodeError",
    "MessageError",
    "MessageKind",
    "MessageType",
    "Metadata",
    "Middleware",
    "NO_STREAM",
    "NoHandlerError",
    "NotAMessage",
    "query",
    "Registry",
    "Repository",
    "retry_middleware",
    "RetryPolicy",
    "SchemaError",
    "Snapshot",
    "SnapshotStore",
    "SQLiteEventStore",
    "SQLiteSnapshotStore",
    "StorageError",
    "StoreError",
    "STREAM_EXISTS",
    "StreamAppend",
    "StreamState",
    "Subscription",
    "timing_middleware",
    "TimingCallback",
    "UnitOfWork",
    "UnknownMessageType",
    "Upcaster",
    "WorkerStats",
]
