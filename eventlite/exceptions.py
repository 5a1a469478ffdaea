"""Every error eventlite raises, in one hierarchy.

::

    EventliteError
    ├── MessageError                  a message, its type or its encoding is wrong
    │   ├── NotAMessage               an object that is not a registered message
    │   ├── DuplicateMessageType      two classes registered under one name
    │   ├── UnknownMessageType        a type name the registry does not know
    │   ├── MessageEncodeError        a message that cannot be turned into JSON
    │   └── MessageDecodeError        JSON that cannot be turned into its message
    ├── BusError                      routing on the in-memory bus
    │   ├── NoHandlerError            a command or query without a handler
    │   ├── HandlerAlreadyRegistered  a second handler for one command or query
    │   └── BusClosed                 publishing on a bus that was closed
    ├── StoreError                    the event store and its file
    │   ├── ConcurrencyError          an append with the wrong expected version
    │   ├── DuplicateEventError       an appended event id that is already stored
    │   ├── SchemaError               a file that is not an eventlite store, or newer
    │   ├── StorageError              the database failed underneath (wraps sqlite3)
    │   └── AlreadyClaimed            (store.claims) a unique value another owner holds
    ├── AggregateNotFound             ``Repository.get`` of an id with no events
    ├── CommandRejected               raised by a handler to refuse, keeping its events
    │
    │   defined beside the part they belong to:
    ├── DeadLetterNotFound            (dlq) no dead letter with that id
    ├── IdempotencyTimeout            (idempotency) a duplicate waited too long for the first
    ├── QueueError                    (queue) the work queue refused an operation
    │   ├── StaleReceipt              a receipt that no longer holds its message
    │   ├── MaxReceivesExceeded       recorded on a dead letter: received too often
    │   └── MessageExpired            recorded on a dead letter: past its TTL
    ├── ProjectionError               (projection) a projection's handler failed
    ├── SagaError                     (saga) an orchestrated saga failed
    │   ├── SagaNotFound              no saga instance with that id
    │   ├── StepTimeout               a step ran past its timeout
    │   └── CompensationFailed        a compensation raised; the saga ends failed
    └── ProcessError                  (process) a process manager failed
        └── ProcessNotFound           no process instance for that key

Backend errors (``sqlite3.Error`` and broker client errors) are translated into this
hierarchy where they cross into eventlite; the original is kept as ``__cause__``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AggregateNotFound",
    "BusClosed",
    "CommandRejected",
    "BusError",
    "ConcurrencyError",
    "DuplicateEventError",
    "DuplicateMessageType",
    "EventliteError",
    "HandlerAlreadyRegistered",
    "MessageDecodeError",
    "MessageEncodeError",
    "MessageError",
    "NoHandlerError",
    "NotAMessage",
    "SchemaError",
    "StorageError",
    "StoreError",
    "UnknownMessageType",
]


class EventliteError(Exception):
    """Base class of every error raised by eventlite."""


class MessageError(EventliteError):
    """A message, its type or its encoding is wrong."""


class NotAMessage(MessageError, TypeError):
    """An object was used as a message but its class is not a registered message type."""


class DuplicateMessageType(MessageError):
    """Two different classes were registered under the same type name."""


class UnknownMessageType(MessageError):
    """A type name that the registry does not know.

    ``type_name`` is the name that was looked up; ``position`` is the global position of the
    stored event that carried it, when the name came from the event store.
    """

    def __init__(self, type_name: str, position: int | None = None) -> None:
        self.type_name = type_name
        self.position = position
        where = f" (stored event at position {position})" if position is not None else ""
        super().__init__(
            f"unknown message type {type_name!r}{where}: no class is registered under this "
            "name in the application's registry"
        )


class MessageEncodeError(MessageError):
    """A message could not be turned into JSON, or holds a value that would not read back
    as the same value of its declared type; nothing was written.

    ``type_name`` names the message type, ``path`` the field (``lines[2].amount``, or None
    when the message as a whole is at fault) and ``cause`` what was wrong, with the
    offending value.
    """

    def __init__(self, type_name: str, cause: str, path: str | None = None) -> None:
        self.type_name = type_name
        self.cause = cause
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(f"cannot encode message of type {type_name!r}: {where}{cause}")


class MessageDecodeError(MessageError):
    """Stored or received data could not be turned into its message.

    Names the type, the cause and, for a stored event, its position.
    """

    def __init__(self, type_name: str, cause: str, position: int | None = None) -> None:
        self.type_name = type_name
        self.cause = cause
        self.position = position
        where = f" (stored event at position {position})" if position is not None else ""
        super().__init__(f"cannot decode message of type {type_name!r}{where}: {cause}")


class BusError(EventliteError):
    """Routing on the in-memory bus failed."""


class NoHandlerError(BusError, LookupError):
    """A command was dispatched, or a query asked, with no handler registered for its type."""

    def __init__(self, message_type: type[Any]) -> None:
        self.message_type = message_type
        super().__init__(f"no handler registered for {message_type.__qualname__}")


class HandlerAlreadyRegistered(BusError):
    """A command or query type already has its one handler."""

    def __init__(self, message_type: type[Any], existing: Any) -> None:
        self.message_type = message_type
        self.existing = existing
        name = getattr(existing, "__qualname__", repr(existing))
        super().__init__(
            f"{message_type.__qualname__} already has a handler ({name}); commands and "
            "queries have exactly one"
        )


class BusClosed(BusError, RuntimeError):
    """The bus was closed; it accepts no more messages."""


class StoreError(EventliteError):
    """The event store or its file failed."""


class ConcurrencyError(StoreError):
    """An append found a stream at another version than the one expected; nothing was written.

    ``expected`` is what the caller asked for (an int or one of ``ANY``, ``NO_STREAM``,
    ``STREAM_EXISTS``); ``actual`` is the stream's version (0 when it does not exist).
    """

    def __init__(self, stream_id: str, expected: object, actual: int) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream_id!r}: expected version {expected}, but it is at version {actual}"
        )


class DuplicateEventError(StoreError):
    """An appended event has an id that is already stored (or twice in one append).

    Nothing of the append was written. ``event_id`` names the id and ``stream_id`` the
    stream it was being appended to.
    """

    def __init__(self, event_id: str, stream_id: str | None = None) -> None:
        self.event_id = event_id
        self.stream_id = stream_id
        where = f" (appending to stream {stream_id!r})" if stream_id is not None else ""
        super().__init__(f"an event with id {event_id!r} is already in the store{where}")


class SchemaError(StoreError):
    """A file is not an eventlite store, or was written by a newer eventlite."""


class StorageError(StoreError):
    """The database underneath failed; the original error is the ``__cause__``."""


class AggregateNotFound(EventliteError, LookupError):
    """``Repository.get`` found no events for the aggregate id."""

    def __init__(self, aggregate_type: type[Any], aggregate_id: str) -> None:
        self.aggregate_type = aggregate_type
        self.aggregate_id = aggregate_id
        super().__init__(f"{aggregate_type.__qualname__} {aggregate_id!r} not found")


class CommandRejected(EventliteError):
    """Raise it (or a subclass) from a handler to refuse a command and still keep what the
    handler recorded: its unit of work commits (an ``OutOfStock`` event, say), publishes,
    and then the exception reaches whoever dispatched the command.

    Any other exception rolls the unit of work back. Subclass it for the refusals of your
    domain::

        class OutOfStock(eventlite.CommandRejected):
            pass

        @app.handles(Allocate)
        def allocate(command: Allocate, uow: UnitOfWork) -> str:
            product = uow.get(Product, command.sku)
            batch = product.allocate(command.order_id, command.qty)  # records OutOfStock
            if batch is None:
                raise OutOfStock(f"no stock of {command.sku}")
            return batch
    """
