"""The operator's command line: ``python -m eventlite --db FILE COMMAND [options]``.

**Reading.** Commands that look at a store open the file through a read-only SQLite
connection (``mode=ro``), so they never change it and may run beside the application that
writes it. They know none of the application's message classes: they print type names, ids
and the raw JSON data without decoding anything. Where the library has a read method for
what a command shows, the command calls it on the read-only connection
(:attr:`CommandContext.database`), so the CLI and the library give the same answer:
``dlq list`` is :meth:`DeadLetterQueue.list <eventlite.dlq.DeadLetterQueue.list>`,
``subscribers`` is :func:`~eventlite.relay.subscriber_status`, and so on (``docs/cli.md``
pairs each command with its call).

**Changing.** Commands that change the file (``dlq retry``, ``dlq discard``, ``dlq
purge``, ``projections rebuild``) first check it read-only, then open it through the
library (:meth:`CommandContext.writable`), so the change takes the library's locks and
transactions, and waits for a running application's write like any other writer.

**Importing.** ``graph``, ``events --app`` and ``projections rebuild --app`` import the
application module the operator names; nothing read from the data is ever imported.

Exit codes: :data:`EXIT_OK` (0) when the command did its job, :data:`EXIT_NOT_FOUND` (1)
when it looked and found nothing (no matching event, an unknown id, an empty dead-letter
queue), and :data:`EXIT_USAGE` (2) for bad usage or bad input (a missing file, a file that
is not an eventlite store, a malformed argument, an application that cannot be imported).
Errors are one line on stderr, starting ``eventlite:``.

**Adding a command.** Write a function ``run(ctx: CommandContext) -> int`` and register it
with :func:`register_command`, giving a function that adds its arguments to its argparse
subparser (sub-subcommands such as ``dlq list`` are made with :func:`add_subcommands`)::

    def _arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("type")

    @register_command("count", help="events of one type", arguments=_arguments)
    def count(ctx: CommandContext) -> int:
        (n,) = ctx.db.execute(
            "SELECT count(*) FROM events WHERE type = ?", (ctx.args.type,)
        ).fetchone()
        if not n:
            raise CliError(f"no {ctx.args.type} event", EXIT_NOT_FOUND)
        ctx.emit(str(n))
        return EXIT_OK

The built-in commands live in this package's modules. Other modules that register
commands are listed in :data:`EXTENSIONS`; :func:`main` imports them before reading the
command line.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO

import attrs

from ..exceptions import EventliteError, StorageError
from ..sqlite._database import Database, Transaction
from ..sqlite.schema import APPLICATION_ID

__all__ = [
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXTENSIONS",
    "Arguments",
    "CliCommand",
    "CliError",
    "CommandContext",
    "Runner",
    "add_subcommands",
    "build_parser",
    "commands",
    "connect_readonly",
    "load_target",
    "main",
    "mermaid",
    "register_command",
]

EXIT_OK = 0
"""The command did its job."""
EXIT_NOT_FOUND = 1
"""The command looked and found nothing: no event matched, an unknown id, nothing to
retry or purge."""
EXIT_USAGE = 2
"""Bad usage or bad input: a malformed argument, a missing file, a file that is not an
eventlite store, an application that cannot be imported, a store that cannot be read or
written."""

EXTENSIONS: tuple[str, ...] = ()
"""Modules (beyond the built-in ones) that register more commands; :func:`main` imports
each before reading the command line."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_sleep = time.sleep  # the follow loop's wait; tests replace it


class CliError(Exception):
    """A command cannot go on: :func:`main` prints the message as one line on stderr and
    exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code
        """The exit code."""


Runner = Callable[["CommandContext"], int]
"""A command's body: takes the context, returns the exit code."""
Arguments = Callable[[argparse.ArgumentParser], None]
"""Adds a command's arguments to its subparser."""


@attrs.frozen
class CliCommand:
    """One subcommand, as given to :func:`register_command`."""

    name: str
    """The word typed after ``python -m eventlite``."""
    help: str
    """One line for ``--help``."""
    run: Runner
    """The command's body."""
    arguments: Arguments | None = None
    """Adds the command's own arguments to its subparser."""
    needs_db: bool = True
    """Whether the command reads a store (and so takes ``--db``)."""


_COMMANDS: dict[str, CliCommand] = {}


def register_command(
    name: str, *, help: str, arguments: Arguments | None = None, needs_db: bool = True
) -> Callable[[Runner], Runner]:
    """Register a subcommand; decorates its body ``run(ctx) -> exit code``.

    Raises ``ValueError`` when the name is taken.
    """

    def decorate(run: Runner) -> Runner:
        if name in _COMMANDS:
            raise ValueError(f"a command named {name!r} is already registered")
        _COMMANDS[name] = CliCommand(name, help, run, arguments, needs_db)
        return run

    return decorate


def commands() -> Mapping[str, CliCommand]:
    """Every registered command, by name."""
    return dict(_COMMANDS)


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="FILE", default=argparse.SUPPRESS, help="the store's file")


