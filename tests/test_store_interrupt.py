"""Group commit in the SQLite store when an appending thread is interrupted (an exception
raised into it by a signal handler, as Ctrl-C raises KeyboardInterrupt): the interrupted
append leaves the queue or hands its turn on, and later appends never block for good."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from eventlite import Codec, Envelope, Registry
from eventlite.messages import event
from eventlite.sqlite import SQLiteEventStore

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill (POSIX)"
)

registry = Registry()


@event(registry=registry, name="interrupt.Noted")
class Noted:
    n: int


class Interrupted(BaseException):
    """Raised into the main thread by the SIGALRM handler, as KeyboardInterrupt is."""


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll a condition that another thread makes true, failing after 10 s."""
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


class Appender(threading.Thread):
    """A thread making one append and keeping its result or exception."""

    def __init__(self, store: SQLiteEventStore, stream_id: str, n: int) -> None:
        super().__init__(daemon=True)
        self.store, self.stream_id, self.n = store, stream_id, n
        self.result: list[Envelope] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.store.append(self.stream_id, [Noted(n=self.n)])
        except BaseException as exc:
            self.error = exc

    def finish(self) -> None:
        """Join the thread, failing if it is still blocked after 10 s."""
        self.join(timeout=10)
        assert False is self.is_alive(), f"the append to {self.stream_id!r} is still blocked"


class Holder(threading.Thread):
    """Another writer of the file: holds a write transaction until released."""

    def __init__(self, store: SQLiteEventStore) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.holding = threading.Event()
        self.release = threading.Event()

    def run(self) -> None:
        with self.store.database.transaction():
            self.holding.set()
            self.release.wait(10)

    def __enter__(self) -> Holder:
        self.start()
        assert True is self.holding.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.join(timeout=10)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteEventStore]:
    """A fresh store."""
    s = SQLiteEventStore(tmp_path / "s.db", codec=Codec(registry))
    yield s
    s.close()


