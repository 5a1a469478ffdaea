"""The operator's command line: ``python -m eventlite --db FILE COMMAND [options]``.

Commands that look at a store open the file through a read-only SQLite connection
(``mode=ro``), so they never change it and may run beside the application that writes it.
They read the stored rows as they are: the CLI knows none of the application's message
classes, so it prints type names, ids and the raw JSON data without decoding anything.
``graph`` is the exception: it imports the application module the operator names, to ask
its bus what is wired to what.

Exit codes: :data:`EXIT_OK` (0) when the command did its job, :data:`EXIT_NOT_FOUND` (1)
when it looked and found nothing (no matching event, an unknown correlation id), and
:data:`EXIT_USAGE` (2) for bad usage or bad input (a missing file, a file that is not an
eventlite store, a malformed argument). Errors are one line on stderr.

**Adding a command.** Write a function ``run(ctx: CommandContext) -> int`` and register it
with :func:`register_command`, giving a function that adds its arguments to its argparse
subparser (sub-subcommands such as ``dlq list`` are subparsers made there)::

    def _arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--source")

    @register_command("dlq", help="dead letters", arguments=_arguments)
    def dlq(ctx: CommandContext) -> int:
        if not ctx.has_table("dead_letters"):
            raise CliError("this store has no dead-letter table", EXIT_NOT_FOUND)
        for row in ctx.db.execute("SELECT id, source FROM dead_letters"):
            ctx.emit(f"{row[0]} {row[1]}")
        return EXIT_OK

A module that registers commands is listed in :data:`EXTENSIONS`; :func:`main` imports
those modules before reading the command line. ``ctx.db`` is read-only: a command that
changes the file (a retry, a purge, a rebuild) opens it through the library instead
(``eventlite.App(ctx.path)``), so the change takes the library's locks and transactions.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from ._db import APPLICATION_ID, SCHEMA_VERSION

if TYPE_CHECKING:
    from .bus import MessageBus
    from .codec import Codec
    from .messages import Registry

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
    "build_parser",
    "commands",
    "connect_readonly",
    "main",
    "mermaid",
    "register_command",
]

EXIT_OK = 0
"""The command did its job."""
EXIT_NOT_FOUND = 1
"""The command looked and found nothing: no event matched, an unknown id."""
EXIT_USAGE = 2
"""Bad usage or bad input: a malformed argument, a missing file, a file that is not an
eventlite store, an application that cannot be imported."""

EXTENSIONS: tuple[str, ...] = ()
"""Modules that register more commands (``dlq``, ``queues``, ``subscribers``,
``projections``, ``sagas``); :func:`main` imports each before reading the command line."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_PAGE = 500
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


