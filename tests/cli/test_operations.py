"""The operator CLI's commands over durable delivery and the read side: ``dlq``, ``queues``,
``subscribers``, ``projections`` and ``sagas``, against a store made by a real App and the
library's own objects. Reading commands must agree with the library's read methods and
leave the file byte-for-byte as it was; changing commands must change it only through the
library, and leave it alone on bad input."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlite_utils

from eventlite import cli
from eventlite.app import App
from eventlite.codec import Codec
from eventlite.dlq import DeadLetterQueue, DeadLetterStatus
from eventlite.messages import Registry, command, event
from eventlite.projection import Projection, Projector, projects
from eventlite.queue import Queues, WorkQueue
from eventlite.relay import subscriber_status
from eventlite.retry import RetryPolicy
from eventlite.saga import Saga, SagaOrchestrator, SagaStep, StepContext
from eventlite.sqlite import Database, SQLiteStorage
from eventlite.sqlite.schema import APPLICATION_ID, MIGRATIONS

from ._run import Result, digest, run

ROOT = Path(__file__).resolve().parent.parent.parent

registry = Registry()


@event(registry=registry)
class OrderPlaced:
    order_id: str
    total: int


@event(registry=registry)
class OrderCancelled:
    order_id: str


@command(registry=registry)
class SendEmail:
    to: str


class OrderTotals(Projection):
    """A read model of each order's total."""

    tables = ("order_totals",)

    def setup(self, db: sqlite_utils.Database) -> None:
        """Create the table."""
        db["order_totals"].create(  # type: ignore[union-attr]
            {"order_id": str, "total": int}, pk="order_id", if_not_exists=True
        )

    @projects(OrderPlaced)
    def _placed(self, e: OrderPlaced, db: sqlite_utils.Database) -> None:
        db["order_totals"].insert({"order_id": e.order_id, "total": e.total})  # type: ignore[union-attr]


def failing_email(e: OrderPlaced) -> None:
    """The durable subscriber with a bug: it cannot handle order o-2."""
    if e.order_id == "o-2":
        raise ValueError(f"cannot format the total of {e.order_id}")


def fixed_email(e: OrderPlaced) -> None:
    """The same subscriber after the fix."""
    delivered.append(e.order_id)


delivered: list[str] = []


def build(path: Path | str, handler: Callable[[OrderPlaced], None] = failing_email) -> App:
    """The shop: a durable ``email`` subscriber of OrderPlaced and OrderCancelled that gives
    up at once."""
    app = App(path, registry=registry, synchronous="normal")
    policy = RetryPolicy(max_attempts=1)
    app.subscribe(OrderPlaced, handler, durable=True, name="email", retry=policy)
    return app


def rebuild_target(path: str) -> Projector:
    """What ``projections rebuild --app`` imports: a projector over the file at ``path``."""
    codec = Codec(registry)
    projector = Projector(SQLiteStorage(path, codec=codec, synchronous="normal"), codec)
    projector.add(OrderTotals(), mode="inline")
    return projector


def app_target(path: str) -> App:
    """The application as ``projections rebuild --app`` may name it: a function that takes
    the file's path and returns an App whose projector holds the projection."""
    app = App(path, registry=registry, synchronous="normal")
    app.projection(OrderTotals(), mode="inline")
    return app


def elsewhere() -> Projector:
    """A projector over another file than the one the CLI is given (in the temporary
    directory the test names)."""
    return rebuild_target(os.path.join(os.environ["CLI_ELSEWHERE_DIR"], "elsewhere.db"))


def reserve(ctx: StepContext) -> None:
    """A saga step that works."""
    ctx.data.reserved = True


def charge(ctx: StepContext) -> None:
    """A saga step that fails for order o-9."""
    if ctx.data.order_id == "o-9":
        raise RuntimeError("card declined")


def release(ctx: StepContext) -> None:
    """Undo ``reserve``; fails for order o-9 too, so that saga is dead-lettered."""
    if ctx.data.order_id == "o-9":
        raise RuntimeError("warehouse offline")
    ctx.data.reserved = False


CHECKOUT = Saga(
    "checkout",
    [SagaStep("reserve", reserve, compensate=release), SagaStep("charge", charge)],
)


