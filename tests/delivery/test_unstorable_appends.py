"""One append whose values cannot be stored fails alone, before it joins a group commit:
the appends of every other thread succeed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eventlite.codec import Codec
from eventlite.envelope import Envelope, Metadata
from eventlite.exceptions import MessageEncodeError
from eventlite.messages import Registry, event
from eventlite.sqlite import SQLiteEventStore

registry = Registry()


@event(registry=registry, name="unstorable.Noted")
class Noted:
    text: str


LONE = "name-\udcff"  # what os.listdir gives for a file name that is not UTF-8


def _meta(**fields: Any) -> Metadata:
    return Metadata(**{"correlation_id": "flow-1", **fields})


# what is bad -> (the append, the error it must raise)
BAD: dict[str, tuple[Callable[[SQLiteEventStore], object], type[Exception]]] = {
    "a message string": (
        lambda s: s.append("bad", [Noted(LONE)]),
        MessageEncodeError,
    ),
    "the stream id": (lambda s: s.append(LONE, [Noted("ok")]), ValueError),
    "the correlation id": (
        lambda s: s.append("bad", [Envelope(Noted("ok"), metadata=_meta(correlation_id=LONE))]),
        MessageEncodeError,
    ),
    "the causation id": (
        lambda s: s.append("bad", [Envelope(Noted("ok"), metadata=_meta(causation_id=LONE))]),
        MessageEncodeError,
    ),
    "the user id": (
        lambda s: s.append("bad", [Envelope(Noted("ok"), metadata=_meta(user_id=LONE))]),
        MessageEncodeError,
    ),
    "a header value": (
        lambda s: s.append("bad", [Envelope(Noted("ok"), metadata=_meta(headers={"h": LONE}))]),
        MessageEncodeError,
    ),
    "a header name": (
        lambda s: s.append("bad", [Envelope(Noted("ok"), metadata=_meta(headers={LONE: "v"}))]),
        MessageEncodeError,
    ),
    "the event id": (
        lambda s: s.append("bad", [Envelope(Noted("ok"), id=LONE)]),
        MessageEncodeError,
    ),
    "a correlation id that is not text": (
        lambda s: s.append("bad", [Envelope(Noted("ok"), metadata=_meta(correlation_id=7))]),
        MessageEncodeError,
    ),
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteEventStore]:
    """A store on a file, synchronous=NORMAL so the threads overlap in group commits."""
    with SQLiteEventStore(
        tmp_path / "events.db", codec=Codec(registry), synchronous="normal"
    ) as the_store:
        yield the_store


@pytest.mark.parametrize("what", BAD)
def test_an_unstorable_append_fails_alone_among_eight_threads(
    store: SQLiteEventStore, what: str
) -> None:
    """Eight threads append 40 events each while one of them, half-way, appends a value
    that cannot be stored: that append alone raises (MessageEncodeError, or ValueError
    for the stream id) and writes nothing; every other append is stored and reads back."""
    bad_append, error = BAD[what]
    barrier = threading.Barrier(8)
    raised: list[BaseException] = []
    failures: list[BaseException] = []

    def write(t: int) -> None:
        barrier.wait()
        for i in range(40):
            if t == 0 and i == 20:
                try:
                    bad_append(store)
                except BaseException as exc:
                    raised.append(exc)
            try:
                store.append(f"s-{t}", [Noted(f"{t}-{i}")])
            except BaseException as exc:
                failures.append(exc)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert ([], 1) == (failures, len(raised))
    assert isinstance(raised[0], error), repr(raised[0])
    assert (320, 0) == (store.head_position(), store.stream_version("bad"))
    assert 320 == len(list(store.read_all()))


def test_the_error_names_the_value(store: SQLiteEventStore) -> None:
    """The error says which value cannot be stored, and of which message type."""
    with pytest.raises(MessageEncodeError, match=r"unstorable\.Noted.*user id"):
        store.append("bad", [Envelope(Noted("ok"), metadata=_meta(user_id=LONE))])
    with pytest.raises(ValueError, match="stream_id"):
        store.append(LONE, [Noted("ok")])


def test_text_beyond_ascii_is_stored_and_read_back(store: SQLiteEventStore) -> None:
    """Valid Unicode everywhere (message, stream id, metadata, headers) is kept exactly."""
    text = "ünïcødé ✓ 𝄞"
    meta = Metadata(correlation_id=text, causation_id=text, user_id=text, headers={text: text})
    store.append(text, [Envelope(Noted(text), metadata=meta)])
    (env,) = store.read_stream(text)
    assert (Noted(text), meta) == (env.message, env.metadata)


@pytest.mark.parametrize(
    "read",
    [
        lambda s: s.read_stream(LONE),
        lambda s: s.read_stream("a", from_version=2**64),
        lambda s: s.read_stream("a", to_version=2**64),
        lambda s: s.read_stream("a", limit=2**64),
        lambda s: list(s.read_all(from_position=2**64)),
        lambda s: s.read_records(after=2**64),
        lambda s: s.record_at(2**64),
        lambda s: s.stream_version(LONE),
    ],
)
def test_reads_with_values_no_store_holds_raise_value_error(
    store: SQLiteEventStore, read: Callable[[SQLiteEventStore], object]
) -> None:
    """Numbers past 64 bits and text with a lone surrogate given to a read raise ValueError
    (not OverflowError or UnicodeEncodeError)."""
    store.append("a", [Noted("ok")])
    with pytest.raises(ValueError):
        read(store)