class CommandContext:
    """What a running command gets: its arguments, where to write, and the store.

    The store is opened on first use of :attr:`db` and closed when the command ends.
    """

    def __init__(self, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
        self.args = args
        """The parsed command line."""
        self.out = out
        """Where results go (stdout)."""
        self.err = err
        """Where warnings go (stderr); errors are raised as :class:`CliError`."""
        self._conn: sqlite3.Connection | None = None

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

    def has_table(self, name: str) -> bool:
        """Whether the store has a table of this name (older files lack newer tables)."""
        import sqlite_utils

        db = sqlite_utils.Database(self.db, recursive_triggers=False, execute_plugins=False)
        return bool(db.table(name).exists())

    def emit(self, line: str = "") -> None:
        """Write one line of output."""
        self.out.write(line + "\n")

    def warn(self, message: str) -> None:
        """Write one warning line on stderr."""
        self.err.write(f"eventlite: warning: {message}\n")

    def close(self) -> None:
        """Close the store's connection, if it was opened."""
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


# -- parsing ---------------------------------------------------------------------------------


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every registered command."""
    parser = argparse.ArgumentParser(
        prog="python -m eventlite",
        description="Look into an eventlite store: read-only, safe beside a running app.",
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
            p.add_argument(
                "--db", metavar="FILE", default=argparse.SUPPRESS, help="the store's file"
            )
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
    except KeyboardInterrupt:
        return 130
    finally:
        ctx.close()


# -- info ------------------------------------------------------------------------------------


def _info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object")


@register_command("info", help="the store's schema, size and counts", arguments=_info_arguments)
def info(ctx: CommandContext) -> int:
    """Print the path, schema version, journal mode, counts, head position and size."""
    conn = ctx.db
    conn.execute("BEGIN")  # one snapshot for every count
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        journal = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
        events = int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
        head = int(conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0])
        streams = int(conn.execute("SELECT count(*) FROM streams").fetchone()[0])
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
    finally:
        conn.execute("COMMIT")
    path = os.path.abspath(ctx.path)
    size = os.path.getsize(path)
    wal = os.path.getsize(path + "-wal") if os.path.exists(path + "-wal") else 0
    facts: dict[str, Any] = {
        "path": path,
        "schema_version": version,
        "journal_mode": journal,
        "events": events,
        "head_position": head,
        "streams": streams,
        "file_size": size,
        "wal_size": wal,
        "tables": tables,
    }
    if ctx.args.json:
        ctx.emit(json.dumps(facts))
        return EXIT_OK
    known = "" if version == SCHEMA_VERSION else f" (this eventlite writes {SCHEMA_VERSION})"
    rows = [
        ("path", path),
        ("schema version", f"{version}{known}"),
        ("journal mode", journal),
        ("synchronous", "set by each app that opens the file, not stored in it"),
        ("events", str(events)),
        ("head position", str(head)),
        ("streams", str(streams)),
        ("file size", f"{size} bytes (+ {wal} bytes of WAL)"),
        ("tables", ", ".join(tables)),
    ]
    for key, value in rows:
        ctx.emit(f"{key + ':':<16}{value}")
    return EXIT_OK


# -- streams ---------------------------------------------------------------------------------


def _streams_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", help="only streams whose id starts with this")
    parser.add_argument("--limit", type=_positive, help="at most this many streams")
    parser.add_argument("--json", action="store_true", help="one JSON object per stream")


@register_command(
    "streams", help="streams with their version and last event time", arguments=_streams_arguments
)
def streams(ctx: CommandContext) -> int:
    """Print each stream's id, version and the time of its last event, by stream id."""
    args = ctx.args
    sql = (
        "SELECT s.stream_id, s.version, e.timestamp FROM streams s "
        "LEFT JOIN events e ON e.stream_id = s.stream_id AND e.version = s.version"
    )
    params: list[Any] = []
    if args.prefix:
        sql += " WHERE substr(s.stream_id, 1, ?) = ?"
        params += [len(args.prefix), args.prefix]
    sql += " ORDER BY s.stream_id LIMIT ?"
    params.append(args.limit if args.limit is not None else -1)
    rows = ctx.db.execute(sql, params).fetchall()
    if not rows:
        raise CliError(
            "no stream found" if not args.prefix else f"no stream starts with {args.prefix!r}",
            EXIT_NOT_FOUND,
        )
    if args.json:
        for stream_id, version, ts in rows:
            last = None if ts is None else _time(ts).isoformat()
            ctx.emit(json.dumps({"stream_id": stream_id, "version": version, "last": last}))
        return EXIT_OK
    width = max(len("STREAM"), *(len(r[0]) for r in rows))
    ctx.emit(f"{'STREAM':<{width}}  {'VERSION':>7}  LAST EVENT")
    for stream_id, version, ts in rows:
        last = "-" if ts is None else _show_time(ts)
        ctx.emit(f"{stream_id:<{width}}  {version:>7}  {last}")
    return EXIT_OK


# -- events ----------------------------------------------------------------------------------

_EVENT_COLUMNS = (
    "position, stream_id, version, id, type, schema_version, data, "
    "correlation_id, causation_id, user_id, headers, timestamp"
)


def _events_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stream", action="append", help="only this stream (repeatable)")
    parser.add_argument("--type", action="append", help="only this type name (repeatable)")
    parser.add_argument(
        "--from-position", type=_positive, default=1, metavar="N", help="from position N on"
    )
    parser.add_argument("--since", type=_moment, metavar="TIME", help="at or after TIME")
    parser.add_argument("--until", type=_moment, metavar="TIME", help="before TIME")
    parser.add_argument("--limit", type=_positive, help="at most this many events")
    parser.add_argument("--json", action="store_true", help="one JSON envelope per line")
    parser.add_argument(
        "--app",
        metavar="MODULE:NAME",
        help="decode with this App's (or Registry's, or Codec's) classes, upcasting old "
        "schema versions; types it does not know are printed as stored",
    )
    parser.add_argument("--follow", action="store_true", help="keep printing new events")
    parser.add_argument(
        "--follow-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="stop following after this long (default: until Ctrl-C)",
    )
    parser.add_argument(
        "--interval", type=_seconds, default=0.5, metavar="SECONDS", help="poll interval"
    )


def _filters(args: argparse.Namespace) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if args.stream:
        clauses.append(f"stream_id IN ({', '.join('?' * len(args.stream))})")
        params += args.stream
    if args.type:
        clauses.append(f"type IN ({', '.join('?' * len(args.type))})")
        params += args.type
    if args.since is not None:
        clauses.append("timestamp >= ?")
        params.append(args.since)
    if args.until is not None:
        clauses.append("timestamp < ?")
        params.append(args.until)
    return " AND ".join(["1", *clauses]), params


def _rows(
    conn: sqlite3.Connection, where: str, params: list[Any], after: int, upto: int
) -> Iterator[tuple[Any, ...]]:
    """The matching rows in ``(after, upto]``, in pages: positions are gap-free and given in
    commit order, so paging by position needs no long read transaction."""
    sql = (
        f"SELECT {_EVENT_COLUMNS} FROM events WHERE position > ? AND position <= ? AND "
        f"{where} ORDER BY position LIMIT {_PAGE}"
    )
    while True:
        page = conn.execute(sql, (after, upto, *params)).fetchall()
        yield from page
        if len(page) < _PAGE:
            return
        after = page[-1][0]


def _loads(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _row_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    """A stored row in the shape of :meth:`Codec.envelope_to_dict`, data undecoded."""
    (position, stream_id, version, id_, type_, schema, data, corr, cause, user, headers, ts) = row
    return {
        "id": id_,
        "type": type_,
        "schema_version": schema,
        "data": _loads(data),
        "correlation_id": corr,
        "causation_id": cause,
        "user_id": user,
        "headers": _loads(headers) if headers else {},
        "timestamp": _time(ts).isoformat(),
        "stream_id": stream_id,
        "version": version,
        "position": position,
    }


def _decoded_dict(codec: Codec, row: tuple[Any, ...], ctx: CommandContext) -> dict[str, Any]:
    from .envelope import Envelope, Metadata
    from .exceptions import EventliteError

    (position, stream_id, version, id_, type_, schema, data, corr, cause, user, headers, ts) = row
    if type_ not in codec.registry:
        return _row_dict(row)
    try:
        message = codec.decoder(type_, schema)(data, position)
        meta = Metadata(corr, cause, user, _loads(headers) if headers else {})
        envelope = Envelope(
            message,
            id=id_,
            metadata=meta,
            timestamp=_time(ts),
            stream_id=stream_id,
            version=version,
            position=position,
        )
        return codec.envelope_to_dict(envelope)
    except (EventliteError, TypeError, ValueError) as exc:
        ctx.warn(f"#{position} {type_}: {exc}; printed as stored")
        return _row_dict(row)


def _event_line(d: Mapping[str, Any], stored: str | None) -> str:
    ts = datetime.fromisoformat(d["timestamp"]).isoformat(timespec="microseconds")
    parts = [
        f"#{d['position']}",
        ts,
        f"{d['stream_id']} v{d['version']}",
        str(d["type"]),
        f"id={d['id']}",
        f"correlation={d['correlation_id']}",
        f"causation={d['causation_id'] or '-'}",
    ]
    if d.get("user_id"):
        parts.append(f"user={d['user_id']}")
    if d.get("headers"):
        parts.append(f"headers={json.dumps(d['headers'], ensure_ascii=False)}")
    if stored is None:
        stored = json.dumps(d["data"], ensure_ascii=False, separators=(",", ":"))
    parts.append(stored)
    return "  ".join(parts)


def _codec_of(spec: str) -> Codec:
    from .codec import Codec
    from .messages import Registry

    target = _load_target(spec)
    if isinstance(target, Codec):
        return target
    if isinstance(target, Registry):
        return Codec(target)
    codec = getattr(target, "codec", None)
    if isinstance(codec, Codec):
        return codec
    raise CliError(f"{spec} is not an App, a Registry or a Codec")


@register_command(
    "events", help="the global log, filtered; --follow for new events", arguments=_events_arguments
)
def events(ctx: CommandContext) -> int:
    """Print the stored events that match the filters, in position order."""
    args = ctx.args
    conn = ctx.db
    codec = _codec_of(args.app) if args.app else None
    where, params = _filters(args)
    remaining = args.limit
    last = args.from_position - 1
    printed = 0

    def show(upto: int) -> bool:
        """Print matches in (last, upto]; False once the limit is reached."""
        nonlocal last, printed, remaining
        for row in _rows(conn, where, params, last, upto):
            d = _decoded_dict(codec, row, ctx) if codec is not None else _row_dict(row)
            if args.json:
                ctx.emit(json.dumps(d, ensure_ascii=False))
            else:
                ctx.emit(_event_line(d, None if codec is not None else str(row[6])))
            printed += 1
            last = row[0]
            if remaining is not None:
                remaining -= 1
                if remaining == 0:
                    ctx.out.flush()
                    return False
        last = max(last, upto)
        ctx.out.flush()
        return True

    def head() -> int:
        return int(conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0])

    going = show(head())
    if not args.follow:
        if not printed:
            raise CliError("no event matches", EXIT_NOT_FOUND)
        return EXIT_OK
    deadline = None if args.follow_timeout is None else time.monotonic() + args.follow_timeout
    try:
        while going:
            wait = args.interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                wait = min(wait, left)
            _sleep(wait)
            going = show(head())
    except KeyboardInterrupt:
        pass
    return EXIT_OK


# -- trace -----------------------------------------------------------------------------------


@attrs.define
class _Node:
    label: str
    children: list[_Node] = attrs.Factory(list)


def _trace_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "id", metavar="CORRELATION_ID", help="a flow's correlation id, or the id of any event in it"
    )


