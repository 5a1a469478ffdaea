"""The bridge contract suite: every broker transport passes the same tests against a real
broker.

A transport runs it by giving a ``bridge`` fixture (and, for the restart test, a
``restartable_bridge`` fixture) that returns a :class:`~eventlite.testing.brokers.BridgeTarget`
and subclassing :class:`BridgeContract`::

    class TestRabbitMQ(BridgeContract):
        pass

Tests that need something a broker cannot do skip by the :class:`~eventlite.bridges.Features`
name it lacks (``ordered_per_key``, ``requeue``, ``dedupe`` ...), so a broker passes exactly
what it promises. Each test works under the target's unique prefix; the fixture purges it.
Needs ``pytest``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence

import pytest

from ...bridges.base import Delivery, OutgoingMessage, Publisher, Subscriber
from ...bridges.cloudevents import CloudEventCodec
from ...codec import Codec
from ...envelope import Envelope, Metadata
from ...messages import Registry, event
from ..brokers import BridgeTarget

__all__ = ["BridgeContract", "receive_all"]

_registry = Registry()


@event(registry=_registry, name="contract.ParcelShipped")
class ParcelShipped:
    """A message for the wire-format round trip through a broker."""

    parcel_id: str
    weight_grams: int


def receive_all(sub: Subscriber, want: int, timeout: float, *, ack: bool = True) -> list[Delivery]:
    """Receive until ``want`` deliveries came or ``timeout`` seconds passed, acking each
    batch unless ``ack`` is false."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        batch = sub.receive(max=min(100, want - len(got)), timeout=0.5)
        got.extend(batch)
        if ack and batch:
            sub.ack(batch)
    return got


def _need(target: BridgeTarget, feature: str) -> None:
    if not getattr(target.broker.features, feature):
        pytest.skip(f"{target.broker.name}: no {feature}")


def _bodies(items: Sequence[Delivery | OutgoingMessage]) -> list[bytes]:
    return [d.body for d in items]


