"""Given/when/then scenarios: past events, one action, and the events it must record.

For an aggregate, the scenario replays the given events through the aggregate's
``@applies`` methods, runs the action on it, and compares the events it recorded::

    AggregateScenario(Account, "acc-1").given(
        Opened("ann"), Deposited(Decimal(5))
    ).when(lambda account: account.withdraw(Decimal(3))).then(Withdrawn(Decimal(3)))

For a command handler, :class:`AppScenario` builds a fresh :class:`~eventlite.App` for each
run (in memory, usually), appends the given events to their streams, dispatches the
command, waits for background subscribers, and compares the events that are new in the
store, stream by stream.

Every expectation checks the whole outcome: ``then`` fails on a missing, a different or an
extra event, and on an unexpected exception; ``then_raises`` fails when nothing is raised,
when another exception is, and (for an app) when events were stored anyway. Failures raise
:class:`ScenarioFailed`, an ``AssertionError`` whose message shows the expected and the
actual events side by side, with the fields that differ.

Scenarios are immutable: ``given`` and ``when`` return new scenarios, so one ``given`` can
be shared by several tests.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from ..aggregate import Aggregate
from ..messages import MessageKind

if TYPE_CHECKING:
    from ..app import App
    from ..envelope import Envelope

__all__ = [
    "ANYTHING",
    "AggregateScenario",
    "AppOutcome",
    "AppScenario",
    "ScenarioFailed",
]

A = TypeVar("A", bound=Aggregate)
E = TypeVar("E", bound=BaseException)

_CELL = 48  # widest expected/actual cell before a value is cut and shown in full below


class ScenarioFailed(AssertionError):
    """A scenario's outcome is not the expected one.

    The message names the scenario, then shows the expected and the actual events side by
    side, one row per event, marking each row that differs with ``>>`` and listing the
    fields that differ below it.
    """


class _Anything:
    """Equal to every value; see :data:`ANYTHING`."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "ANYTHING"


ANYTHING: Any = _Anything()
"""A field value in an expected event that matches any actual value: a generated id, the
current time. ``then(Withdrawn(amount=Decimal(3), at=ANYTHING))``."""


# -- rendering ------------------------------------------------------------------------------


def _cut(text: str) -> str:
    return text if len(text) <= _CELL else text[: _CELL - 3] + "..."


def _field_differences(expected: Any, actual: Any, actual_word: str) -> list[str]:
    """One line per field that differs between two events of the same attrs class."""
    if type(expected) is not type(actual):
        return [
            f"type: expected {type(expected).__qualname__}, "
            f"{actual_word} {type(actual).__qualname__}"
        ]
    if not attrs.has(type(expected)):
        return []
    lines = []
    for field in attrs.fields(type(expected)):
        want = getattr(expected, field.name)
        got = getattr(actual, field.name)
        if want != got:
            lines.append(f"{field.name}: expected {want!r}, {actual_word} {got!r}")
    return lines


def _table(expected: Sequence[Any], actual: Sequence[Any], actual_word: str) -> list[str]:
    """The side-by-side rows of two event lists; ``>>`` marks the rows that differ."""
    rows = max(len(expected), len(actual))
    left = [_cut(repr(e)) for e in expected]
    width = max([len("expected"), len("(nothing)"), *map(len, left)])
    number = len(str(max(rows, 1)))
    lines = [f"   {'':>{number}} {'expected':<{width}} | {actual_word}"]
    for i in range(rows):
        has_e, has_a = i < len(expected), i < len(actual)
        want = expected[i] if has_e else None
        got = actual[i] if has_a else None
        same = has_e and has_a and want == got
        cell_e = left[i] if has_e else "(nothing)"
        cell_a = _cut(repr(got)) if has_a else "(nothing)"
        mark = "  " if same else ">>"
        lines.append(f"{mark} {i + 1:>{number}} {cell_e:<{width}} | {cell_a}".rstrip())
        if same:
            continue
        pad = " " * (number + 5)
        if has_e and has_a:
            details = _field_differences(want, got, actual_word)
        elif has_e:
            details = ["missing"]
        else:
            details = [f"not expected, but {actual_word}"]
        if has_e and len(repr(want)) > _CELL:
            details.append(f"expected: {want!r}")
        if has_a and len(repr(got)) > _CELL:
            details.append(f"{actual_word}: {got!r}")
        lines.extend(pad + d for d in details)
    return lines


