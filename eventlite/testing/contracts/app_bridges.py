"""The application bridge contract suite: ``app.publish_to`` and ``app.consume_from`` over
a real broker keep eventlite's guarantees across it.

Run it by giving a ``bridge`` fixture that returns a
:class:`~eventlite.testing.brokers.BridgeTarget` and subclassing :class:`AppBridgeContract`::

    class TestAppBridgesOnRabbitMQ(AppBridgeContract):
        pass

Two apps, each with its own SQLite file, play the sending and the receiving service. Tests
that need what a broker cannot do skip by the :class:`~eventlite.bridges.Features` name it
lacks. The crash tests (a sending or a receiving process killed with SIGKILL) are marked
``slow``. Needs ``pytest``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest

from ...app import App
from ...bridges.base import OutgoingMessage
from ...bridges.cloudevents import CloudEventCodec
from ...codec import Codec
from ...envelope import Envelope
from ...messages import Registry, event
from ...unit_of_work import UnitOfWork
from ..brokers import BridgeTarget

__all__ = ["AppBridgeContract", "registry"]

registry = Registry()
"""The registry of the suite's events (child processes of the crash tests import it)."""


@attrs.frozen
class Line:
    """A nested value."""

    sku: str
    quantity: int


@event(registry=registry, name="appcontract.OrderPlaced")
class OrderPlaced:
    """An event of many shapes: text, numbers, a decimal, a time, a UUID, lists, a mapping,
    an optional and nested values."""

    order_id: str
    n: int
    total: Decimal = Decimal("0")
    at: datetime = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ref: uuid.UUID = uuid.UUID(int=0)
    tags: list[str] = attrs.field(factory=list)
    counts: dict[str, int] = attrs.field(factory=dict)
    note: str | None = None
    lines: tuple[Line, ...] = ()
    ratio: float = 0.0
    flag: bool = False


@event(registry=registry, name="appcontract.NotForTheBroker")
class NotForTheBroker:
    """An event the sender does not publish."""

    n: int


def _wait(what: str, ok: Callable[[], bool], timeout: float, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def _wait_for_count(what: str, count: Callable[[], int], target: int, stall: float) -> None:
    """Wait until ``count()`` reaches ``target``, failing only when it stops growing for
    ``stall`` seconds: a slow broker (moto's SQS) passes, a lost message still fails."""
    best = count()
    deadline = time.monotonic() + stall
    while best < target:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what}: stuck at {best} of {target} for {stall} s (nothing more arrived)"
            )
        time.sleep(0.05)
        now = count()
        if now > best:
            best, deadline = now, time.monotonic() + stall


def _need(target: BridgeTarget, feature: str) -> None:
    if not getattr(target.broker.features, feature):
        pytest.skip(f"{target.broker.name}: no {feature}")


def _ids(app: App, event_type: type[Any] = OrderPlaced) -> list[str]:
    head = app.store.head_position()
    if head == 0:
        return []
    return [e.id for e in app.store.read_all(1, head) if isinstance(e.message, event_type)]


def _inside(app: App, low: int, high: int) -> bool:
    """Whether the outbound bridge's stored checkpoint in ``app``'s file lies past ``low``
    and short of ``high``."""
    return any(
        low < s.checkpoint < high for s in app.subscribers() if s.name.startswith("bridge-out:")
    )


def _app(path: Path) -> App:
    return App(str(path), registry=registry, poll_interval=0.02, lease_seconds=None)