@pytest.fixture
def interrupt() -> Iterator[Callable[[], None]]:
    """A function that raises :class:`Interrupted` into the main thread via SIGALRM."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run only in the main thread")
    main = threading.main_thread().ident
    assert main is not None

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted()

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        yield lambda: signal.pthread_kill(main, signal.SIGALRM)
    finally:
        signal.signal(signal.SIGALRM, previous)


def _later_append_completes(store: SQLiteEventStore, stream_id: str) -> Appender:
    """Append once more in a fresh thread; it must finish within the time bound."""
    later = Appender(store, stream_id, 99)
    later.start()
    later.finish()
    assert None is later.error
    return later


def _log(store: SQLiteEventStore) -> list[tuple[int | None, str | None]]:
    """The whole store as (position, stream id) pairs."""
    return [(e.position, e.stream_id) for e in store.read_all()]


def _leader_waiting_for_the_lock(store: SQLiteEventStore) -> Appender:
    """Start an append that takes the writing turn and waits for the held write lock."""
    leader = Appender(store, "lead", 0)
    leader.start()
    _wait_for(
        lambda: store._holder is not None and not store._queue, "the leader to take its batch"
    )
    return leader


def test_a_follower_interrupted_while_queued_withdraws(
    store: SQLiteEventStore, interrupt: Callable[[], None]
) -> None:
    """The reviewer's case: an append queued behind a busy leader is interrupted while
    it waits. It is not written, and appends after it still complete, gap-free."""
    with Holder(store):
        leader = _leader_waiting_for_the_lock(store)

        def fire() -> None:
            _wait_for(lambda: 1 == len(store._queue), "the main thread's append to queue")
            time.sleep(0.05)  # into its wait for the group commit
            interrupt()

        threading.Thread(target=fire, daemon=True).start()
        with pytest.raises(Interrupted):
            store.append("main", [Noted(n=1)])
    leader.finish()
    assert None is leader.error
    _later_append_completes(store, "later")
    assert [(1, "lead"), (2, "later")] == _log(store)
    assert 0 == store.stream_version("main")


def _queue_is(store: SQLiteEventStore, n: int) -> Callable[[], bool]:
    """A condition: ``n`` appends are queued."""
    return lambda: n == len(store._queue)


def _release_when_queued(holder: Holder, store: SQLiteEventStore, n: int) -> None:
    """Let the holder go, from another thread, once ``n`` appends are queued."""

    def release() -> None:
        _wait_for(lambda: n == len(store._queue), f"{n} appends to queue")
        time.sleep(0.05)  # the last of them into its wait
        holder.release.set()

    threading.Thread(target=release, daemon=True).start()


def test_a_follower_interrupted_while_its_batch_is_written_is_committed(
    store: SQLiteEventStore, interrupt: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller interrupted after its append joined a batch being written gets the
    exception, but the append is committed with the batch (an interrupted write may or
    may not have been committed); the batch's leader still gets its own result."""
    writing = threading.Event()
    go_on = threading.Event()
    commit = store._commit

    def slow_commit(batch: list[Any]) -> None:
        if any(part[0] == "main" for p in batch for part in p.parts):
            writing.set()
            assert True is go_on.wait(10)
        commit(batch)

    def fire() -> None:
        assert True is writing.wait(10)
        interrupt()
        time.sleep(0.05)
        go_on.set()

    monkeypatch.setattr(store, "_commit", slow_commit)
    holder = Holder(store).__enter__()
    lead = _leader_waiting_for_the_lock(store)
    second = Appender(store, "second", 2)  # queued first: it leads the batch after "lead"
    second.start()
    _wait_for(lambda: 1 == len(store._queue), "the second append to queue")
    _release_when_queued(holder, store, 2)
    threading.Thread(target=fire, daemon=True).start()
    with pytest.raises(Interrupted):
        store.append("main", [Noted(n=1)])
    holder.__exit__()
    for t in (lead, second):
        t.finish()
        assert None is t.error
    assert [(1, 2)] == [(e.version, e.position) for e in second.result or []]
    _later_append_completes(store, "later")
    assert [(1, "lead"), (2, "second"), (3, "main"), (4, "later")] == _log(store)


