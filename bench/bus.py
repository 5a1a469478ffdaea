"""The in-memory bus beside blinker, a hand-written dict bus and a thread pool.

- publish one event to 1 and to 10 synchronous subscribers, with a full envelope and
  correlation, beside blinker's ``Signal.send`` to as many receivers;
- dispatch a command and ask a query beside a dict of type -> handler;
- background throughput through 4 workers with per-key ordering, beside
  ``ThreadPoolExecutor(4).submit`` of the same calls.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from blinker import Signal

from eventlite.bus import MessageBus
from eventlite.messages import Registry, command, event, query

from ._harness import Row, per_call_us, rate

__all__ = ["DictBus", "run"]

_registry = Registry()


@event(registry=_registry)
class ItemAdded:
    cart_id: str
    sku: str


@command(registry=_registry)
class AddItem:
    cart_id: str
    sku: str


@query(registry=_registry)
class CountItems:
    cart_id: str


class DictBus:
    """The floor: a dict of type -> handler and a dict of type -> list of subscribers."""

    def __init__(self) -> None:
        self.handlers: dict[type[Any], Callable[[Any], Any]] = {}
        self.subscribers: dict[type[Any], list[Callable[[Any], Any]]] = {}

    def dispatch(self, message: Any) -> Any:
        return self.handlers[type(message)](message)

    def publish(self, event: Any) -> None:
        for handler in self.subscribers.get(type(event), ()):
            handler(event)


def _noop(message: Any) -> None:
    return None


def _paired(
    ours: Callable[[], object], theirs: Callable[[], object], number: int, rounds: int = 5
) -> tuple[float, float]:
    """Best per-call microseconds of each, measured in alternating rounds so that a busy
    moment on the machine weighs on both sides alike."""
    best_ours = best_theirs = float("inf")
    for _ in range(rounds):
        best_ours = min(best_ours, per_call_us(ours, number, repeat=2))
        best_theirs = min(best_theirs, per_call_us(theirs, number, repeat=2))
    return best_ours, best_theirs


def _sync_rows(quick: bool) -> list[Row]:
    number = 20_000 if quick else 100_000
    rows = []
    ev = ItemAdded("c-1", "sku-1")
    for fanout, target in ((1, 1.0), (10, 0.5)):
        bus = MessageBus(_registry)
        signal = Signal()
        # blinker keeps weak references: the receivers must outlive the benchmark.
        receivers = [lambda sender: None for _ in range(fanout)]
        for i in range(fanout):
            bus.subscribe(ItemAdded, _noop, name=f"noop-{i}")
            signal.connect(receivers[i])
        ours, theirs = _paired(
            functools.partial(bus.publish, ev), functools.partial(signal.send, ev), number
        )
        rows.append(
            Row(
                name=f"publish to {fanout} sync subscriber{'s' if fanout > 1 else ''}",
                value=ours,
                unit="µs",
                baseline=f"blinker Signal.send, {fanout} receiver{'s' if fanout > 1 else ''}",
                baseline_value=theirs,
                target=f"ratio <= {target}",
                met=ours <= target * theirs,
            )
        )
        bus.close()

    # For orientation, no target: what envelope and correlation cost over a bare dict bus.
    bus = MessageBus(_registry)
    floor = DictBus()
    bus.subscribe(ItemAdded, _noop)
    floor.subscribers[ItemAdded] = [_noop]
    ours, theirs = _paired(lambda: bus.publish(ev), lambda: floor.publish(ev), number)
    rows.append(
        Row(
            name="publish to 1 sync subscriber (envelope cost)",
            value=ours,
            unit="µs",
            baseline="dict bus (type -> list of handlers)",
            baseline_value=theirs,
        )
    )
    bus.close()

    bus = MessageBus(_registry)
    floor = DictBus()
    bus.register(AddItem, _noop)
    bus.register(CountItems, _noop)
    floor.handlers[AddItem] = _noop
    floor.handlers[CountItems] = _noop
    cmd = AddItem("c-1", "sku-1")
    qry = CountItems("c-1")
    for label, ours_fn, floor_fn in (
        ("dispatch a command", lambda: bus.dispatch(cmd), lambda: floor.dispatch(cmd)),
        ("ask a query", lambda: bus.ask(qry), lambda: floor.dispatch(qry)),
    ):
        ours, theirs = _paired(ours_fn, floor_fn, number)
        rows.append(
            Row(
                name=label,
                value=ours,
                unit="µs",
                baseline="dict bus (type -> handler)",
                baseline_value=theirs,
                target="ratio <= 3",
                met=ours <= 3 * theirs,
            )
        )
    bus.close()
    return rows


def _background_row(quick: bool) -> Row:
    count = 20_000 if quick else 200_000
    keys = [f"cart-{i}" for i in range(64)]
    events = [ItemAdded(keys[i % 64], f"sku-{i}") for i in range(count)]
    seen = [0]
    lock = threading.Lock()

    def handle(e: ItemAdded) -> None:
        # the same small amount of work on both sides
        with lock:
            seen[0] += 1

    bus = MessageBus(_registry, workers=4, queue_size=1024)
    bus.subscribe(ItemAdded, handle, background=True)

    def ours() -> int:
        publish = bus.publish
        for e in events:
            publish(e, key=e.cart_id)
        bus.drain()
        return count

    pool = ThreadPoolExecutor(4)

    def theirs() -> int:
        submit = pool.submit
        futures = [submit(handle, e) for e in events]
        wait(futures)
        return count

    ours_rate = rate(ours)
    theirs_rate = rate(theirs)
    bus.close()
    pool.shutdown()
    return Row(
        name="background: events/s, 4 workers, ordered per key",
        value=ours_rate,
        unit="ev/s",
        baseline="ThreadPoolExecutor(4).submit",
        baseline_value=theirs_rate,
        target="ratio >= 1.0",
        met=ours_rate >= theirs_rate,
        higher_is_better=True,
    )


def run(quick: bool) -> list[Row]:
    """Measure the bus beside its baselines; see the module docstring."""
    return [*_sync_rows(quick), _background_row(quick)]