@attrs.frozen
class Store:
    """A store with a dead letter and one parked behind it, a work queue, a projection and
    two saga instances."""

    path: Path
    dead_id: int
    parked_id: int
    saga_ids: tuple[str, str]

    def run(self, *argv: str | Path) -> Result:
        """The CLI on this store, which must stay unchanged."""
        return run("--db", self.path, *argv, watch=[self.path])

    def change(self, *argv: str | Path) -> Result:
        """The CLI on this store, allowed to change it."""
        out, err = io.StringIO(), io.StringIO()
        code = cli.main(["--db", str(self.path), *map(str, argv)], stdout=out, stderr=err)
        return Result(code, out.getvalue(), err.getvalue())


def library(path: Path) -> Database:
    """The file opened by the library, to compare the CLI with."""
    return Database(path, synchronous="normal")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """o-1 delivered; o-2 dead-lettered by the buggy subscriber; o-2's cancellation parked
    behind it; three queued emails (one waiting, one in flight, one delayed); a projection;
    a saga that completed and one whose failure could not be undone (dead-lettered)."""
    path = tmp_path / "ops.db"
    with build(path) as app:
        app.subscribe(OrderCancelled, lambda e: None, durable=True, name="audit")
        app.store.append("Order-o-1", [OrderPlaced("o-1", 10)])
        app.store.append("Order-o-2", [OrderPlaced("o-2", 20)])
        app.run_until_idle()
        assert app.database is not None
        dead = app.dlq.list()[0]
        parked = app.dlq.park("email", _second_envelope(app), key="Order-o-2")
        app.run_until_idle()  # every subscriber's checkpoint at the head before the checks
        queue = WorkQueue(app.storage, "emails", app.codec, dlq=app.dlq)
        queue.send(SendEmail("ann@example.com"))
        queue.send(SendEmail("bob@example.com"))
        queue.send(SendEmail("cy@example.com"), delay=3600)
        queue.receive(max=1)
        projector = Projector(app.storage, app.codec)
        projector.add(OrderTotals(), mode="inline")
        projector.start()
        projector.close()
        sagas = SagaOrchestrator(app.storage, app.codec, dlq=app.dlq)
        sagas.register(CHECKOUT)
        ok = sagas.start("checkout", {"order_id": "o-1"}, saga_id="saga-ok")
        failed = sagas.start("checkout", {"order_id": "o-9"}, saga_id="saga-failed")
    return Store(path, dead.id, parked.id, (ok.id, failed.id))


def _second_envelope(app: App) -> Any:
    (env,) = app.store.append("Order-o-2", [OrderCancelled("o-2")])
    return env


# -- dlq list and show -----------------------------------------------------------------------


def test_dlq_list_shows_what_the_library_lists(store: Store) -> None:
    """One row per entry, oldest first: id, status, source, key, type, attempts, error."""
    with library(store.path) as db:
        entries = DeadLetterQueue(SQLiteStorage(db)).list()
    result = store.run("dlq", "list")
    rows = [line.split()[:6] for line in result.lines[1:]]
    expected = [
        [str(e.id), e.status.value, e.source, e.key or "-", e.type_name or "?", str(e.attempts)]
        for e in entries
    ]
    assert (0, "", expected) == (result.code, result.err, rows)
    assert result.lines[0].split()[:4] == ["ID", "STATUS", "SOURCE", "KEY"]
    assert "ValueError: cannot format the total of o-2" in result.lines[1]


def test_dlq_list_json_and_filters(store: Store) -> None:
    """--json gives one object per entry; --source and --status narrow the list."""
    parked = store.run("dlq", "list", "--status", "parked", "--json")
    (only,) = [json.loads(line) for line in parked.lines]
    assert (store.parked_id, "parked", "OrderCancelled") == (
        only["id"],
        only["status"],
        only["type"],
    )
    sagas = store.run("dlq", "list", "--source", "saga:checkout", "--json")
    assert ["saga:checkout"] == [json.loads(line)["source"] for line in sagas.lines]
    limited = store.run("dlq", "list", "--limit", "1", "--json")
    assert [store.dead_id] == [json.loads(line)["id"] for line in limited.lines]


def test_dlq_list_matching_nothing_exits_1(store: Store) -> None:
    """No entry of that source: exit code 1, one line on stderr."""
    result = store.run("dlq", "list", "--source", "nobody")
    assert (1, "", "eventlite: no dead letter matches source 'nobody'\n") == (
        result.code,
        result.out,
        result.err,
    )