def test_a_turn_holder_interrupted_while_gathering_hands_over(
    store: SQLiteEventStore, interrupt: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller handed the writing turn and interrupted in ``_gather``, before it took
    the queue: its append is not written, and the next queued append takes the turn."""
    gather = store._gather

    def interrupted_gather() -> None:
        if threading.current_thread() is threading.main_thread():
            interrupt()
            time.sleep(10)  # the signal's handler raises in here
        gather()

    monkeypatch.setattr(store, "_gather", interrupted_gather)
    holder = Holder(store).__enter__()
    lead = _leader_waiting_for_the_lock(store)
    third = Appender(store, "third", 3)

    def queue_third() -> None:
        _wait_for(lambda: 1 == len(store._queue), "the main thread's append to queue")
        third.start()

    threading.Thread(target=queue_third, daemon=True).start()
    _release_when_queued(holder, store, 2)
    with pytest.raises(Interrupted):
        store.append("main", [Noted(n=1)])  # queued right after "lead" took its batch
    holder.__exit__()
    for t in (lead, third):
        t.finish()
        assert None is t.error
    _later_append_completes(store, "later")
    assert [(1, "lead"), (2, "third"), (3, "later")] == _log(store)
    assert 0 == store.stream_version("main")


def test_a_leader_interrupted_before_writing_requeues_its_batch(
    store: SQLiteEventStore, interrupt: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leader interrupted after it took its batch but before writing it: its own
    append is not written, the others of the batch go to the next turn and are written."""
    commit = store._commit

    def interrupted_commit(batch: list[Any]) -> None:
        if threading.current_thread() is threading.main_thread():
            interrupt()
            time.sleep(10)  # the signal's handler raises in here
        commit(batch)

    monkeypatch.setattr(store, "_commit", interrupted_commit)
    holder, (lead, *others) = _main_leads_a_batch_with_others(store)
    with pytest.raises(Interrupted):
        store.append("main", [Noted(n=1)])  # leads "main" and the others' batch
    holder.__exit__()
    for t in (lead, *others):
        t.finish()
        assert None is t.error
    assert [[2], [3], [4]] == [[e.position for e in t.result or []] for t in others]
    _later_append_completes(store, "later")
    expected = [(1, "lead"), (2, "other0"), (3, "other1"), (4, "other2"), (5, "later")]
    assert expected == _log(store)
    assert 0 == store.stream_version("main")


def _main_leads_a_batch_with_others(store: SQLiteEventStore) -> tuple[Holder, list[Appender]]:
    """Hold the file, let another append take the turn, queue the main thread's append and
    three others behind it; the main thread then leads their batch once the file frees."""
    holder = Holder(store).__enter__()
    lead = _leader_waiting_for_the_lock(store)
    others = [Appender(store, f"other{i}", i) for i in range(3)]

    def queue_others() -> None:
        _wait_for(lambda: 1 == len(store._queue), "the main thread's append to queue")
        for queued, t in enumerate(others, 2):
            t.start()
            _wait_for(_queue_is(store, queued), f"append {queued} to queue")

    threading.Thread(target=queue_others, daemon=True).start()
    _release_when_queued(holder, store, 4)
    return holder, [lead, *others]


def test_a_leader_interrupted_after_its_commit_gives_the_others_their_results(
    store: SQLiteEventStore, interrupt: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupt landing right after the batch's COMMIT (before the leader learned it
    committed): the batch is in the file, so the others get their positions, not a
    "group commit failed" error, and only the interrupted caller sees the interrupt."""
    write = store._write

    def write_then_interrupt_after_commit(conn: Any, batch: list[Any]) -> None:
        write(conn, batch)
        if threading.current_thread() is threading.main_thread():
            tx = store.database._local.tx

            def after_commit() -> None:
                interrupt()
                time.sleep(10)  # the signal's handler raises in here

            tx.on_commit(after_commit)

    monkeypatch.setattr(store, "_write", write_then_interrupt_after_commit)
    holder, threads = _main_leads_a_batch_with_others(store)
    with pytest.raises(Interrupted):
        store.append("main", [Noted(n=1)])
    holder.__exit__()
    for t in threads:
        t.finish()
        assert None is t.error, t.error
    assert [[3], [4], [5]] == [[e.position for e in t.result or []] for t in threads[1:]]
    _later_append_completes(store, "later")
    expected = [(1, "lead"), (2, "main"), (3, "other0"), (4, "other1"), (5, "other2")]
    assert [*expected, (6, "later")] == _log(store)


def test_an_interrupt_during_the_handover_still_hands_the_turn_on(
    store: SQLiteEventStore, interrupt: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupt landing in the middle of the leader's handover (after it woke one of
    the others): the handover is finished anyway, exactly once, and nothing waits forever."""
    from eventlite.sqlite import events as module

    wake = module._wake
    fired = threading.Event()

    def wake_then_interrupt(pending: Any) -> None:
        wake(pending)
        if threading.current_thread() is threading.main_thread() and not fired.is_set():
            fired.set()
            interrupt()
            time.sleep(10)  # the signal's handler raises in here

    monkeypatch.setattr(module, "_wake", wake_then_interrupt)
    holder, threads = _main_leads_a_batch_with_others(store)
    with pytest.raises(Interrupted):
        store.append("main", [Noted(n=1)])
    holder.__exit__()
    assert fired.is_set()
    for t in threads:
        t.finish()
        assert None is t.error, t.error
    _later_append_completes(store, "later")
    expected = [(1, "lead"), (2, "main"), (3, "other0"), (4, "other1"), (5, "other2")]
    assert [*expected, (6, "later")] == _log(store)
