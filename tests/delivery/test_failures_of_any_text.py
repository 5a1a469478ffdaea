"""A failure is recorded whatever its text, and a message whatever its bytes (issue 9):
error messages with lone surrogates (what ``os.listdir`` gives for a name that is not UTF-8),
NUL characters, huge texts, exceptions whose ``str()`` raises, raw payloads that are not
UTF-8 or nest too deep. The dead letter is recorded, shown and retried; no consumer
stalls on it. The same for work-queue bodies, nack errors, and idempotency results."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest

from eventlite import App, Codec, Envelope, MessageEncodeError, Registry, cli, event
from eventlite.clock import FakeClock, SystemClock
from eventlite.dlq import DeadLetterQueue, DeadLetterStatus
from eventlite.idempotency import Idempotency
from eventlite.queue import WorkQueue
from eventlite.retry import RetryPolicy
from eventlite.sqlite import SQLiteStorage
from eventlite.store.dead_letters import MAX_ERROR_MESSAGE, MAX_TRACEBACK

registry = Registry()
codec = Codec(registry)

NAME = "caf\udcc3\udca9.txt"  # os.listdir of b"caf\xc3\xa9.txt" decoded as ASCII
ESCAPED = "caf\\udcc3\\udca9.txt"


@event(registry=registry, name="anytext.Job")
class Job:
    n: int


@event(registry=registry, name="anytext.Note")
class Note:
    text: str


def raised(error: Exception) -> Exception:
    """``error`` with a traceback, as a handler raises it."""
    try:
        raise error
    except Exception as exc:
        return exc


@pytest.fixture
def dlq(storage: SQLiteStorage, clock: FakeClock) -> DeadLetterQueue:
    """The file's DLQ on the fake clock."""
    return DeadLetterQueue(storage, codec, clock=clock)


def show(storage: SQLiteStorage, *argv: str) -> tuple[int, str, str]:
    """The CLI on the storage's file: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--db", storage.description, *argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


# -- the dead-letter queue ------------------------------------------------------------------


def test_an_error_with_a_lone_surrogate_is_recorded_shown_and_retried(
    dlq: DeadLetterQueue, storage: SQLiteStorage
) -> None:
    """The error text is kept with the surrogate escaped, in the message and the
    traceback; str() and the CLI's dlq list and show print it; retry releases it."""
    added = dlq.add(
        "files",
        Envelope(Job(1)),
        key="k",
        error=raised(OSError(f"cannot open {NAME}")),
        attempts=3,
    )
    assert f"cannot open {ESCAPED}" == dlq.get(added.id).error_message
    assert added.traceback is not None and f"OSError: cannot open {ESCAPED}" in added.traceback
    assert f"  error: OSError: cannot open {ESCAPED}" in str(added).splitlines()
    code, out, _ = show(storage, "dlq", "show", str(added.id))
    assert (0, True) == (code, ESCAPED in out)
    code, out, _ = show(storage, "dlq", "list", "--json")
    assert (0, f"cannot open {ESCAPED}") == (code, json.loads(out)["error_message"])
    assert [added.id] == [e.id for e in dlq.retry(added.id)]
    assert Job(1) == dlq.get(added.id).envelope(codec).message


def test_nul_characters_and_huge_errors_are_escaped_and_bounded(dlq: DeadLetterQueue) -> None:
    """A NUL comes back as ``\\x00``; an error message and a traceback longer than their
    bounds are cut, with a note saying how many characters went; the tail of the
    traceback, which names the exception, is kept."""
    added = dlq.add("s", Envelope(Job(1)), key=None, error=raised(ValueError("a\x00b")), attempts=1)
    assert "a\\x00b" == added.error_message
    huge = "x" * (10 * MAX_TRACEBACK)
    big = dlq.add("s", Envelope(Job(2)), key=None, error=raised(ValueError(huge)), attempts=1)
    assert big.error_message is not None and big.traceback is not None
    cut = len(huge) - MAX_ERROR_MESSAGE
    assert big.error_message == "x" * MAX_ERROR_MESSAGE + f" [... {cut} characters cut ...] "
    assert len(big.traceback) < MAX_TRACEBACK + 100
    assert big.traceback.startswith("Traceback (most recent call last):")
    assert big.traceback.endswith("x" * 100 + "\n")