def _event_label(row: tuple[Any, ...]) -> str:
    position, stream_id, version, id_, type_ = row[:5]
    return f"#{position} {type_}  {stream_id} v{version}  {_show_time(row[11])}  id={id_}"


def _dead_letters(ctx: CommandContext, correlation_id: str) -> list[dict[str, Any]]:
    """The dead letters whose envelope belongs to the flow, oldest first."""
    if not ctx.has_table("dead_letters"):
        return []
    cur = ctx.db.execute(
        "SELECT * FROM dead_letters WHERE instr(CAST(message AS TEXT), ?) > 0 ORDER BY id",
        (correlation_id,),
    )
    names = [d[0] for d in cur.description]
    found = []
    for values in cur:
        row = dict(zip(names, values, strict=True))
        envelope = _loads(row.get("message"))
        if isinstance(envelope, dict) and envelope.get("correlation_id") == correlation_id:
            row["envelope"] = envelope
            found.append(row)
    return found


def _dead_letter_label(row: Mapping[str, Any]) -> str:
    envelope = row["envelope"]
    error = row.get("error_type") or "error"
    if row.get("error_message"):
        error += f": {row['error_message']}"
    parts = [
        f"DEAD LETTER {row.get('id')}",
        str(row.get("type_name") or envelope.get("type")),
        f"source={row.get('source')}",
        f"status={row.get('status')}",
        f"attempts={row.get('attempts')}",
        error,
    ]
    return "  ".join(parts)