def test_dlq_show_prints_message_error_and_traceback(store: Store) -> None:
    """show gives every field, the stored envelope as indented JSON, and the traceback."""
    result = store.run("dlq", "show", str(store.dead_id))
    text = result.out
    assert 0 == result.code
    assert f"dead letter {store.dead_id}" == result.lines[0]
    assert "error:        ValueError: cannot format the total of o-2" in result.lines
    assert '"order_id": "o-2"' in text
    assert "Traceback (most recent call last):" in text
    full = json.loads(store.run("dlq", "show", str(store.dead_id), "--json").out)
    assert ({"order_id": "o-2", "total": 20}, "email") == (full["message"]["data"], full["source"])


# -- dlq changes ------------------------------------------------------------------------------


def test_dlq_retry_marks_the_entry_and_its_parked_line(store: Store) -> None:
    """retry releases the dead letter and the entry parked behind it, and says that the
    app's process, not the command, delivers them."""
    result = store.change("dlq", "retry", str(store.dead_id))
    assert (0, "") == (result.code, result.err)
    assert [
        f"dead letter {store.dead_id} (OrderPlaced from email): marked for retry",
        f"released behind it, in order: {store.parked_id}",
        "not delivered yet: the app running subscriber 'email' redelivers it at its next poll",
    ] == result.lines
    with library(store.path) as db:
        statuses = [e.status for e in DeadLetterQueue(SQLiteStorage(db)).list("email")]
    assert [DeadLetterStatus.RETRYING, DeadLetterStatus.RETRYING] == statuses
    again = store.change("dlq", "retry", str(store.dead_id))
    assert (
        f"dead letter {store.dead_id} (OrderPlaced from email): already marked for retry"
        == (again.lines[0])
    )


def test_a_retried_dead_letter_is_delivered_when_the_fixed_app_runs(store: Store) -> None:
    """After the CLI's retry, the app with the fixed handler delivers the message, and the
    dead-letter queue of its subscriber is empty."""
    delivered.clear()
    assert 0 == store.change("dlq", "retry", str(store.dead_id)).code
    with build(store.path, fixed_email) as app:
        app.run_until_idle()
        left = app.dlq.list("email")
    assert (["o-2"], []) == (delivered, left)


def test_dlq_retry_of_a_parked_entry_says_what_it_waits_for(store: Store) -> None:
    """A parked entry cannot overtake the dead letter of its key: the command says so."""
    result = store.change("dlq", "retry", str(store.parked_id))
    assert (0, 1) == (result.code, len(result.lines))
    assert "waits behind an earlier dead letter of key Order-o-2" in result.out


def test_dlq_retry_all_and_discard(store: Store) -> None:
    """retry-all releases a whole source; discard drops one entry."""
    result = store.change("dlq", "retry-all", "email")
    assert (0, "2 dead letters from email marked for retry") == (result.code, result.lines[0])
    (saga_letter,) = store.run("dlq", "list", "--source", "saga:checkout", "--json").lines
    letter_id = json.loads(saga_letter)["id"]
    dropped = store.change("dlq", "discard", str(letter_id))
    assert [f"dead letter {letter_id} (checkout from saga:checkout): discarded"] == dropped.lines
    with library(store.path) as db:
        assert {"email": 2} == DeadLetterQueue(SQLiteStorage(db)).sources()


def test_dlq_purge(store: Store) -> None:
    """purge by source drops that source's entries; nothing older than a week is found."""
    assert 1 == store.run("dlq", "purge", "--older-than", "7d").code
    result = store.change("dlq", "purge", "--source", "email")
    assert (0, ["purged 2 dead letters"]) == (result.code, result.lines)
    everything = store.change("dlq", "purge", "--all")
    assert ["purged 1 dead letter"] == everything.lines


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (
            ["dlq", "show", "999"],
            1,
            "no dead letter with id 999 (resolved, discarded or never added)",
        ),
        (
            ["dlq", "retry", "999"],
            1,
            "no dead letter with id 999 (resolved, discarded or never added)",
        ),
        (
            ["dlq", "discard", "999"],
            1,
            "no dead letter with id 999 (resolved, discarded or never added)",
        ),
        (["dlq", "retry-all", "nobody"], 1, "no dead letter from source 'nobody'"),
        (["dlq", "purge", "--source", "nobody"], 1, "no dead letter matches; nothing purged"),
        (["dlq", "purge"], 2, "dlq purge needs --source, --older-than or --all"),
        (
            ["dlq", "purge", "--all", "--source", "email"],
            2,
            "dlq purge: --all cannot be combined with --source or --older-than",
        ),
    ],
)
def test_dlq_bad_ids_and_arguments_change_nothing(
    store: Store, argv: list[str], code: int, message: str
) -> None:
    """An unknown id or source, or a purge without a filter: one line, the documented exit
    code, and the file exactly as before."""
    result = store.run(*argv)
    assert (code, "", f"eventlite: {message}\n") == (result.code, result.out, result.err)


