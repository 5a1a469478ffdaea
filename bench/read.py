"""Read side and long-running processes: rebuilding a projection over the stored log, beside
the raw read-and-decode floor of the same rows; four-step sagas, beside the raw commits they
make. Files in a temporary directory on disk.

``python -m bench read [--quick]`` (quick: 100,000 events instead of 1,000,000).
"""

from __future__ import annotations

import sqlite3
import time
import tracemalloc
from pathlib import Path
from typing import Any

from eventlite import Codec, Registry
from eventlite.messages import event
from eventlite.projection import Projection, Projector, projects
from eventlite.saga import Saga, SagaOrchestrator, SagaStep, StepContext
from eventlite.sqlite import SQLiteEventStore, SQLiteStorage

from ._harness import Row, rate, workdir

registry = Registry()
ACCOUNTS = 1000
TARGET = 200_000
BATCH = 5000  # events per rebuild transaction: fewer commits, and more for end_batch to merge


@event(registry=registry, name="bench.read.Deposited")
class Deposited:
    account: str
    amount: int
    note: str


class Count(Projection):
    """Handlers that do nothing: what the projector itself costs over the floor."""

    name = "count"
    tables = ("count",)

    @projects(Deposited)
    def _deposited(self, e: Deposited, db: Any) -> None:
        pass


class Balances(Projection):
    """One upsert per event, through the sqlite-utils Database the handler is given."""

    name = "balances"
    tables = ("balances",)

    def setup(self, db: Any) -> None:
        db["balances"].create(
            {"account": str, "balance": int, "moves": int}, pk="account", if_not_exists=True
        )

    @projects(Deposited)
    def _deposited(self, e: Deposited, db: Any) -> None:
        db.execute(
            "INSERT INTO balances (account, balance, moves) VALUES (?, ?, 1) "
            "ON CONFLICT (account) DO UPDATE SET balance = balance + excluded.balance, "
            "moves = moves + 1",
            (e.account, e.amount),
        )


class BatchedBalances(Projection):
    """The same read model, gathered in memory and written once per batch."""

    name = "batched_balances"
    tables = ("batched_balances",)

    def setup(self, db: Any) -> None:
        db["batched_balances"].create(
            {"account": str, "balance": int, "moves": int}, pk="account", if_not_exists=True
        )

    def begin_batch(self) -> None:
        self.pending: dict[str, list[int]] = {}

    @projects(Deposited)
    def _deposited(self, e: Deposited, db: Any) -> None:
        entry = self.pending.get(e.account)
        if entry is None:
            self.pending[e.account] = [e.amount, 1]
        else:
            entry[0] += e.amount
            entry[1] += 1

    def end_batch(self, db: Any) -> None:
        db.conn.executemany(
            "INSERT INTO batched_balances (account, balance, moves) VALUES (?, ?, ?) "
            "ON CONFLICT (account) DO UPDATE SET balance = balance + excluded.balance, "
            "moves = moves + excluded.moves",
            [(a, b, m) for a, (b, m) in self.pending.items()],
        )


def _fill(store: SQLiteEventStore, n: int) -> None:
    """``n`` deposits over 1,000 accounts, 100 streams, 10,000 events per transaction."""
    done = 0
    with_notes = "monthly salary"
    while done < n:
        size = min(10_000, n - done)
        parts = []
        for s in range(0, size, 1000):
            base = done + s
            parts.append(
                (
                    f"ledger-{(base // 1000) % 100}",
                    [
                        Deposited(f"acc-{i % ACCOUNTS}", i, with_notes)
                        for i in range(base, base + min(1000, size - s))
                    ],
                )
            )
        with store.database.transaction():
            store.append_many(parts)
        done += size


def _floor(path: Path, codec: Codec) -> int:
    """Read the columns a projection needs (position, type, schema version, data) in pages
    of 1,000, and decode each event: the floor under any rebuild."""
    conn = sqlite3.connect(path)
    try:
        decoder = codec.decoder
        decoders: dict[tuple[str, int], Any] = {}
        position = 0
        n = 0
        while True:
            rows = conn.execute(
                "SELECT position, type, schema_version, data FROM events "
                "WHERE position > ? ORDER BY position LIMIT 1000",
                (position,),
            ).fetchall()
            if not rows:
                return n
            for row in rows:
                key = (row[1], row[2])
                decode = decoders.get(key)
                if decode is None:
                    decode = decoders[key] = decoder(*key)
                decode(row[3], row[0])
            position = rows[-1][0]
            n += len(rows)
    finally:
        conn.close()


def _read_all(store: SQLiteEventStore) -> int:
    n = 0
    for _ in store.read_all():
        n += 1
    return n


def _rebuilder(projector: Projector, name: str, n: int) -> Any:
    def rebuild() -> int:
        projector.rebuild(name)
        return n

    return rebuild


