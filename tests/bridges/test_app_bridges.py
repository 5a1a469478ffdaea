"""publish_to and consume_from beyond the contract: what the outbound checkpoint waits for,
refusals, wiring errors, metrics, the CLI, closing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from eventlite import App
from eventlite.bridges import BrokerUnavailable, OutgoingMessage, SendResult
from eventlite.bridges.memory import MemoryBroker, MemoryPublisher
from eventlite.metrics import CountingMetrics
from eventlite.testing.contracts.app_bridges import NotForTheBroker, OrderPlaced, registry
from tests.cli._run import run


def wait(what: str, ok: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class FlakyPublisher(MemoryPublisher):
    """Sends nothing while its broker is down: every message fails unavailable."""

    def __init__(self, broker: FlakyBroker) -> None:
        super().__init__(broker)
        self.flaky = broker

    def _send(self, messages: list[OutgoingMessage], deadline: float) -> list[SendResult]:
        if self.flaky.down:
            self.flaky.refusals += 1
            error = BrokerUnavailable("flaky", "down for the test")
            return [SendResult(m, error) for m in messages]
        return super()._send(messages, deadline)


class FlakyBroker(MemoryBroker):
    """A memory broker that can be taken down."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.refusals = 0

    def publisher(self) -> FlakyPublisher:
        return FlakyPublisher(self)


@pytest.fixture
def metrics() -> CountingMetrics:
    return CountingMetrics()


@pytest.fixture
def sender(tmp_path: Path, metrics: CountingMetrics) -> Iterator[App]:
    app = App(str(tmp_path / "sender.db"), registry=registry, poll_interval=0.01, metrics=metrics)
    yield app
    app.close()


@pytest.fixture
def receiver(tmp_path: Path, metrics: CountingMetrics) -> Iterator[App]:
    app = App(str(tmp_path / "receiver.db"), registry=registry, poll_interval=0.01, metrics=metrics)
    yield app
    app.close()


def o_numbers(app: App) -> list[int]:
    """The ``n`` of each OrderPlaced in the app's log, in log order."""
    head = app.store.head_position()
    return [e.message.n for e in app.store.read_all(1, head) if isinstance(e.message, OrderPlaced)]


def checkpoint(app: App, name: str) -> int:
    [status] = [s for s in app.subscribers() if s.name == name]
    return status.checkpoint


def test_the_checkpoint_waits_for_the_broker(sender: App) -> None:
    """While the broker is down nothing is confirmed and the checkpoint stays; once it is
    back, every event is sent in order and the checkpoint reaches the head."""
    broker = FlakyBroker()
    broker.down = True
    sender.publish_to(broker, OrderPlaced, destination="orders", send_timeout=0.05)
    with sender.unit_of_work() as uow:
        uow.append("order-1", [OrderPlaced("o", i) for i in range(20)])
    wait("two refused batches", lambda: broker.refusals >= 2)
    assert 0 == checkpoint(sender, "bridge-out:orders")
    assert [] == broker.messages("orders")
    [row] = sender.bridges()
    assert "BrokerUnavailable" in str(row["last_error"])
    assert 20 == row["lag"]
    broker.down = False
    wait("20 sent", lambda: len(broker.messages("orders")) >= 20)
    wait("the checkpoint at the head", lambda: checkpoint(sender, "bridge-out:orders") == 20)
    ids = [m.id for m in broker.messages("orders")]
    assert [e.id for e in sender.store.read_all(1, 20)] == ids


def test_a_refused_message_is_dead_lettered_and_the_rest_go_on(sender: App) -> None:
    """A message the broker refuses goes to the dead-letter queue with its envelope; the
    others are sent; an operator's retry sends it."""
    broker = MemoryBroker()
    broker.fail_next(1)
    sender.publish_to(broker, OrderPlaced, destination="orders")
    with sender.unit_of_work() as uow:
        uow.append("order-1", [OrderPlaced("o", i) for i in range(5)])
    wait("4 sent", lambda: len(broker.messages("orders")) >= 4)
    wait("the checkpoint", lambda: checkpoint(sender, "bridge-out:orders") == 5)
    [letter] = sender.dlq.list("bridge-out:orders")
    first = next(iter(sender.store.read_all(1, 1)))
    assert first.id == letter.message_id
    assert "fail_next" in str(letter.error_message)
    sender.dlq.retry(letter.id)
    wait("5 sent", lambda: len(broker.messages("orders")) >= 5)
    assert first.id == broker.messages("orders")[-1].id
    wait("the dead letter resolved", lambda: not sender.dlq.list("bridge-out:orders"))


