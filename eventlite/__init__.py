"""eventlite: event-driven architecture in one Python process.

A threaded in-memory bus for commands, queries and events; one SQLite file that makes them
durable; bridges to real brokers when one process is no longer enough.
"""

from .codec import Codec, make_message_converter
from .envelope import Envelope, Metadata, current_envelope, message_context
from .exceptions import (
    AggregateNotFound,
    BusClosed,
    BusError,
    ConcurrencyError,
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

__version__ = "0.1.0"

__all__ = [
    "AggregateNotFound",
    "BusClosed",
    "BusError",
    "Codec",
    "ConcurrencyError",
    "DuplicateMessageType",
    "Envelope",
    "EventliteError",
    "HandlerAlreadyRegistered",
    "MessageDecodeError",
    "MessageEncodeError",
    "MessageError",
    "MessageKind",
    "MessageType",
    "Metadata",
    "NoHandlerError",
    "NotAMessage",
    "Registry",
    "SchemaError",
    "StorageError",
    "StoreError",
    "UnknownMessageType",
    "Upcaster",
    "command",
    "current_envelope",
    "default_registry",
    "event",
    "make_message_converter",
    "message_context",
    "query",
]
