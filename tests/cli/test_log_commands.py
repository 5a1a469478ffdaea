"""The operator CLI, against a store made by a real App: every command, its filters, its
errors, and the file left byte-for-byte as it was."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import timezone
from pathlib import Path
from typing import Any

import attrs
import pytest

from eventlite import cli
from eventlite.aggregate import Aggregate, applies
from eventlite.app import App
from eventlite.bus import MessageBus
from eventlite.cli import _base, _log
from eventlite.dlq import DeadLetter, DeadLetterQueue
from eventlite.envelope import Envelope
from eventlite.messages import Registry, command, event
from eventlite.sqlite.schema import SCHEMA_VERSION
from eventlite.unit_of_work import UnitOfWork

from ._run import Result, digest, run

ROOT = Path(__file__).resolve().parent.parent.parent

registry = Registry()


@command(registry=registry)
class PlaceOrder:
    order_id: str
    item: str


@command(registry=registry)
class CancelOrder:
    order_id: str


@command(registry=registry)
class RefundOrder:
    order_id: str


@event(registry=registry)
class OrderPlaced:
    order_id: str
    item: str


@event(registry=registry)
class OrderCancelled:
    order_id: str


@event(registry=registry)
class StockReserved:
    item: str


@event(registry=registry)
class Refunded:
    order_id: str


other = Registry()


@event(registry=other)
class Legacy:
    note: str


class Order(Aggregate):
    item: str = ""

    @applies(OrderPlaced)
    def _placed(self, e: OrderPlaced) -> None:
        self.item = e.item


def build(db: Path | None) -> App:
    """The shop: orders, a stock reservation recorded in reaction to each order (same
    flow, caused by the event), and a refund command dispatched when an order is cancelled
    (a command in the middle of the flow)."""
    app = App(db, registry=registry)

    @app.handles(PlaceOrder)
    def place_order(c: PlaceOrder, uow: UnitOfWork) -> None:
        order = Order(c.order_id)
        order.record(OrderPlaced(c.order_id, c.item))
        uow.add(order)

    @app.handles(CancelOrder)
    def cancel_order(c: CancelOrder, uow: UnitOfWork) -> None:
        uow.get(Order, c.order_id).record(OrderCancelled(c.order_id))

    @app.handles(RefundOrder)
    def refund_order(c: RefundOrder, uow: UnitOfWork) -> None:
        uow.append(f"Refund-{c.order_id}", [Refunded(c.order_id)])

    @app.subscribes(OrderPlaced)
    def reserve_stock(e: OrderPlaced, uow: UnitOfWork) -> None:
        uow.append(f"Stock-{e.item}", [StockReserved(e.item)])

    @app.subscribes(OrderCancelled)
    def refund(e: OrderCancelled, app: App) -> None:
        app.dispatch(RefundOrder(e.order_id))

    return app


def make_graph_app() -> App:
    """A factory for ``graph``: the shop in memory, plus a background subscriber."""
    app = build(None)

    @app.subscribes(OrderPlaced, background=True)
    def send_confirmation(e: OrderPlaced) -> None:
        pass

    return app


@attrs.frozen
class Shop:
    """A store file with six events in five streams and one dead letter."""

    path: Path
    envelopes: list[Envelope]
    dead_letter: DeadLetter

    def run(self, *argv: str | Path) -> Result:
        """The CLI on this store, which must stay unchanged."""
        return run("--db", self.path, *argv, watch=[self.path])


@pytest.fixture
def shop(tmp_path: Path) -> Shop:
    """Orders o-1 (placed, then cancelled and refunded) and o-2 (placed, and its
    confirmation dead-lettered)."""
    path = tmp_path / "shop.db"
    with build(path) as app:
        app.dispatch(PlaceOrder("o-1", "teapot"))
        app.dispatch(PlaceOrder("o-2", "kettle"))
        app.dispatch(CancelOrder("o-1"))
        envelopes = list(app.store.read_all())
        assert app.database is not None
        dlq = DeadLetterQueue(app.storage, app.codec)
        dead = dlq.add("email", envelopes[2], key=None, error=RuntimeError("smtp down"), attempts=3)
    return Shop(path, envelopes, dead)


def time_of(env: Envelope) -> str:
    """An envelope's time as the CLI prints it."""
    return env.timestamp.isoformat(timespec="microseconds")


