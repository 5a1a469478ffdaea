"""Given events with times, then these results: a scenario for a stream.

:class:`StreamScenario` runs a :class:`~eventlite.streams.Stream` the way an application
does: on a :class:`~eventlite.testing.TestApp` (a temporary SQLite file, a
:class:`~eventlite.clock.FakeClock`), through the durable runner, with its rows in the read
model, its events in the log and its refused inputs in the dead-letter queue. Then it
compares what the stream left with what the test expects::

    StreamScenario(views_per_minute).given(
        PageViewed("ada", "/home", at(9, 0, 5)),
        PageViewed("bob", "/home", at(9, 0, 50)),
        PageViewed("cyd", "/home", at(9, 1, 30)),   # moves the watermark past 09:01
    ).then(rows={"views_per_minute": [
        {"key": "/home", "start": at(9, 0), "end": at(9, 1), "value": 2},
    ]})

Event time comes from the events (their time field), or, for a source declared without
``time=``, from the envelope's timestamp: the fake clock's time when the event is stored.
A ``timedelta`` among the given events moves the clock by that much. :meth:`finished`
ends the input after the given events, so every window closes. Scenarios are immutable:
``given`` and ``finished`` return new ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import attrs

from ..codec import Codec
from ..envelope import Envelope
from ..messages import Registry, default_registry
from ..streams import Stream, StreamRunStatus, Table, dead_letter_source
from .scenario import UNCHECKED, ScenarioFailed, _compare_list

if TYPE_CHECKING:
    from ..app import App
    from ..dlq import DeadLetter

__all__ = ["StreamOutcome", "StreamScenario"]

SCENARIO_STREAM = "scenario"
"""The event stream the given events are stored in, in order."""


@attrs.frozen
class StreamOutcome:
    """What a :class:`StreamScenario` run left in the store."""

    rows: Mapping[str, tuple[dict[str, Any], ...]]
    """Each table the stream writes: its rows as the read model holds them (datetimes as
    ISO 8601 text, lists and dicts as JSON text), in the table's order."""
    events: tuple[Any, ...]
    """The events the stream appended to the log, in order."""
    late: Mapping[str, int]
    """Each stateful operator's late events."""
    dead_letters: tuple[DeadLetter, ...]
    """The stream's entries in the dead-letter queue, in order."""
    status: StreamRunStatus
    """The stream's status at the end."""


def _cell(value: Any) -> Any:
    """A value as the read model stores it (what sqlite-utils writes)."""
    from sqlite_utils.db import jsonify_if_needed

    return jsonify_if_needed(value)


def _row_text(row: Mapping[str, Any]) -> str:
    return json.dumps({k: _cell(v) for k, v in row.items()}, sort_keys=True, default=repr)


