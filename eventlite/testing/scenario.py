"""Given/when/then scenarios: the past, one action, and what it must produce.

For an aggregate, the scenario replays the given events through the aggregate's
``@applies`` methods, runs the action on it, and compares the events it recorded::

    AggregateScenario(Account, "acc-1").given(
        Opened("ann"), Deposited(Decimal(5))
    ).when(lambda account: account.withdraw(Decimal(3))).then(Withdrawn(Decimal(3)))

For a command handler, :class:`AppScenario` builds a fresh :class:`~eventlite.App` for each
run (in memory, usually), appends the given events to their streams, dispatches the
command, waits for background subscribers, and compares the events that are new in the
store, stream by stream.

For an orchestrated saga, :class:`SagaScenario` runs the saga on its data (with chosen
steps made to fail) and checks how it ended: status, steps completed and compensated, data.
For a process manager, :class:`ProcessScenario` stores the given events, then one more event
or lets time pass on a fake clock, and checks the commands dispatched, the timeouts waiting
and the instance's state.

Every expectation of an aggregate or an app checks the whole outcome: ``then`` fails on a
missing, a different or an extra event, and on an unexpected exception; ``then_raises``
fails when nothing is raised, when another exception is, and (for an app) when events were
stored anyway. A saga's or a process manager's ``then`` checks what it is given. Failures
raise :class:`ScenarioFailed`, an ``AssertionError`` whose message shows the expected and
the actual values side by side, with the fields that differ.

Scenarios are immutable: ``given`` and ``when`` return new scenarios, so one ``given`` can
be shared by several tests.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from ..aggregate import Aggregate
from ..app import call_app_factory
from ..app import factory_takes_db as takes_db
from ..messages import MessageKind, Registry
from ..saga import Saga, SagaData, SagaInstance, SagaStatus, SagaStep, StepContext, StepFunction

if TYPE_CHECKING:
    from ..app import App
    from ..envelope import Envelope
    from ..process import ProcessInstance, ProcessManager, ProcessTimeout
    from .app import TestApp

__all__ = [
    "ANYTHING",
    "UNCHECKED",
    "AggregateScenario",
    "AppOutcome",
    "AppScenario",
    "ProcessOutcome",
    "ProcessScenario",
    "SagaOutcome",
    "SagaScenario",
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


class _Unchecked:
    """The default of an expectation that was not given: not checked."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHECKED"