@pytest.mark.parametrize(
    ("argv", "last_line"),
    [
        (
            ["dlq", "retry", "seven"],
            "a dead letter id is a whole number from 1 to 2**63 - 1, got 'seven'",
        ),
        (["dlq", "retry", "0"], "a dead letter id is a whole number from 1 to 2**63 - 1, got '0'"),
        (["dlq", "purge", "--older-than", "soon"], "expected a duration such as 90s"),
        (["dlq", "list", "--status", "lost"], "argument --status: invalid choice: 'lost'"),
        (["dlq"], "the following arguments are required: SUBCOMMAND"),
    ],
)
def test_dlq_malformed_arguments_exit_2(store: Store, argv: list[str], last_line: str) -> None:
    """A malformed argument is a usage error (exit code 2) that names the problem."""
    result = store.run(*argv)
    assert (2, "") == (result.code, result.out)
    assert last_line in result.err.splitlines()[-1]


def test_db_may_follow_a_subcommand(store: Store) -> None:
    """--db is accepted after ``dlq list`` too."""
    before = store.run("dlq", "list").lines
    after = run("dlq", "list", "--db", store.path, watch=[store.path])
    assert before == after.lines


# -- queues and subscribers ------------------------------------------------------------------


def test_queues_agree_with_the_library(store: Store) -> None:
    """One row per queue: waiting, in flight, delayed, oldest age, dead letters."""
    with library(store.path) as db:
        (stats,) = Queues(SQLiteStorage(db)).stats()
    result = store.run("queues")
    header, row = result.lines
    assert ["QUEUE", "WAITING", "IN", "FLIGHT", "DELAYED", "OLDEST", "DEAD", "LETTERS"] == (
        header.split()
    )
    assert ["emails", "1", "1", "1"] == row.split()[:4]
    assert (1, 1, 1) == (stats.depth, stats.in_flight, stats.delayed)
    (data,) = [json.loads(line) for line in store.run("queues", "--json").lines]
    assert {"name": "emails", "depth": 1, "in_flight": 1, "delayed": 1, "dead_letters": 0} == {
        k: v for k, v in data.items() if k != "oldest_age"
    }


def test_subscribers_agree_with_the_library(store: Store) -> None:
    """One row per durable subscriber: checkpoint, lag, retries, dead letters, blocked
    keys; NAME keeps one; an unknown name exits 1."""
    with library(store.path) as db:
        expected = subscriber_status(SQLiteStorage(db), DeadLetterQueue(SQLiteStorage(db)))
    rows = [json.loads(line) for line in store.run("subscribers", "--json").lines]
    assert [
        (s.name, s.checkpoint, s.head, s.lag, s.dead_letters, list(s.blocked_keys))
        for s in expected
    ] == [
        (r["name"], r["checkpoint"], r["head"], r["lag"], r["dead_letters"], r["blocked_keys"])
        for r in rows
    ]
    email = store.run("subscribers", "email")
    assert ["email", "3/3", "0", "0", "0", "2"] == email.lines[1].split()[:6]
    assert email.lines[1].endswith("Order-o-2")
    missing = store.run("subscribers", "nobody")
    assert (1, "eventlite: no durable subscriber named 'nobody'\n") == (missing.code, missing.err)


# -- projections -------------------------------------------------------------------------------


def test_projections_list_agrees_with_the_library(store: Store) -> None:
    """One row per projection in the file, with its mode, state, checkpoint and lag."""
    with library(store.path) as db:
        (status,) = Projector(SQLiteStorage(db)).status()
    result = store.run("projections", "list")
    assert ["OrderTotals", "inline", "live", f"{status.position}/{status.head}"] == (
        result.lines[1].split()[:4]
    )
    (data,) = [json.loads(line) for line in store.run("projections", "list", "--json").lines]
    assert ("OrderTotals", status.lag) == (data["name"], data["lag"])


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        """Yes."""
        return True


