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
``registry``, ``clock``, with a SQLite file also ``dlq``, ``idempotency``, ``projector``,
``sagas`` and ``processes``, and whatever was given to :meth:`App.provide`.

Durable subscribers (``app.subscribe(EventType, handler, durable=True, name="...")``) are
delivered every committed event by the app's :class:`~eventlite.relay.Relay`, started with
the first of them; see ``docs/delivery.md``.

The read side and long-running processes hang off the same file:

- ``app.projection(projection, mode=...)`` adds a read model to :attr:`App.projector`:
  inline ones are written in every unit of work's commit, tracking ones by a thread;
- ``app.saga(saga, started_by=...)`` registers an orchestrated saga with :attr:`App.sagas`
  (optionally started by an event, exactly once per event), and :meth:`App.start` resumes
  the sagas a crash interrupted;
- ``app.process_manager(manager)`` runs a :class:`~eventlite.process.ProcessManager` as a
  durable subscriber, its timeouts fired by the relay.
- ``app.stream(stream)`` (or ``with app.stream(name) as stream:``) runs a stream-processing
  pipeline (:mod:`eventlite.streams`) on a thread of :attr:`App.streams`, its state
  committed with its outputs.

:meth:`App.run_until_idle` settles all of it; :meth:`App.close` stops all of it.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from typing import Any, Literal, TypeVar, overload

from ._types import any_of
from .aggregate import Aggregate
from .bridges.base import Broker
from .bridges.cloudevents import CloudEventCodec
from .bridges.inbound import PREFIX as BRIDGE_IN
from .bridges.inbound import Inbound, InboundHandler
from .bridges.outbound import PREFIX as BRIDGE_OUT
from .bridges.outbound import Outbound
from .bus import MessageBus, Subscription
from .clock import Clock, SystemClock, seconds
from .codec import Codec
from .dlq import DeadLetterQueue
from .envelope import Envelope
from .exceptions import ConcurrencyError, StorageError
from .idempotency import Idempotency
from .memory import MemoryStorage
from .messages import Registry, default_registry
from .metrics import DeliveryMetrics
from .process import ProcessManager, ProcessManagers
from .projection import Projection, ProjectionMode, Projector
from .queue import Queues, WorkQueue
from .relay import DeliveryCall, DurableSubscriber, Finish, Relay, Start, SubscriberStatus
from .repository import Repository
from .retry import RetryPolicy
from .saga import Saga, SagaError, SagaOrchestrator
from .sqlite import Database, SQLiteStorage, Synchronous
from .store.events import EventStore
from .store.snapshots import SnapshotStore
from .store.storage import Storage
from .store.storage import Transaction as StoreTransaction
from .streams import Stream, StreamRunner, Table
from .unit_of_work import UnitOfWork

__all__ = ["App", "call_app_factory", "factory_takes_db"]

log = logging.getLogger(__name__)

A = TypeVar("A", bound=Aggregate)
T = TypeVar("T")
H = TypeVar("H", bound=Callable[..., Any])

P = TypeVar("P", bound=Projection)

_OWN_NAMES = frozenset(
    {
        "uow",
        "app",
        "bus",
        "store",
        "codec",
        "registry",
        "clock",
        "dlq",
        "idempotency",
        "projector",
        "sagas",
        "processes",
    }
)