def _describe_events(events: Sequence[Any]) -> str:
    if not events:
        return "no events"
    return ", ".join(repr(e) for e in events)


def _describe_error(exc: BaseException) -> str:
    return f"{type(exc).__qualname__}: {exc}" if str(exc) else type(exc).__qualname__


def _check_raised(
    title: str,
    error: BaseException | None,
    expected_type: type[BaseException],
    match: str | None,
    recorded: str,
) -> None:
    __tracebackhide__ = True
    if error is None:
        raise ScenarioFailed(
            f"{title}: expected {expected_type.__qualname__} to be raised, but nothing was "
            f"raised ({recorded})"
        )
    if not isinstance(error, expected_type):
        raise ScenarioFailed(
            f"{title}: expected {expected_type.__qualname__} to be raised, but got "
            f"{_describe_error(error)}"
        ) from error
    if match is not None and re.search(match, str(error)) is None:
        raise ScenarioFailed(
            f"{title}: {type(error).__qualname__} was raised, but its message does not match "
            f"{match!r}:\n  message: {str(error)!r}"
        ) from error


# -- aggregates -----------------------------------------------------------------------------


class AggregateScenario(Generic[A]):
    """Given past events of one aggregate, when an action runs on it, then these events.

    :param aggregate_type: the :class:`~eventlite.Aggregate` subclass under test.
    :param aggregate_id: the id the aggregate is built with.

    The action receives the aggregate rebuilt from the given events (a new one when none
    are given). An action that creates the aggregate itself, such as a factory class
    method, returns it; the scenario then looks at the returned aggregate's events::

        AggregateScenario(Order).when(lambda _: Order.place("o-1", "tea")).then(
            OrderPlaced("o-1", "tea")
        )
    """

    def __init__(
        self,
        aggregate_type: type[A],
        aggregate_id: str = "test",
        *,
        given: Sequence[Any] = (),
        action: Callable[[A], object] | None = None,
    ) -> None:
        if not (isinstance(aggregate_type, type) and issubclass(aggregate_type, Aggregate)):
            raise TypeError(
                f"AggregateScenario takes an Aggregate subclass, got {aggregate_type!r}"
            )
        self.aggregate_type = aggregate_type
        """The aggregate class under test."""
        self.aggregate_id = aggregate_id
        """The id of the aggregate under test."""
        self.given_events: tuple[Any, ...] = tuple(given)
        """The past events the aggregate is rebuilt from."""
        self.action = action
        """The action under test, or None before :meth:`when`."""

    def given(self, *events: Any) -> AggregateScenario[A]:
        """A scenario with these events added to the aggregate's history."""
        return AggregateScenario(
            self.aggregate_type,
            self.aggregate_id,
            given=(*self.given_events, *events),
            action=self.action,
        )

    def when(self, action: Callable[[A], object]) -> AggregateScenario[A]:
        """A scenario that runs ``action(aggregate)``."""
        return AggregateScenario(
            self.aggregate_type, self.aggregate_id, given=self.given_events, action=action
        )

    @property
    def _title(self) -> str:
        n = len(self.given_events)
        return (
            f"{self.aggregate_type.__qualname__} {self.aggregate_id!r} "
            f"(given {n} event{'' if n == 1 else 's'})"
        )

    def _run(self) -> tuple[A, BaseException | None]:
        __tracebackhide__ = True
        if self.action is None:
            raise TypeError("the scenario has no action: call .when(...) before .then...()")
        try:
            aggregate = self.aggregate_type._rehydrate(self.aggregate_id, self.given_events)
        except Exception as exc:
            raise ScenarioFailed(
                f"{self._title}: the given events could not be applied: {_describe_error(exc)}"
            ) from exc
        try:
            returned = self.action(aggregate)
        except Exception as exc:
            return aggregate, exc
        if isinstance(returned, self.aggregate_type):
            aggregate = returned
        return aggregate, None

    def then(self, *events: Any) -> A:
        """Check that the action recorded exactly ``events``, in order, and raised nothing.

        Returns the aggregate, for checks on its state. Raises :class:`ScenarioFailed`.
        """
        __tracebackhide__ = True
        aggregate, error = self._run()
        if error is not None:
            raise ScenarioFailed(
                f"{self._title}: expected {_describe_events(events)}, but the action raised "
                f"{_describe_error(error)}"
            ) from error
        recorded = list(aggregate.pending_events)
        expected = list(events)
        if expected != recorded:
            lines = [
                f"{self._title}: the recorded events differ from the expected ones "
                f"({len(expected)} expected, {len(recorded)} recorded)",
                *("  " + line for line in _table(expected, recorded, "recorded")),
            ]
            raise ScenarioFailed("\n".join(lines))
        return aggregate

    def then_nothing(self) -> A:
        """Check that the action recorded no event and raised nothing; returns the
        aggregate. Raises :class:`ScenarioFailed`."""
        __tracebackhide__ = True
        return self.then()

    def then_raises(self, exception_type: type[E], match: str | None = None) -> E:
        """Check that the action raised ``exception_type`` (or a subclass) whose message
        matches the regular expression ``match`` (searched, as ``pytest.raises`` does).

        Returns the exception. Raises :class:`ScenarioFailed`.
        """
        __tracebackhide__ = True
        aggregate, error = self._run()
        recorded = f"recorded {_describe_events(aggregate.pending_events)}"
        _check_raised(self._title, error, exception_type, match, recorded)
        assert isinstance(error, exception_type)
        return error