def test_an_exception_whose_str_raises_is_recorded(dlq: DeadLetterQueue) -> None:
    """An exception with a broken ``__str__`` is recorded under its class name."""

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    added = dlq.add("s", Envelope(Job(1)), key=None, error=raised(Unprintable()), attempts=1)
    assert added.error_type is not None and added.error_type.endswith("Unprintable")
    assert "str() of the" in str(added.error_message)


def test_raw_payloads_of_any_shape_are_kept(dlq: DeadLetterQueue) -> None:
    """Raw text with lone surrogates is kept as its bytes (the bytes it was decoded from);
    bytes that are not UTF-8 as given; JSON nested too deep to parse is kept as text, with
    no type read from it."""
    error = raised(ValueError("undecodable"))
    text = dlq.add("s", '{"type": "' + NAME + '"}', key=None, error=error, attempts=1)
    raw = dlq.add("s", b"\xff\xfe\x00 not UTF-8", key=None, error=error, attempts=1)
    deep = "[" * 100_000 + "]" * 100_000
    nested = dlq.add("s", deep, key=None, error=error, attempts=1)
    assert b'{"type": "caf\xc3\xa9.txt"}' == dlq.get(text.id).message
    assert b"\xff\xfe\x00 not UTF-8" == dlq.get(raw.id).message
    assert (deep, None) == (dlq.get(nested.id).message, nested.type_name)
    assert 3 == len(dlq.list())


def test_a_key_with_a_lone_surrogate_still_blocks_its_line(dlq: DeadLetterQueue) -> None:
    """A key is stored escaped, and the same key finds its line: is_blocked, park behind
    it, retry releases both."""
    head = dlq.add("s", Envelope(Job(1)), key=NAME, error=raised(ValueError("x")), attempts=1)
    assert True is dlq.is_blocked("s", NAME)
    parked = dlq.park("s", Envelope(Job(2)), key=NAME)
    assert (ESCAPED, DeadLetterStatus.PARKED) == (parked.key, parked.status)
    assert [head.id, parked.id] == [e.id for e in dlq.retry(head.id)]


def test_a_durable_subscriber_never_stalls_on_an_error_text(tmp_path: Path) -> None:
    """A durable handler failing with a lone surrogate in its error is dead-lettered and
    the subscriber goes on with the other streams; once fixed, a retry delivers it."""
    app = App(tmp_path / "app.db", registry=registry)
    handled: list[int] = []
    failing = {1}

    def handler(job: Job) -> None:
        if job.n in failing:
            raise OSError(f"cannot open {NAME}")
        handled.append(job.n)

    app.subscribe(Job, handler, durable=True, name="files", retry=RetryPolicy(max_attempts=1))
    try:
        app.store.append("a", [Job(1)])
        app.store.append("b", [Job(2)])
        app.run_until_idle(10)
        assert [2] == handled
        [dead] = app.dlq.list()
        assert f"cannot open {ESCAPED}" == dead.error_message
        failing.clear()
        app.dlq.retry(dead.id)
        app.run_until_idle(10)
        assert ([2, 1], 0) == (handled, app.dlq.count())
    finally:
        app.close()


# -- work queues ----------------------------------------------------------------------------


@pytest.fixture
def queue(storage: SQLiteStorage, dlq: DeadLetterQueue, clock: FakeClock) -> WorkQueue:
    """A queue ``jobs`` with a DLQ, 2 receives at most."""
    return WorkQueue(storage, "jobs", codec, max_receives=2, dlq=dlq, clock=clock)


def test_a_nack_error_of_any_text_reaches_the_dead_letter(
    queue: WorkQueue, dlq: DeadLetterQueue
) -> None:
    """Nacks with an error holding a lone surrogate and NUL succeed; the dead letter keeps
    the last one, escaped."""
    queue.send(Job(1))
    for _ in range(2):
        [item] = queue.receive()
        queue.nack(item.receipt, error=raised(OSError(f"cannot open {NAME}\x00")))
    [dead] = dlq.list()
    assert (f"cannot open {ESCAPED}\\x00", 0) == (dead.error_message, len(queue))