def _memory(projector: Projector, name: str, n: int) -> tuple[float, float]:
    """Peak traced memory (KiB) after the first tenth of a rebuild, and over all of it."""
    early: list[int] = []

    def progress(done: int, total: int) -> None:
        if not early and done >= n // 10:
            early.append(tracemalloc.get_traced_memory()[1])

    tracemalloc.start()
    try:
        projector.rebuild(name, progress=progress)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return early[0] / 1024, peak / 1024


def _projection_rows(dir: Path, n: int) -> list[Row]:
    path = dir / "log.db"
    codec = Codec(registry)
    storage = SQLiteStorage(path, codec=codec, synchronous="normal")
    store = storage.events
    try:
        _fill(store, n)
        projector = Projector(storage, codec, batch_size=BATCH)
        projector.add(Count())
        projector.add(Balances())
        projector.add(BatchedBalances())
        # Interleaved, best of three each: on a shared machine every measurement then sees
        # much the same load as its baseline.
        best = dict.fromkeys(("floor", "store", "nothing", "per_event", "batched"), 0.0)
        for _ in range(3):
            best["floor"] = max(best["floor"], rate(lambda: _floor(path, codec), repeat=1))
            best["store"] = max(best["store"], rate(lambda: _read_all(store), repeat=1))
            for key, name in (
                ("nothing", "count"),
                ("per_event", "balances"),
                ("batched", "batched_balances"),
            ):
                best[key] = max(best[key], rate(_rebuilder(projector, name, n), repeat=1))
        floor, through_store, nothing, per_event, batched = best.values()
        early, peak = _memory(projector, "balances", n)
        projector.close()
    finally:
        storage.close()
    floor_name = "raw read + decode (sqlite3 pages + codec)"
    return [
        Row(
            f"rebuild over {n:,} events, handlers that do nothing (the projector's own cost)",
            nothing,
            "events/s",
            floor_name,
            floor,
            f">= {TARGET:,} events/s",
            nothing >= TARGET,
            higher_is_better=True,
        ),
        Row(
            f"rebuild a projection over {n:,} events, one upsert per event, batches of {BATCH:,}",
            per_event,
            "events/s",
            floor_name,
            floor,
            f">= {TARGET:,} events/s",
            per_event >= TARGET,
            higher_is_better=True,
        ),
        Row(
            f"rebuild a projection over {n:,} events, one write per account per batch",
            batched,
            "events/s",
            floor_name,
            floor,
            f">= {TARGET:,} events/s",
            batched >= TARGET,
            higher_is_better=True,
        ),
        Row(
            f"store.read_all over {n:,} events (envelopes), for reference",
            through_store,
            "events/s",
            floor_name,
            floor,
            higher_is_better=True,
        ),
        Row(
            "rebuild peak traced memory, whole log",
            peak,
            "KiB",
            "peak after the first tenth",
            early,
            "flat: ratio <= 1.25",
            peak <= early * 1.25,
        ),
    ]


# -- sagas ----------------------------------------------------------------------------------


def _step(name: str) -> SagaStep:
    def execute(ctx: StepContext) -> None:
        setattr(ctx.data, name, True)

    def compensate(ctx: StepContext) -> None:
        pass

    return SagaStep(name, execute, compensate)


def _sagas(path: Path, count: int) -> int:
    storage = SQLiteStorage(path, synchronous="normal")
    try:
        orchestrator = SagaOrchestrator(storage)
        saga = orchestrator.register(
            Saga("checkout", [_step(s) for s in ("reserve", "charge", "ship", "notify")])
        )
        for i in range(count):
            orchestrator.start(saga, {"order": i})
        return count
    finally:
        storage.close()


def _raw_commits(path: Path, count: int) -> int:
    """The commits a four-step saga makes (one insert, four updates), in raw sqlite3."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS s (id TEXT PRIMARY KEY, step INT, data TEXT, done TEXT)"
        )
        for i in range(count):
            sid = f"{time.perf_counter_ns()}-{i}"
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO s VALUES (?, 0, ?, '[]')", (sid, '{"order": 1}'))
            conn.execute("COMMIT")
            for step in range(1, 5):
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    "UPDATE s SET step = ?, data = ?, done = ? WHERE id = ?",
                    (step, '{"order": 1, "x": true}', '["reserve"]', sid),
                )
                conn.execute("COMMIT")
        return count
    finally:
        conn.close()


def _saga_rows(dir: Path, count: int) -> list[Row]:
    sagas = rate(lambda: _sagas(dir / "sagas.db", count))
    raw = rate(lambda: _raw_commits(dir / "raw.db", count))
    return [
        Row(
            "four-step sagas completed (synchronous=NORMAL)",
            sagas,
            "sagas/s",
            "raw sqlite3: the same 5 commits per saga",
            raw,
            higher_is_better=True,
        )
    ]


def run(quick: bool) -> list[Row]:
    """The read suite: projection rebuilds and saga throughput."""
    n = 100_000 if quick else 1_000_000
    with workdir() as dir:
        rows = _projection_rows(dir, n)
        rows += _saga_rows(dir, 300 if quick else 2000)
    return rows
