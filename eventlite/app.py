"""The composition root: one visible place that wires registry, codec, store, snapshots,
bus and units of work, and hands each handler the dependencies it names.

::

    app = eventlite.App("shop.db")          # a SQLite file; App() keeps everything in memory

    @app.handles(PlaceOrder, conflict_retries=3)
    def place_order(command: PlaceOrder, uow: eventlite.UnitOfWork) -> str:
        order = Order.place(command.order_id, command.total)
        uow.add(order)
        return order.id

    app.dispatch(PlaceOrder("o-1", Decimal("9.99")))

A handler's first parameter receives the message; every other parameter is filled by name
from the app's dependencies: ``uow`` (a fresh :class:`UnitOfWork`, committed when the
handler returns, rolled back if it raises), ``app``, ``bus``, ``store``, ``codec``,
``registry``, and whatever was given to :meth:`App.provide`.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ._db import Database, Synchronous, Transaction
from .aggregate import Aggregate
from .backends.memory import InMemoryEventStore
from .backends.sqlite import SQLiteEventStore
from .bus import MessageBus, Subscription
from .codec import Codec
from .exceptions import ConcurrencyError
from .messages import Registry, default_registry
from .repository import Repository
from .retry import RetryPolicy
from .snapshot import InMemorySnapshotStore, SnapshotStore, SQLiteSnapshotStore
from .store import EventStore
from .unit_of_work import UnitOfWork

__all__ = ["App"]

log = logging.getLogger(__name__)

A = TypeVar("A", bound=Aggregate)
H = TypeVar("H", bound=Callable[..., Any])


class App:
    """An eventlite application: the store, the bus and the unit of work, wired once.

    :param db: a SQLite file path (created if missing) that holds every durable table; None
        keeps events and snapshots in memory (for tests and throwaway scripts).
    :param registry: the message registry (default: ``eventlite.default_registry``).
    :param store: an :class:`EventStore` to use instead of the one ``db`` would make.
    :param bus: a :class:`MessageBus` to use instead of a new one.
    :param synchronous: ``"full"`` (default: every commit survives power loss) or
        ``"normal"`` (faster; the last commits can be lost on power loss).
    :param workers: background worker threads of the new bus.

    Close it (or use it as a context manager) to finish background work and close the file.
    """

    def __init__(
        self,
        db: str | os.PathLike[str] | None = None,
        *,
        registry: Registry | None = None,
        store: EventStore | None = None,
        bus: MessageBus | None = None,
        synchronous: Synchronous = "full",
        workers: int = 4,
    ) -> None:
        self.registry = registry if registry is not None else default_registry
        """The registry every message class of this app is declared in."""
        self.codec = Codec(self.registry)
        """The codec that writes messages to the store and to brokers."""
        self.database: Database | None = None
        """The SQLite file, or None when the app runs in memory."""
        self.snapshots: SnapshotStore | None
        """Where aggregate snapshots are kept."""
        if store is not None:
            self.store = store
            database = getattr(store, "database", None)
            if isinstance(database, Database):
                self.database = database
                self.snapshots = SQLiteSnapshotStore(database)
            else:
                self.snapshots = InMemorySnapshotStore()
        elif db is None:
            self.store = InMemoryEventStore(codec=self.codec)
            self.snapshots = InMemorySnapshotStore()
        else:
            self.database = Database(db, synchronous=synchronous)
            self.store = SQLiteEventStore(self.database, codec=self.codec)
            self.snapshots = SQLiteSnapshotStore(self.database)
        self.bus = bus if bus is not None else MessageBus(self.registry, workers=workers)
        """The in-memory bus; committed events are published on it."""
        self._dependencies: dict[str, Any] = {
            "app": self,
            "bus": self.bus,
            "store": self.store,
            "codec": self.codec,
            "registry": self.registry,
        }

    # -- wiring -------------------------------------------------------------------------

    def provide(self, **dependencies: Any) -> None:
        """Make values available to handlers by parameter name (``app.provide(mailer=m)``)."""
        reserved = set(dependencies) & {"uow", "app", "bus", "store", "codec", "registry"}
        if reserved:
            raise ValueError(f"these dependency names are the app's own: {sorted(reserved)}")
        self._dependencies.update(dependencies)

    def _inject(self, handler: Callable[..., Any], conflict_retries: int) -> Callable[[Any], Any]:
        """Wrap ``handler(message, **named dependencies)`` as a one-argument handler."""
        params = list(inspect.signature(handler).parameters.values())
        if not params:
            raise TypeError(f"{_name(handler)} must take the message as its first parameter")
        wanted = []
        for p in params[1:]:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.name != "uow" and p.name not in self._dependencies and p.default is p.empty:
                known = sorted({"uow", *self._dependencies})
                raise TypeError(
                    f"{_name(handler)} asks for {p.name!r}, which the app does not provide "
                    f"(known: {', '.join(known)}; add more with app.provide())"
                )
            wanted.append(p.name)
        if conflict_retries and "uow" not in wanted:
            raise TypeError(f"{_name(handler)}: conflict_retries needs a 'uow' parameter")
        if not wanted:
            return handler
        deps = self._dependencies

        def call(message: Any) -> Any:
            kwargs = {n: deps[n] for n in wanted if n != "uow" and n in deps}
            if "uow" not in wanted:
                return handler(message, **kwargs)
            attempt = 0
            while True:
                try:
                    with self.unit_of_work() as uow:
                        return handler(message, uow=uow, **kwargs)
                except ConcurrencyError as exc:
                    if attempt >= conflict_retries:
                        raise
                    attempt += 1
                    log.info(
                        "%s: %s; running it again (attempt %d of %d)",
                        _name(handler),
                        exc,
                        attempt + 1,
                        conflict_retries + 1,
                    )

        call.__name__ = getattr(handler, "__name__", "handler")
        call.__qualname__ = getattr(handler, "__qualname__", call.__name__)
        call.__module__ = getattr(handler, "__module__", __name__)
        return call

    def register(
        self, message_type: type[Any], handler: Callable[..., Any], *, conflict_retries: int = 0
    ) -> None:
        """Register the one handler of a command or query type, with its dependencies
        injected. ``conflict_retries`` re-runs a handler whose unit of work met a
        :class:`ConcurrencyError`, up to that many more times, each on freshly loaded
        aggregates."""
        self.bus.register(message_type, self._inject(handler, conflict_retries))

    def handles(self, message_type: type[Any], *, conflict_retries: int = 0) -> Callable[[H], H]:
        """Decorator form of :meth:`register`."""

        def decorate(handler: H) -> H:
            self.register(message_type, handler, conflict_retries=conflict_retries)
            return handler

        return decorate

    def subscribe(
        self,
        event_type: type[Any],
        handler: Callable[..., Any],
        *,
        background: bool = False,
        retry: RetryPolicy | None = None,
        name: str | None = None,
    ) -> Subscription:
        """Subscribe ``handler`` to an event type on the bus, with its dependencies
        injected (a ``uow`` parameter gets a unit of work committed after the handler)."""
        return self.bus.subscribe(
            event_type,
            self._inject(handler, 0),
            background=background,
            retry=retry,
            name=name or _name(handler),
        )

    def subscribes(
        self,
        event_type: type[Any],
        *,
        background: bool = False,
        retry: RetryPolicy | None = None,
        name: str | None = None,
    ) -> Callable[[H], H]:
        """Decorator form of :meth:`subscribe`."""

        def decorate(handler: H) -> H:
            self.subscribe(event_type, handler, background=background, retry=retry, name=name)
            return handler

        return decorate

    # -- using it -----------------------------------------------------------------------

    def unit_of_work(self) -> UnitOfWork:
        """A new :class:`UnitOfWork` over this app's store and bus."""
        return UnitOfWork(self)

    def repository(self, aggregate_type: type[A]) -> Repository[A]:
        """A repository of ``aggregate_type`` outside any unit of work: ``get``/``find``
        load, ``add`` saves the aggregate's pending events at once."""
        return Repository(
            aggregate_type,
            self.store,
            snapshots=self.snapshots,
            converter=self.codec.converter,
            save=self._save,
        )

    def _save(self, aggregate: Aggregate) -> None:
        with self.unit_of_work() as uow:
            uow.add(aggregate)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Transaction | None]:
        if self.database is None:
            yield None
        else:
            with self.database.transaction() as tx:
                yield tx

    def dispatch(self, command: Any) -> Any:
        """Run a command's handler and return its result (see :meth:`MessageBus.dispatch`)."""
        return self.bus.dispatch(command)

    def ask(self, query: Any) -> Any:
        """Answer a query (see :meth:`MessageBus.ask`)."""
        return self.bus.ask(query)

    def publish(self, *events: Any, key: Any = None) -> None:
        """Publish events on the bus without storing them (see :meth:`MessageBus.publish`)."""
        self.bus.publish(*events, key=key)

    def close(self) -> None:
        """Finish background work, then close the store and the file."""
        try:
            self.bus.close()
        finally:
            self.store.close()
            if self.database is not None:
                self.database.close()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _name(handler: Callable[..., Any]) -> str:
    return getattr(handler, "__qualname__", repr(handler))