def event_line(env: Envelope) -> str:
    """The line ``events`` prints for a stored event of this module's registry."""
    from eventlite.codec import Codec

    return "  ".join(
        [
            f"#{env.position}",
            time_of(env),
            f"{env.stream_id} v{env.version}",
            env.type,
            f"id={env.id}",
            f"correlation={env.correlation_id}",
            f"causation={env.causation_id or '-'}",
            Codec(registry).encode(env.message),
        ]
    )


# -- info ------------------------------------------------------------------------------------


def test_info_shows_the_files_facts(shop: Shop) -> None:
    """Path, schema version, journal mode, counts, head position and size, one per line."""
    result = shop.run("info")
    assert (0, "") == (result.code, result.err)
    facts = dict(line.split(":", 1) for line in result.lines)
    facts = {k: v.strip() for k, v in facts.items()}
    tables = facts.pop("tables").split(", ")
    expected = {
        "path": str(shop.path.resolve()),
        "schema version": str(SCHEMA_VERSION),
        "journal mode": "wal",
        "synchronous": "set by each app that opens the file, not stored in it",
        "events": "6",
        "head position": "6",
        "streams": "5",
        "file size": f"{shop.path.stat().st_size} bytes (+ 0 bytes of WAL)",
    }
    assert expected == facts
    assert {"events", "streams", "snapshots"} <= set(tables)


def test_info_as_json(shop: Shop) -> None:
    """--json gives the same facts as one object."""
    facts = json.loads(shop.run("info", "--json").out)
    wanted = ("schema_version", "journal_mode", "events", "head_position", "streams")
    assert {
        "schema_version": SCHEMA_VERSION,
        "journal_mode": "wal",
        "events": 6,
        "head_position": 6,
        "streams": 5,
    } == {k: facts[k] for k in wanted}


# -- streams ---------------------------------------------------------------------------------


def _stream_rows(shop: Shop) -> list[tuple[str, int, str]]:
    last: dict[str, Envelope] = {}
    for env in shop.envelopes:
        assert env.stream_id is not None
        last[env.stream_id] = env
    return [(s, e.version or 0, time_of(e)) for s, e in sorted(last.items())]


def test_streams_lists_versions_and_last_event_times(shop: Shop) -> None:
    """One row per stream, by stream id: its version and its last event's time."""
    result = shop.run("event-streams")
    expected = ["STREAM        VERSION  LAST EVENT"] + [
        f"{s:<12}  {v:>7}  {t}" for s, v, t in _stream_rows(shop)
    ]
    assert (0, expected) == (result.code, result.lines)


def test_streams_prefix_limit_and_json(shop: Shop) -> None:
    """--prefix keeps matching ids, --limit the first ones, --json one object per line."""
    result = shop.run("event-streams", "--prefix", "Stock-", "--limit", "1", "--json")
    stream, version, when = next(r for r in _stream_rows(shop) if r[0].startswith("Stock-"))
    assert [{"stream_id": stream, "version": version, "last": when}] == [
        json.loads(line) for line in result.lines
    ]


def test_streams_matching_nothing_exits_1(shop: Shop) -> None:
    """No stream under the prefix: exit code 1 and one line on stderr."""
    result = shop.run("event-streams", "--prefix", "Nope-")
    assert (1, "", "eventlite: no stream starts with 'Nope-'\n") == (
        result.code,
        result.out,
        result.err,
    )


# -- events ----------------------------------------------------------------------------------


def test_events_prints_the_log_in_position_order(shop: Shop) -> None:
    """Each event on one line: position, time, stream and version, type, ids, raw data."""
    result = shop.run("events")
    assert (0, [event_line(e) for e in shop.envelopes]) == (result.code, result.lines)