def test_several_types_one_destination_by_function(sender: App) -> None:
    """publish_to takes several types; a destination function routes by envelope; other
    types stay home."""
    broker = MemoryBroker()
    sender.publish_to(
        broker,
        OrderPlaced,
        NotForTheBroker,
        destination=lambda env: "small" if env.type.endswith("NotForTheBroker") else "orders",
        name="routed",
    )
    with sender.unit_of_work() as uow:
        uow.append("s", [OrderPlaced("o", 1), NotForTheBroker(2), OrderPlaced("o", 3)])
    wait("3 sent", lambda: len(broker.messages("orders")) + len(broker.messages("small")) >= 3)
    assert 2 == len(broker.messages("orders"))
    assert 1 == len(broker.messages("small"))


def test_wiring_errors_name_the_problem(sender: App, tmp_path: Path) -> None:
    """No types, a function destination without a name, a name in use, an in-memory app."""
    broker = MemoryBroker()
    with pytest.raises(ValueError, match="at least one event type"):
        sender.publish_to(broker, destination="x")
    with pytest.raises(ValueError, match="needs a name="):
        sender.publish_to(broker, OrderPlaced, destination=lambda env: "x")
    sender.publish_to(broker, OrderPlaced, destination="x")
    with pytest.raises(ValueError, match="bridge-out:x"):
        sender.publish_to(broker, OrderPlaced, destination="x")
    sender.consume_from(broker, source="in", group="g")
    with pytest.raises(ValueError, match="bridge-in:in"):
        sender.consume_from(broker, source="in", group="g")
    with pytest.raises(ValueError, match="batch"):
        sender.consume_from(broker, source="in2", group="g", batch=10, prefetch=5)
    memory = App(registry=registry)
    try:
        with pytest.raises(RuntimeError):
            memory.publish_to(broker, OrderPlaced, destination="x")
        with pytest.raises(RuntimeError):
            memory.consume_from(broker, source="x", group="g")
    finally:
        memory.close()


def test_metrics_count_both_directions(
    sender: App, receiver: App, metrics: CountingMetrics
) -> None:
    """The metrics hook carries the bridges' counters."""
    broker = MemoryBroker()
    receiver.consume_from(broker, source="orders", group="g")
    sender.publish_to(broker, OrderPlaced, destination="orders")
    with sender.unit_of_work() as uow:
        uow.append("order-1", [OrderPlaced("o", i) for i in range(7)])
    wait("7 handled", lambda: metrics.counts("bridge-in:orders").bridged.get("handled") == 7)
    assert 7 == metrics.counts("bridge-out:orders").bridged["sent"]


def test_the_cli_shows_both_directions(sender: App, receiver: App, tmp_path: Path) -> None:
    """``bridges`` lists an outbound bridge with its checkpoint and lag, and an inbound one
    with what it handled and its dead letters, from the files alone."""
    broker = MemoryBroker()
    inbound = receiver.consume_from(broker, source="orders", group="g")
    sender.publish_to(broker, OrderPlaced, destination="orders")
    with sender.unit_of_work() as uow:
        uow.append("order-1", [OrderPlaced("o", i) for i in range(3)])
    with broker.publisher() as pub:
        pub.send_batch([OutgoingMessage("orders", b"junk", id="junk-1")])
    wait("3 handled", lambda: inbound.status.handled == 3 and inbound.status.dead_lettered == 1)
    wait("the checkpoint", lambda: checkpoint(sender, "bridge-out:orders") == 3)
    out = run("bridges", "--db", tmp_path / "sender.db", "--json")
    assert 0 == out.code, out.err
    [row] = [json.loads(line) for line in out.lines]
    assert ("orders", "out", 3, 0) == (row["name"], row["direction"], row["checkpoint"], row["lag"])
    out = run("bridges", "--db", tmp_path / "receiver.db")
    assert 0 == out.code, out.err
    assert "orders" in out.lines[1] and "in" in out.lines[1]
    [line] = [
        json.loads(x) for x in run("bridges", "--db", tmp_path / "receiver.db", "--json").lines
    ]
    assert (3, 1) == (line["handled"], line["dead_letters"])
    App(str(tmp_path / "empty.db")).close()
    empty = run("bridges", "--db", tmp_path / "empty.db")
    assert (1, "eventlite: no broker bridge has left a trace in this store") == (
        empty.code,
        empty.err.strip(),
    )


