"""Work queue throughput: messages per second through send, receive and ack, beside
``persist-queue``'s ``SQLiteAckQueue`` (put, get, ack) and a minimal raw-``sqlite3`` queue
(the floor), all in files on disk, with ``synchronous`` NORMAL and FULL.

eventlite is measured two ways: batched (``send_many``, ``receive(max=100)``,
``ack_many``: three commits per hundred messages, which the API allows) and one message
at a time (three commits per message, like persist-queue, whose API has no batches).

``python -c "from bench.delivery_queue import run; from bench._harness import print_rows;
print_rows('queue', run(quick=True))"``.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eventlite import Codec
from eventlite.messages import Registry, event
from eventlite.queue import WorkQueue
from eventlite.sqlite import Database, SQLiteStorage, Synchronous

from ._harness import Row, rate, workdir

registry = Registry()
BATCH = 100


@event(registry=registry, name="bench.ChargeCard")
class ChargeCard:
    order: int
    customer: str
    total_cents: int


def _charge(i: int) -> ChargeCard:
    return ChargeCard(order=i, customer=f"customer-{i % 97}", total_cents=995 + i)


def _item(i: int) -> dict[str, Any]:
    return {"order": i, "customer": f"customer-{i % 97}", "total_cents": 995 + i}


_files = itertools.count()


def _fresh(dir: Path, name: str) -> Path:
    return dir / f"{name}-{next(_files)}"


# -- eventlite --------------------------------------------------------------------------------


def el_batched(queue: WorkQueue, n: int) -> Callable[[], int]:
    """n messages through the queue, a hundred per send_many, receive and ack_many."""

    def run() -> int:
        for start in range(0, n, BATCH):
            queue.send_many([_charge(i) for i in range(start, min(n, start + BATCH))])
            got = queue.receive(max=BATCH)
            for item in got:
                item.message.order  # noqa: B018 (the consumer reads the message)
            queue.ack_many([item.receipt for item in got])
        return n

    return run


def el_single(queue: WorkQueue, n: int) -> Callable[[], int]:
    """n messages through the queue, one send, receive and ack each."""

    def run() -> int:
        for i in range(n):
            queue.send(_charge(i))
            [item] = queue.receive()
            queue.ack(item.receipt)
        return n

    return run


# -- persist-queue ------------------------------------------------------------------------------


def _pq(path: Path, synchronous: Synchronous) -> Any:
    from persistqueue import SQLiteAckQueue

    queue = SQLiteAckQueue(str(path), auto_resume=False)
    # Same durability as the eventlite file it is compared with (its default is SQLite's).
    for conn in {id(queue._putter): queue._putter, id(queue._getter): queue._getter}.values():
        conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
    return queue


def pq_single(queue: Any, n: int) -> Callable[[], int]:
    """n items through SQLiteAckQueue: put, get, ack each (its API has no batches)."""

    def run() -> int:
        for i in range(n):
            queue.put(_item(i))
            item = queue.get(block=False, raw=True)
            queue.ack(id=item["pqid"])
        return n

    return run


# -- raw sqlite3 (the floor) --------------------------------------------------------------------

_RAW_SCHEMA = """
CREATE TABLE IF NOT EXISTS q (seq INTEGER PRIMARY KEY, body TEXT NOT NULL,
  visible_at REAL NOT NULL, receives INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS q_ready ON q (visible_at, seq);
"""


def _raw(path: Path, synchronous: Synchronous) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
    conn.executescript(_RAW_SCHEMA)
    return conn


def raw_batched(conn: sqlite3.Connection, n: int) -> Callable[[], int]:
    """The same three transactions per hundred messages as eventlite batched, with the
    least work: insert JSON rows; select and hide them; delete them by key."""

    def run() -> int:
        for start in range(0, n, BATCH):
            rows = [(json.dumps(_item(i)),) for i in range(start, min(n, start + BATCH))]
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO q (body, visible_at) VALUES (?, 0)", rows)
            conn.execute("COMMIT")
            conn.execute("BEGIN IMMEDIATE")
            got = conn.execute(
                "SELECT seq, body FROM q WHERE visible_at <= 1 ORDER BY visible_at, seq LIMIT ?",
                (BATCH,),
            ).fetchall()
            conn.executemany(
                "UPDATE q SET visible_at = 2, receives = receives + 1 WHERE seq = ?",
                [(seq,) for seq, _ in got],
            )
            conn.execute("COMMIT")
            for _, body in got:
                json.loads(body)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("DELETE FROM q WHERE seq = ?", [(seq,) for seq, _ in got])
            conn.execute("COMMIT")
        return n

    return run


# -- the suite ------------------------------------------------------------------------------


def _interleaved(runs: list[Callable[[], int]], rounds: int = 5) -> list[float]:
    """Best rate of each run over ``rounds`` rounds that take turns, so that a change of
    load on the machine falls on all of them alike."""
    best = [0.0] * len(runs)
    for _ in range(rounds):
        for i, fn in enumerate(runs):
            best[i] = max(best[i], rate(fn, 1))
    return best


def _measure(dir: Path, synchronous: Synchronous, n_batched: int, n_single: int) -> list[Row]:
    codec = Codec(registry)
    db = Database(_fresh(dir, "el.db"), synchronous=synchronous)
    queue = WorkQueue(SQLiteStorage(db), "bench", codec)
    pq = _pq(_fresh(dir, "pq"), synchronous)
    raw = _raw(_fresh(dir, "raw.db"), synchronous)
    try:
        batched, single, baseline, floor = _interleaved(
            [
                el_batched(queue, n_batched),
                el_single(queue, n_single),
                pq_single(pq, n_single),
                raw_batched(raw, n_batched),
            ]
        )
    finally:
        db.close()
        pq.close()
        raw.close()
    mode = synchronous.upper()
    return [
        Row(
            f"send + receive + ack, batches of {BATCH} ({mode})",
            batched,
            "msg/s",
            "persist-queue SQLiteAckQueue put/get/ack",
            baseline,
            "ratio >= 2",
            batched >= 2 * baseline,
            higher_is_better=True,
        ),
        Row(
            f"send + receive + ack, one at a time ({mode})",
            single,
            "msg/s",
            "persist-queue SQLiteAckQueue put/get/ack",
            baseline,
            higher_is_better=True,
        ),
        Row(
            f"send + receive + ack, batches of {BATCH} ({mode})",
            batched,
            "msg/s",
            "raw sqlite3 queue, same batches (floor)",
            floor,
            higher_is_better=True,
        ),
    ]


def run(quick: bool) -> list[Row]:
    """The suite's rows: NORMAL first, then FULL."""
    rows: list[Row] = []
    with workdir() as dir:
        rows += _measure(dir, "normal", 2_000 if quick else 20_000, 300 if quick else 2_000)
        rows += _measure(dir, "full", 1_000 if quick else 10_000, 150 if quick else 1_000)
    return rows