UNCHECKED: Any = _Unchecked()
"""The default of ``then`` arguments: that part of the outcome is not checked."""


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

    def _run(self) -> tuple[A, Any, BaseException | None]:
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
            return aggregate, None, exc
        if isinstance(returned, self.aggregate_type):
            aggregate = returned
        return aggregate, returned, None

    def then(self, *events: Any, returns: Any = UNCHECKED) -> A:
        """Check that the action recorded exactly ``events``, in order, and raised nothing;
        with ``returns``, also that the action returned a value equal to it.

        Returns the aggregate, for checks on its state. Raises :class:`ScenarioFailed`.
        """
        __tracebackhide__ = True
        aggregate, returned, error = self._run()
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
        if returns is not UNCHECKED and returns != returned:
            raise ScenarioFailed(
                f"{self._title}: the action returned {returned!r}, expected {returns!r}"
            )
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
        aggregate, _, error = self._run()
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
        (handlers registered, subscribers subscribed), called by the one convention of
        :func:`~eventlite.app.call_app_factory`: a factory that takes a store (``build(db)``)
        gets a new temporary SQLite file, removed after the run; one that takes nothing is
        called with nothing. The scenario closes the app after the run.
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
        app_factory: Callable[..., App],
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
        tmp = tempfile.mkdtemp(prefix="eventlite-scenario-") if takes_db(self.app_factory) else None
        try:
            app = call_app_factory(self.app_factory, tmp and os.path.join(tmp, "app.db"))
        except BaseException:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
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
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
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
        self._compare_stored(expected, new)
        return AppOutcome(result, new)

    def then_nothing(self) -> AppOutcome:
        """Check that the command stored no event and raised nothing. Raises
        :class:`ScenarioFailed`."""
        __tracebackhide__ = True
        return self.then_streams({})

    def then_raises(
        self,
        exception_type: type[E],
        match: str | None = None,
        *,
        stored: Mapping[str, Sequence[Any]] | None = None,
    ) -> E:
        """Check that the command raised ``exception_type`` (or a subclass) whose message
        matches ``match`` (a regular expression, searched), and stored nothing — or, with
        ``stored``, exactly those events stream by stream (a handler that refuses with
        :class:`~eventlite.exceptions.CommandRejected` keeps the event saying why).

        Returns the exception. Raises :class:`ScenarioFailed`.
        """
        __tracebackhide__ = True
        _, error, new = self._run()
        described = f"stored {_describe_events([e.message for e in new])}"
        _check_raised(self._title, error, exception_type, match, described)
        assert isinstance(error, exception_type)
        if stored is None:
            if new:
                raise ScenarioFailed(
                    f"{self._title}: {type(error).__qualname__} was raised as expected, but "
                    f"events were stored anyway: "
                    + ", ".join(f"{e.stream_id}: {e.message!r}" for e in new)
                )
            return error
        self._compare_stored(stored, new, f"with {type(error).__qualname__} raised")
        return error

    def _compare_stored(
        self, expected: Mapping[str, Sequence[Any]], new: tuple[Envelope, ...], note: str = ""
    ) -> None:
        __tracebackhide__ = True
        wanted = {stream: list(events) for stream, events in expected.items() if events}
        stored = _group(new)
        if wanted != stored:
            total = sum(len(v) for v in wanted.values())
            lines = [
                f"{self._title}: the stored events differ from the expected ones "
                f"({total} expected, {len(new)} stored{', ' + note if note else ''})"
            ]
            for stream in [*wanted, *(s for s in stored if s not in wanted)]:
                want, got = wanted.get(stream, []), stored.get(stream, [])
                same = " (as expected)" if want == got else ""
                lines.append(f"  stream {stream!r}{same}:")
                lines.extend("    " + line for line in _table(want, got, "stored"))
            raise ScenarioFailed("\n".join(lines))


# -- outcomes of sagas and process managers ---------------------------------------------


def _compare(problems: list[str], what: str, expected: Any, actual: Any, *, note: str = "") -> None:
    """Add a line to ``problems`` when an expectation given does not hold."""
    if expected is UNCHECKED or expected == actual:
        return
    line = f"{what}: expected {expected!r}, got {actual!r}"
    problems.append(line + (f" ({note})" if note else ""))


def _compare_list(
    problems: list[str], what: str, expected: Sequence[Any], actual: Sequence[Any], word: str
) -> None:
    """Add a side-by-side table to ``problems`` when two lists differ."""
    if list(expected) == list(actual):
        return
    problems.append(f"{what} ({len(expected)} expected, {len(actual)} {word}):")
    problems.extend("  " + line for line in _table(list(expected), list(actual), word))


def _compare_state(problems: list[str], what: str, expected: Any, actual: Any) -> None:
    if expected is UNCHECKED or expected == actual:
        return
    if attrs.has(type(expected)) and type(expected) is type(actual):
        problems.append(f"{what}:")
        problems.extend("  " + d for d in _field_differences(expected, actual, "got"))
    elif isinstance(expected, Mapping) and isinstance(actual, Mapping):
        problems.append(f"{what}:")
        for name in sorted({*expected, *actual}, key=str):
            want = expected.get(name, "(missing)")
            got = actual.get(name, "(missing)")
            if want != got:
                problems.append(f"  {name}: expected {want!r}, got {got!r}")
    else:
        problems.append(f"{what}: expected {expected!r}, got {actual!r}")