def test_close_stops_and_releases_the_bridges(tmp_path: Path) -> None:
    """close() returns nothing abandoned; the inbound thread has ended."""
    broker = MemoryBroker()
    app = App(str(tmp_path / "a.db"), registry=registry)
    inbound = app.consume_from(broker, source="orders", group="g")
    app.publish_to(broker, OrderPlaced, destination="orders")
    assert inbound.alive
    assert [] == app.close(timeout=5)
    assert not inbound.alive


def test_a_stored_row_encodes_as_its_envelope_does(tmp_path: Path) -> None:
    """The short way (the stored row spliced into the CloudEvent) decodes to the same
    envelope as the long way (decoded, then encoded), for every field shape, metadata
    and trace headers; a row it cannot take says so (None)."""
    import decimal
    import json as _json
    from datetime import datetime, timezone

    from eventlite.bridges import CloudEventCodec
    from eventlite.envelope import Envelope, Metadata
    from eventlite.testing.contracts.app_bridges import Line

    app = App(str(tmp_path / "rows.db"), registry=registry)
    try:
        wire = CloudEventCodec(app.codec, source="/test")
        events = [
            Envelope(
                OrderPlaced(
                    "o-1",
                    7,
                    total=decimal.Decimal("1.10"),
                    at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc),
                    tags=["ü"],
                    counts={"x": 1},
                    note='\u2028 "q" \\',
                    lines=(Line("a", 1),),
                ),
                metadata=Metadata(
                    correlation_id="c-1",
                    causation_id="m-0",
                    user_id="u-1",
                    headers={
                        "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
                        "tenant": "t ✓",
                    },
                ),
            ),
            Envelope(OrderPlaced("o-2", 8)),
        ]
        with app.unit_of_work() as uow:
            uow.append("order-1", events)
        for record in app.store.read_records(0, 10):
            fast = wire.encode_record(record, record.stream_id)
            assert fast is not None
            slow, _ = wire.encode(app.store.decode(record), record.stream_id)
            assert wire.decode(fast) == wire.decode(slow)
            assert _json.loads(fast) == _json.loads(slow)
            assert wire.encode_record(record._replace(data="{broken"), None) is None
            assert wire.encode_record(record._replace(schema_version=99), None) is None
            assert wire.encode_record(record._replace(type="no.such.Type"), None) is None
        binary = CloudEventCodec(app.codec, binary=True)
        assert binary.encode_record(next(iter(app.store.read_records(0, 1))), None) is None
    finally:
        app.close()