def add_subcommands(
    parser: argparse.ArgumentParser, subcommands: Mapping[str, tuple[str, Arguments | None]]
) -> None:
    """Give a command sub-subcommands (``dlq list``, ``dlq retry ID``): ``subcommands`` maps
    each word to its help line and a function that adds its arguments (or None).

    The chosen word is ``ctx.args.subcommand``. Each sub-subcommand also takes ``--db``, so
    it may come last on the line.
    """
    sub = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
    for word, (help_line, arguments) in subcommands.items():
        p = sub.add_parser(word, help=help_line, description=help_line)
        _add_db(p)
        if arguments is not None:
            arguments(p)


class _ReadOnlyDatabase(Database):
    """A :class:`~eventlite.sqlite.Database` over one read-only connection.

    The library's read methods (``DeadLetterQueue.list``, ``subscriber_status``,
    ``Queues.stats``, ``Projector.status``, ``SagaOrchestrator.list``) take a Database and
    read through :meth:`read_connection` and :meth:`read`; given this one, they run
    unchanged on the read-only connection. Every write is refused. It opens no writer and
    runs no migration, which is why ``Database.__init__`` is not called.
    """

    def __init__(self, path: str, conn: sqlite3.Connection) -> None:
        self.path = path
        self.synchronous = "full"
        self.busy_timeout = 0.0
        self._readonly_conn = conn

    def read_connection(self) -> sqlite3.Connection:
        """The read-only connection."""
        return self._readonly_conn

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The read-only connection, holding one snapshot for the block."""
        conn = self._readonly_conn
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("COMMIT")

    def in_transaction(self) -> bool:
        """Never: this database does not write."""
        return False

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Refused: raises :class:`~eventlite.exceptions.StorageError`."""
        raise StorageError(f"{self.path} is open read-only")
        yield  # pragma: no cover - makes this a generator

    @property
    def closed(self) -> bool:
        """Whether the connection is closed (it belongs to the command's context)."""
        return False

    def close(self, timeout: float | None = None) -> bool:
        """Nothing to do: the command's context closes the connection."""
        return True

    def __repr__(self) -> str:
        return f"<read-only Database {self.path!r}>"


class CommandContext:
    """What a running command gets: its arguments, where to write, and the store.

    The store is opened on first use of :attr:`db` (or :attr:`database`) and closed when
    the command ends.
    """

    def __init__(self, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
        self.args = args
        """The parsed command line."""
        self.out = out
        """Where results go (stdout)."""
        self.err = err
        """Where warnings and progress go (stderr); errors are raised as :class:`CliError`."""
        self._conn: sqlite3.Connection | None = None
        self._database: Database | None = None

    @property
    def path(self) -> str:
        """The store's path, from ``--db`` or ``EVENTLITE_DB``; :class:`CliError` when
        neither was given."""
        path: str | None = getattr(self.args, "db", None)
        if not path:
            raise CliError("this command needs --db FILE (or the EVENTLITE_DB variable)")
        return path

    @property
    def db(self) -> sqlite3.Connection:
        """A read-only connection to the store, checked to be an eventlite file."""
        if self._conn is None:
            self._conn = connect_readonly(self.path)
        return self._conn

    @property
    def database(self) -> Database:
        """The store as a read-only :class:`~eventlite.sqlite.Database` over :attr:`db`, to
        hand to the library's read methods (``DeadLetterQueue(ctx.database).list()``).
        Writing through it raises :class:`~eventlite.exceptions.StorageError`."""
        if self._database is None:
            self._database = _ReadOnlyDatabase(self.path, self.db)
        return self._database

    @contextlib.contextmanager
    def writable(self) -> Iterator[Database]:
        """The store opened for writing through the library, closed after the block.

        The file is checked read-only first (:attr:`db`), so a missing file or one that is
        not an eventlite store is refused before anything could create or change it. A
        file written by an older eventlite is brought to the current schema, as any
        application opening it would.
        """
        self.db  # noqa: B018 - refuses a missing or foreign file before opening a writer
        try:
            database = Database(self.path)
        except EventliteError as exc:
            raise CliError(f"{self.path}: cannot open for writing: {exc}") from None
        try:
            yield database
        finally:
            database.close()

    def has_table(self, name: str) -> bool:
        """Whether the store has a table of this name (older files lack newer tables)."""
        found = self.db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return found is not None

    def require_table(self, name: str, what: str) -> None:
        """Raise :class:`CliError` (:data:`EXIT_NOT_FOUND`) when the store has no table
        ``name``, which holds ``what``: a file made by an older eventlite."""
        if not self.has_table(name):
            version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
            raise CliError(
                f"{self.path} has no {what} (schema version {version}: an older eventlite "
                "made it; an app of this version adds it when it opens the file)",
                EXIT_NOT_FOUND,
            )

    def emit(self, line: str = "") -> None:
        """Write one line of output."""
        self.out.write(line + "\n")

    def warn(self, message: str) -> None:
        """Write one warning line on stderr."""
        self.err.write(f"eventlite: warning: {message}\n")

    def close(self) -> None:
        """Close the store's connection, if it was opened."""
        self._database = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def connect_readonly(path: str) -> sqlite3.Connection:
    """A read-only connection to the eventlite store at ``path``.

    Raises :class:`CliError` (:data:`EXIT_USAGE`) for a missing file, a file that is not a
    SQLite database, or a SQLite database that is not an eventlite store. Reading a file
    in WAL mode may create its ``-wal`` and ``-shm`` companions, as any SQLite reader
    does; the database file itself is never written.
    """
    if not os.path.exists(path):
        raise CliError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CliError(f"{path}: is a directory, not an eventlite store")
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise CliError(f"{path}: cannot open: {exc}") from None
    try:
        conn.execute("PRAGMA query_only=ON")
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    except sqlite3.Error as exc:
        conn.close()
        raise CliError(f"{path}: not a SQLite database ({exc})") from None
    if app_id != APPLICATION_ID:
        conn.close()
        raise CliError(
            f"{path}: a SQLite database but not an eventlite store (application_id {app_id:#x})"
        )
    return conn


def load_target(spec: str) -> Any:
    """The object named ``MODULE:NAME`` (NAME may be dotted), importing MODULE from the
    current directory or ``sys.path``; :class:`CliError` when it cannot be found."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CliError(f"expected MODULE:NAME, got {spec!r}")
    added = os.getcwd() not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import {module_name}: {exc}") from None
    except Exception as exc:
        raise CliError(f"importing {module_name} failed: {type(exc).__name__}: {exc}") from None
    finally:
        if added:
            sys.path.remove(os.getcwd())
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CliError(f"{module_name} has no attribute {attr!r}") from None
    return target


# -- parsing and showing ---------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number from 1 up, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d*)?)([smhdw]?)")


def _duration(text: str) -> timedelta:
    """``90``, ``90s``, ``15m``, ``12h``, ``7d`` or ``2w``: a span of time."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 90s, 15m, 12h, 7d or 2w, got {text!r}"
        )
    number, unit = match.groups()
    return timedelta(seconds=float(number) * _UNITS[unit or "s"])