def _render(roots: list[_Node]) -> Iterator[str]:
    stack: list[tuple[_Node, str, bool]] = [
        (n, "", i == len(roots) - 1) for i, n in enumerate(roots)
    ]
    stack.reverse()
    while stack:
        node, prefix, last = stack.pop()
        yield f"{prefix}{'`-- ' if last else '|-- '}{node.label}"
        inner = prefix + ("    " if last else "|   ")
        kids = node.children
        stack.extend((kid, inner, i == len(kids) - 1) for i, kid in reversed(list(enumerate(kids))))


@register_command(
    "trace",
    help="the causation tree of one flow, dead letters included",
    arguments=_trace_arguments,
)
def trace(ctx: CommandContext) -> int:
    """Print every event (and dead letter) of a flow as a tree of what caused what."""
    conn = ctx.db
    wanted = ctx.args.id
    select = f"SELECT {_EVENT_COLUMNS} FROM events WHERE correlation_id = ? ORDER BY position"
    correlation = wanted
    rows = conn.execute(select, (wanted,)).fetchall()
    if not rows:
        found = conn.execute("SELECT correlation_id FROM events WHERE id = ?", (wanted,)).fetchone()
        if found is not None:
            correlation = found[0]
            rows = conn.execute(select, (correlation,)).fetchall()
    letters = _dead_letters(ctx, correlation)
    if not rows and not letters:
        raise CliError(
            f"no event or dead letter has the correlation id or event id {wanted!r}", EXIT_NOT_FOUND
        )
    nodes: dict[str, _Node] = {}
    roots: list[_Node] = []
    outside: dict[str, _Node] = {}

    def parent_of(cause: str | None) -> list[_Node]:
        if cause is None:
            return roots
        if cause in nodes:
            return nodes[cause].children
        holder = outside.get(cause)
        if holder is None:
            what = "the message that started the flow" if cause == correlation else "a message"
            holder = outside[cause] = _Node(f"{cause}  ({what}, not in the event log)")
            roots.append(holder)
        return holder.children

    for row in rows:
        node = nodes[row[3]] = _Node(_event_label(row))
        parent_of(row[8]).append(node)
    for letter in letters:
        node = _Node(_dead_letter_label(letter))
        failed = letter.get("message_id") or letter["envelope"].get("id")
        if failed in nodes:
            nodes[failed].children.append(node)
        else:
            parent_of(letter["envelope"].get("causation_id")).append(node)
    n, m = len(rows), len(letters)
    ctx.emit(
        f"flow {correlation}: {n} event{'' if n == 1 else 's'}, "
        f"{m} dead letter{'' if m == 1 else 's'}"
    )
    for line in _render(roots):
        ctx.emit(line)
    return EXIT_OK