class AppBridgeContract:
    """The tests every broker passes with the application bridges; see the module doc."""

    @pytest.fixture
    def sender(self, tmp_path: Path) -> Iterator[App]:
        app = _app(tmp_path / "sender.db")
        yield app
        app.close()

    @pytest.fixture
    def receiver(self, tmp_path: Path) -> Iterator[App]:
        app = _app(tmp_path / "receiver.db")
        yield app
        app.close()

    def _timeout(self, bridge: BridgeTarget) -> float:
        return 30.0 + bridge.redelivery_wait

    # -- the happy path -------------------------------------------------------------------

    def test_events_arrive_once_with_their_identity(
        self, bridge: BridgeTarget, sender: App, receiver: App
    ) -> None:
        """Every committed event of the published type reaches the receiver's log once, in
        the order of its stream, with its id, time, metadata and every field as sent; other
        types stay home."""
        topic = bridge.name("orders")
        inbound = receiver.consume_from(bridge.broker, source=topic, group=bridge.name("g"))
        sender.publish_to(bridge.broker, OrderPlaced, destination=topic)
        shapes = [
            OrderPlaced(
                order_id=f"o-{i}",
                n=i,
                total=Decimal("19.99") * i,
                at=datetime(2026, 12, 5, 8, i % 60, tzinfo=timezone.utc),
                ref=uuid.UUID(int=i),
                tags=["naïve ✓", f"t{i}"],
                counts={"a": i, "ü": -i},
                note=None if i % 2 else f'note {i}\n"quoted"',
                lines=(Line("sku-1", i), Line("sku-2", 2)),
                ratio=i / 3,
                flag=bool(i % 3),
            )
            for i in range(40)
        ]
        with sender.unit_of_work() as uow:
            for i, e in enumerate(shapes):
                uow.append(f"order-{i % 4}", [e])
            uow.append("other", [NotForTheBroker(1)])
        _wait("40 events", lambda: len(_ids(receiver)) >= 40, self._timeout(bridge))
        sent = {
            e.id: e for e in sender.store.read_all(1, 100) if isinstance(e.message, OrderPlaced)
        }
        got = [e for e in receiver.store.read_all(1, 100)]
        assert sorted(sent) == sorted(e.id for e in got)
        for env in got:
            original = sent[env.id]
            assert original.message == env.message
            assert original.metadata == env.metadata
            assert original.timestamp == env.timestamp
        for stream in {e.stream_id for e in got}:
            ns = [e.message.n for e in got if e.stream_id == stream]
            assert sorted(ns) == ns or not bridge.broker.features.ordered_per_key
        assert inbound.status.dead_lettered == 0

    def test_order_per_key_with_several_keys_in_flight(
        self, bridge: BridgeTarget, sender: App, receiver: App
    ) -> None:
        """The events of each stream arrive in their commit order, with several streams
        interleaved in the log."""
        _need(bridge, "ordered_per_key")
        topic = bridge.name("ordered")
        receiver.consume_from(bridge.broker, source=topic, group=bridge.name("g"), batch=7)
        sender.publish_to(bridge.broker, OrderPlaced, destination=topic)
        for start in range(0, 300, 50):
            with sender.unit_of_work() as uow:
                for i in range(start, start + 50):
                    uow.append(f"order-{i % 6}", [OrderPlaced(f"o-{i}", i)])
        _wait("300 events", lambda: len(_ids(receiver)) >= 300, self._timeout(bridge))
        got = list(receiver.store.read_all(1, 1000))
        assert 300 == len(got)
        for k in range(6):
            ns = [e.message.n for e in got if str(e.stream_id).endswith(f"order-{k}")]
            assert [n for n in range(300) if n % 6 == k] == ns

    def test_a_message_sent_twice_is_handled_once(
        self, bridge: BridgeTarget, sender: App, receiver: App
    ) -> None:
        """A copy of a message (a resend after a lost confirm) is dropped by the inbox."""
        topic = bridge.name("twice")
        inbound = receiver.consume_from(bridge.broker, source=topic, group=bridge.name("g"))
        sender.publish_to(bridge.broker, OrderPlaced, destination=topic)
        with sender.unit_of_work() as uow:
            uow.append("order-1", [OrderPlaced("o-1", 1), OrderPlaced("o-1", 2)])
        _wait("2 events", lambda: len(_ids(receiver)) >= 2, self._timeout(bridge))
        wire = CloudEventCodec(Codec(registry))
        again = [wire.outgoing(env, topic) for env in sender.store.read_all(1, 10)]
        with bridge.broker.publisher() as pub:
            assert all(r.confirmed for r in pub.send_batch(again))
        if bridge.broker.features.dedupe:
            # the broker drops the copies itself; an event sent after them shows they are past
            with sender.unit_of_work() as uow:
                uow.append("order-1", [OrderPlaced("o-1", 3)])
            _wait("the third event", lambda: len(_ids(receiver)) >= 3, self._timeout(bridge))
        else:
            _wait(
                "the copies dropped", lambda: inbound.status.duplicates >= 2, self._timeout(bridge)
            )
        assert sorted(_ids(sender)) == sorted(_ids(receiver))
        assert len(_ids(sender)) == receiver.store.head_position()

    # -- bad input and failures ------------------------------------------------------------

    def test_bad_messages_are_dead_lettered_and_the_flow_goes_on(
        self, bridge: BridgeTarget, sender: App, receiver: App
    ) -> None:
        """A body that is not a CloudEvent and a CloudEvent of a type the receiver's
        registry lacks go to its dead-letter queue, raw, with the broker coordinates; the
        messages after them are handled."""
        topic = bridge.name("bad")
        inbound = receiver.consume_from(bridge.broker, source=topic, group=bridge.name("g"))
        stranger = Registry()

        @event(registry=stranger, name="os.system")
        class Evil:
            command: str

        foreign = CloudEventCodec(Codec(stranger)).outgoing(Envelope(Evil("rm -rf /")), topic)
        with bridge.broker.publisher() as pub:
            results = pub.send_batch(
                [
                    OutgoingMessage(topic, b"\x00 not json", key="k", id="garbage-1"),
                    foreign,
                ]
            )
            assert all(r.confirmed for r in results)
        sender.publish_to(bridge.broker, OrderPlaced, destination=topic)
        with sender.unit_of_work() as uow:
            uow.append("order-1", [OrderPlaced("o-1", 1)])
        _wait("the good event", lambda: len(_ids(receiver)) >= 1, self._timeout(bridge))
        _wait("2 dead letters", lambda: inbound.status.dead_lettered >= 2, self._timeout(bridge))
        letters = receiver.dlq.list(inbound.name)
        assert 2 == len(letters)
        kinds = sorted(str(d.error_type).rsplit(".", 1)[-1] for d in letters)
        assert ["CloudEventDecodeError", "UnknownCloudEventType"] == kinds
        for letter in letters:
            assert "coordinates" in str(letter.message)
        assert 1 == receiver.store.head_position()

    def test_a_failing_handler_is_dead_lettered_then_retried_by_an_operator(
        self, bridge: BridgeTarget, sender: App, receiver: App
    ) -> None:
        """A handler that keeps failing on one message dead-letters it after its attempts
        (the others of the batch are handled); once fixed, ``dlq retry`` handles it."""
        topic = bridge.name("failing")
        broken = {"on": True}
        handled: list[int] = []

        def handle(e: OrderPlaced, uow: UnitOfWork) -> None:
            if e.n == 3 and broken["on"]:
                raise RuntimeError("the warehouse is closed")
            handled.append(e.n)

        inbound = receiver.consume_from(
            bridge.broker, source=topic, group=bridge.name("g"), handler=handle
        )
        sender.publish_to(bridge.broker, OrderPlaced, destination=topic)
        with sender.unit_of_work() as uow:
            uow.append("order-1", [OrderPlaced(f"o-{i}", i) for i in range(6)])
        _wait("5 events", lambda: len(_ids(receiver)) >= 5, self._timeout(bridge))
        _wait("the dead letter", lambda: inbound.status.dead_lettered >= 1, 10)
        assert 3 not in handled
        [letter] = receiver.dlq.list(inbound.name)
        assert "the warehouse is closed" in str(letter.error_message)
        broken["on"] = False
        receiver.dlq.retry(letter.id)
        _wait("6 events", lambda: len(_ids(receiver)) >= 6, 10)
        assert 3 in handled
        _wait("the dead letter resolved", lambda: not receiver.dlq.list(inbound.name), 10)

    def test_two_receivers_of_one_group_share_without_double_effects(
        self, bridge: BridgeTarget, sender: App, tmp_path: Path
    ) -> None:
        """Two processes of the receiving service (one file, one group) share the messages;
        each event is recorded once."""
        _need(bridge, "consumer_groups")
        topic = bridge.name("shared")
        one = _app(tmp_path / "shared.db")
        two = _app(tmp_path / "shared.db")
        try:
            a = one.consume_from(bridge.broker, source=topic, group=bridge.name("g"), batch=5)
            b = two.consume_from(bridge.broker, source=topic, group=bridge.name("g"), batch=5)
            sender.publish_to(bridge.broker, OrderPlaced, destination=topic)
            for start in range(0, 200, 20):
                with sender.unit_of_work() as uow:
                    uow.append(
                        f"order-{start}", [OrderPlaced("o", i) for i in range(start, start + 20)]
                    )
            _wait("200 events", lambda: len(_ids(one)) >= 200, self._timeout(bridge) + 30)
            ids = _ids(one)
            assert len(ids) == len(set(ids)) == 200
            assert a.status.handled + b.status.handled >= 200
        finally:
            one.close()
            two.close()

    def test_bounded_in_flight_with_a_slow_handler(
        self, bridge: BridgeTarget, sender: App, receiver: App
    ) -> None:
        """A slow handler never holds more than ``prefetch`` deliveries unacknowledged."""
        topic = bridge.name("slow")
        most = {"n": 0}
        inbound_ref: list[Any] = []

        def slow(e: OrderPlaced, uow: UnitOfWork) -> None:
            sub = inbound_ref[0]._subscriber
            most["n"] = max(most["n"], sub.in_flight if sub is not None else 0)
            time.sleep(0.002)

        inbound = receiver.consume_from(
            bridge.broker, source=topic, group=bridge.name("g"), handler=slow, batch=4, prefetch=4
        )
        inbound_ref.append(inbound)
        sender.publish_to(bridge.broker, OrderPlaced, destination=topic)
        with sender.unit_of_work() as uow:
            uow.append("order-1", [OrderPlaced("o", i) for i in range(60)])
        _wait("60 events", lambda: len(_ids(receiver)) >= 60, self._timeout(bridge) + 30)
        assert 0 < most["n"] <= 4

    @pytest.mark.slow
    def test_a_broker_restart_mid_stream_loses_nothing(
        self, restartable_bridge: BridgeTarget, tmp_path: Path
    ) -> None:
        """The broker restarts while one app commits and sends and the other receives:
        every committed event is recorded by the receiver, once."""
        bridge = restartable_bridge
        _need(bridge, "survives_restart")
        restart = bridge.restart
        if restart is None:
            pytest.skip(f"{bridge.broker.name}: the fixture cannot restart it")
        topic = bridge.name("restart")
        sender = _app(tmp_path / "restart-sender.db")
        receiver = _app(tmp_path / "restart-receiver.db")
        try:
            receiver.consume_from(bridge.broker, source=topic, group=bridge.name("g"))
            sender.publish_to(bridge.broker, OrderPlaced, destination=topic, send_timeout=5)
            done = threading.Event()

            def restart_soon() -> None:
                time.sleep(0.3)
                restart()
                done.set()

            thread = threading.Thread(target=restart_soon)
            thread.start()
            for start in range(0, 300, 10):
                with sender.unit_of_work() as uow:
                    uow.append(
                        f"order-{start % 30}",
                        [OrderPlaced("o", i) for i in range(start, start + 10)],
                    )
                time.sleep(0.03)
            thread.join(120)
            assert done.is_set()
            _wait("300 events", lambda: len(_ids(receiver)) >= 300, 90 + bridge.redelivery_wait)
            got = _ids(receiver)
            assert sorted(_ids(sender)) == sorted(got)
            assert len(got) == len(set(got))
        finally:
            sender.close()
            receiver.close()

    # -- crashes ------------------------------------------------------------------------------

    def _child(self, bridge: BridgeTarget, body: str) -> subprocess.Popen[str]:
        script = textwrap.dedent(
            """
            import sys, time
            from eventlite import App
            from eventlite.testing.contracts.app_bridges import registry, OrderPlaced
            {recipe}
            """
        ).format(recipe=bridge.recipe) + textwrap.dedent(body)
        return subprocess.Popen(
            [sys.executable, "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )

    @pytest.mark.slow
    def test_a_killed_sender_loses_nothing(
        self, bridge: BridgeTarget, receiver: App, tmp_path: Path
    ) -> None:
        """The sending process is killed with SIGKILL right after it committed a burst the
        bridge had not yet sent, while it goes on committing; restarted, it sends what the
        broker had not confirmed: the receiver gets every committed event once."""
        _need(bridge, "redelivery_after_crash")
        topic = bridge.name("killed-sender")
        receiver.consume_from(bridge.broker, source=topic, group=bridge.name("g"))
        path = tmp_path / "killed-sender.db"
        end = 60 + 3 * bridge.page  # the burst takes positions 61..end
        child = self._child(
            bridge,
            f"""
            app = App({str(path)!r}, registry=registry, poll_interval=0.01, lease_seconds=None)
            app.relay.batch_size = {bridge.page}
            app.publish_to(broker, OrderPlaced, destination={topic!r}, start="beginning")
            def one(i):
                with app.unit_of_work() as uow:
                    uow.append(f"order-{{i % 5}}", [OrderPlaced("o", i)])
            for i in range(60):
                one(i)
                time.sleep(0.001)
            print("flowing", flush=True)
            sys.stdin.readline()
            with app.unit_of_work() as uow:
                for k in range(5):
                    burst = [OrderPlaced("o", i) for i in range(60 + k, {end}, 5)]
                    uow.append(f"order-{{k}}", burst)
            print("going", flush=True)
            for i in range({end}, 100000):
                one(i)
                time.sleep(0.001)
            """,
        )
        watcher = _app(path)
        try:
            assert child.stdout is not None and child.stdin is not None
            assert "flowing" == child.stdout.readline().strip()
            _wait("some events across", lambda: len(_ids(receiver)) >= 50, self._timeout(bridge))
            child.stdin.write("burst\n")
            child.stdin.flush()
            assert "going" == child.stdout.readline().strip()
            # Killed in the middle of the burst of three pages: the bridge's checkpoint has
            # moved into it (a page confirmed) and not through it (a page in flight).
            _wait(
                "the bridge's checkpoint inside the burst",
                lambda: _inside(watcher, 60, end),
                self._timeout(bridge),
                poll=0.0005,
            )
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
            watcher.close()
        across = len(_ids(receiver))
        again = _app(path)
        try:
            committed = _ids(again)
            # Not vacuous: the burst was committed and not yet all sent when the child died.
            assert across < len(committed), (across, len(committed))
            again.publish_to(bridge.broker, OrderPlaced, destination=topic)
            _wait_for_count(
                f"the {len(committed)} committed events",
                lambda: len(_ids(receiver)),
                len(committed),
                self._timeout(bridge) + 30,
            )
            got = _ids(receiver)
            assert sorted(committed) == sorted(got)
        finally:
            again.close()

    @pytest.mark.slow
    def test_a_killed_receiver_handles_nothing_twice(
        self, bridge: BridgeTarget, sender: App, tmp_path: Path
    ) -> None:
        """The receiving process is killed with SIGKILL mid-stream (commits done, acks
        pending); restarted, it handles the rest, and every event is recorded once."""
        _need(bridge, "redelivery_after_crash")
        topic = bridge.name("killed-receiver")
        group = bridge.name("g")
        path = tmp_path / "killed-receiver.db"
        child = self._child(
            bridge,
            f"""
            app = App({str(path)!r}, registry=registry, poll_interval=0.01, lease_seconds=None)
            seen = []
            def slow(e, uow):
                seen.append(e.n)
                if len(seen) == 20:
                    print("going", flush=True)
                time.sleep(0.002)
            app.consume_from(broker, source={topic!r}, group={group!r}, handler=slow, batch=10)
            print("ready", flush=True)
            time.sleep(600)
            """,
        )
        try:
            assert child.stdout is not None
            assert "ready" == child.stdout.readline().strip()
            sender.publish_to(bridge.broker, OrderPlaced, destination=topic)
            with sender.unit_of_work() as uow:
                uow.append("order-1", [OrderPlaced("o", i) for i in range(300)])
            assert "going" == child.stdout.readline().strip()
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
        again = _app(path)
        try:
            again.consume_from(bridge.broker, source=topic, group=group)
            _wait_for_count("300 events", lambda: len(_ids(again)), 300, self._timeout(bridge) + 30)
            got = _ids(again)
            assert sorted(_ids(sender)) == sorted(got)
            assert len(got) == len(set(got))
        finally:
            again.close()