class StreamScenario:
    """Given events with times, then these rows, events, late counts and dead letters:
    for one :class:`~eventlite.streams.Stream` (see the module doc).

    :param stream: the stream under test, or a function that makes it.
    :param registry: the registry of its messages (default: the default one).
    :param build: the application's composition root, as
        :class:`~eventlite.testing.TestApp` takes it (by default a bare app); the scenario
        adds the stream to the app it makes, unless the root added one of that name.
    :param tables: the keyed tables its ``join_table`` steps read.
    """

    def __init__(
        self,
        stream: Stream | Callable[[], Stream],
        *,
        registry: Registry | None = None,
        build: Callable[..., App] | None = None,
        tables: Mapping[str, Table] | None = None,
        given: Sequence[Any] = (),
        finished: bool = False,
    ) -> None:
        if not isinstance(stream, Stream) and not callable(stream):
            raise TypeError(f"StreamScenario takes a Stream or a function making one: {stream!r}")
        self.stream = stream
        """The stream under test (or what makes it)."""
        self.registry = registry
        """The registry of its messages."""
        self.build = build
        """The composition root, or None for a bare app."""
        self.tables = dict(tables or {})
        """The keyed tables of its ``join_table`` steps."""
        self.given_events: tuple[Any, ...] = tuple(given)
        """Events to store, in order, and ``timedelta`` spans of fake time between them."""
        self.is_finished = finished
        """Whether the input ends after the given events (every window closes)."""

    def _replace(self, **changes: Any) -> StreamScenario:
        fields: dict[str, Any] = {
            "registry": self.registry,
            "build": self.build,
            "tables": self.tables,
            "given": self.given_events,
            "finished": self.is_finished,
        }
        fields.update(changes)
        return StreamScenario(self.stream, **fields)

    def given(self, *events: Any) -> StreamScenario:
        """A scenario with these events stored, in order, after those already given; a
        ``timedelta`` among them moves the fake clock (the timestamp of the events stored
        after it)."""
        return self._replace(given=(*self.given_events, *events))

    def finished(self) -> StreamScenario:
        """A scenario whose input ends after the given events: every watermark passes all
        time, so every window closes and emits (as no live stream ever does)."""
        return self._replace(finished=True)

    def _make(self) -> Stream:
        stream = self.stream
        made = stream if isinstance(stream, Stream) else stream()
        if not isinstance(made, Stream):
            raise TypeError(f"the stream factory returned {made!r}, not a Stream")
        return made

    @property
    def _title(self) -> str:
        n = sum(1 for e in self.given_events if not isinstance(e, timedelta))
        name = self._make().name
        end = ", then the input ends" if self.is_finished else ""
        return f"stream {name!r} given {n} event{'' if n == 1 else 's'}{end}"

    def run(self) -> StreamOutcome:
        """Run the scenario and return what the stream left in the store."""
        from .app import TestApp

        stream = self._make()
        with TestApp(self.build, registry=self.registry) as t:
            app = t.app
            if stream.name not in app.streams.streams:  # the root may have added it
                app.stream(stream, tables=self.tables)
            clock = t.clock
            for item in self.given_events:
                if isinstance(item, timedelta):
                    clock.advance(item.total_seconds())
                    continue
                when = datetime.fromtimestamp(clock.now(), tz=timezone.utc)
                app.store.append(SCENARIO_STREAM, [Envelope(item, timestamp=when)])
            t.run_until_idle()
            if self.is_finished:
                app.streams._finish(stream.name)
                t.run_until_idle()
            return self._outcome(app, stream)

    def _outcome(self, app: App, stream: Stream) -> StreamOutcome:
        reader = app.projector.reader()
        rows = {
            table: tuple(dict(r) for r in reader[table].rows) if reader[table].exists() else ()
            for table in stream.tables()
        }
        events = tuple(e.message for e in app.store.read_all() if e.stream_id != SCENARIO_STREAM)
        (status,) = app.streams.status(stream.name)
        dead = tuple(app.dlq.list(dead_letter_source(stream.name), limit=None))
        return StreamOutcome(rows, events, dict(status.late), dead, status)

    def then(
        self,
        *,
        rows: Mapping[str, Sequence[Mapping[str, Any]]] = UNCHECKED,
        events: Sequence[Any] = UNCHECKED,
        late: Mapping[str, int] = UNCHECKED,
        dead_letters: Sequence[Any] = UNCHECKED,
    ) -> StreamOutcome:
        """Run the scenario and check what is given:

        - ``rows``: for each table named, exactly these rows, in any order (values as the
          stream makes them: datetimes, lists... are compared as the table stores them);
        - ``events``: exactly the events the stream appended, in order;
        - ``late``: the late counts of these operators (operators not named must have
          none);
        - ``dead_letters``: exactly the input events (messages) the stream sent to the
          dead-letter queue, in order.

        Returns the :class:`StreamOutcome`; raises :class:`ScenarioFailed` naming each
        difference.
        """
        __tracebackhide__ = True
        outcome = self.run()
        problems: list[str] = []
        if rows is not UNCHECKED:
            for table in sorted(rows):
                want = sorted(_row_text(r) for r in rows[table])
                got = sorted(_row_text(r) for r in outcome.rows.get(table, ()))
                if want != got:
                    problems.append(f"rows of {table!r} ({len(want)} expected, {len(got)} stored):")
                    problems.extend(f"  - {r}" for r in want if r not in got)
                    problems.extend(f"  + {r}" for r in got if r not in want)
        if events is not UNCHECKED:
            _compare_list(problems, "events appended", events, outcome.events, "appended")
        if late is not UNCHECKED:
            counted = {k: v for k, v in outcome.late.items() if v or k in late}
            if dict(late) != counted:
                problems.append(f"late counts: expected {dict(late)!r}, counted {counted!r}")
        if dead_letters is not UNCHECKED:
            codec = Codec(self.registry if self.registry is not None else default_registry)
            refused = [_message(d, codec) for d in outcome.dead_letters]
            _compare_list(problems, "dead letters", dead_letters, refused, "dead-lettered")
        if problems:
            lines = [f"{self._title}: the outcome differs from the expected one"]
            lines.extend("  " + p for p in problems)
            raise ScenarioFailed("\n".join(lines))
        return outcome


def _message(dead: DeadLetter, codec: Codec) -> Any:
    """The input event of a dead letter (its type name when it cannot be decoded)."""
    try:
        return dead.envelope(codec).message
    except Exception:
        return dead.type_name
