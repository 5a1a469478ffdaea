"""eventlite: event-driven architecture in one Python process.

A threaded in-memory bus for commands, queries and events; one SQLite file that makes them
durable; bridges to real brokers when one process is no longer enough.
"""

from .aggregate import Aggregate, applies
from .app import App
from .bus import ErrorHook, MessageBus, Subscription, WorkerStats
from .clock import Clock, FakeClock, SystemClock
from .codec import Codec, make_message_converter
from .dlq import DeadLetter, DeadLetterNotFound, DeadLetterQueue, DeadLetterStatus
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
from .idempotency import Idempotency, IdempotencyTimeout
from .inbox import Inbox
from .memory import InMemoryEventStore, InMemorySnapshotStore
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
from .metrics import CountingMetrics, DeliveryMetrics, SubscriberCounts
from .middleware import (
    CallNext,
    Middleware,
    TimingCallback,
    logging_middleware,
    retry_middleware,
    timing_middleware,
)
from .process import (
    ProcessContext,
    ProcessError,
    ProcessInstance,
    ProcessManager,
    ProcessNotFound,
    ProcessStatus,
    ProcessTimeout,
)
from .projection import (
    Projection,
    ProjectionError,
    ProjectionStatus,
    Projector,
    projects,
)
from .queue import (
    MaxReceivesExceeded,
    MessageExpired,
    QueueConsumer,
    QueueError,
    Queues,
    QueueStats,
    Received,
    StaleReceipt,
    WorkQueue,
)
from .relay import DurableSubscriber, Relay, SubscriberStatus
from .repository import Repository
from .retry import RetryPolicy
from .saga import (
    CompensationFailed,
    Saga,
    SagaData,
    SagaError,
    SagaInstance,
    SagaNotFound,
    SagaOrchestrator,
    SagaStatus,
    SagaStep,
    StepContext,
    StepFailure,
    StepTimeout,
)
from .scheduler import Scheduler
from .sqlite import SQLiteEventStore, SQLiteSnapshotStore
from .store import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    EventStore,
    ExpectedVersion,
    Snapshot,
    SnapshotStore,
    StreamAppend,
    StreamState,
)
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
    "CallNext",
    "Clock",
    "Codec",
    "command",
    "CompensationFailed",
    "ConcurrencyError",
    "CountingMetrics",
    "current_envelope",
    "DeadLetter",
    "DeadLetterNotFound",
    "DeadLetterQueue",
    "DeadLetterStatus",
    "default_registry",
    "DeliveryMetrics",
    "DuplicateEventError",
    "DuplicateMessageType",
    "DurableSubscriber",
    "Envelope",
    "ErrorHook",
    "event",
    "EventliteError",
    "EventStore",
    "ExpectedVersion",
    "FakeClock",
    "HandlerAlreadyRegistered",
    "Idempotency",
    "IdempotencyTimeout",
    "Inbox",
    "InMemoryEventStore",
    "InMemorySnapshotStore",
    "logging_middleware",
    "make_message_converter",
    "MaxReceivesExceeded",
    "message_context",
    "MessageBus",
    "MessageDecodeError",
    "MessageEncodeError",
    "MessageError",
    "MessageExpired",
    "MessageKind",
    "MessageType",
    "Metadata",
    "Middleware",
    "NO_STREAM",
    "NoHandlerError",
    "NotAMessage",
    "ProcessContext",
    "ProcessError",
    "ProcessInstance",
    "ProcessManager",
    "ProcessNotFound",
    "ProcessStatus",
    "ProcessTimeout",
    "Projection",
    "ProjectionError",
    "ProjectionStatus",
    "Projector",
    "projects",
    "query",
    "QueueConsumer",
    "QueueError",
    "Queues",
    "QueueStats",
    "Received",
    "Registry",
    "Relay",
    "Repository",
    "retry_middleware",
    "RetryPolicy",
    "Saga",
    "SagaData",
    "SagaError",
    "SagaInstance",
    "SagaNotFound",
    "SagaOrchestrator",
    "SagaStatus",
    "SagaStep",
    "Scheduler",
    "SchemaError",
    "Snapshot",
    "SnapshotStore",
    "SQLiteEventStore",
    "SQLiteSnapshotStore",
    "StaleReceipt",
    "StepContext",
    "StepFailure",
    "StepTimeout",
    "StorageError",
    "StoreError",
    "STREAM_EXISTS",
    "StreamAppend",
    "StreamState",
    "SubscriberCounts",
    "SubscriberStatus",
    "Subscription",
    "SystemClock",
    "timing_middleware",
    "TimingCallback",
    "UnitOfWork",
    "UnknownMessageType",
    "Upcaster",
    "WorkerStats",
    "WorkQueue",
]
