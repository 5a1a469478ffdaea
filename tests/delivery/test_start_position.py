"""Where a durable subscriber, a saga starter or a process manager new to a log begins is
said explicitly: ``start="beginning"`` or ``start="end"``, required when the log already
holds events; nothing is guessed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventlite.app import App
from eventlite.messages import Registry, event
from eventlite.process import ProcessContext, ProcessManager
from eventlite.saga import Saga, SagaStep, StepContext

registry = Registry()


@event(registry=registry, name="start.Placed")
class Placed:
    n: int


@pytest.fixture
def app(db_path: Path) -> Iterator[App]:
    """An app on a file."""
    with App(db_path, registry=registry) as the_app:
        yield the_app


def _saga() -> Saga:
    def step(ctx: StepContext) -> None:
        pass

    return Saga("fulfil", [SagaStep("only", step)])


def _manager() -> ProcessManager[Any]:
    manager = ProcessManager("orders", correlate={Placed: lambda e: str(e.n)})

    @manager.starts(Placed)
    def started(event: Placed, process: ProcessContext[dict[str, Any]]) -> None:
        process.state["n"] = event.n

    return manager


@pytest.mark.parametrize(
    ("name", "add", "add_with_start"),
    [
        (
            "mailer",
            lambda app: app.subscribe(Placed, print, durable=True, name="mailer"),
            lambda app: app.subscribe(Placed, print, durable=True, name="mailer", start="end"),
        ),
        (
            "mailer",
            lambda app: app.subscribes(Placed, durable=True, name="mailer")(print),
            lambda app: app.subscribes(Placed, durable=True, name="mailer", start="end")(print),
        ),
        (
            "saga-start:fulfil",
            lambda app: app.saga(_saga(), started_by=Placed),
            lambda app: app.saga(_saga(), started_by=Placed, start="end"),
        ),
        (
            "orders",
            lambda app: app.process_manager(_manager()),
            lambda app: app.process_manager(_manager(), start="end"),
        ),
    ],
    ids=["subscribe", "subscribes", "saga", "process_manager"],
)
def test_a_new_subscriber_on_a_log_with_events_must_say_where_it_starts(
    app: App, name: str, add: Any, add_with_start: Any
) -> None:
    """Without start=, adding a subscriber new to a log that holds events raises a
    ValueError naming it and the head of the log, and leaves nothing behind: the same
    call with a start then works."""
    app.store.append("o-1", [Placed(1), Placed(2)])
    with pytest.raises(ValueError) as info:
        add(app)
    message = str(info.value)
    assert (True, True, True) == (
        repr(name) in message,
        "head position 2" in message,
        "start='beginning'" in message and "start='end'" in message,
    )
    assert ([], []) == (app.subscribers(), app.durable_subscriptions())
    add_with_start(app)
    assert [(name, 2)] == [(s.name, s.checkpoint) for s in app.subscribers()]


def test_on_an_empty_log_no_start_is_needed(app: App) -> None:
    """A subscriber new to an empty log needs no start: it gets every event committed."""
    got: list[int] = []
    app.subscribe(Placed, lambda e: got.append(e.n), durable=True, name="s")
    app.store.append("o-1", [Placed(1)])
    app.run_until_idle()
    assert [1] == got


def test_a_known_subscriber_needs_no_start(db_path: Path) -> None:
    """A subscriber the file knows resumes at its checkpoint, whatever the log holds; a
    start given then changes nothing."""
    got: list[int] = []
    with App(db_path, registry=registry) as app:
        app.subscribe(Placed, lambda e: got.append(e.n), durable=True, name="s")
        app.store.append("o-1", [Placed(1)])
        app.run_until_idle()
        app.store.append("o-1", [Placed(2)])
    with App(db_path, registry=registry) as app:
        app.subscribe(Placed, lambda e: got.append(e.n), durable=True, name="s")
        app.run_until_idle()
    with App(db_path, registry=registry) as app:
        app.store.append("o-1", [Placed(3)])
        app.subscribe(Placed, lambda e: got.append(e.n), durable=True, name="s", start="end")
        app.run_until_idle()
    assert [1, 2, 3] == got


def test_beginning_replays_history_and_end_skips_it(app: App) -> None:
    """start="beginning" delivers every stored event; start="end" only later ones; a saga
    starter and a process manager follow the same choice."""
    app.store.append("o-1", [Placed(1)])
    beginning: list[int] = []
    end: list[int] = []
    app.subscribe(
        Placed, lambda e: beginning.append(e.n), durable=True, name="b", start="beginning"
    )
    app.subscribe(Placed, lambda e: end.append(e.n), durable=True, name="e", start="end")
    app.saga(_saga(), started_by=Placed, start="beginning")
    app.process_manager(_manager(), start="end")
    app.store.append("o-2", [Placed(2)])
    app.run_until_idle()
    assert ([1, 2], [2]) == (beginning, end)
    assert (2, ["2"]) == (len(app.sagas.list()), [i.key for i in app.processes.list("orders")])


@pytest.mark.parametrize("start", ["middle", "BEGINNING", 0])
def test_an_unknown_start_is_refused(app: App, start: Any) -> None:
    """start accepts "beginning" and "end" only."""
    with pytest.raises(ValueError, match="start"):
        app.subscribe(Placed, print, durable=True, name="s", start=start)


def test_start_is_for_durable_subscribers_and_sagas_with_started_by(app: App) -> None:
    """A bus subscriber, or a saga no event starts, takes no start."""
    with pytest.raises(ValueError, match="durable"):
        app.subscribe(Placed, print, start="end")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="started_by"):
        app.saga(_saga(), start="end")