def test_projections_rebuild_replays_with_a_bar_on_a_terminal(store: Store) -> None:
    """rebuild imports the app, replays the log into the emptied read model, and draws a
    progress bar on stderr only when stderr is a terminal."""
    target = "tests.cli.test_operations:rebuild_target"
    out, err = io.StringIO(), _Terminal()
    argv = ["--db", str(store.path), "projections", "rebuild", "OrderTotals", "--app", target]
    code = cli.main(argv, stdout=out, stderr=err)
    with library(store.path) as db:
        head = Projector(SQLiteStorage(db)).status()[0].head
        rows = list(sqlite_utils.Database(db.read_connection())["order_totals"].rows)
    assert (0, f"rebuilt projection OrderTotals: replayed the log up to position {head}\n") == (
        code,
        out.getvalue(),
    )
    assert err.getvalue().startswith("\rrebuilding OrderTotals [")
    assert err.getvalue().endswith(f"100%  {head}/{head}\n")
    assert [{"order_id": "o-1", "total": 10}, {"order_id": "o-2", "total": 20}] == rows
    piped = store.change("projections", "rebuild", "OrderTotals", "--app", target)
    assert (0, "") == (piped.code, piped.err)


def test_projections_rebuild_through_an_apps_projector(store: Store) -> None:
    """--app may name a function returning an App: its projector does the rebuild, and the
    app is closed afterwards."""
    result = store.change(
        "projections", "rebuild", "OrderTotals", "--app", "tests.cli.test_operations:app_target"
    )
    with library(store.path) as db:
        (status,) = Projector(SQLiteStorage(db)).status()
    assert (0, "") == (result.code, result.err)
    assert ("live", status.head, 0) == (status.state, status.position, status.lag)
    assert None is not status.rebuilt_at


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (
            ["projections", "rebuild", "Nope", "--app", "tests.cli.test_operations:rebuild_target"],
            1,
            "no projection named 'Nope' in {path} (known: OrderTotals)",
        ),
        (
            [
                "projections",
                "rebuild",
                "OrderTotals",
                "--app",
                "tests.cli.test_operations:registry",
            ],
            2,
            "tests.cli.test_operations:registry is not an App with a projector, nor a "
            "Projector: Registry",
        ),
        (
            ["projections", "rebuild", "OrderTotals", "--app", "no_such_module_xyz:app"],
            2,
            "cannot import no_such_module_xyz: No module named 'no_such_module_xyz'",
        ),
    ],
)
def test_projections_rebuild_bad_input_changes_nothing(
    store: Store, argv: list[str], code: int, message: str
) -> None:
    """An unknown projection or an --app that is not one: one line, exit code, file as it
    was."""
    result = store.run(*argv)
    expected = f"eventlite: {message.format(path=store.path)}\n"
    assert (code, "", expected) == (result.code, result.out, result.err)