def test_bodies_that_are_not_text_are_dead_lettered_not_stalling(
    queue: WorkQueue, dlq: DeadLetterQueue, storage: SQLiteStorage
) -> None:
    """A row another writer left with a TEXT body that is not UTF-8, or a BLOB body, does
    not stop receiving: each is dead-lettered with its bytes, the good messages come out."""
    queue.send(Job(1))
    with storage.database.transaction() as tx:
        for message_id, body in (("bad-text", "CAST(? AS TEXT)"), ("bad-blob", "?")):
            tx.execute(
                "INSERT INTO queue_messages (queue, id, body, not_before, visible_at, sent_at) "
                f"VALUES ('jobs', ?, {body}, 0, 0, 0)",
                (message_id, b'{"type": "\xff"}'),
            )
    queue.send(Job(2))
    assert [1, 2] == [item.message.n for item in queue.receive(max=10)]
    dead = {d.message_id: d for d in dlq.list()}
    assert [b'{"type": "\xff"}'] * 2 == [dead["bad-text"].message, dead["bad-blob"].message]
    assert {"eventlite.exceptions.MessageDecodeError"} == {d.error_type for d in dead.values()}


def test_a_consumer_keeps_going_past_errors_of_any_text(
    storage: SQLiteStorage, dlq: DeadLetterQueue
) -> None:
    """A consumer whose handler fails with a lone surrogate in its error nacks, retries
    and dead-letters the message, and handles the others."""
    live = WorkQueue(storage, "live", codec, max_receives=2, dlq=dlq, clock=SystemClock())
    done = threading.Event()
    handled: list[int] = []

    def handler(job: Job) -> None:
        if job.n == 0:
            raise OSError(f"cannot open {NAME}")
        handled.append(job.n)
        if len(handled) == 3:
            done.set()

    live.send_many([Job(n) for n in range(4)])
    with live.consume(handler, threads=1, backoff=lambda attempt: 0.0, poll_interval=0.01):
        assert done.wait(30)
        for _ in range(3000):
            if dlq.count():
                break
            threading.Event().wait(0.01)
    assert ([1, 2, 3], f"cannot open {ESCAPED}") == (sorted(handled), dlq.list()[0].error_message)


def test_a_message_utf8_cannot_hold_is_refused_at_send(queue: WorkQueue) -> None:
    """A message whose text holds a lone surrogate raises MessageEncodeError at send;
    a group or dedup id that is not valid text raises ValueError; nothing is sent."""
    with pytest.raises(MessageEncodeError, match=r"anytext\.Note"):
        queue.send(Note(NAME))
    with pytest.raises(MessageEncodeError):
        queue.send_many([Note("fine"), Note(NAME)])
    with pytest.raises(MessageEncodeError, match="NUL"):
        queue.send(Envelope(Job(1), id="a\x00b"))
    with pytest.raises(ValueError, match="group"):
        queue.send(Job(1), group=NAME)
    with pytest.raises(ValueError, match="dedup_id"):
        queue.send(Job(1), dedup_id="a\x00b")
    assert 0 == len(queue)


# -- idempotency keys -----------------------------------------------------------------------


def test_idempotency_results_of_any_text(storage: SQLiteStorage) -> None:
    """A result holding lone surrogates and NUL characters is stored and every caller gets
    the same string back; a key that is not valid text is refused before anything runs."""
    keys = Idempotency(storage)
    result = {"file": NAME, "nul": "a\x00b"}
    assert result == keys.run("k", lambda: result)
    assert result == keys.run("k", lambda: {"other": 1})
    ran: list[int] = []
    with pytest.raises(ValueError, match="valid text"):
        keys.run(NAME, lambda: ran.append(1))
    with pytest.raises(ValueError, match="NUL"):
        keys.run("a\x00b", lambda: ran.append(1))
    assert [] == ran