def test_spans_continue_the_senders_trace(tmp_path: Path) -> None:
    """With OpenTelemetry configured, the receiving side handles each message in a
    CONSUMER span of the trace its traceparent names, and each sent batch is a PRODUCER
    span (in a child process: a tracer provider is set once per process)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import json, time
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from eventlite import App
        from eventlite.bridges.memory import MemoryBroker
        from eventlite.envelope import Envelope, Metadata
        from eventlite.testing.contracts.app_bridges import OrderPlaced, registry

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        broker = MemoryBroker()
        a = App({str(tmp_path / "a.db")!r}, registry=registry)
        b = App({str(tmp_path / "b.db")!r}, registry=registry)
        b.consume_from(broker, source="orders", group="g")
        a.publish_to(broker, OrderPlaced, destination="orders")
        parent = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
        with a.unit_of_work() as uow:
            uow.append("order-1", [Envelope(OrderPlaced("o", 1),
                       metadata=Metadata(correlation_id="c", headers={{"traceparent": parent}}))])
        deadline = time.monotonic() + 10
        while b.store.head_position() < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        a.close(); b.close()
        print(json.dumps([
            [s.name, s.kind.name, format(s.context.trace_id, "032x"),
             format(s.parent.span_id, "016x") if s.parent else None,
             dict(s.attributes)]
            for s in exporter.get_finished_spans()
        ]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert 0 == done.returncode, done.stderr
    spans = json.loads(done.stdout)
    [consumer] = [s for s in spans if s[1] == "CONSUMER"]
    assert ["process appcontract.OrderPlaced", "ab" * 16, "cd" * 8] == [
        consumer[0],
        consumer[2],
        consumer[3],
    ]
    assert {"messaging.system": "memory", "messaging.destination.name": "orders"}.items() <= (
        consumer[4].items()
    )
    [producer] = [s for s in spans if s[1] == "PRODUCER"]
    assert ("send orders", 1) == (producer[0], producer[4]["messaging.batch.message_count"])


def test_a_storage_failure_gives_the_batch_back_and_it_comes_again(receiver: App) -> None:
    """A batch whose commit fails on the storage is handed back to the broker (not left
    unacknowledged, which would fill the prefetch window): once the storage works again
    every message is handled, once."""
    from eventlite.exceptions import StorageError

    broker = MemoryBroker()
    failures = {"left": 3}

    def flaky(event: OrderPlaced, uow: object) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise StorageError("the disk is full (for the test)")

    inbound = receiver.consume_from(
        broker, source="orders", group="g", handler=flaky, batch=2, prefetch=2
    )
    with broker.publisher() as pub:
        from eventlite.bridges import CloudEventCodec
        from eventlite.envelope import Envelope

        wire = CloudEventCodec(receiver.codec)
        pub.send_batch([wire.outgoing(Envelope(OrderPlaced("o", i)), "orders") for i in range(5)])
    wait("5 handled", lambda: receiver.store.head_position() == 5)
    assert 0 == failures["left"]
    assert 5 == inbound.status.handled


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 200_000 + b"]" * 200_000,  # deeper than the JSON parser goes
        b'{"specversion": "1.0", "id": "x", "source": "/s", "type": "appcontract.OrderPlaced", '
        b'"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b"\xff\xfe not text",
        b'{"specversion": "1.0", "id": "x", "source": "/s", "type": "appcontract.OrderPlaced", '
        b'"data": {"order_id": 5, "n": "five"}}',
        b'{"specversion": "1.0", "id": "x", "source": "/s", "type": "appcontract.OrderPlaced", '
        b'"data": {"order_id": "o", "n": 1}, "time": "yesterday"}',
        b"",
        b'{"specversion": "1.0", "id": "x\\ud800", "source": "/s", '
        b'"type": "appcontract.OrderPlaced", "data": {"order_id": "o", "n": 1}}',
    ],
    ids=["deep", "deep-data", "not-utf8", "wrong-fields", "bad-time", "empty", "half-pair-id"],
)
def test_hostile_bodies_are_dead_lettered_and_the_flow_goes_on(receiver: App, body: bytes) -> None:
    """Whatever a body makes the decoder raise, the message is dead-lettered raw and the
    next one is handled; the bridge never takes a poison message back."""
    from eventlite.bridges import CloudEventCodec
    from eventlite.envelope import Envelope

    broker = MemoryBroker()
    inbound = receiver.consume_from(broker, source="orders", group="g")
    good = CloudEventCodec(receiver.codec).outgoing(Envelope(OrderPlaced("o", 1)), "orders")
    with broker.publisher() as pub:
        pub.send_batch([OutgoingMessage("orders", body, id="hostile"), good])
    wait("the good one", lambda: receiver.store.head_position() == 1)
    wait("the dead letter", lambda: inbound.status.dead_lettered == 1)
    [letter] = receiver.dlq.list(inbound.name)
    assert ("hostile", 1) == (letter.message_id, letter.attempts)  # refused, not retried
    assert inbound.alive


@pytest.mark.parametrize(
    ("message_id", "key", "headers"),
    [
        ("hostile\ud800", None, {}),
        ("hostile", "k\udfff", {}),
        ("hostile", None, {"x-h\udc80": "1"}),
        ("hostile", None, {"x-h": "v\ud800"}),
    ],
    ids=["id", "key", "header-name", "header-value"],
)
def test_a_lone_surrogate_from_the_transport_is_dead_lettered_and_the_flow_goes_on(
    receiver: App, message_id: str, key: str | None, headers: dict[str, str]
) -> None:
    """A transport may hand over a message id, key or header holding half a UTF-16 pair,
    which no store keeps. Beside a body that does not decode, the message is still
    dead-lettered (what cannot be stored is escaped), and the next one is handled."""
    from eventlite.bridges import CloudEventCodec
    from eventlite.envelope import Envelope

    broker = MemoryBroker()
    inbound = receiver.consume_from(broker, source="orders", group="g")
    wire = CloudEventCodec(receiver.codec)
    good = wire.outgoing(Envelope(OrderPlaced("o", 1)), "orders")
    for body in (b"not json", wire.outgoing(Envelope(OrderPlaced("o", 2)), "orders").body):
        hostile = OutgoingMessage(
            "orders", body, key=key, headers={**good.headers, **headers}, id=message_id
        )
        with broker.publisher() as pub:
            pub.send_batch([hostile])
    with broker.publisher() as pub:
        pub.send_batch([good])
    wait("the good one", lambda: o_numbers(receiver)[-1:] == [1])
    assert inbound.alive
    letters = receiver.dlq.list(inbound.name)
    # the undecodable one is dead-lettered; the other one too when its headers hold the
    # half pair, and is handled otherwise (its id and key are the transport's, not stored)
    assert [2, 1] == o_numbers(receiver) or 2 == len(letters)
    assert len(letters) == inbound.status.dead_lettered >= 1
    assert all(letter.message_id and letter.message_id.startswith("hostile") for letter in letters)


def test_a_publisher_that_failed_is_replaced(sender: App) -> None:
    """After a batch is given up (a closed or broken publisher), the next try starts on a
    new publisher, so one bad connection never stops the bridge for good."""
    broker = MemoryBroker()
    made: list[MemoryPublisher] = []
    make = broker.publisher

    def publisher() -> MemoryPublisher:
        p = make()
        if not made:
            p.close()  # the first one is broken: every send raises BridgeClosed
        made.append(p)
        return p

    broker.publisher = publisher  # type: ignore[method-assign]
    sender.publish_to(broker, OrderPlaced, destination="orders")
    with sender.unit_of_work() as uow:
        uow.append("order-1", [OrderPlaced("o", i) for i in range(3)])
    wait("3 sent", lambda: len(broker.messages("orders")) == 3)
    assert 2 == len(made)


def test_a_broker_down_for_a_while_logs_one_traceback_then_a_line_per_try(
    sender: App, caplog: pytest.LogCaptureFixture
) -> None:
    """While the broker stays unreachable, the first failed try is logged with its
    traceback and each further one as one line counting the failures; when sending works
    again, one line says so."""
    broker = MemoryBroker()
    made: list[MemoryPublisher] = []
    make = broker.publisher

    def publisher() -> MemoryPublisher:
        p = make()
        if len(made) < 4:
            p.close()  # the first four are broken: every send raises BridgeClosed
        made.append(p)
        return p

    broker.publisher = publisher  # type: ignore[method-assign]
    caplog.set_level("INFO", logger="eventlite.relay")
    sender.publish_to(broker, OrderPlaced, destination="orders")
    with sender.unit_of_work() as uow:
        uow.append("order-1", [OrderPlaced("o", 1)])
    wait("sent", lambda: len(broker.messages("orders")) == 1)
    wait("the recovery", lambda: any("works again" in r.getMessage() for r in caplog.records))
    failed = [r for r in caplog.records if "delivery failed" in r.getMessage()]
    assert 4 == len(failed), [r.getMessage() for r in failed]
    assert [True, False, False, False] == [r.exc_info is not None for r in failed]
    assert all("BridgeClosed" in r.getMessage() for r in failed[1:])
    assert ["2", "3", "4"] == [r.getMessage().split("failure ")[1][0] for r in failed[1:]]


def test_a_subscriber_that_was_closed_is_replaced(receiver: App) -> None:
    """An inbound bridge whose subscriber was closed under it makes a new one and goes on
    receiving."""
    from eventlite.bridges import CloudEventCodec
    from eventlite.envelope import Envelope

    broker = MemoryBroker()
    inbound = receiver.consume_from(broker, source="orders", group="g")
    assert inbound._subscriber is not None
    inbound._subscriber.close()
    with broker.publisher() as pub:
        wire = CloudEventCodec(receiver.codec)
        pub.send_batch([wire.outgoing(Envelope(OrderPlaced("o", 1)), "orders")])
    wait("the event", lambda: receiver.store.head_position() == 1)
