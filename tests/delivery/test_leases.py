"""Durable subscribers under leases: one process (one relay) at a time delivers to a
subscriber; a closed or dead holder's lease is taken over, and a former holder that lost
its lease can never commit a checkpoint move (its transaction fails and rolls back)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from eventlite import App, Registry, event
from eventlite.relay._tenure import Tenure, dead_here, lease_name
from eventlite.sqlite import SQLiteStorage
from eventlite.store.leases import LeaseLost
from eventlite.unit_of_work import UnitOfWork

registry = Registry()


@event(registry=registry, name="leases.Ticked")
class Ticked:
    n: int


@event(registry=registry, name="leases.Noted")
class Noted:
    n: int
    by: str


def _app(path: Path, tag: str, seen: list[tuple[str, int]], ttl: float = 30.0) -> App:
    app = App(path, registry=registry, lease_seconds=ttl)

    def note(e: Ticked, uow: UnitOfWork) -> None:
        seen.append((tag, e.n))
        uow.append(f"notes-{e.n}", [Noted(e.n, tag)])

    app.subscribe(Ticked, note, durable=True, name="noter", start="beginning")
    app.start()
    return app


def _notes(path: Path) -> list[int]:
    with App(path, registry=registry) as app:
        return sorted(e.message.n for e in app.store.read_all() if isinstance(e.message, Noted))


def _wait(condition: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_one_of_two_apps_on_a_file_delivers_and_the_other_takes_over_on_close(
    tmp_path: Path,
) -> None:
    """Two apps on one file run the same subscriber: every event is handled once, by the
    lease holder; when the holder closes, the other delivers what follows."""
    path = tmp_path / "shared.db"
    seen: list[tuple[str, int]] = []
    first = _app(path, "first", seen)
    second = _app(path, "second", seen)
    try:
        for n in range(1, 21):
            first.store.append("ticks", [Ticked(n)])
        _wait(lambda: len(seen) >= 20, "the first twenty events")
        holders = {tag for tag, _ in seen}
        assert 1 == len(holders), seen
        holder, other = (first, second) if holders == {"first"} else (second, first)
        holder.close()
        for n in range(21, 31):
            other.store.append("ticks", [Ticked(n)])
        _wait(lambda: len(seen) >= 30, "the events after the close")
        assert [n for _, n in seen] == list(range(1, 31))
    finally:
        first.close()
        second.close()
    assert list(range(1, 31)) == _notes(path)


def test_a_holder_that_lost_its_lease_cannot_move_the_checkpoint(tmp_path: Path) -> None:
    """The lease check runs in the transaction of the checkpoint move: once another owner
    holds the lease, the former holder's move fails with LeaseLost and rolls back."""
    with SQLiteStorage(tmp_path / "l.db") as storage:
        leases = storage.leases
        mine = Tenure(leases, "sub", "host:1:mine", ttl=0.2)
        assert mine.hold()
        storage.checkpoints.create("sub", 0, 1.0)
        with storage.transaction():
            mine.check()
            storage.checkpoints.move("sub", 0, 1, 2.0)
        time.sleep(0.25)  # the lease expires; another owner takes it
        assert leases.acquire(lease_name("sub"), "host:2:theirs", 30.0) is not None
        with pytest.raises(LeaseLost), storage.transaction():
            mine.check()
            storage.checkpoints.move("sub", 1, 2, 3.0)
        checkpoint = storage.checkpoints.get("sub")
        assert checkpoint is not None and 1 == checkpoint.position


def test_a_lease_of_a_dead_process_of_this_machine_is_taken_over_at_once() -> None:
    """Owners name host and process: a holder that no longer runs on this machine is
    dead; one on another machine, one of a live process, or of an unknown shape is not."""
    import socket
    import subprocess
    import sys

    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    gone = int(child.stdout)
    host = socket.gethostname()
    assert dead_here(f"{host}:{gone}:x")
    assert not dead_here(f"{host}:{os.getppid()}:x")
    assert not dead_here(f"elsewhere-{host}:{gone}:x")
    assert not dead_here("no shape at all")
