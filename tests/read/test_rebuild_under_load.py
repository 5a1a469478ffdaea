"""Rebuilding projections while four threads keep committing: the rebuilt read model must
equal one built from scratch afterwards (nothing missed, nothing applied twice)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from eventlite import App
from eventlite.projection import Projector

from .ledger import (
    Deposited,
    Ledger,
    Opened,
    ScratchLedger,
    fold,
    read_model,
    registry,
    wait_until,
)

WRITERS = 4


def _writers(work: Any, rounds: int) -> tuple[list[threading.Thread], threading.Event]:
    """Four threads running ``work(thread_index, round)`` ``rounds`` times after a go."""
    go = threading.Event()
    errors: list[BaseException] = []

    def loop(t: int) -> None:
        go.wait()
        try:
            for i in range(rounds):
                work(t, i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            raise

    threads = [threading.Thread(target=loop, args=(t,)) for t in range(WRITERS)]
    for th in threads:
        th.start()
    return threads, go


def _rebuild_under_load(app: App, mode: str, rounds: int, work: Any) -> None:
    projector = Projector(app.storage, app.codec, batch_size=50, poll_interval=0.01)
    ledger = projector.add(Ledger(), mode=mode)  # type: ignore[arg-type]
    projector.start()
    # some history first, so that the rebuild has batches to replay
    for i in range(300):
        app.store.append(f"pre-{i % 7}", [Deposited(f"p{i % 7}", i)])
    projector.catch_up()
    threads, go = _writers(work(projector), rounds)
    progress: list[tuple[int, int]] = []
    before = app.store.head_position()

    def report(done: int, total: int) -> None:
        if not progress:
            # make sure the writers are committing while the replay runs
            wait_until(lambda: app.store.head_position() >= before + 40)
        progress.append((done, total))

    go.set()
    projector.rebuild("ledger", progress=report)
    for th in threads:
        th.join()
    projector.notify()
    projector.catch_up()
    head = app.store.head_position()
    wait_until(lambda: projector.status("ledger")[0].position == head)
    rebuilt = read_model(projector, ledger)  # type: ignore[arg-type]
    # built from scratch afterwards, with no writer running
    scratch = projector.add(ScratchLedger(), mode="tracking")
    projector.catch_up("scratch")
    assert read_model(projector, scratch) == rebuilt  # type: ignore[arg-type]
    assert fold(list(app.store.read_all())) == rebuilt
    [status] = projector.status("ledger")
    assert ("live", head) == (status.state, status.position)
    assert progress[-1][0] == progress[-1][1]
    projector.close()


def _uow_work(app: App) -> Any:
    def make(projector: Projector) -> Any:
        def work(t: int, i: int) -> None:
            with app.unit_of_work() as uow:
                uow.on_commit_write(projector.hook)
                uow.append(f"w{t}-{i}", [Opened(f"w{t}", f"o{i}"), Deposited(f"w{t}", i)])

        return work

    return make


def _append_work(app: App) -> Any:
    def make(projector: Projector) -> Any:
        def work(t: int, i: int) -> None:
            app.store.append(f"w{t}", [Deposited(f"w{t}", i), Opened(f"w{t}", f"o{i}")])
            projector.notify()

        return work

    return make


@pytest.mark.parametrize("mode", ["tracking", "inline"])
def test_rebuild_while_four_threads_commit(tmp_path: Path, mode: str) -> None:
    """A rebuild racing four threads that commit units of work (running the inline hook)
    ends equal to a from-scratch build and to the fold of the log, and live at the head."""
    with App(tmp_path / "r.db", registry=registry, synchronous="normal") as app:
        _rebuild_under_load(app, mode, 60, _uow_work(app))


def test_rebuild_while_four_threads_append_to_the_store(tmp_path: Path) -> None:
    """The same with plain appends (group commits of several threads) and the tracking
    thread running beside the rebuild."""
    with App(tmp_path / "r.db", registry=registry, synchronous="normal") as app:
        _rebuild_under_load(app, "tracking", 150, _append_work(app))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["tracking", "inline"])
def test_rebuild_under_load_repeated(tmp_path: Path, mode: str) -> None:
    """The racing rebuild, many times over and longer."""
    for n in range(10):
        with App(tmp_path / f"r{n}.db", registry=registry, synchronous="normal") as app:
            _rebuild_under_load(app, mode, 400, _uow_work(app))