def test_projections_rebuild_refuses_an_app_on_another_file(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An --app that opens another file than --db is refused before any rebuild."""
    monkeypatch.setenv("CLI_ELSEWHERE_DIR", str(tmp_path))
    result = store.run(
        "projections", "rebuild", "OrderTotals", "--app", "tests.cli.test_operations:elsewhere"
    )
    assert 2 == result.code
    assert "not on " + str(store.path) in result.err


# -- sagas -------------------------------------------------------------------------------------


def test_sagas_list_and_show_agree_with_the_library(store: Store) -> None:
    """list gives each instance oldest first; show gives one in full; filters narrow."""
    with library(store.path) as db:
        instances = SagaOrchestrator(SQLiteStorage(db)).list()
    rows = [json.loads(line) for line in store.run("sagas", "list", "--json").lines]
    assert [(s.id, s.status.value, list(s.completed_steps)) for s in instances] == [
        (r["id"], r["status"], r["completed_steps"]) for r in rows
    ]
    failed = store.run("sagas", "list", "--status", "failed")
    assert ["saga-failed", "checkout", "failed", "reserve", "charge"] == failed.lines[1].split()[:5]
    shown = store.run("sagas", "show", "saga-failed")
    assert "error:       builtins.RuntimeError: card declined" not in shown.lines
    assert "error:       RuntimeError: card declined" in shown.lines
    assert "undo failed: reserve: RuntimeError: warehouse offline" in shown.lines
    data = json.loads(store.run("sagas", "show", "saga-ok", "--json").out)["data"]
    assert {"order_id": "o-1", "reserved": True} == data


def test_sagas_unknown_id_or_nothing_matching_exits_1(store: Store) -> None:
    """An unknown instance id, or a filter that matches nothing: exit code 1, one line."""
    unknown = store.run("sagas", "show", "nope")
    none = store.run("sagas", "list", "--saga", "refund")
    assert (1, "eventlite: no saga instance with id 'nope'\n") == (unknown.code, unknown.err)
    assert (1, "eventlite: no saga instance matches\n") == (none.code, none.err)


# -- bad files -----------------------------------------------------------------------------------

COMMANDS = [
    ["dlq", "list"],
    ["dlq", "show", "1"],
    ["dlq", "retry", "1"],
    ["dlq", "retry-all", "email"],
    ["dlq", "discard", "1"],
    ["dlq", "purge", "--all"],
    ["queues"],
    ["subscribers"],
    ["projections", "list"],
    ["projections", "rebuild", "OrderTotals", "--app", "tests.cli.test_operations:rebuild_target"],
    ["sagas", "list"],
    ["sagas", "show", "x"],
]


def _foreign(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (text)")
    conn.close()


BAD_FILES: list[tuple[str, Callable[[Path], Any], str]] = [
    ("missing", lambda p: None, "{path}: no such file"),
    (
        "empty",
        lambda p: p.write_bytes(b""),
        "{path}: a SQLite database but not an eventlite store (application_id 0x0)",
    ),
    (
        "garbage",
        lambda p: p.write_bytes(b"not a database at all, just text\n" * 40),
        "{path}: not a SQLite database (file is not a database)",
    ),
    (
        "foreign",
        _foreign,
        "{path}: a SQLite database but not an eventlite store (application_id 0x0)",
    ),
]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c[:2]) for c in COMMANDS])
@pytest.mark.parametrize(("kind", "make", "message"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_are_refused_and_left_alone(
    tmp_path: Path, kind: str, make: Callable[[Path], Any], message: str, command: list[str]
) -> None:
    """Every new command, reading or changing, refuses a file that is not an eventlite
    store with one line and exit code 2, and leaves the file and its directory alone."""
    path = tmp_path / "input.db"
    make(path)
    listing = sorted(os.listdir(tmp_path))
    result = run("--db", path, *command, watch=[path])
    expected = f"eventlite: {message.format(path=path)}\n"
    assert (2, "", expected) == (result.code, result.out, result.err)
    assert listing == sorted(os.listdir(tmp_path))


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    """An eventlite file at schema version 3: events, snapshots and delivery tables, but
    no dead letters, queues, projections or sagas yet."""
    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    for step in MIGRATIONS[:3]:
        step.apply(db)
    db.execute(f"PRAGMA application_id={APPLICATION_ID}")
    db.execute("PRAGMA user_version=3")
    db.close()
    return path


@pytest.mark.parametrize(
    ("command", "what"),
    [
        (["dlq", "list"], "dead-letter table"),
        (["dlq", "retry", "1"], "dead-letter table"),
        (["queues"], "work-queue table"),
        (["projections", "list"], "projection table"),
        (["sagas", "list"], "saga table"),
    ],
)
def test_a_file_from_an_older_eventlite_is_left_alone(
    old_store: Path, command: list[str], what: str
) -> None:
    """A store made before a table existed: exit code 1 naming the missing table and the
    schema version, and the file unchanged (no migration)."""
    result = run("--db", old_store, *command, watch=[old_store])
    expected = (
        f"eventlite: {old_store} has no {what} (schema version 3: an older eventlite made it; "
        "an app of this version adds it when it opens the file)\n"
    )
    assert (1, expected) == (result.code, result.err)
    assert "<none>" != digest(old_store)


def test_retry_from_python_dash_m(store: Store) -> None:
    """``python -m eventlite --db FILE dlq retry ID`` runs in its own process, beside
    nothing, and marks the entry."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "eventlite",
            "--db",
            str(store.path),
            "dlq",
            "retry",
            str(store.dead_id),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert (0, "") == (done.returncode, done.stderr)
    with library(store.path) as db:
        assert (
            DeadLetterStatus.RETRYING
            == DeadLetterQueue(SQLiteStorage(db)).get(store.dead_id).status
        )
