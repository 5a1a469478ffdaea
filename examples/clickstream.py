"""A clickstream, three streams, and a SIGKILL: ``python -m examples.clickstream``.

A shop's log holds three hours of page views and purchases of a hundred users, a little out
of order. Three streams read it:

- **sessions**: each user's views in session windows (30 minutes without a view end one),
  counted into the table ``sessions``;
- **conversion**: views and purchases per minute in tumbling windows, with the conversion
  rate, into the table ``conversion_per_minute``;
- **conversions**: each view joined to the same user's purchases of the 30 minutes after
  it, appended to the log as ``Converted`` events.

The streams run in a child process (``python -m examples.clickstream --run FILE``), which
the example kills with SIGKILL in the middle of its work and starts again. Each batch of a
stream commits its outputs with its state and its checkpoint, so the restarted child goes
on from the last batch: the tables and the events end exactly as those of a run over a
copy of the same log that was never stopped.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import eventlite
from eventlite import App
from eventlite.sqlite import SQLiteStorage
from eventlite.streams import Session, Stream, Tumbling, stream_status

registry = eventlite.Registry()

START = datetime(2026, 5, 4, 9, 0, tzinfo=timezone.utc)
USERS = 100
HOURS = 3
PAGES = ["/", "/search", "/product", "/reviews", "/pricing", "/cart"]
JITTER = timedelta(seconds=20)
"""How much later than its time an event may be stored (devices send in bursts)."""


@eventlite.event(registry=registry)
class PageViewed:
    user: str
    page: str
    at: datetime


@eventlite.event(registry=registry)
class Purchased:
    user: str
    amount: Decimal
    at: datetime


@eventlite.event(registry=registry)
class Converted:
    """A view followed by a purchase of the same user within 30 minutes."""

    user: str
    page: str
    viewed_at: datetime
    amount: Decimal
    bought_at: datetime


# -- the streams -----------------------------------------------------------------------------


def sessions() -> Stream:
    """Views per user session (30 minutes of quiet end one)."""
    stream = Stream("sessions")
    (
        stream.source(PageViewed, time="at", out_of_orderness=JITTER)
        .key_by(lambda view: view.user)
        .window(Session(timedelta(minutes=30)))
        .count(name="views")
        .to_table(
            "sessions",
            row=lambda w: {"user": w.key, "start": w.start, "end": w.end, "views": w.value},
            pk=("user", "start"),
        )
    )
    return stream


def _tally(acc: list[int], event: Any) -> list[int]:
    return [acc[0] + 1, acc[1]] if isinstance(event, PageViewed) else [acc[0], acc[1] + 1]


def conversion() -> Stream:
    """Views, purchases and the conversion rate per minute."""
    stream = Stream("conversion")
    (
        stream.source(PageViewed, Purchased, time="at", out_of_orderness=JITTER)
        .window(Tumbling(timedelta(minutes=1)))
        .aggregate([0, 0], _tally, name="per-minute")
        .to_table(
            "conversion_per_minute",
            row=lambda w: {
                "minute": w.start,
                "views": w.value[0],
                "purchases": w.value[1],
                "rate": round(w.value[1] / w.value[0], 4) if w.value[0] else None,
            },
            pk="minute",
        )
    )
    return stream


def conversions() -> Stream:
    """Each view joined to the purchases of the same user in the 30 minutes after it."""
    stream = Stream("conversions")
    views = stream.source(PageViewed, time="at", out_of_orderness=JITTER).key_by(lambda v: v.user)
    purchases = stream.source(Purchased, time="at", out_of_orderness=JITTER).key_by(
        lambda p: p.user
    )
    (
        views.join(
            purchases, before=timedelta(0), after=timedelta(minutes=30), name="viewed-then-bought"
        )
        .map(
            lambda pair: Converted(
                pair[0].user, pair[0].page, pair[0].at, pair[1].amount, pair[1].at
            )
        )
        .to_events(stream_id=lambda c: f"conversions-{c.user}")
    )
    return stream


def build(path: Path) -> App:
    """The app with its three streams."""
    app = App(path, registry=registry, synchronous="normal")
    # Small batches, so that the kill lands mid-run. A stable owner name: the restarted
    # process takes the streams' leases back at once (under another name it would wait
    # for the killed one's leases to expire).
    app.streams.batch_size = 1_000
    app.streams.owner = "clickstream-worker"
    for stream in (sessions(), conversion(), conversions()):
        app.stream(stream)
    return app


# -- the data --------------------------------------------------------------------------------


def clickstream(seed: int = 2026) -> list[Any]:
    """Three hours of views and purchases of a hundred users, in the order they are
    stored: each event up to ``JITTER`` after its time."""
    rnd = random.Random(seed)
    end = START + timedelta(hours=HOURS)
    events: list[tuple[datetime, Any]] = []
    for u in range(USERS):
        user = f"user-{u:03d}"
        t = START + timedelta(seconds=rnd.randrange(1800))
        while t < end:
            for _ in range(rnd.randrange(5, 60)):  # one visit
                page = rnd.choice(PAGES)
                events.append((t, PageViewed(user, page, t)))
                if page == "/cart" and rnd.random() < 0.3:
                    bought = t + timedelta(seconds=rnd.randrange(30, 2400))
                    amount = Decimal(rnd.randrange(500, 20000)) / 100
                    events.append((bought, Purchased(user, amount, bought)))
                t += timedelta(seconds=rnd.randrange(5, 90))
            t += timedelta(minutes=rnd.randrange(31, 90))  # away
    arrivals = [
        (t + timedelta(seconds=rnd.uniform(0, JITTER.total_seconds())), i, e)
        for i, (t, e) in enumerate(events)
        if t < end
    ]
    arrivals.sort(key=lambda a: (a[0], a[1]))
    return [e for _, _, e in arrivals]


def prepare(path: Path) -> tuple[int, int]:
    """Store the clickstream; returns (views, purchases)."""
    events = clickstream()
    with App(path, registry=registry, synchronous="normal") as app:
        for i in range(0, len(events), 500):
            app.store.append_many([(f"visits-{e.user}", [e]) for e in events[i : i + 500]])
    views = sum(1 for e in events if isinstance(e, PageViewed))
    return views, len(events) - views


# -- running ---------------------------------------------------------------------------------


def run(path: Path) -> None:
    """Run the streams until they have caught up with the log."""
    with build(path) as app:
        app.run_until_idle(timeout=120)


def _child(path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "examples.clickstream", "--run", str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )


def _midway(storage: SQLiteStorage) -> bool:
    """Whether some stream has committed a batch and none has finished yet."""
    found = stream_status(storage)
    return len(found) == 3 and any(s.position for s in found) and all(s.lag for s in found)


def run_with_a_kill(path: Path) -> bool:
    """Start the child, SIGKILL it once it is midway, start it again to the end. Returns
    whether the kill landed mid-run."""
    child = _child(path)
    deadline = time.monotonic() + 60
    with SQLiteStorage(path) as watching:
        while not _midway(watching) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        killed = child.poll() is None
    child.send_signal(signal.SIGKILL)
    child.wait()
    again = _child(path)
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0 and "done" in out, "the restarted child failed"
    return killed


def outcome(path: Path) -> tuple[Any, ...]:
    """What the streams left: the three tables, the Converted events with their ids, and
    what is still open."""
    with App(path, registry=registry) as app:
        db = app.projector.reader()
        tables = tuple(
            sorted(tuple(sorted(r.items())) for r in db[t].rows)
            for t in ("sessions", "conversion_per_minute")
        )
        events = tuple((e.id, e.message) for e in app.store.read_all(types=[Converted]))
        still_open = tuple(s.open for s in stream_status(app.storage))
    return tables, events, still_open


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--run":
        run(Path(sys.argv[2]))
        print("done", flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shop.db"
        views, purchases = prepare(path)
        print(f"stored {views:,} page views and {purchases:,} purchases of {USERS} users")
        reference = Path(tmp) / "reference.db"
        shutil.copy(path, reference)
        run(reference)  # uninterrupted, in this process (prints "done")
        killed = run_with_a_kill(path)
        print(f"a child process ran the streams; killed mid-run with SIGKILL: {killed}")
        same = outcome(path) == outcome(reference)
        print(f"after a restart its results equal an uninterrupted run's: {same}")
        report(path)


def _hm(text: str) -> str:
    return datetime.fromisoformat(text).strftime("%H:%M")


def report(path: Path) -> None:
    """Print what the streams computed."""
    with App(path, registry=registry) as app:
        db = app.projector.reader()
        closed = db["sessions"].count
        status = {s.name: s for s in stream_status(app.storage)}
        print(
            f"sessions: {closed:,} closed, {status['sessions'].open['views']} still open "
            "(30 minutes without a view end one)"
        )
        for row in db["sessions"].rows_where(order_by="start, user", limit=3):
            print(f"  {row['user']}  {_hm(row['start'])}-{_hm(row['end'])}  {row['views']} views")
        print("conversion per minute, 10:00 to 10:04:")
        for row in db["conversion_per_minute"].rows_where(
            "minute >= ? and minute < ?",
            ["2026-05-04T10:00:00+00:00", "2026-05-04T10:05:00+00:00"],
            order_by="minute",
        ):
            rate = f"{row['rate']:.1%}" if row["rate"] is not None else "-"
            views, bought = row["views"], row["purchases"]
            print(f"  {_hm(row['minute'])}  {views:>3} views  {bought} purchases  {rate}")
        converted = [e.message for e in app.store.read_all(types=[Converted])]
        print(f"view-purchase pairs of a user within 30 minutes: {len(converted):,}")
        first = min(converted, key=lambda c: (c.bought_at, c.viewed_at, c.user))
        print(
            f"  {first.user} viewed {first.page} at {first.viewed_at:%H:%M:%S} and bought for "
            f"{first.amount} at {first.bought_at:%H:%M:%S}"
        )


if __name__ == "__main__":
    main()