FILTERS: list[tuple[list[str], Callable[[Envelope], bool]]] = [
    (["--stream", "Order-o-1"], lambda e: e.stream_id == "Order-o-1"),
    (
        ["--stream", "Order-o-1", "--stream", "Order-o-2"],
        lambda e: e.stream_id in ("Order-o-1", "Order-o-2"),
    ),
    (["--type", "StockReserved"], lambda e: e.type == "StockReserved"),
    (["--from-position", "4"], lambda e: (e.position or 0) >= 4),
    (["--type", "OrderPlaced", "--from-position", "2"], lambda e: e.position == 3),
]


@pytest.mark.parametrize(("argv", "keep"), FILTERS, ids=[" ".join(a) for a, _ in FILTERS])
def test_events_filters(shop: Shop, argv: list[str], keep: Callable[[Envelope], bool]) -> None:
    """Stream, type and position filters keep exactly the matching events."""
    result = shop.run("events", *argv)
    expected = [e.position for e in shop.envelopes if keep(e)]
    assert expected == [int(line.split()[0][1:]) for line in result.lines]


def test_events_since_and_until(shop: Shop) -> None:
    """--since keeps events at or after a time, --until those before it; Z, offsets and
    naive (UTC) times are all understood."""
    third = shop.envelopes[2].timestamp
    zulu = third.astimezone(timezone.utc).replace(tzinfo=None).isoformat() + "Z"
    naive = third.astimezone(timezone.utc).replace(tzinfo=None).isoformat()
    cases = [
        (["--since", zulu], [e.position for e in shop.envelopes if e.timestamp >= third]),
        (["--until", naive], [e.position for e in shop.envelopes if e.timestamp < third]),
        (["--since", third.isoformat(), "--until", third.isoformat()], []),
    ]
    for argv, expected in cases:
        result = shop.run("events", *argv)
        assert expected == [int(line.split()[0][1:]) for line in result.lines]


def test_events_limit(shop: Shop) -> None:
    """--limit prints the first N matches."""
    assert [event_line(e) for e in shop.envelopes[:2]] == shop.run("events", "--limit", "2").lines


def test_events_json_is_the_wire_form(shop: Shop) -> None:
    """--json prints what Codec.envelope_to_dict makes of each event, read from the raw row."""
    from eventlite.codec import Codec

    codec = Codec(registry)
    result = shop.run("events", "--json")
    assert [codec.envelope_to_dict(e) for e in shop.envelopes] == [
        json.loads(line) for line in result.lines
    ]


def test_events_decoded_with_an_apps_registry(shop: Shop) -> None:
    """--app decodes the types the registry knows; others are printed as stored."""
    from eventlite.codec import Codec

    with App(shop.path, registry=other) as legacy_app:
        (legacy,) = legacy_app.store.append("Legacy-1", [Legacy("kept as is")])
    result = run(
        "--db", shop.path, "events", "--json", "--app", "tests.cli.test_log_commands:registry"
    )
    raw = {
        "id": legacy.id,
        "type": "Legacy",
        "schema_version": 1,
        "data": {"note": "kept as is"},
        "correlation_id": legacy.correlation_id,
        "causation_id": None,
        "user_id": None,
        "headers": {},
        "timestamp": legacy.timestamp.isoformat(),
        "stream_id": "Legacy-1",
        "version": 1,
        "position": 7,
    }
    expected = [Codec(registry).envelope_to_dict(e) for e in shop.envelopes] + [raw]
    assert (0, expected) == (result.code, [json.loads(line) for line in result.lines])


def test_events_app_must_name_a_registry(shop: Shop) -> None:
    """--app naming something that cannot decode is bad input."""
    result = shop.run("events", "--app", "tests.cli.test_log_commands:BUS")
    expected = "eventlite: tests.cli.test_log_commands:BUS is not an App, a Registry or a Codec\n"
    assert (2, expected) == (result.code, result.err)


def test_events_decoded_with_an_app_factory(shop: Shop) -> None:
    """--app may name the app's factory: called by the one convention (build(db) gets a
    temporary file, never the store being read), its codec decodes; the store is left
    unchanged."""
    from_registry = shop.run("events", "--json", "--app", "tests.cli.test_log_commands:registry")
    from_factory = shop.run("events", "--json", "--app", "tests.cli.test_log_commands:build")
    assert (0, from_registry.lines, "") == (from_factory.code, from_factory.lines, from_factory.err)