class App:
    """An eventlite application: the store, the bus and the unit of work, wired once.

    :param db: a SQLite file path (created if missing) that holds every durable table; a
        ``postgresql://`` URL keeps events and snapshots in PostgreSQL (extra
        ``eventlite[postgres]``; see ``docs/postgres.md``); None keeps them in memory (for
        tests and throwaway scripts).
    :param registry: the message registry (default: ``eventlite.default_registry``).
    :param storage: a :class:`~eventlite.store.Storage` to use instead of the one ``db``
        would make (a :class:`~eventlite.sqlite.SQLiteStorage` or
        :class:`~eventlite.postgres.PostgresStorage` built with options of your own; build
        it with a codec over the same registry). The app closes it.
    :param store: an :class:`EventStore` to use instead of the one ``db`` would make.
    :param bus: a :class:`MessageBus` to use instead of a new one.
    :param synchronous: ``"full"`` (default: every commit survives power loss) or
        ``"normal"`` (faster; the last commits can be lost on power loss).
    :param workers: background worker threads of the new bus.
    :param clock: where delivery, dead letters and idempotency keys read the time (default:
        the system clock; tests pass a :class:`~eventlite.clock.FakeClock`).
    :param metrics: durable delivery's hooks (see :mod:`eventlite.metrics`).
    :param poll_interval: seconds between the relay's looks for commits made by other
        processes sharing the file (commits of this process wake it at once).
    :param lease_seconds: each durable subscriber (saga starters, process managers and
        outbound bridges included) and each tracking projection is run by one process at
        a time, the holder of its lease, renewed
        every third of this time; when the holder dies, another process takes over once
        it expires. Seconds or a ``timedelta``; None for no leases. Keep it longer than
        the slowest handler.

    Close it (or use it as a context manager) to finish background work and close the file.
    """

    def __init__(
        self,
        db: str | os.PathLike[str] | None = None,
        *,
        registry: Registry | None = None,
        storage: Storage | None = None,
        store: EventStore | None = None,
        bus: MessageBus | None = None,
        synchronous: Synchronous = "full",
        workers: int = 4,
        clock: Clock | None = None,
        metrics: DeliveryMetrics | None = None,
        poll_interval: float = 0.05,
        lease_seconds: float | timedelta | None = 30.0,
    ) -> None:
        self.registry = registry if registry is not None else default_registry
        """The registry every message class of this app is declared in."""
        self.codec = Codec(self.registry)
        """The codec that writes messages to the store and to brokers."""
        self.storage: Storage
        """Where the app's durable state lives (see :mod:`eventlite.store.storage`)."""
        self.database: Database | None = None
        """The SQLite file, or None when the app runs in memory."""
        if storage is not None:
            if db is not None or store is not None:
                raise ValueError("give the app a db path or URL, a storage or a store: one")
            self.storage = storage
        elif store is not None:
            database = getattr(store, "database", None)
            wrapping: Storage = (
                SQLiteStorage(database, codec=self.codec)
                if isinstance(database, Database)
                else MemoryStorage(codec=self.codec)
            )
            wrapping.events = store
            self.storage = wrapping
        elif db is None:
            self.storage = MemoryStorage(codec=self.codec)
        elif isinstance(db, str) and db.startswith(("postgresql://", "postgres://")):
            from .postgres import PostgresStorage

            self.storage = PostgresStorage(db, codec=self.codec)
        else:
            self.storage = SQLiteStorage(db, codec=self.codec, synchronous=synchronous)
        if isinstance(self.storage, SQLiteStorage):
            self.database = self.storage.database
        self.store: EventStore = self.storage.events
        """The event store."""
        self.snapshots: SnapshotStore | None = self.storage.snapshots
        """Where aggregate snapshots are kept."""
        self.bus = bus if bus is not None else MessageBus(self.registry, workers=workers)
        """The in-memory bus; committed events are published on it."""
        self.clock: Clock = clock if clock is not None else SystemClock()
        """Where delivery, dead letters and idempotency keys read the time."""
        self.metrics = metrics if metrics is not None else DeliveryMetrics()
        """Durable delivery's metrics hooks."""
        self.poll_interval = poll_interval
        """Seconds between the relay's polls for other processes' commits."""
        self.lease_seconds = lease_seconds
        """How long a durable subscriber's lease lasts without renewal: one process at a
        time delivers to each (see ``docs/scaling.md``); None for no leases."""
        self._dlq: DeadLetterQueue | None = None
        self._idempotency: Idempotency | None = None
        self._queues: Queues | None = None
        self._projector: Projector | None = None
        self._sagas: SagaOrchestrator | None = None
        self._processes: ProcessManagers | None = None
        self._streams: StreamRunner | None = None
        self._outbound: list[Outbound] = []
        self._inbound: list[Inbound] = []
        self._missing: dict[str, StorageError] = {}
        if self.storage.durable:
            # A backend may keep only some stores: what it lacks is None here, and asking
            # for it raises the backend's error naming the feature.
            self._dlq = self._part(
                "dlq", DeadLetterQueue, self.storage, self.codec, clock=self.clock
            )
            self._idempotency = self._part(
                "idempotency", Idempotency, self.storage, clock=self.clock
            )
            if self._dlq is not None:
                self._queues = self._part(
                    "queues", Queues, self.storage, self.codec, dlq=self._dlq, clock=self.clock
                )
            keeps_leases = lease_seconds is not None and self.storage.keeps("leases")
            self._projector = self._part(
                "projector",
                Projector,
                self.storage,
                self.codec,
                clock=self.clock,
                poll_interval=poll_interval,
                leases=self.storage.leases if keeps_leases else None,
                lease_seconds=(
                    seconds(lease_seconds, "lease_seconds")
                    if keeps_leases and lease_seconds is not None
                    else None
                ),
            )
            if self._projector is not None:
                self._projector.start()  # nothing runs yet: projections launch as added
            if self._dlq is not None:
                self._sagas = self._part(
                    "sagas",
                    SagaOrchestrator,
                    self.storage,
                    self.codec,
                    dlq=self._dlq,
                    clock=self.clock,
                )
            self._processes = self._part(
                "processes", ProcessManagers, self.storage, self.codec, clock=self.clock
            )
        self._relay: Relay | None = None
        self._saga_starts: dict[str, tuple[type[Any], str]] = {}
        self._relay_lock = threading.Lock()
        self._started = False
        self._closed = False
        self._stop_requested = threading.Event()
        self._resumers: list[threading.Thread] = []
        self._dependencies: dict[str, Any] = {
            "app": self,
            "bus": self.bus,
            "store": self.store,
            "codec": self.codec,
            "registry": self.registry,
            "clock": self.clock,
        }
        if self.storage.durable:
            parts = {
                "dlq": self._dlq,
                "idempotency": self._idempotency,
                "projector": self._projector,
                "sagas": self._sagas,
                "processes": self._processes,
            }
            self._dependencies.update({k: v for k, v in parts.items() if v is not None})
            self.storage.on_every_commit(self._notify_commit)

    # -- wiring -------------------------------------------------------------------------

    def provide(self, **dependencies: Any) -> None:
        """Make values available to handlers by parameter name (``app.provide(mailer=m)``)."""
        reserved = set(dependencies) & _OWN_NAMES
        if reserved:
            raise ValueError(f"these dependency names are the app's own: {sorted(reserved)}")
        self._dependencies.update(dependencies)

    def _wanted(self, handler: Callable[..., Any]) -> list[str]:
        """The dependency names ``handler`` asks for after the message; TypeError for one
        the app does not provide."""
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
        return wanted

    def _inject(self, handler: Callable[..., Any], conflict_retries: int) -> Callable[[Any], Any]:
        """Wrap ``handler(message, **named dependencies)`` as a one-argument handler."""
        wanted = self._wanted(handler)
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
                uow = self.unit_of_work()
                try:
                    with uow:
                        return handler(message, uow=uow, **kwargs)
                except ConcurrencyError as exc:
                    if attempt >= conflict_retries or uow.wrote:
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
        call.__wrapped__ = handler  # type: ignore[attr-defined]  # bus.unsubscribe(handler)
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

    def _durable_call(self, handler: Callable[..., Any]) -> tuple[DeliveryCall, bool]:
        """``call(message, finish)`` for the relay, and whether it uses a unit of work
        (whose commit then also runs the relay's ``finish``)."""
        wanted = self._wanted(handler)
        deps = self._dependencies
        uses_uow = "uow" in wanted

        def call(message: Any, finish: Finish | None) -> Any:
            kwargs = {n: deps[n] for n in wanted if n != "uow" and n in deps}
            if not uses_uow:
                return handler(message, **kwargs)
            # The whole handling is one transaction: commands the handler dispatches join
            # it (their units of work become savepoints), so their effects commit with
            # the handler's, its inbox mark and its checkpoint, or not at all.
            with self.storage.transaction(), self.unit_of_work() as uow:
                if finish is not None:
                    uow.on_commit_write(lambda tx, _events: finish(tx))
                return handler(message, uow=uow, **kwargs)

        return call, uses_uow

    @overload
    def subscribe(
        self,
        event_type: type[Any],
        handler: Callable[..., Any],
        *,
        background: bool = False,
        retry: RetryPolicy | None = None,
        name: str | None = None,
        durable: Literal[False] = False,
    ) -> Subscription: ...

    @overload
    def subscribe(
        self,
        event_type: type[Any],
        handler: Callable[..., Any],
        *,
        retry: RetryPolicy | None = None,
        name: str,
        durable: Literal[True],
        start: Start | None = None,
        segments: int = 1,
    ) -> DurableSubscriber: ...

    def subscribe(
        self,
        event_type: type[Any],
        handler: Callable[..., Any],
        *,
        background: bool = False,
        retry: RetryPolicy | None = None,
        name: str | None = None,
        durable: bool = False,
        start: Start | None = None,
        segments: int = 1,
    ) -> Subscription | DurableSubscriber:
        """Subscribe ``handler`` to an event type, with its dependencies injected (a
        ``uow`` parameter gets a unit of work committed after the handler).

        By default the subscriber is on the in-memory bus: it sees events as they are
        published (``background=True`` runs it on the bus's worker threads), and a
        crash can lose a delivery.

        ``durable=True`` makes it a durable subscriber of the SQLite file instead: the
        relay delivers it every committed event of the type (stored events of subclasses
        too), at least once, in commit order, across crashes; one whose handler takes
        ``uow`` has its effects, inbox mark and checkpoint committed together, so they
        happen once. ``name`` is then required and must stay the same across releases (it
        keys the checkpoint). ``retry`` (default: 3 immediate attempts) may add delayed
        attempts, then the message is dead-lettered to :attr:`dlq`. ``start`` says where a
        new subscriber begins: the ``"beginning"`` of the log (every stored event) or its
        ``"end"`` (only events committed from now on); it is required when the log already
        holds events and the subscriber is new. ``segments=N`` splits it by a hash of the
        stream id into N segments, each with its own thread, checkpoint and lease, so up
        to N processes share its work and each stream keeps its order (see
        ``docs/scaling.md``). Returns a :class:`~eventlite.relay.DurableSubscriber`.
        Raises ``ValueError`` on an app without a file, without a name, with
        ``background=True``, without ``start`` for a new subscriber on a log that holds
        events, or with a number of ``segments`` other than the one its stored
        checkpoints were made with.
        """
        if not durable:
            if start is not None:
                raise ValueError("start= is for durable subscribers (durable=True)")
            if segments != 1:
                raise ValueError("segments= is for durable subscribers (durable=True)")
            return self.bus.subscribe(
                event_type,
                self._inject(handler, 0),
                background=background,
                retry=retry,
                name=name or _name(handler),
            )
        if background:
            raise ValueError(
                "a durable subscriber runs on the relay's thread; background=True is for bus "
                "subscribers"
            )
        if not self.storage.durable:
            raise ValueError(
                "durable subscribers need durable storage (App('app.db') or a database URL): "
                "their checkpoint, inbox and retries are kept there; an in-memory app has "
                "only bus subscribers"
            )
        if not name:
            raise ValueError(
                f"a durable subscriber needs a stable name= ({_name(handler)} has none): it "
                "keys its checkpoint in the file, so it must not change between releases"
            )
        call, uses_uow = self._durable_call(handler)
        return self.relay.add(
            name,
            event_type,
            call,
            handler=handler,
            uses_uow=uses_uow,
            retry=retry,
            start=start,
            segments=segments,
        )

    def subscribes(
        self,
        event_type: type[Any],
        *,
        background: bool = False,
        retry: RetryPolicy | None = None,
        name: str | None = None,
        durable: bool = False,
        start: Start | None = None,
        segments: int = 1,
    ) -> Callable[[H], H]:
        """Decorator form of :meth:`subscribe`; returns the function unchanged."""

        def decorate(handler: H) -> H:
            if durable:
                if name is None:
                    raise ValueError(
                        f"a durable subscriber needs a stable name= ({_name(handler)} has none)"
                    )
                self.subscribe(
                    event_type,
                    handler,
                    retry=retry,
                    name=name,
                    durable=True,
                    start=start,
                    segments=segments,
                )
            else:
                if segments != 1:
                    raise ValueError("segments= is for durable subscribers (durable=True)")
                self.subscribe(event_type, handler, background=background, retry=retry, name=name)
            return handler

        return decorate

    # -- durable delivery -----------------------------------------------------------------

    def _part(self, name: str, make: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        try:
            return make(*args, **kwargs)
        except StorageError as exc:
            self._missing[name] = exc
            return None

    def _need_file(self, what: str, part: str | None = None) -> Storage:
        if not self.storage.durable:
            raise RuntimeError(
                f"{what} needs durable storage (App('app.db') or a database URL); this app "
                "keeps everything in memory"
            )
        missing = self._missing.get(part or "", None)
        if missing is not None:
            raise StorageError(str(missing))
        return self.storage

    @property
    def dlq(self) -> DeadLetterQueue:
        """The dead-letter queue in the app's file. Raises ``RuntimeError`` in memory."""
        self._need_file("the dead-letter queue", "dlq")
        assert self._dlq is not None
        return self._dlq

    @property
    def idempotency(self) -> Idempotency:
        """Idempotency keys in the app's file (``app.idempotency.run(key, fn)``). Raises
        ``RuntimeError`` in memory."""
        self._need_file("idempotency keys", "idempotency")
        assert self._idempotency is not None
        return self._idempotency

    @property
    def queues(self) -> Queues:
        """The app's work queues by name (:class:`~eventlite.queue.Queues`), with the app's
        codec, clock and dead-letter queue; the CLI's ``queues`` lists them. Raises
        ``RuntimeError`` in memory."""
        self._need_file("work queues", "queues")
        assert self._queues is not None
        return self._queues

    def queue(self, name: str, **settings: Any) -> WorkQueue:
        """The app's work queue called ``name`` (see ``docs/work-queue.md``): made on first
        use in the app's file, with the app's codec, clock and :attr:`dlq`, and
        ``settings`` (``visibility_timeout``, ``max_receives``, ``ttl``, ``dedup_window``);
        the same object on every later call. Raises ``ValueError`` when ``settings`` differ
        from those it was made with, and ``RuntimeError`` in memory."""
        return self.queues.declare(name, **settings)

    @property
    def relay(self) -> Relay:
        """The relay that delivers committed events to durable subscribers, made on first
        use (its threads start with the first durable subscriber). Raises
        ``RuntimeError`` in memory."""
        self._need_file("the relay")
        relay = self._relay
        if relay is None:
            with self._relay_lock:
                relay = self._relay
                if relay is None:
                    relay = self._relay = Relay(
                        self.storage,
                        self.codec,
                        dlq=self.dlq,
                        clock=self.clock,
                        metrics=self.metrics,
                        poll_interval=self.poll_interval,
                        lease_seconds=self.lease_seconds,
                    )
        return relay

    def _notify_commit(self) -> None:
        relay = self._relay
        if relay is not None:
            relay.wake()
        projector = self._projector
        if projector is not None:
            projector.notify()

    def subscribers(self) -> list[SubscriberStatus]:
        """The status of every durable subscriber of the file: name, checkpoint, lag,
        blocked keys, retries, dead letters, and who holds its lease until when; one per
        segment for a subscriber split into segments. Empty in memory."""
        if not self.storage.durable:
            return []
        return self.relay.subscribers()

    # -- bridges to brokers ----------------------------------------------------------------

    def publish_to(
        self,
        broker: Broker,
        *event_types: type[Any],
        destination: str | Callable[[Envelope], str],
        key: Callable[[Envelope], str | None] | None = None,
        name: str | None = None,
        start: Start | None = None,
        source: str = "/eventlite",
        binary: bool = False,
        send_timeout: float = 10.0,
    ) -> DurableSubscriber:
        """Send the committed events of ``event_types`` (and their subclasses) to
        ``broker`` as CloudEvents (see ``docs/bridges.md``): an outbound bridge, a durable
        subscriber of the log named ``"bridge-out:<name>"`` that sends a page of the log
        per batch, in commit order, and moves its checkpoint only after the broker
        confirmed the batch. Nothing committed is lost: a crash or a broker outage before
        the confirm sends the batch again (the receiver's inbox drops the copies).

        ``destination`` is where the events go (an exchange, topic, subject, stream key or
        queue, as the broker module says), one for all or a function of the envelope;
        ``key`` gives the ordering key (default: the event's key, else its stream id);
        ``name`` keys the checkpoint (default: ``destination`` when it is a name) and must
        stay the same across releases; ``start`` is as for a durable subscriber.
        ``source`` is the CloudEvents ``source`` naming this service; ``binary`` sends
        binary-mode CloudEvents (attributes in headers) where the broker has headers.
        ``send_timeout`` is how long one batch waits for a lost connection before it is
        given up and tried again after a back-off. A message the broker refuses (too
        large, say), or one that cannot be encoded, is dead-lettered under the bridge's
        name and the others go on. Raises ``ValueError`` without event types, without a
        name, for a name in use, and in memory.
        """
        if not event_types:
            raise ValueError("publish_to needs at least one event type to send")
        if name is None:
            if not isinstance(destination, str):
                raise ValueError("publish_to with a destination function needs a name=")
            name = destination
        self._need_file("outbound bridges", "publish_to")
        wire = CloudEventCodec(
            self.codec,
            source=source,
            binary=binary and broker.features.headers,
            header_prefix=broker.features.header_prefix,
        )
        subscriber_name = f"{BRIDGE_OUT}{name}"
        bridge = Outbound(
            broker,
            wire,
            name=subscriber_name,
            destination=destination,
            decode=self.store.decode,
            key=key,
            send_timeout=send_timeout,
            counters=self.metrics.bridged,
        )
        event_type = event_types[0] if len(event_types) == 1 else any_of(name, event_types)
        subscriber = self.relay.add_batch(
            subscriber_name, event_type, bridge, handler=bridge, start=start
        )
        self._outbound.append(bridge)
        return subscriber

    def consume_from(
        self,
        broker: Broker,
        *,
        source: str,
        group: str,
        name: str | None = None,
        handler: InboundHandler | None = None,
        record: bool = True,
        stream: Callable[[Envelope], str] | None = None,
        retry: RetryPolicy | None = None,
        batch: int = 100,
        prefetch: int = 200,
    ) -> Inbound:
        """Receive CloudEvents from ``source`` on ``broker`` in consumer ``group`` (see
        ``docs/bridges.md``): an inbound bridge, one thread, named ``"bridge-in:<name>"``
        (its inbox consumer and dead-letter source; default name: ``source``).

        Each message is decoded with this app's registry (a type it lacks is
        dead-lettered, never imported), dropped when the inbox says it was handled, and
        otherwise, in one unit of work with up to ``batch`` others: marked in the inbox,
        appended to the local log (``record=True``: in the stream ``stream(envelope)``,
        default ``"<name>:<its stream id>"``, keeping its id, time and metadata, so this
        app's durable subscribers, process managers, sagas, projections and streams see
        it) and given to ``handler(event, uow)`` when there is one. The broker is
        acknowledged after the commit. A message that cannot be decoded, and one whose
        handling fails ``retry.max_attempts`` times (default 3), is dead-lettered raw,
        with its broker coordinates, and the flow goes on; ``dlq retry`` hands it back.
        ``prefetch`` bounds the deliveries held unacknowledged. Raises ``ValueError`` for
        a name in use and in memory.
        """
        self._need_file("inbound bridges", "consume_from")
        bridge_name = f"{BRIDGE_IN}{name if name is not None else source}"
        if any(b.name == bridge_name for b in self._inbound):
            raise ValueError(f"an inbound bridge named {bridge_name!r} already exists")
        wire = CloudEventCodec(self.codec, header_prefix=broker.features.header_prefix)
        bridge = Inbound(
            broker,
            wire,
            name=bridge_name,
            source=source,
            group=group,
            storage=self.storage,
            dlq=self.dlq,
            unit_of_work=self.unit_of_work,
            clock=self.clock,
            handler=handler,
            record=record,
            stream=stream,
            retry=retry,
            batch=batch,
            prefetch=prefetch,
            poll_interval=self.poll_interval * 10,
            counters=self.metrics.bridged,
        )
        self._inbound.append(bridge)
        bridge.connect()
        bridge.start()
        return bridge

    def bridges(self) -> list[dict[str, Any]]:
        """Each bridge of this app: name, direction (``"out"``/``"in"``), broker, where it
        sends or reads, its counters in this process and its last error; an outbound
        bridge also its ``lag`` (log positions not yet confirmed by the broker)."""
        out: list[dict[str, Any]] = []
        status = {s.name: s for s in self.subscribers()} if self._outbound else {}
        for bridge in self._outbound:
            row = bridge.describe()
            found = status.get(bridge.name)
            row["lag"] = found.lag if found is not None else None
            out.append(row)
        out.extend(bridge.describe() for bridge in self._inbound)
        return out

    # -- read side and long-running processes --------------------------------------------

    @property
    def projector(self) -> Projector:
        """The :class:`~eventlite.projection.Projector` of the app's file (started with the
        app: projections run as soon as they are added). Raises ``RuntimeError`` in
        memory."""
        self._need_file("projections", "projector")
        assert self._projector is not None
        return self._projector

    def projection(self, projection: P, *, mode: ProjectionMode = "tracking") -> P:
        """Add a read model (see ``docs/projections.md``) and return it.

        ``"inline"`` projections are written inside the transaction of every unit of work
        of this app that records events, so they commit or roll back with them;
        ``"tracking"`` ones (the default) by a thread of their own that follows the log.
        Both catch up with what is stored at once. Raises what
        :meth:`Projector.add <eventlite.projection.Projector.add>` raises, and
        ``RuntimeError`` in memory.
        """
        self.projector.add(projection, mode=mode)
        return projection

    @property
    def sagas(self) -> SagaOrchestrator:
        """The :class:`~eventlite.saga.SagaOrchestrator` of the app's file, with the app's
        dead-letter queue and clock. Raises ``RuntimeError`` in memory."""
        self._need_file("sagas", "sagas")
        assert self._sagas is not None
        return self._sagas

    def saga(
        self,
        definition: Saga,
        *,
        started_by: type[Any] | None = None,
        data: Callable[[Any], Any] | None = None,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        start: Start | None = None,
    ) -> Saga:
        """Register an orchestrated saga with :attr:`sagas` and return it.

        With ``started_by=EventType``, every committed event of that type starts one
        instance: a durable subscriber (``name``, default ``"saga-start:<saga name>"``)
        stores the new instance in the same transaction as the event's inbox mark, so each
        event starts exactly one, then runs it on the relay's thread. Its data is
        ``data(event)`` (default: the event's fields as a dict). ``retry`` and ``start``
        are the subscriber's: a new subscriber on a log that holds events must say whether
        the events stored before the saga was wired start it (``start="beginning"``) or
        not (``start="end"``).

        Instances a crash interrupted are resumed by :meth:`start`. Raises ``ValueError``
        for ``data``, ``name``, ``retry`` or ``start`` without ``started_by``, and
        ``RuntimeError`` in memory.
        """
        sagas = self.sagas
        if started_by is None and (any(x is not None for x in (data, name, retry, start))):
            raise ValueError("data=, name=, retry= and start= are for sagas with started_by=")
        subscriber = name or f"saga-start:{definition.name}"
        if started_by is not None:
            self.relay.check_start(subscriber, start)
        sagas.register(definition)
        if started_by is not None:
            codec = self.codec

            def start_saga(event: Any, uow: UnitOfWork) -> None:
                values = data(event) if data is not None else codec.to_dict(event)

                def create(tx: StoreTransaction, _events: object) -> None:
                    saga_id = sagas.create(definition, values)  # joins the commit's transaction
                    assert tx is not None
                    tx.on_commit(lambda: self._run_saga(saga_id))

                uow.on_commit_write(create)

            start_saga.__qualname__ = f"start saga {definition.name}"
            self.subscribe(
                started_by, start_saga, durable=True, name=subscriber, retry=retry, start=start
            )
            self._saga_starts[definition.name] = (started_by, subscriber)
        self._resume_if_started()
        return definition

    def saga_starts(self) -> dict[str, tuple[type[Any], str]]:
        """The sagas registered with ``started_by=``: saga name to the event type that
        starts it and the name of the durable subscriber that does."""
        return dict(self._saga_starts)

    def durable_subscriptions(self) -> list[tuple[str, type[Any]]]:
        """``(name, event type)`` of every durable subscriber of this app, in the order
        added, saga starters and process managers included (see
        :meth:`Relay.subscriptions <eventlite.relay.Relay.subscriptions>`). Empty in
        memory; unlike :meth:`subscribers`, it never reads the file."""
        relay = self._relay
        return relay.subscriptions() if relay is not None else []

    def _run_saga(self, saga_id: str) -> None:
        try:
            self.sagas.run(saga_id)
        except SagaError as exc:  # being run by a resume, or the app is closing
            log.info("saga %s not run now (%s); App.start() resumes it", saga_id, exc)
        except Exception:
            log.exception("saga %s stopped; App.start() resumes it", saga_id)

    def start(self) -> None:
        """Call once the app is wired (its handlers registered): resume, on a background
        thread, the sagas a crash left running or compensating. Sagas registered later
        are resumed as they are registered. Idempotent; :meth:`run_until_idle` waits for
        the resuming. Durable subscribers, process managers and projections need no start:
        they run as soon as they are added."""
        if self._started:
            return
        self._started = True
        self._resume_if_started()

    def _resume_if_started(self) -> None:
        sagas = self._sagas
        if not self._started or sagas is None or not sagas.sagas:
            return

        def resume() -> None:
            try:
                for instance in sagas.resume():
                    log.info("saga %r %s resumed: %s", instance.saga, instance.id, instance.status)
            except Exception:
                log.exception("resuming sagas failed")

        thread = threading.Thread(target=resume, name="eventlite-saga-resume", daemon=True)
        self._resumers = [t for t in self._resumers if t.is_alive()] + [thread]
        thread.start()

    @property
    def processes(self) -> ProcessManagers:
        """The :class:`~eventlite.process.ProcessManagers` of the app's file: their
        instances and timeouts (``app.processes.get(name, key)``). Raises ``RuntimeError``
        in memory."""
        self._need_file("process managers", "processes")
        assert self._processes is not None
        return self._processes

    def process_manager(
        self,
        manager: ProcessManager[Any],
        *,
        retry: RetryPolicy | None = None,
        start: Start | None = None,
    ) -> DurableSubscriber:
        """Run a :class:`~eventlite.process.ProcessManager` (see
        ``docs/process-managers.md``): a durable subscriber named ``manager.name`` of every
        type it handles, whose state is written with each event's inbox mark, and whose due
        timeouts the relay fires (by :attr:`clock`, also after a restart).

        ``retry`` is the subscriber's policy (default: three immediate attempts, then the
        DLQ). ``start``: where a manager new to a log that holds events begins (required
        then): at the ``"end"`` of the log (events stored before it was wired start
        nothing), or at the ``"beginning"``. Register the handlers of the commands it
        dispatches first: it starts delivering at once. Raises ``ValueError`` for a name in
        use, a manager without a starting handler, a new manager without ``start`` on a log
        that holds events, and ``RuntimeError`` in memory.
        """
        processes = self.processes
        relay = self.relay
        if manager.name in relay.names:
            raise ValueError(f"a durable subscriber named {manager.name!r} already exists")
        relay.check_start(manager.name, start)

        def alarm(when: float) -> None:
            relay.scheduler.call_at(when, relay.wake)

        runner = processes.runner(manager, dispatch=self.bus.dispatch, dlq=self._dlq, alarm=alarm)
        call, _ = self._durable_call(runner.handle)
        subscriber = relay.add(
            manager.name,
            runner.event_type,
            call,
            handler=runner.handle,
            uses_uow=True,
            retry=retry,
            start=start,
            on_pass=runner.fire_due,
        )
        runner.wake_at_next()
        return subscriber

    @property
    def streams(self) -> StreamRunner:
        """The :class:`~eventlite.streams.StreamRunner` of the app's file, with the app's
        codec, dead-letter queue and clock (made, and started, on first use: streams run
        as soon as they are added). Raises ``RuntimeError`` in memory."""
        self._need_file("stream processing")
        runner = self._streams
        if runner is None:
            with self._relay_lock:
                runner = self._streams
                if runner is None:
                    runner = StreamRunner(
                        self.storage,
                        self.codec,
                        dlq=self._dlq,
                        clock=self.clock,
                        poll_interval=self.poll_interval,
                    )
                    runner.start()
                    self._streams = runner
        return runner

    @overload
    def stream(self, stream: Stream, *, tables: Mapping[str, Table] | None = None) -> Stream: ...

    @overload
    def stream(
        self, stream: str, *, tables: Mapping[str, Table] | None = None
    ) -> AbstractContextManager[Stream]: ...

    def stream(
        self, stream: Stream | str, *, tables: Mapping[str, Table] | None = None
    ) -> Stream | AbstractContextManager[Stream]:
        """Run a stream-processing pipeline over the app's log (see ``docs/streams.md``).

        Given a built :class:`~eventlite.streams.Stream`, it starts it at once and returns
        it. Given a name, it returns a context manager: declare the pipeline on the
        stream it yields, and it starts when the block ends (not if the block raises)::

            with app.stream("views-per-minute") as views:
                (views.source(PageViewed, time="at")
                    .key_by(lambda v: v.page)
                    .window(Tumbling(timedelta(minutes=1)))
                    .count()
                    .to_table("views_per_minute"))

        ``tables`` are the keyed tables its ``join_table`` steps look values up in. Raises
        what :meth:`StreamRunner.add <eventlite.streams.StreamRunner.add>` raises, and
        ``RuntimeError`` in memory.
        """
        if isinstance(stream, str):
            return self._declare_stream(stream, tables)
        self.streams.add(stream, tables=tables)
        return stream

    @contextmanager
    def _declare_stream(self, name: str, tables: Mapping[str, Table] | None) -> Iterator[Stream]:
        self._need_file("stream processing")
        stream = Stream(name)
        yield stream
        self.streams.add(stream, tables=tables)

    # -- settling -------------------------------------------------------------------------

    def run_until_idle(self, timeout: float = 10.0) -> None:
        """Run background work until none is left: the bus's queued deliveries, every
        durable delivery of what is committed, delayed retries and process managers'
        timeouts due by :attr:`clock`, dead letters released for retry, sagas being
        resumed, and tracking projections (brought up to the head in this thread),
        including what that work itself produces. Streams are brought up to the head in
        this thread too, and what they append is delivered in turn.

        For tests: after it returns, every effect of what was done before is visible.
        Raises ``TimeoutError`` when ``timeout`` seconds pass first, and
        :class:`~eventlite.projection.ProjectionError` when a projection's handler fails.
        """
        deadline = time.monotonic() + timeout

        def remaining() -> float:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"background work did not settle within {timeout} s")
            return left

        while True:
            relay = self._relay
            before = relay.work_done if relay is not None else 0
            streams = self._streams
            appended = streams.appended if streams is not None else 0
            resuming = [t for t in self._resumers if t.is_alive()]
            for thread in resuming:
                thread.join(remaining())
                if thread.is_alive():
                    remaining()
            if not self.bus.drain(remaining()):
                remaining()
            if relay is not None and not relay.drain(remaining()):
                remaining()
                raise TimeoutError("a durable subscriber stopped before settling its events")
            if streams is not None and streams.streams:
                streams.catch_up()
            projector = self._projector
            if projector is not None and projector.projections:
                projector.catch_up()
            idle_bus = all(s.pending == 0 for s in self.bus.worker_stats())
            idle_relay = relay is None or relay.work_done == before
            idle_streams = streams is None or streams.appended == appended
            if idle_bus and not resuming and idle_relay and idle_streams:
                return

    # -- using it -----------------------------------------------------------------------

    def unit_of_work(self) -> UnitOfWork:
        """A new :class:`UnitOfWork` over this app's storage: its events dated by the
        app's clock, snapshots taken with the app's codec, inline projections written in
        every commit that records events, and the events published on the bus after the
        commit."""
        projector = self._projector
        return UnitOfWork(
            self.storage,
            publish=self.bus.publish_envelopes,
            converter=self.codec.converter,
            event_hooks=(self._write_inline,) if projector is not None else (),
            clock=self.clock,
        )

    def _write_inline(self, tx: StoreTransaction, recorded: Sequence[Envelope]) -> None:
        projector = self._projector
        if projector is not None and projector.projections:
            projector.hook(tx, recorded)

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

    def dispatch(self, command: Any) -> Any:
        """Run a command's handler and return its result (see :meth:`MessageBus.dispatch`)."""
        return self.bus.dispatch(command)

    def ask(self, query: Any) -> Any:
        """Answer a query (see :meth:`MessageBus.ask`)."""
        return self.bus.ask(query)

    def publish(self, *events: Any, key: Any = None) -> None:
        """Publish events on the bus without storing them (see :meth:`MessageBus.publish`)."""
        self.bus.publish(*events, key=key)

    def close(self, timeout: float = 10.0) -> list[str]:
        """Stop the relay (after the message it is handling: durable subscribers, process
        managers, sagas started by events), the sagas (after their current step; the next
        :meth:`start` resumes them) the streams and the tracking projections, finish the bus's
        background work, then close the store and the file.

        Returns within ``timeout`` seconds, whatever the handlers do: a thread still
        busy by then is abandoned (it is a daemon thread: it dies with the process), and
        the returned list — empty after a clean close — names each thing left behind; it
        is also logged as an error. The file stays consistent: a transaction a stuck
        handler still holds is rolled back by SQLite when the process ends, and what it
        was delivering is delivered again after a restart. Idempotent (a second call
        returns ``[]``).
        """
        if self._closed:
            return []
        self._closed = True
        deadline = time.monotonic() + max(0.0, timeout)

        def remaining() -> float:
            return max(0.0, deadline - time.monotonic())

        abandoned: list[str] = []
        # Sagas first: a saga started by an event runs on the relay's thread, and told to
        # stop it ends after its current step instead of holding the relay up. Every step
        # runs even if an earlier one fails, so no thread is left behind an error.
        steps: list[Callable[[], object]] = []
        for inbound in self._inbound:

            def close_inbound(inbound: Inbound = inbound) -> None:
                if not inbound.close(remaining()):
                    abandoned.append(
                        f"inbound bridge {inbound.name} still handling a batch (it comes "
                        "again from the broker)"
                    )

            steps.append(close_inbound)
        if self._sagas is not None:
            steps.append(self._sagas.close)
        relay = self._relay
        if relay is not None:

            def close_relay() -> None:
                if not relay.close(remaining()):
                    busy = [n for n, alive in relay.threads().items() if alive]
                    abandoned.append(
                        "durable subscribers still handling a message (delivered again "
                        f"after a restart): {', '.join(busy) or 'unknown'}"
                    )

            steps.append(close_relay)
        for outbound in self._outbound:

            def close_outbound(outbound: Outbound = outbound) -> None:
                outbound.close(min(5.0, remaining()))

            steps.append(close_outbound)
        for thread in self._resumers:

            def join_resumer(thread: threading.Thread = thread) -> None:
                thread.join(remaining())
                if thread.is_alive():
                    abandoned.append("resuming sagas (the next start() resumes them)")

            steps.append(join_resumer)
        streams = self._streams
        if streams is not None:
            steps.append(lambda: streams.close(remaining()))
        if self._projector is not None:
            projector = self._projector
            steps.append(lambda: projector.close(remaining()))

        def close_bus() -> None:
            if not self.bus.close(remaining()):
                abandoned.append("background bus subscribers still running")

        steps += [close_bus, self.store.close]
        database = self.database
        if database is not None:

            def close_database() -> None:
                if not database.close(timeout=remaining()):
                    abandoned.append(
                        f"a write transaction still open on {database.path} (rolled back "
                        "when the process ends)"
                    )

            steps.append(close_database)
        elif self.storage.durable:
            steps.append(self.storage.close)
        first_error: BaseException | None = None
        for step in steps:
            try:
                step()
            except BaseException as exc:
                if first_error is None:
                    first_error = exc
                else:
                    log.exception("closing the app: a further step failed")
        if abandoned:
            log.error(
                "closing the app took longer than %s s; left behind: %s",
                timeout,
                "; ".join(abandoned),
            )
        if first_error is not None:
            raise first_error
        return abandoned

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def run_forever(
        self,
        *,
        signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT),
        timeout: float = 10.0,
    ) -> None:
        """Run the app as a service: :meth:`start` it, then block until one of ``signals``
        arrives (SIGTERM from a process manager, SIGINT from Ctrl-C) or :meth:`stop` is
        called, then :meth:`close` it within ``timeout`` seconds.

        Call it from the main thread (only it can receive signals); the signal handlers
        it installs are put back as they were when it returns. Raises ``RuntimeError``
        from another thread or on a closed app.
        """
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("run_forever() handles signals, so it must run in the main thread")
        if self._closed:
            raise RuntimeError("the app is closed")
        stop = self._stop_requested

        def on_signal(signum: int, frame: object) -> None:
            log.info("%s received: closing the app", signal.Signals(signum).name)
            stop.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in signals}
        try:
            self.start()
            while not stop.wait(0.25):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close(timeout)

    def stop(self) -> None:
        """Make :meth:`run_forever` return (after closing the app); from any thread."""
        self._stop_requested.set()

    def __enter__(self) -> App:
        if self._closed:
            raise RuntimeError("the app is closed: make a new one")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _db_parameter(factory: Callable[..., Any]) -> inspect.Parameter | None:
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return None
    for p in params:
        if p.name == "db" and p.kind is not p.POSITIONAL_ONLY:
            return p
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            return p
    first = params[0] if params else None
    if first is not None and first.kind in (first.POSITIONAL_ONLY, first.POSITIONAL_OR_KEYWORD):
        # build(bus, clock) takes options, not a store: an option's name is never the store
        if first.name in _OPTION_NAMES:
            return None
        return first if first.default is first.empty else None
    return None