# -- orchestrated sagas -------------------------------------------------------------------


@attrs.frozen
class SagaOutcome:
    """What a :class:`SagaScenario` run produced."""

    instance: SagaInstance
    """The saga instance as it ended."""
    calls: tuple[str, ...]
    """The step functions called, in order: ``"execute reserve"``, ``"compensate
    reserve"``, with ``" (raised Error: message)"`` when one raised."""


class SagaScenario:
    """Given a saga's data, when it runs (some steps failing), then this end.

    :param saga: the :class:`~eventlite.saga.Saga` definition under test.
    :param registry: the registry of an attrs ``data_type`` (default: the default one).

    Each run stores the saga on a fresh temporary SQLite file through a real
    :class:`~eventlite.saga.SagaOrchestrator` (with a dead-letter queue and a
    :class:`~eventlite.clock.FakeClock`), runs it to its end in the calling thread and
    compares the instance with the expectation. :meth:`when_step_fails` makes a step (or its
    compensation) raise without touching the definition::

        SagaScenario(checkout).given({"order_id": "o-1", "total": 30}).when_step_fails(
            "ship", RuntimeError("no courier")
        ).then(status="failed", completed=["reserve", "charge"],
               compensated=["charge", "reserve"], failed_step="ship")

    A step timeout is wall-clock time (the step runs in a thread), not the fake clock: make
    the step raise :class:`~eventlite.saga.StepTimeout` with ``when_step_fails`` to test
    what a timeout does. Orchestrated steps call outside systems themselves; what they send
    is for the test's own fakes to record.
    """

    def __init__(
        self,
        saga: Saga,
        *,
        registry: Registry | None = None,
        data: Any = None,
        failures: Mapping[tuple[str, bool], BaseException] | None = None,
    ) -> None:
        self.saga = saga
        """The saga definition under test."""
        self.registry = registry
        """The registry of its data type, or None for the default one."""
        self.data = data
        """The data the saga starts with (a dict, an instance of its ``data_type``, or
        None)."""
        self.failures: dict[tuple[str, bool], BaseException] = dict(failures or {})
        """``(step, compensation?)`` pairs made to raise these errors."""

    def given(self, data: Any) -> SagaScenario:
        """A scenario whose saga starts with ``data``."""
        return SagaScenario(self.saga, registry=self.registry, data=data, failures=self.failures)

    def when_step_fails(
        self, step: str, error: BaseException | None = None, *, compensation: bool = False
    ) -> SagaScenario:
        """A scenario in which step ``step`` raises ``error`` (default: a ``RuntimeError``
        naming the step) instead of running; with ``compensation=True`` its compensation
        raises instead. Raises ``KeyError`` for a step the saga does not have."""
        definition = self.saga.step(step)
        if compensation and definition.compensate is None:
            raise ValueError(f"saga {self.saga.name!r}: step {step!r} has no compensation")
        what = "compensation of" if compensation else "step"
        failure = error if error is not None else RuntimeError(f"{what} {step} failed (scenario)")
        failures = {**self.failures, (step, compensation): failure}
        return SagaScenario(self.saga, registry=self.registry, data=self.data, failures=failures)

    @property
    def _title(self) -> str:
        failing = ", ".join(
            f"{'compensation of ' if undo else ''}{step} failing" for step, undo in self.failures
        )
        data = self.data if not isinstance(self.data, SagaData) else self.data.to_dict()
        return f"saga {self.saga.name!r} given {data!r}" + (f", {failing}" if failing else "")

    def _definition(self, calls: list[str]) -> Saga:
        def wrap(step: SagaStep, fn: StepFunction, undo: bool) -> StepFunction:
            word = "compensate" if undo else "execute"
            error = self.failures.get((step.name, undo))

            def call(ctx: StepContext) -> object:
                if error is not None:
                    calls.append(f"{word} {step.name} (raised {_describe_error(error)})")
                    raise error
                try:
                    result = fn(ctx)
                except Exception as exc:
                    calls.append(f"{word} {step.name} (raised {_describe_error(exc)})")
                    raise
                calls.append(f"{word} {step.name}")
                return result

            return call

        steps = [
            attrs.evolve(
                s,
                execute=wrap(s, s.execute, False),
                compensate=None if s.compensate is None else wrap(s, s.compensate, True),
            )
            for s in self.saga.steps
        ]
        return attrs.evolve(self.saga, steps=steps)

    def run(self) -> SagaOutcome:
        """Run the saga to its end and return what happened, checking nothing."""
        import tempfile

        from ..clock import FakeClock
        from ..codec import Codec
        from ..dlq import DeadLetterQueue
        from ..saga import SagaOrchestrator
        from ..sqlite import SQLiteStorage

        calls: list[str] = []
        definition = self._definition(calls)
        with tempfile.TemporaryDirectory(prefix="eventlite-saga-") as tmp:
            codec = Codec(self.registry) if self.registry is not None else Codec()
            storage = SQLiteStorage(f"{tmp}/saga.db", codec=codec, synchronous="normal")
            try:
                clock = FakeClock()
                dlq = DeadLetterQueue(storage, codec, clock=clock)
                sagas = SagaOrchestrator(storage, codec, dlq=dlq, clock=clock)
                instance = sagas.start(definition, self.data)
            finally:
                storage.close()
        return SagaOutcome(instance, tuple(calls))

    def then(
        self,
        *,
        status: SagaStatus | str = UNCHECKED,
        completed: Sequence[str] = UNCHECKED,
        compensated: Sequence[str] = UNCHECKED,
        failed_step: str | None = UNCHECKED,
        compensation_failed: Sequence[str] = UNCHECKED,
        data: Any = UNCHECKED,
    ) -> SagaOutcome:
        """Run the saga and check the expectations given (the others are not checked):
        its ``status`` (``"completed"`` or ``"failed"``), the steps ``completed``, the
        steps ``compensated`` (in the order undone), the ``failed_step`` (None when none
        failed), the steps whose compensation failed, and its ``data`` at the end (a dict
        for the default data, compared field by field).

        Returns the :class:`SagaOutcome`. Raises :class:`ScenarioFailed` naming each
        difference and listing the step functions that ran.
        """
        __tracebackhide__ = True
        outcome = self.run()
        instance = outcome.instance
        problems: list[str] = []
        want_status = SagaStatus(status).value if status is not UNCHECKED else UNCHECKED
        note = str(instance.error) if instance.error is not None else ""
        _compare(problems, "status", want_status, instance.status.value, note=note)
        if completed is not UNCHECKED:
            _compare(problems, "completed", list(completed), list(instance.completed_steps))
        if compensated is not UNCHECKED:
            _compare(problems, "compensated", list(compensated), list(instance.compensated_steps))
        _compare(problems, "failed step", failed_step, instance.failed_step, note=note)
        if compensation_failed is not UNCHECKED:
            _compare(
                problems,
                "compensation failed",
                list(compensation_failed),
                [f.step for f in instance.compensation_errors],
            )
        actual_data = (
            instance.data.to_dict() if isinstance(instance.data, SagaData) else instance.data
        )
        _compare_state(problems, "data", data, actual_data)
        if problems:
            lines = [
                f"{self._title}: the saga did not end as expected",
                *("  " + p for p in problems),
            ]
            lines.append("  steps run: " + (", ".join(outcome.calls) or "none"))
            raise ScenarioFailed("\n".join(lines))
        return outcome