def _moment(text: str) -> int:
    """An ISO 8601 time (``Z`` allowed; naive means UTC) as microseconds since the epoch."""
    raw = text.strip()
    if raw[-1:] in ("Z", "z"):
        raw = raw[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time, got {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return (value - _EPOCH) // timedelta(microseconds=1)


def _time(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _show_time(micros: int) -> str:
    return _time(micros).isoformat(timespec="microseconds")


def _when(value: datetime | float | None) -> str:
    """A time to the second, for tables; ``-`` for none."""
    if value is None:
        return "-"
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, tz=timezone.utc)
    return value.isoformat(timespec="seconds")


def _iso(value: datetime | float | None) -> str | None:
    """A time in full, for JSON; None for none."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, tz=timezone.utc)
    return value.isoformat()


def _cut(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _table(ctx: CommandContext, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print rows under headers, columns padded to their widest cell, two spaces apart."""
    cells = [[str(h) for h in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        ctx.emit(line.rstrip())


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


# -- running ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every registered command."""
    parser = argparse.ArgumentParser(
        prog="python -m eventlite",
        description="Look into an eventlite store, and act on its dead letters and "
        "projections. Reading commands never change the file.",
        epilog="exit codes: 0 ok, 1 nothing found, 2 bad usage or input",
    )
    parser.add_argument(
        "--db",
        metavar="FILE",
        default=os.environ.get("EVENTLITE_DB"),
        help="the store's SQLite file (default: $EVENTLITE_DB)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in _COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        if cmd.needs_db:
            _add_db(p)
        if cmd.arguments is not None:
            cmd.arguments(p)
        p.set_defaults(run_command=cmd)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one command line (``sys.argv[1:]`` when None) and return its exit code."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    for module in EXTENSIONS:
        importlib.import_module(module)
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    cmd: CliCommand = args.run_command
    ctx = CommandContext(args, out, err)
    try:
        return cmd.run(ctx)
    except CliError as exc:
        err.write(f"eventlite: {exc}\n")
        return exc.code
    except sqlite3.Error as exc:
        err.write(f"eventlite: reading {getattr(args, 'db', None)} failed: {exc}\n")
        return EXIT_USAGE
    except EventliteError as exc:
        err.write(f"eventlite: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    finally:
        ctx.close()


# The built-in commands register themselves when their modules are imported, in the order
# ``--help`` lists them.
from . import _store as _store  # noqa: E402, I001
from . import _graph as _graph  # noqa: E402
from . import _dlq as _dlq  # noqa: E402
from . import _status as _status  # noqa: E402
from . import _processes as _processes  # noqa: E402
from . import _streams as _streams  # noqa: E402
from ._graph import mermaid  # noqa: E402