# -- graph -----------------------------------------------------------------------------------


def _load_target(spec: str) -> Any:
    """The object named ``MODULE:NAME`` (NAME may be dotted), importing MODULE from the
    current directory or ``sys.path``."""
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


def _graph_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target",
        metavar="MODULE:APP",
        help="the application: an App, a MessageBus, or a function that returns one",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="wrap the diagram in a ```mermaid fence"
    )


def _short(name: str) -> str:
    return name.rsplit("<locals>.", 1)[-1]


def _label(text: str) -> str:
    return '"' + text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;") + '"'


def mermaid(bus: MessageBus, registry: Registry | None = None) -> list[str]:
    """The lines of a Mermaid ``flowchart`` of a bus: commands and queries to their
    handlers, events to their subscribers (dotted when in the background), and the
    registry's messages that nothing handles."""
    from .messages import MessageKind

    registry = registry if registry is not None else bus.registry
    ids: dict[tuple[str, str], str] = {}
    taken: set[str] = set()
    nodes: list[str] = []
    edges: list[str] = []

    def node_id(prefix: str, key: str, shape: tuple[str, str], label: str) -> str:
        known = ids.get((prefix, key))
        if known is not None:
            return known
        base = prefix + "".join(c if c.isalnum() else "_" for c in label)
        new, n = base, 1
        while new in taken:
            n += 1
            new = f"{base}_{n}"
        taken.add(new)
        ids[(prefix, key)] = new
        nodes.append(f"    {new}{shape[0]}{_label(label)}{shape[1]}")
        return new

    def message_node(cls: type[Any]) -> str:
        entry = registry.find(cls)
        name = entry.name if entry is not None else cls.__qualname__
        kind = entry.kind if entry is not None else None
        if cls is object:
            return node_id("e_", "object", ("([", "])"), "every event")
        if kind is MessageKind.QUERY:
            return node_id("q_", name, ("{{", "}}"), name)
        if kind is MessageKind.EVENT:
            return node_id("e_", name, ("([", "])"), name)
        if kind is MessageKind.COMMAND:
            return node_id("c_", name, ("[/", "/]"), name)
        return node_id("m_", name, ("[", "]"), name)

    def handler_node(fn: Callable[..., Any], name: str) -> str:
        module = getattr(fn, "__module__", None) or ""
        local = name[len(module) + 1 :] if module and name.startswith(module + ".") else name
        return node_id("h_", f"{module}:{local}", ("[", "]"), _short(local))

    handlers = bus.handlers()
    for cls in sorted(handlers, key=lambda c: c.__qualname__):
        fn = handlers[cls]
        source = message_node(cls)
        target = handler_node(fn, getattr(fn, "__qualname__", repr(fn)))
        edges.append(f"    {source} --> {target}")
    for sub in bus.subscriptions():
        arrow = " -.->|background| " if sub.background else " --> "
        source = message_node(sub.event_type)
        target = handler_node(sub.handler, sub.name)
        edges.append(f"    {source}{arrow}{target}")
    handled = set(handlers) | {s.event_type for s in bus.subscriptions()}
    for entry in sorted(registry, key=lambda e: e.name):
        if entry.cls not in handled:
            message_node(entry.cls)
    return ["flowchart LR", *nodes, *edges]


@register_command(
    "graph",
    help="the app's message flow as a Mermaid flowchart",
    arguments=_graph_arguments,
    needs_db=False,
)
def graph(ctx: CommandContext) -> int:
    """Import the named app and print its commands, handlers, events and subscribers."""
    from .app import App
    from .bus import MessageBus

    spec = ctx.args.target
    target = _load_target(spec)
    made = False
    if callable(target) and not isinstance(target, (App, MessageBus)):
        try:
            target = target()
        except Exception as exc:
            raise CliError(f"calling {spec} failed: {type(exc).__name__}: {exc}") from None
        made = True
    try:
        if isinstance(target, App):
            lines = mermaid(target.bus, target.registry)
        elif isinstance(target, MessageBus):
            lines = mermaid(target)
        else:
            raise CliError(f"{spec} is not an App or a MessageBus: {type(target).__name__}")
    finally:
        if made and isinstance(target, (App, MessageBus)):
            target.close()
    if ctx.args.markdown:
        lines = ["```mermaid", *lines, "```"]
    for line in lines:
        ctx.emit(line)
    return EXIT_OK