# -- process managers -----------------------------------------------------------------------


@attrs.frozen
class ProcessOutcome:
    """What a :class:`ProcessScenario` run produced, after the action."""

    dispatched: tuple[Any, ...]
    """The commands dispatched while the action was handled, in order."""
    scheduled: tuple[ProcessTimeout, ...]
    """The manager's timeouts waiting when the action is over, earliest first."""
    instance: ProcessInstance | None
    """The instance the expectation is about, as stored, or None when there is none."""
    trace: tuple[str, ...]
    """What the action caused, as :meth:`TestApp.trace <eventlite.testing.TestApp.trace>`
    draws it."""


class ProcessScenario:
    """Given events, when an event arrives or time passes, then these commands, these
    timeouts, this state: for a :class:`~eventlite.process.ProcessManager`.

    :param manager: the process manager under test.
    :param registry: the registry of its messages (default: the default one).
    :param build: the application's composition root, as :class:`~eventlite.testing.TestApp`
        takes it, when the manager needs the app's own handlers; it may add the manager
        itself. By default a bare app is made and the manager added to it.

    Each run makes a fresh :class:`~eventlite.testing.TestApp` on a temporary SQLite file
    with a :class:`~eventlite.clock.FakeClock`. The given events are stored (each in the
    stream ``scenario:<key>``) and handled; a ``timedelta`` among them moves the clock (so
    timeouts fire). Then the action: :meth:`when` stores one more event,
    :meth:`when_time_passes` moves the clock. The scenario waits with
    ``run_until_idle()`` after each step: no sleep. Commands the manager dispatches are
    recorded; those without a handler in the app are answered with None, so a manager is
    tested without the rest of the system. A handling that fails (and is dead-lettered)
    fails the scenario with the error.
    """

    def __init__(
        self,
        manager: ProcessManager[Any],
        *,
        registry: Registry | None = None,
        build: Callable[..., App] | None = None,
        given: Sequence[Any] = (),
        action: tuple[str, Any] | None = None,
    ) -> None:
        self.manager = manager
        """The process manager under test."""
        self.registry = registry
        """The registry of its messages."""
        self.build = build
        """The composition root, or None for a bare app."""
        self.given_events: tuple[Any, ...] = tuple(given)
        """Events stored (and ``timedelta`` spans passed) before the action, in order."""
        self.action = action
        """``("event", event)`` or ``("time", seconds)``, or None before a ``when``."""

    def _replace(self, **changes: Any) -> ProcessScenario:
        fields: dict[str, Any] = {
            "registry": self.registry,
            "build": self.build,
            "given": self.given_events,
            "action": self.action,
        }
        fields.update(changes)
        return ProcessScenario(self.manager, **fields)

    def given(self, *events: Any) -> ProcessScenario:
        """A scenario with these events stored before the action; a ``timedelta`` among
        them lets that much time pass at that point."""
        return self._replace(given=(*self.given_events, *events))

    def when(self, event: Any) -> ProcessScenario:
        """A scenario whose action stores ``event``."""
        return self._replace(action=("event", event))

    def when_time_passes(self, amount: float | timedelta) -> ProcessScenario:
        """A scenario whose action moves the clock by ``amount`` (seconds or a
        ``timedelta``): the timeouts that fall due fire."""
        seconds = amount.total_seconds() if isinstance(amount, timedelta) else float(amount)
        if not seconds >= 0:
            raise ValueError(f"time only passes forward, got {amount!r}")
        return self._replace(action=("time", seconds))

    @property
    def _title(self) -> str:
        n = sum(1 for e in self.given_events if not isinstance(e, timedelta))
        given = f"given {n} event{'' if n == 1 else 's'}"
        if self.action is None:
            when = "no action"
        elif self.action[0] == "event":
            when = f"when {self.action[1]!r}"
        else:
            when = f"when {timedelta(seconds=self.action[1])} passes"
        return f"process manager {self.manager.name!r} {given}, {when}"

    def _key(self, key: str | None) -> str | None:
        if key is not None:
            return key
        if self.action is not None and self.action[0] == "event":
            found = self.manager.key_of(self.action[1])
            if found is not None:
                return found
        for event in reversed(self.given_events):
            if not isinstance(event, timedelta):
                found = self.manager.key_of(event)
                if found is not None:
                    return found
        return None

    def run(self, key: str | None = None) -> ProcessOutcome:
        """Run the scenario and return what the action produced, checking only that no
        handling failed (:class:`ScenarioFailed` otherwise). ``key`` names the instance
        of :attr:`ProcessOutcome.instance` (default: the key of the action's event, else of
        the last given event that has one)."""
        __tracebackhide__ = True
        from .app import TestApp

        if self.action is None:
            raise TypeError("the scenario has no action: call .when(...) or .when_time_passes(...)")
        manager = self.manager
        with TestApp(self.build, registry=self.registry, stub_commands=True) as t:
            app = t.app
            if manager.name not in app.processes.managers:
                app.process_manager(manager, start="beginning")
            for i, item in enumerate(self.given_events):
                if isinstance(item, timedelta):
                    t.advance(item)
                else:
                    self._store(app, item)
                    t.run_until_idle()
                self._check_dead_letters(t, f"given item {i + 1} ({item!r})")
            t.clear()
            kind, value = self.action
            if kind == "event":
                self._store(app, value)
                t.run_until_idle()
            else:
                t.advance(value)
            self._check_dead_letters(t, "the action")
            wanted = self._key(key)
            instance = app.processes.find(manager.name, wanted) if wanted is not None else None
            waiting = tuple(x for x in app.processes.timeouts(manager.name) if not x.fired)
            return ProcessOutcome(tuple(t.dispatched), waiting, instance, tuple(t.trace()))

    def _store(self, app: App, event: Any) -> None:
        key = self.manager.key_of(event)
        app.store.append(f"scenario:{key if key is not None else '-'}", [event])

    def _check_dead_letters(self, t: TestApp, during: str) -> None:
        __tracebackhide__ = True
        if t.dead_letters:
            failed = "; ".join(
                f"{d.type_name} ({d.error_type}: {d.error_message})" for d in t.dead_letters
            )
            raise ScenarioFailed(f"{self._title}: handling {during} failed: {failed}")

    def then(
        self,
        *,
        dispatched: Sequence[Any] = (),
        scheduled: Sequence[Any] = (),
        state: Any = UNCHECKED,
        done: bool = UNCHECKED,
        key: str | None = None,
    ) -> ProcessOutcome:
        """Run the scenario and check that the action dispatched exactly ``dispatched``
        (in order), that exactly the timeouts with messages ``scheduled`` wait afterwards
        (earliest first; given ones still waiting count), and, when given, the
        instance's ``state`` and whether it is ``done``. ``key`` names the instance (see
        :meth:`run`).

        Returns the :class:`ProcessOutcome`. Raises :class:`ScenarioFailed` with each
        difference, side by side, and what the action caused.
        """
        __tracebackhide__ = True
        outcome = self.run(key)
        problems: list[str] = []
        _compare_list(problems, "dispatched", dispatched, outcome.dispatched, "dispatched")
        _compare_list(
            problems, "scheduled", scheduled, [x.message for x in outcome.scheduled], "waiting"
        )
        wanted = self._key(key)
        instance = outcome.instance
        if (state is not UNCHECKED or done is not UNCHECKED) and instance is None:
            problems.append(f"instance {wanted!r}: there is none")
        elif instance is not None:
            _compare(problems, f"instance {wanted!r} done", done, instance.status.value == "done")
            _compare_state(problems, f"state of instance {wanted!r}", state, instance.state)
        if problems:
            lines = [f"{self._title}: the outcome differs from the expected one"]
            lines.extend("  " + p for p in problems)
            lines.append("  what the action caused:")
            lines.extend("    " + line for line in outcome.trace or ("nothing",))
            raise ScenarioFailed("\n".join(lines))
        return outcome