class BridgeContract:
    """The tests every broker transport passes; see the module docstring."""

    @pytest.fixture
    def pub(self, bridge: BridgeTarget) -> Iterator[Publisher]:
        p = bridge.broker.publisher()
        yield p
        p.close()

    def _subscriber(
        self, bridge: BridgeTarget, source: str, group: str, prefetch: int = 100
    ) -> Subscriber:
        return bridge.broker.subscriber(source, group=group, prefetch=prefetch)

    # -- sending and receiving ------------------------------------------------------------

    def test_round_trip_of_bodies_headers_keys_and_ids(
        self, bridge: BridgeTarget, pub: Publisher
    ) -> None:
        """What is sent arrives unchanged: any bytes as the body, text headers (non-ASCII
        too), the key and the message id; send_batch confirms each message, in order."""
        topic = bridge.name("roundtrip")
        sub = self._subscriber(bridge, topic, bridge.name("g"))
        try:
            sent = [
                OutgoingMessage(topic, b"\x00\xff binary \xe9", key="k1", id="m-1",
                                headers={"x-one": "1", "x-text": "naïve ✓"}),
                OutgoingMessage(topic, b'{"json": true}', key="k2", id="m-2"),
                OutgoingMessage(topic, b"x" * 65536, key="k1", id="m-3"),
            ]  # fmt: skip
            results = pub.send_batch(sent)
            assert [m.id for m in sent] == [r.message.id for r in results]
            assert [None, None, None] == [r.error for r in results]
            got = receive_all(sub, 3, 20)
            by_id = {d.message_id: d for d in got}
            assert ["m-1", "m-2", "m-3"] == sorted(str(k) for k in by_id)
            for m in sent:
                d = by_id[m.id]
                assert m.body == d.body
                if bridge.broker.features.headers:
                    assert dict(m.headers) == {k: d.headers[k] for k in m.headers}
                assert m.key == d.key
                assert d.coordinates
        finally:
            sub.close()

    def test_receive_returns_what_came_without_waiting_out_its_timeout(
        self, bridge: BridgeTarget, pub: Publisher
    ) -> None:
        """``receive(max=100, timeout=T)`` with fewer than ``max`` messages waiting returns
        them once the first is there, not after ``T`` (a batch filled by the deadline
        would add up to ``T`` to every message of a quiet stream)."""
        topic = bridge.name("prompt")
        sub = self._subscriber(bridge, topic, bridge.name("g"))
        try:
            pub.send_batch([OutgoingMessage(topic, b"first", key="k", id="r-1")])
            assert 1 == len(receive_all(sub, 1, 30))  # joined, assigned, reading
            pub.send_batch([OutgoingMessage(topic, b"second", key="k", id="r-2")])
            started = time.monotonic()
            got = sub.receive(max=100, timeout=20)
            took = time.monotonic() - started
            sub.ack(got)
            assert [b"second"] == _bodies(got)
            assert took < 10, f"receive took {took:.1f} s of its 20 s timeout for 1 message"
        finally:
            sub.close()

    def test_cloudevents_round_trip_in_both_modes(
        self, bridge: BridgeTarget, pub: Publisher
    ) -> None:
        """An envelope sent as a CloudEvent, structured and (where the broker has headers)
        binary with the broker binding's prefix, decodes to the same envelope."""
        topic = bridge.name("ce")
        sub = self._subscriber(bridge, topic, bridge.name("g"))
        codec = Codec(_registry)
        modes = [False, True] if bridge.broker.features.headers else [False]
        try:
            envelopes = [
                Envelope(
                    ParcelShipped(parcel_id=f"p-{i}", weight_grams=i),
                    metadata=Metadata(correlation_id="c-1", causation_id="c-0",
                                      headers={"tenant": "acme"}),
                    stream_id="parcel-1", version=i + 1, position=10 + i,
                )
                for i in range(len(modes))
            ]  # fmt: skip
            wires = [
                CloudEventCodec(codec, binary=b, header_prefix=bridge.broker.features.header_prefix)
                for b in modes
            ]
            outgoing = [w.outgoing(e, topic) for w, e in zip(wires, envelopes, strict=True)]
            assert all(r.confirmed for r in pub.send_batch(outgoing))
            got = receive_all(sub, len(modes), 20)
            decoded = sorted(
                (wires[0].decode_delivery(d) for d in got), key=lambda e: e.version or 0
            )
            assert envelopes == decoded
        finally:
            sub.close()

    def test_order_per_key_with_several_keys_in_flight(
        self, bridge: BridgeTarget, pub: Publisher
    ) -> None:
        """Messages of one key reach a consumer in the order they were sent, while five keys
        are interleaved over several batches."""
        _need(bridge, "ordered_per_key")
        topic = bridge.name("order")
        sub = self._subscriber(bridge, topic, bridge.name("g"))
        try:
            sent = [
                OutgoingMessage(topic, f"{k}:{i}".encode(), key=f"key-{k}", id=f"{k}-{i}")
                for i in range(40)
                for k in range(5)
            ]
            for start in range(0, len(sent), 50):
                assert all(r.confirmed for r in pub.send_batch(sent[start : start + 50]))
            got = receive_all(sub, len(sent), 30)
            assert len(sent) == len(got)
            for k in range(5):
                mine = [int(d.body.split(b":")[1]) for d in got if d.key == f"key-{k}"]
                assert list(range(40)) == mine
        finally:
            sub.close()

    def test_dedupe_drops_a_resent_message(self, bridge: BridgeTarget, pub: Publisher) -> None:
        """A message sent again with the same id is delivered once."""
        _need(bridge, "dedupe")
        topic = bridge.name("dedupe")
        sub = self._subscriber(bridge, topic, bridge.name("g"))
        try:
            m = OutgoingMessage(topic, b"once", key="k", id="same-id")
            assert pub.send_batch([m])[0].confirmed
            assert pub.send_batch([m])[0].confirmed
            got = receive_all(sub, 2, 1.0)
            assert [b"once"] == _bodies(got)
        finally:
            sub.close()

    # -- settling -------------------------------------------------------------------------

    def test_nack_with_requeue_delivers_again(self, bridge: BridgeTarget, pub: Publisher) -> None:
        """A nacked delivery (requeue) comes back, marked redelivered where the broker
        says so; acking it then ends it."""
        _need(bridge, "requeue")
        topic = bridge.name("nack")
        sub = self._subscriber(bridge, topic, bridge.name("g"))
        try:
            pub.send_batch([OutgoingMessage(topic, b"again", key="k", id="n-1")])
            [first] = receive_all(sub, 1, 10, ack=False)
            sub.nack([first])
            [second] = receive_all(sub, 1, bridge.redelivery_wait + 10)
            assert b"again" == second.body
            assert second.redelivered in (True, None)
            assert [] == receive_all(sub, 1, 0.5)
        finally:
            sub.close()

    def test_nack_without_requeue_drops_it(self, bridge: BridgeTarget, pub: Publisher) -> None:
        """A delivery nacked without requeue is not delivered again; the next one is."""
        topic = bridge.name("drop")
        sub = self._subscriber(bridge, topic, bridge.name("g"))
        try:
            pub.send_batch([OutgoingMessage(topic, b"poison", key="k", id="p-1")])
            [first] = receive_all(sub, 1, 10, ack=False)
            sub.nack([first], requeue=False)
            pub.send_batch([OutgoingMessage(topic, b"next", key="k", id="p-2")])
            assert [b"next"] == _bodies(receive_all(sub, 2, 1.5))
        finally:
            sub.close()

    def test_settling_twice_is_ignored(self, bridge: BridgeTarget, pub: Publisher) -> None:
        """Acking a delivery twice, or nacking an acked one, changes nothing and raises
        nothing; in_flight counts each delivery once."""
        topic = bridge.name("twice")
        sub = self._subscriber(bridge, topic, bridge.name("g"))
        try:
            pub.send_batch([OutgoingMessage(topic, b"one", key="k", id="t-1")])
            got = receive_all(sub, 1, 10, ack=False)
            assert 1 == sub.in_flight
            sub.ack(got)
            sub.ack(got)
            sub.nack(got)
            assert 0 == sub.in_flight
            assert [] == receive_all(sub, 1, 0.5)
        finally:
            sub.close()

    # -- back-pressure and groups ---------------------------------------------------------

    def test_bounded_in_flight_with_a_slow_consumer(
        self, bridge: BridgeTarget, pub: Publisher
    ) -> None:
        """A subscriber never holds more than ``prefetch`` unsettled deliveries: at the bound
        ``receive`` returns nothing; a slow consumer settling one at a time still gets
        everything."""
        topic = bridge.name("bounded")
        sub = self._subscriber(bridge, topic, bridge.name("g"), prefetch=5)
        try:
            sent = [OutgoingMessage(topic, b"%d" % i, key="k", id=f"b-{i}") for i in range(30)]
            assert all(r.confirmed for r in pub.send_batch(sent))
            held: list[Delivery] = []
            deadline = time.monotonic() + 10
            while len(held) < 5 and time.monotonic() < deadline:
                held += sub.receive(max=100, timeout=0.5)
            assert 5 == len(held)
            assert [] == sub.receive(max=100, timeout=0.3)
            assert 5 == sub.in_flight
            sub.ack(held)
            got = list(held)
            most = 0
            deadline = time.monotonic() + 30
            while len(got) < 30 and time.monotonic() < deadline:
                batch = sub.receive(max=100, timeout=0.5)
                most = max(most, sub.in_flight)
                for d in batch:
                    time.sleep(0.01)
                    sub.ack([d])
                got += batch
            assert most <= 5
            assert sorted(_bodies(sent)) == sorted(_bodies(got))
        finally:
            sub.close()

    def test_two_consumers_of_one_group_share_the_work(
        self, bridge: BridgeTarget, pub: Publisher
    ) -> None:
        """Two subscribers of one group receive every message between them, each at least
        one, none twice (both acking promptly)."""
        _need(bridge, "consumer_groups")
        topic = bridge.name("shared")
        group = bridge.name("g")
        a = self._subscriber(bridge, topic, group, prefetch=10)
        b = self._subscriber(bridge, topic, group, prefetch=10)
        try:
            sent = [
                OutgoingMessage(topic, b"%d" % i, key=f"k{i % 7}", id=f"s-{i}") for i in range(200)
            ]
            assert all(r.confirmed for r in pub.send_batch(sent))
            got: dict[str, list[bytes]] = {"a": [], "b": []}
            deadline = time.monotonic() + 30
            while len(got["a"]) + len(got["b"]) < 200 and time.monotonic() < deadline:
                for name, sub in (("a", a), ("b", b)):
                    batch = sub.receive(max=5, timeout=0.2)
                    got[name] += _bodies(batch)
                    if batch:
                        sub.ack(batch)
                        time.sleep(0.005)
            assert sorted(_bodies(sent)) == sorted(got["a"] + got["b"])
            assert got["a"] and got["b"]
        finally:
            a.close()
            b.close()

    # -- crashes ---------------------------------------------------------------------------

    def test_unsettled_deliveries_of_a_killed_consumer_come_back(
        self, bridge: BridgeTarget, pub: Publisher
    ) -> None:
        """A consumer process killed with SIGKILL after receiving and before acking loses
        nothing: another consumer of the group receives the same messages."""
        _need(bridge, "redelivery_after_crash")
        topic = bridge.name("crash")
        group = bridge.name("g")
        self._subscriber(bridge, topic, group).close()  # declare the queue/group
        sent = [OutgoingMessage(topic, b"%d" % i, key="k", id=f"c-{i}") for i in range(5)]
        assert all(r.confirmed for r in pub.send_batch(sent))
        script = textwrap.dedent(
            """
            import sys, time
            {recipe}
            sub = broker.subscriber({topic!r}, group={group!r}, prefetch=100)
            got = []
            deadline = time.monotonic() + 30
            while len(got) < 5 and time.monotonic() < deadline:
                got += sub.receive(max=100, timeout=0.5)
            print(len(got), flush=True)
            time.sleep(600)
            """
        ).format(recipe=bridge.recipe, topic=topic, group=group)
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            line = child.stdout.readline().strip()
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
        assert "5" == line
        sub = self._subscriber(bridge, topic, group)
        try:
            got = receive_all(sub, 5, bridge.redelivery_wait + 20)
            assert sorted(_bodies(sent)) == sorted(_bodies(got))
        finally:
            sub.close()

    def test_close_returns_within_its_timeout(self, bridge: BridgeTarget) -> None:
        """Closing a publisher and a subscriber returns within the timeout, twice over;
        a closed one refuses further calls."""
        from ...bridges.base import BridgeClosed

        topic = bridge.name("close")
        sub = self._subscriber(bridge, topic, bridge.name("g"))
        pub = bridge.broker.publisher()
        t0 = time.monotonic()
        sub.close(timeout=2)
        pub.close(timeout=2)
        sub.close(timeout=2)
        pub.close(timeout=2)
        assert time.monotonic() - t0 < 5
        with pytest.raises(BridgeClosed):
            sub.receive()
        with pytest.raises(BridgeClosed):
            pub.send_batch([OutgoingMessage(topic, b"late")])

    @pytest.mark.slow
    def test_broker_restart_mid_stream_loses_nothing(
        self, restartable_bridge: BridgeTarget
    ) -> None:
        """The broker restarts while batches are being sent and received: every send still
        ends confirmed (the transport reconnects and sends again) and every confirmed
        message is received (duplicates allowed)."""
        bridge = restartable_bridge
        _need(bridge, "survives_restart")
        if bridge.restart is None:
            pytest.skip(f"{bridge.broker.name}: the fixture cannot restart it")
        topic = bridge.name("restart")
        group = bridge.name("g")
        sub = self._subscriber(bridge, topic, group)
        pub = bridge.broker.publisher()
        try:
            sent = [OutgoingMessage(topic, b"%d" % i, key="k", id=f"r-{i}") for i in range(200)]
            restarted = threading.Event()

            def restart() -> None:
                time.sleep(0.3)
                assert bridge.restart is not None
                bridge.restart()
                restarted.set()

            confirmed: list[OutgoingMessage] = []
            got: list[Delivery] = []
            thread = threading.Thread(target=restart)
            thread.start()
            for start in range(0, 200, 10):
                results = pub.send_batch(sent[start : start + 10], timeout=60)
                assert [None] * len(results) == [r.error for r in results]
                confirmed += [r.message for r in results]
                time.sleep(0.05)
            thread.join(120)
            assert restarted.is_set()
            deadline = time.monotonic() + 60 + bridge.redelivery_wait
            while time.monotonic() < deadline and not {m.body for m in confirmed} <= set(
                _bodies(got)
            ):
                batch = sub.receive(max=100, timeout=0.5)
                got += batch
                if batch:
                    sub.ack(batch)
            assert set(_bodies(sent)) == set(_bodies(got))
        finally:
            pub.close()
            sub.close()