def test_events_matching_nothing_exits_1(shop: Shop) -> None:
    """No match: exit code 1, nothing on stdout, one line on stderr."""
    result = shop.run("events", "--type", "Nope")
    assert (1, "", "eventlite: no event matches\n") == (result.code, result.out, result.err)


def test_follow_prints_new_events_until_ctrl_c(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    """--follow prints what exists, then each poll prints what was committed since, until
    Ctrl-C, which ends it with exit code 0."""
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 1:
            with build(shop.path) as app:
                app.dispatch(PlaceOrder("o-3", "cup"))
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr(_log, "_sleep", wait)
    result = run(
        "--db", shop.path, "events", "--follow", "--interval", "0.25", "--type", "OrderPlaced"
    )
    positions = [int(line.split()[0][1:]) for line in result.lines]
    assert (0, [1, 3, 7], [0.25, 0.25]) == (result.code, positions, waits)


def test_follow_timeout_and_limit_end_the_follow(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--follow-timeout 0 stops after the first pass; --limit stops once reached; neither
    waits."""

    def no_wait(seconds: float) -> None:
        raise AssertionError("the follow loop waited")

    monkeypatch.setattr(_log, "_sleep", no_wait)
    timed = shop.run("events", "--follow", "--follow-timeout", "0")
    limited = shop.run("events", "--follow", "--limit", "2")
    assert (0, 6) == (timed.code, len(timed.lines))
    assert (0, 2) == (limited.code, len(limited.lines))


# -- trace -----------------------------------------------------------------------------------


def _event_label(env: Envelope) -> str:
    return (
        f"#{env.position} {env.type}  {env.stream_id} v{env.version}  {time_of(env)}  id={env.id}"
    )


def test_trace_prints_the_causation_tree(shop: Shop) -> None:
    """The flow of one command: the command (not stored) at the root, the event it caused,
    and the event that event caused, indented below."""
    placed, reserved = shop.envelopes[0], shop.envelopes[1]
    flow = placed.correlation_id
    expected = [
        f"flow {flow}: 2 events, 0 dead letters",
        f"`-- {flow}  (the message that started the flow, not in the event log)",
        f"    `-- {_event_label(placed)}",
        f"        `-- {_event_label(reserved)}",
    ]
    result = shop.run("trace", flow)
    assert (0, expected) == (result.code, result.lines)
    assert expected == shop.run("trace", reserved.id).lines


def test_trace_shows_commands_in_the_middle_of_a_flow(shop: Shop) -> None:
    """A command dispatched by a subscriber is not stored: the events it caused hang from
    its id, at the top level."""
    cancelled, refunded = shop.envelopes[4], shop.envelopes[5]
    flow = cancelled.correlation_id
    assert flow == refunded.correlation_id
    expected = [
        f"flow {flow}: 2 events, 0 dead letters",
        f"|-- {flow}  (the message that started the flow, not in the event log)",
        f"|   `-- {_event_label(cancelled)}",
        f"`-- {refunded.causation_id}  (a message, not in the event log)",
        f"    `-- {_event_label(refunded)}",
    ]
    assert expected == shop.run("trace", flow).lines


def test_trace_shows_dead_letters_under_their_message(shop: Shop) -> None:
    """A dead letter of the flow hangs under the event that failed."""
    placed, reserved = shop.envelopes[2], shop.envelopes[3]
    dead = shop.dead_letter
    flow = placed.correlation_id
    expected = [
        f"flow {flow}: 2 events, 1 dead letter",
        f"`-- {flow}  (the message that started the flow, not in the event log)",
        f"    `-- {_event_label(placed)}",
        f"        |-- {_event_label(reserved)}",
        f"        `-- DEAD LETTER {dead.id}  OrderPlaced  source=email  "
        f"status={dead.status.value}  attempts=3  {dead.error_type}: smtp down",
    ]
    assert expected == shop.run("trace", flow).lines


def test_trace_by_position_or_event_id(shop: Shop) -> None:
    """A log position (``#2`` or ``2``) or the id of any event names the flow that event
    belongs to: the same tree as its correlation id."""
    reserved = shop.envelopes[1]
    expected = shop.run("trace", reserved.correlation_id).lines
    for wanted in (f"#{reserved.position}", str(reserved.position), reserved.id):
        assert (0, expected) == (lambda r: (r.code, r.lines))(shop.run("trace", wanted))


def test_trace_by_stream_shows_every_flow_that_touched_it(shop: Shop) -> None:
    """A stream id gives each flow that wrote to the stream, in the order they first
    did, under a line counting them."""
    placed, cancelled = shop.envelopes[0], shop.envelopes[4]
    first = shop.run("trace", placed.correlation_id).lines
    second = shop.run("trace", cancelled.correlation_id).lines
    result = shop.run("trace", "Order-o-1")
    expected = ["stream Order-o-1: 2 events in 2 flows", "", *first, "", *second]
    assert (0, expected) == (result.code, result.lines)


def test_trace_of_an_unknown_id_exits_1(shop: Shop) -> None:
    """An id that is neither a correlation id nor an event id: exit code 1, one line."""
    result = shop.run("trace", "no-such-flow")
    expected = (
        "eventlite: no event or dead letter has the correlation id, event id, stream id or "
        "position 'no-such-flow'\n"
    )
    assert (1, "", expected) == (result.code, result.out, result.err)


# -- graph -----------------------------------------------------------------------------------

GRAPH = [
    "flowchart LR",
    '    c_CancelOrder[/"CancelOrder"/]',
    '    h_cancel_order["cancel_order"]',
    '    c_PlaceOrder[/"PlaceOrder"/]',
    '    h_place_order["place_order"]',
    '    c_RefundOrder[/"RefundOrder"/]',
    '    h_refund_order["refund_order"]',
    '    e_OrderPlaced(["OrderPlaced"])',
    '    h_reserve_stock["reserve_stock"]',
    '    e_OrderCancelled(["OrderCancelled"])',
    '    h_refund["refund"]',
    '    h_send_confirmation["send_confirmation"]',
    '    a_Order[["Order"]]',
    '    e_Refunded(["Refunded"])',
    '    e_StockReserved(["StockReserved"])',
    "    c_CancelOrder --> h_cancel_order",
    "    c_PlaceOrder --> h_place_order",
    "    c_RefundOrder --> h_refund_order",
    "    e_OrderPlaced --> h_reserve_stock",
    "    e_OrderCancelled --> h_refund",
    "    e_OrderPlaced -.->|background| h_send_confirmation",
    "    a_Order -- records --> e_OrderPlaced",
]


def test_graph_prints_the_apps_flow_as_mermaid() -> None:
    """Commands to handlers, events to subscribers (dotted in the background), the aggregate
    to the event it records, and events nothing subscribes to, from a factory named on the
    command line."""
    result = run("graph", "tests.cli.test_log_commands:make_graph_app")
    assert (0, GRAPH, "") == (result.code, result.lines, result.err)


def test_graph_imports_a_module_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MODULE is found in the working directory; an App at module level works, and
    --markdown fences the diagram."""
    (tmp_path / "cli_graph_app.py").write_text(
        "from tests.cli.test_log_commands import make_graph_app\napp = make_graph_app()\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "cli_graph_app", raising=False)
    result = run("graph", "cli_graph_app:app", "--markdown")
    sys.modules.pop("cli_graph_app").app.close()
    assert (0, ["```mermaid", *GRAPH, "```"]) == (result.code, result.lines)


def test_graph_of_a_bare_bus() -> None:
    """A MessageBus is drawn too, its kinds taken from its registry."""
    result = run("graph", "tests.cli.test_log_commands:BUS")
    expected = [
        "flowchart LR",
        '    c_PlaceOrder[/"PlaceOrder"/]',
        '    h_take["take"]',
        "    c_PlaceOrder --> h_take",
    ]
    assert expected == result.lines[:3] + result.lines[-1:]


def take(c: PlaceOrder) -> None:
    """The one handler of the bare bus below."""


BUS = MessageBus(registry)
BUS.register(PlaceOrder, take)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("tests.cli.test_log_commands", "expected MODULE:NAME, got 'tests.cli.test_log_commands'"),
        (
            "no_such_module_xyz:app",
            "cannot import no_such_module_xyz: No module named 'no_such_module_xyz'",
        ),
        (
            "tests.cli.test_log_commands:nothing",
            "tests.cli.test_log_commands has no attribute 'nothing'",
        ),
        (
            "tests.cli.test_log_commands:registry",
            "tests.cli.test_log_commands:registry is not an App or a MessageBus: Registry",
        ),
    ],
)
def test_graph_bad_targets(target: str, message: str) -> None:
    """A target that cannot be found or is not an app: exit code 2, one line."""
    result = run("graph", target)
    assert (2, "", f"eventlite: {message}\n") == (result.code, result.out, result.err)


def test_graph_a_module_that_fails_to_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception while importing the module is reported in one line."""
    (tmp_path / "cli_broken_app.py").write_text("raise RuntimeError('no config')\n")
    monkeypatch.chdir(tmp_path)
    result = run("graph", "cli_broken_app:app")
    expected = "eventlite: importing cli_broken_app failed: RuntimeError: no config\n"
    assert (2, expected) == (result.code, result.err)


# -- bad input -------------------------------------------------------------------------------


def _foreign(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (text)")
    conn.close()


def _other_app(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA application_id = 1234")
        conn.execute("CREATE TABLE notes (text)")
    conn.close()


BAD_FILES: list[tuple[str, Callable[[Path], Any], str]] = [
    ("missing", lambda p: None, "{path}: no such file"),
    ("directory", lambda p: p.mkdir(), "{path}: is a directory, not an eventlite store"),
    (
        "garbage",
        lambda p: p.write_bytes(b"not a database at all, just text\n" * 40),
        "{path}: not a SQLite database (file is not a database)",
    ),
    (
        "empty",
        lambda p: p.write_bytes(b""),
        "{path}: a SQLite database but not an eventlite store (application_id 0x0)",
    ),
    (
        "foreign",
        _foreign,
        "{path}: a SQLite database but not an eventlite store (application_id 0x0)",
    ),
    (
        "other-app",
        _other_app,
        "{path}: a SQLite database but not an eventlite store (application_id 0x4d2)",
    ),
]


@pytest.mark.parametrize("command", [["info"], ["events"], ["trace", "x"]])
@pytest.mark.parametrize(("kind", "make", "message"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_are_refused_and_left_alone(
    tmp_path: Path,
    kind: str,
    make: Callable[[Path], Any],
    message: str,
    command: list[str],
) -> None:
    """A file that is not an eventlite store: one line on stderr, exit code 2, and the file
    (and its directory) exactly as before."""
    path = tmp_path / "input.db"
    make(path)
    listing = sorted(os.listdir(tmp_path))
    result = run("--db", path, *command, watch=[path])
    expected = f"eventlite: {message.format(path=path)}\n"
    assert (2, "", expected) == (result.code, result.out, result.err)
    assert listing == sorted(os.listdir(tmp_path))


def test_no_db_given_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A store command without --db or EVENTLITE_DB: exit code 2, one line."""
    monkeypatch.delenv("EVENTLITE_DB", raising=False)
    result = run("info")
    expected = "eventlite: this command needs --db FILE or URL (or the EVENTLITE_DB variable)\n"
    assert (2, expected) == (result.code, result.err)


def test_db_from_the_environment_or_after_the_command(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EVENTLITE_DB stands in for --db, which may also follow the command."""
    expected = shop.run("event-streams").lines
    after = run("event-streams", "--db", shop.path, watch=[shop.path])
    monkeypatch.setenv("EVENTLITE_DB", str(shop.path))
    from_env = run("event-streams", watch=[shop.path])
    assert (expected, expected) == (after.lines, from_env.lines)


@pytest.mark.parametrize(
    ("argv", "last_line"),
    [
        (["nope"], "eventlite: argument COMMAND: invalid choice: 'nope'"),
        (
            ["events", "--limit", "0"],
            "eventlite: events: argument --limit: expected a number from 1 up, got 0 (see "
            "python -m eventlite events --help)",
        ),
        (
            ["events", "--since", "yesterday"],
            "eventlite: events: argument --since: expected an ISO 8601 time, got 'yesterday'",
        ),
    ],
)
def test_usage_errors_exit_2(shop: Shop, argv: list[str], last_line: str) -> None:
    """Malformed command lines print the problem, in one line naming the command and
    where its usage is, and exit with code 2."""
    result = shop.run(*argv)
    assert (2, "", 1) == (result.code, result.out, len(result.err.splitlines()))
    assert result.err.startswith(last_line)


def test_help_lists_the_commands() -> None:
    """--help names every built-in command and the exit codes, and exits 0."""
    result = run("--help")
    assert 0 == result.code
    for word in ("info", "streams", "events", "trace", "graph", "exit codes"):
        assert word in result.out


# -- extension point -------------------------------------------------------------------------


def test_registered_commands_run_with_the_store(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command added with register_command() gets its arguments and a read-only store."""
    monkeypatch.setattr(_base, "_COMMANDS", dict(_base._COMMANDS))

    def arguments(parser: Any) -> None:
        parser.add_argument("store")

    @cli.register_command("keeps", help="whether the store keeps a store", arguments=arguments)
    def keeps(ctx: cli.CommandContext) -> int:
        kept = ctx.storage.keeps(ctx.args.store)
        ctx.emit(f"{ctx.args.store}: {kept}")
        return cli.EXIT_OK if kept else cli.EXIT_NOT_FOUND

    assert (0, ["dead_letters: True"]) == (lambda r: (r.code, r.lines))(
        shop.run("keeps", "dead_letters")
    )
    assert 2 == shop.run("keeps", "nothing").code
    with pytest.raises(ValueError, match="'keeps' is already registered"):
        cli.register_command("keeps", help="again")(keeps)


def test_the_read_only_store_refuses_writes(shop: Shop) -> None:
    """What a command gets as ctx.storage cannot change the file: a transaction, and so
    every write, raises StorageError."""
    from eventlite.exceptions import StorageError

    before = digest(shop.path)
    storage = cli.open_storage(str(shop.path), readonly=True)
    try:
        with pytest.raises(StorageError, match="read-only"):
            DeadLetterQueue(storage).purge()
        with pytest.raises(StorageError, match="read-only"), storage.transaction():
            pass
    finally:
        storage.close()
    assert before == digest(shop.path)


def test_extension_modules_are_imported_by_main(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module listed in EXTENSIONS registers its commands before the command line is
    read."""
    (tmp_path / "cli_extension_mod.py").write_text(
        textwrap.dedent(
            """
            from eventlite.cli import EXIT_OK, register_command

            @register_command("hello", help="say hello", needs_db=False)
            def hello(ctx):
                ctx.emit("hello")
                return EXIT_OK
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(_base, "_COMMANDS", dict(_base._COMMANDS))
    monkeypatch.setattr(cli, "EXTENSIONS", ("cli_extension_mod",))
    monkeypatch.delitem(sys.modules, "cli_extension_mod", raising=False)
    result = run("hello")
    sys.modules.pop("cli_extension_mod", None)
    assert (0, ["hello"]) == (result.code, result.lines)


# -- as a program ----------------------------------------------------------------------------


def test_python_dash_m_eventlite(shop: Shop) -> None:
    """``python -m eventlite`` runs the same commands with the same exit codes."""
    before = digest(shop.path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run(
        [sys.executable, "-m", "eventlite", "--db", str(shop.path), "event-streams"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    missing = subprocess.run(
        [sys.executable, "-m", "eventlite", "--db", str(shop.path) + ".nope", "info"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert (0, shop.run("event-streams").out) == (ok.returncode, ok.stdout)
    assert (2, f"eventlite: {shop.path}.nope: no such file\n") == (
        missing.returncode,
        missing.stderr,
    )
    assert before == digest(shop.path)