_OPTION_NAMES = frozenset({"registry", "bus", "clock", "metrics", "codec", "synchronous"})


def factory_takes_db(factory: Callable[..., Any]) -> bool:
    """Whether the application factory ``factory`` takes the app's storage, by the
    convention of :func:`call_app_factory`: a parameter named ``db``, a ``**options``
    parameter, or a first positional parameter without a default (``build(path)``)."""
    return _db_parameter(factory) is not None


def call_app_factory(
    factory: Callable[..., T], db: str | os.PathLike[str] | None = None, **options: Any
) -> T:
    """Call an application factory (the composition root, such as ``build(db)``) by the
    one convention every tool of eventlite follows: ``python -m eventlite graph``,
    ``events --app`` and ``projections rebuild --app``, and the testing toolkit.

    - A factory that takes the storage (:func:`factory_takes_db`: a parameter named
      ``db``, a ``**options`` parameter, or a first positional parameter without a
      default) is given ``db``, a SQLite path or a database URL: the caller's choice (the
      CLI gives a temporary file when the app only needs one to be wired, and the
      ``--db`` store when it works on it).
    - Each of ``options`` (``registry``, ``bus``, ``clock``, ...) goes to the parameter of
      its name; a ``**options`` parameter takes them all.
    - A factory that takes none of these is called with nothing: it chooses its own
      storage.

    Returns what the factory returns; its exceptions propagate.

    >>> call_app_factory(lambda db: f"App({db!r})", "shop.db")
    "App('shop.db')"
    """
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return factory()
    wanted = _db_parameter(factory)
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    everything = any(p.kind is p.VAR_KEYWORD for p in params)
    kwargs = {k: v for k, v in options.items() if everything or k in names}
    if wanted is None:
        return factory(**kwargs)
    target = None if db is None else os.fspath(db)
    if wanted.name == "db" or wanted.kind is wanted.VAR_KEYWORD:
        kwargs["db"] = target
        return factory(**kwargs)
    kwargs.pop(wanted.name, None)
    return factory(target, **kwargs)


def _name(handler: Callable[..., Any]) -> str:
    return getattr(handler, "__qualname__", repr(handler))