# -- command handlers through an App --------------------------------------------------------


@attrs.frozen
class AppOutcome:
    """What an :class:`AppScenario` run produced."""

    result: Any
    """What the command's handler returned (the query's answer, for a query)."""
    events: tuple[Envelope, ...]
    """The events new in the store after the command, in position order."""


def _dead_letter_ids(app: App) -> set[int]:
    if app.database is None:
        return set()
    return {d.id for d in app.dlq.list(limit=None)}


def _group(events: Sequence[Envelope]) -> dict[str, list[Any]]:
    by_stream: dict[str, list[Any]] = {}
    for env in events:
        assert env.stream_id is not None
        by_stream.setdefault(env.stream_id, []).append(env.message)
    return by_stream


class AppScenario:
    """Given events in streams, when a command is dispatched, then these new events.

    :param app_factory: makes a new, fully wired :class:`~eventlite.App` for each run
        (handlers registered, subscribers subscribed), e.g. ``lambda: build(App())``. The
        scenario closes it after the run.
    :param drain_timeout: how many seconds to wait for background work (bus workers,
        durable subscribers) to settle before the new events are read.

    The given events are appended to the store without being published on the bus: they
    are the past, which bus subscribers saw long ago. Durable subscribers, which read the
    log, catch up on them before the command runs, so what they do about the past is not
    counted as new. ``when`` takes a command (dispatched), a query
    (asked) or a function ``fn(app)`` for anything else. A subscriber that fails during
    the run fails the scenario too, naming the subscriber and the event, and so does a
    durable subscriber whose failure was dead-lettered.
    """

    def __init__(
        self,
        app_factory: Callable[[], App],
        *,
        given: Sequence[tuple[str, Sequence[Any]]] = (),
        action: Any = None,
        drain_timeout: float = 10.0,
    ) -> None:
        self.app_factory = app_factory
        """Makes the app each run uses."""
        self.given_events: tuple[tuple[str, tuple[Any, ...]], ...] = tuple(
            (stream_id, tuple(events)) for stream_id, events in given
        )
        """``(stream_id, events)`` pairs, appended in this order before the command."""
        self.action = action
        """The command, query or function under test, or None before :meth:`when`."""
        self.drain_timeout = drain_timeout
        """Seconds to wait for background work to settle after the command."""

    def _replace(self, **changes: Any) -> AppScenario:
        fields: dict[str, Any] = {
            "given": self.given_events,
            "action": self.action,
            "drain_timeout": self.drain_timeout,
        }
        fields.update(changes)
        return AppScenario(self.app_factory, **fields)

    def given(self, stream_id: str, *events: Any) -> AppScenario:
        """A scenario with ``events`` appended to ``stream_id`` before the command."""
        return self._replace(given=(*self.given_events, (stream_id, events)))

    def when(self, command: Any) -> AppScenario:
        """A scenario that dispatches ``command`` (asks it, for a query), or calls it with
        the app when it is a plain function."""
        return self._replace(action=command)

    @property
    def _title(self) -> str:
        action = self.action
        if action is None or attrs.has(type(action)):
            name = repr(action)
        else:
            name = getattr(action, "__qualname__", repr(action))
        n = sum(len(events) for _, events in self.given_events)
        return f"scenario when {name} (given {n} event{'' if n == 1 else 's'})"

    def _run(self) -> tuple[Any, BaseException | None, tuple[Envelope, ...]]:
        __tracebackhide__ = True
        if self.action is None:
            raise TypeError("the scenario has no command: call .when(...) before .then...()")
        app = self.app_factory()
        failures: list[str] = []
        try:

            def on_error(envelope: Envelope, subscriber: str, exc: BaseException) -> None:
                failures.append(
                    f"subscriber {subscriber} failed on {envelope.type} "
                    f"(stream {envelope.stream_id}): {_describe_error(exc)}"
                )

            app.bus.add_error_hook(on_error)
            for stream_id, events in self.given_events:
                app.store.append(stream_id, list(events))
            self._settle(app, "the given events")
            head = app.store.head_position()
            dead = _dead_letter_ids(app)
            result: Any = None
            error: BaseException | None = None
            try:
                result = self._act(app)
            except Exception as exc:
                error = exc
            self._settle(app, "the command")
            new = tuple(app.store.read_all(from_position=head + 1))
            failures.extend(
                f"durable subscriber {d.source} dead-lettered {d.type_name} "
                f"({d.error_type}: {d.error_message})"
                for d in (app.dlq.list(limit=None) if app.database is not None else [])
                if d.id not in dead
            )
        finally:
            app.close()
        if failures:
            raise ScenarioFailed(f"{self._title}: " + "; ".join(failures))
        return result, error, new

    def _settle(self, app: App, after: str) -> None:
        __tracebackhide__ = True
        try:
            app.run_until_idle(self.drain_timeout)
        except TimeoutError:
            raise ScenarioFailed(
                f"{self._title}: background work after {after} was still going on after "
                f"{self.drain_timeout} s"
            ) from None

    def _act(self, app: App) -> Any:
        action = self.action
        if callable(action) and not attrs.has(type(action)):
            return action(app)
        entry = app.registry.find(type(action))
        if entry is not None and entry.kind is MessageKind.QUERY:
            return app.ask(action)
        return app.dispatch(action)

    def then(self, stream_id: str, *events: Any) -> AppOutcome:
        """Check that the command stored exactly ``events`` in ``stream_id``, in order, and
        nothing in any other stream, and raised nothing. Raises :class:`ScenarioFailed`."""
        __tracebackhide__ = True
        return self.then_streams({stream_id: events})

    def then_streams(self, expected: Mapping[str, Sequence[Any]]) -> AppOutcome:
        """Check that the command stored exactly these events, stream by stream (each
        stream's events in order), nothing in other streams, and raised nothing. Raises
        :class:`ScenarioFailed`."""
        __tracebackhide__ = True
        result, error, new = self._run()
        wanted = {stream: list(events) for stream, events in expected.items() if events}
        if error is not None:
            what = f"new events in {', '.join(wanted)}" if wanted else "no new event"
            raise ScenarioFailed(
                f"{self._title}: expected {what}, but the command raised {_describe_error(error)}"
            ) from error
        stored = _group(new)
        if wanted != stored:
            total = sum(len(v) for v in wanted.values())
            lines = [
                f"{self._title}: the stored events differ from the expected ones "
                f"({total} expected, {len(new)} stored)"
            ]
            for stream in [*wanted, *(s for s in stored if s not in wanted)]:
                want, got = wanted.get(stream, []), stored.get(stream, [])
                same = " (as expected)" if want == got else ""
                lines.append(f"  stream {stream!r}{same}:")
                lines.extend("    " + line for line in _table(want, got, "stored"))
            raise ScenarioFailed("\n".join(lines))
        return AppOutcome(result, new)

    def then_nothing(self) -> AppOutcome:
        """Check that the command stored no event and raised nothing. Raises
        :class:`ScenarioFailed`."""
        __tracebackhide__ = True
        return self.then_streams({})

    def then_raises(self, exception_type: type[E], match: str | None = None) -> E:
        """Check that the command raised ``exception_type`` (or a subclass) whose message
        matches ``match`` (a regular expression, searched), and stored nothing.

        Returns the exception. Raises :class:`ScenarioFailed`.
        """
        __tracebackhide__ = True
        _, error, new = self._run()
        stored = f"stored {_describe_events([e.message for e in new])}"
        _check_raised(self._title, error, exception_type, match, stored)
        if new:
            raise ScenarioFailed(
                f"{self._title}: {type(error).__qualname__} was raised as expected, but "
                f"events were stored anyway: "
                + ", ".join(f"{e.stream_id}: {e.message!r}" for e in new)
            )
        assert isinstance(error, exception_type)
        return error
