"""eventlite: event-driven architecture in one Python process.

A threaded in-memory bus for commands, queries and events; one SQLite file that makes them
durable; bridges to real brokers when one process is no longer enough.

The everyday names live here; everything else is public in the module of its concept
(``eventlite.store``, ``eventlite.sqlite``, ``eventlite.queue``, ``eventlite.saga``, …).
"""

from .aggregate import Aggregate, applies
from .app import App
from .bus import MessageBus
from .clock import Clock, FakeClock, SystemClock
from .codec import Codec
from .dlq import DeadLetterNotFound, DeadLetterQueue
from .envelope import Envelope, Metadata, current_envelope
from .exceptions import (
    AggregateNotFound,
    BusClosed,
    BusError,
    CommandRejected,
    ConcurrencyError,
    DuplicateEventError,
    EventliteError,
    MessageDecodeError,
    MessageEncodeError,
    MessageError,
    NoHandlerError,
    NotAMessage,
    SchemaError,
    StorageError,
    UnknownMessageType,
)
from .idempotency import IdempotencyTimeout
from .messages import Registry, command, default_registry, event, query
from .process import ProcessContext, ProcessError, ProcessManager
from .projection import Projection, ProjectionError, projects
from .queue import QueueError
from .repository import Repository
from .retry import RetryPolicy
from .saga import Saga, SagaError, SagaStep, StepContext
from .store import ANY, NO_STREAM, STREAM_EXISTS, EventStore
from .unit_of_work import UnitOfWork

__version__ = "0.2.0.dev0"
"""The installed version (the only place it is written; setup.cfg reads it)."""

__all__ = [
    "Aggregate",
    "AggregateNotFound",
    "ANY",
    "App",
    "applies",
    "BusClosed",
    "BusError",
    "Clock",
    "Codec",
    "command",
    "CommandRejected",
    "ConcurrencyError",
    "current_envelope",
    "DeadLetterNotFound",
    "DeadLetterQueue",
    "default_registry",
    "DuplicateEventError",
    "Envelope",
    "event",
    "EventliteError",
    "EventStore",
    "FakeClock",
    "IdempotencyTimeout",
    "MessageBus",
    "MessageDecodeError",
    "MessageEncodeError",
    "MessageError",
    "Metadata",
    "NO_STREAM",
    "NoHandlerError",
    "NotAMessage",
    "ProcessContext",
    "ProcessError",
    "ProcessManager",
    "Projection",
    "ProjectionError",
    "projects",
    "query",
    "QueueError",
    "Registry",
    "Repository",
    "RetryPolicy",
    "Saga",
    "SagaError",
    "SagaStep",
    "SchemaError",
    "StepContext",
    "StorageError",
    "STREAM_EXISTS",
    "SystemClock",
    "UnitOfWork",
    "UnknownMessageType",
]
