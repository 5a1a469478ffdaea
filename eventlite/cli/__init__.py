"""The operator's command line: ``python -m eventlite --db FILE|URL COMMAND [options]``.

**Opening.** ``--db`` is a SQLite file or a ``postgresql://`` URL. Commands open the store
through the library, read-only (``SQLiteStorage(path, readonly=True)``,
``PostgresStorage(url, readonly=True)``): a store that is missing, not SQLite, not an
eventlite store, or newer than this eventlite is refused in one line, and nothing is ever
created, migrated or changed. They know none of the application's message classes: they
print type names, ids and the stored JSON without decoding anything.

**Reading.** Every command calls the library's read methods on that store (the store
protocols of :mod:`eventlite.store` and the facades over them), never SQL of its own, so
the CLI and the library give the same answer on every backend: ``events`` is
:meth:`EventStore.find_records <eventlite.store.EventStore.find_records>`, ``dlq list`` is
:meth:`DeadLetterQueue.list <eventlite.dlq.DeadLetterQueue.list>`, ``subscribers`` is
:func:`~eventlite.relay.subscriber_status`, and so on (``docs/cli.md`` pairs each command
with its call). A store the backend does not keep is refused in one line.

**Changing.** Commands that change the store (``dlq retry``, ``dlq retry-all``, ``dlq
discard``, ``dlq purge``, ``projections rebuild``) first check it read-only, then open it
for writing through the library (:meth:`CommandContext.writable`), so the change takes
the library's locks and transactions, and waits for a running application's write like
any other writer.

**Importing.** ``graph``, ``events --app`` and ``projections rebuild --app`` import the
application module the operator names; nothing read from the data is ever imported. An
app factory is called by the one convention of :func:`~eventlite.app.call_app_factory`.

Exit codes: :data:`EXIT_OK` (0) when the command did its job, :data:`EXIT_NOT_FOUND` (1)
when it looked and found nothing (no matching event, an unknown id, an empty dead-letter
queue), :data:`EXIT_USAGE` (2) for bad usage or bad input (a missing file, a file that is
not an eventlite store, a malformed argument, an application that cannot be imported, a
store the backend lacks), and 130 after Ctrl-C. Errors are one line on stderr, starting
``eventlite:``; no input makes a command print a traceback.

**Adding a command.** Write a function ``run(ctx: CommandContext) -> int`` and register it
with :func:`register_command`, giving a function that adds its arguments to its argparse
subparser (sub-subcommands such as ``dlq list`` are made with :func:`add_subcommands`)::

    def _arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("type")

    @register_command("count", help="events of one type", arguments=_arguments)
    def count(ctx: CommandContext) -> int:
        found = ctx.storage.events.find_records(0, 1000, types=[ctx.args.type])
        if not found:
            raise CliError(f"no {ctx.args.type} event", EXIT_NOT_FOUND)
        ctx.emit(str(len(found)))
        return EXIT_OK

The built-in commands live in this package's modules. Other modules that register
commands are listed in :data:`EXTENSIONS`; :func:`main` imports them before reading the
command line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from contextlib import redirect_stderr, redirect_stdout
from typing import NoReturn, TextIO

from ..exceptions import EventliteError
from . import _bridges, _dlq, _graph, _log, _processes, _status, _streams, _trace  # noqa: F401 - register commands
from ._base import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    Arguments,
    CliCommand,
    CliError,
    CommandContext,
    Runner,
    add_db_option,
    add_subcommands,
    app_from_factory,
    commands,
    load_target,
    open_storage,
    register_command,
    safe_line,
)
from ._graph import mermaid

__all__ = [
    "EXIT_INTERRUPTED",
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
    "app_from_factory",
    "build_parser",
    "commands",
    "load_target",
    "main",
    "mermaid",
    "open_storage",
    "register_command",
]

EXIT_INTERRUPTED = 130
"""Ctrl-C stopped the command (128 + SIGINT, as shells report it)."""

_BUILT_IN = (
    "info",
    "event-streams",
    "events",
    "trace",
    "graph",
    "dlq",
    "queues",
    "subscribers",
    "projections",
    "sagas",
    "streams",
    "bridges",
)
"""The built-in commands, in the order ``--help`` lists them."""

EXTENSIONS: tuple[str, ...] = ()
"""Modules (beyond the built-in ones) that register more commands; :func:`main` imports
each before reading the command line."""


# -- running ---------------------------------------------------------------------------------


class _UsageError(Exception):
    """A malformed command line, as one line."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one ``eventlite:`` line (raised, not
    printed), naming the command and where to read its usage."""

    def error(self, message: str) -> NoReturn:
        """Raise the error instead of printing the usage and exiting."""
        words = self.prog.split()[3:]  # "python -m eventlite dlq retry" -> ["dlq", "retry"]
        where = " ".join(words)
        raise _UsageError(f"{where + ': ' if where else ''}{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every registered command; a malformed command line makes
    :meth:`~argparse.ArgumentParser.parse_args` raise (:func:`main` prints it as one
    line), ``--help`` prints the usage and exits 0."""
    parser = _Parser(
        prog="python -m eventlite",
        description="Look into an eventlite store (a SQLite file or a PostgreSQL URL), and "
        "act on its dead letters and projections. Reading commands never change it.",
        epilog="exit codes: 0 ok, 1 nothing found, 2 bad usage or input, 130 interrupted",
    )
    parser.add_argument(
        "--db",
        metavar="FILE|URL",
        default=os.environ.get("EVENTLITE_DB"),
        help="the store: a SQLite file or a postgresql:// URL (default: $EVENTLITE_DB)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    known = commands()
    order = [n for n in _BUILT_IN if n in known] + [n for n in known if n not in _BUILT_IN]
    for cmd in (known[name] for name in order):
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        if cmd.needs_db:
            add_db_option(p)
        if cmd.arguments is not None:
            cmd.arguments(p)
        p.set_defaults(run_command=cmd)
    return parser


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one command line (``sys.argv[1:]`` when None) and return its exit code: 0, 1
    or 2 (see the module doc), 130 after Ctrl-C. Whatever the input, an error is one line
    on ``stderr`` starting ``eventlite:`` (a malformed command line too), never a
    traceback."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr

    def fail(message: str, code: int = EXIT_USAGE) -> int:
        err.write(safe_line(f"eventlite: {_one_line(message)}", err) + "\n")
        return code

    try:
        for module in EXTENSIONS:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                return fail(f"cannot import the extension {module}: {exc}")
        parser = build_parser()
        try:
            with redirect_stdout(out), redirect_stderr(err):
                args = parser.parse_args(argv)
        except SystemExit as exc:  # --help
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
        except _UsageError as exc:
            return fail(str(exc))
        cmd: CliCommand = args.run_command
        ctx = CommandContext(args, out, err)
        try:
            return cmd.run(ctx)
        finally:
            ctx.close()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise  # the reader went away: ``python -m eventlite`` ends quietly
    except CliError as exc:
        return fail(str(exc), exc.code)
    except EventliteError as exc:
        return fail(str(exc))
    except (ValueError, OverflowError) as exc:
        return fail(f"bad input: {exc}")
    except SystemExit as exc:  # code the operator named (an app factory, a projection)
        return fail(f"the command was ended by SystemExit({exc.code!r})")
    except Exception as exc:
        return fail(
            f"unexpected {type(exc).__name__}: {exc} (a bug in eventlite: please report it "
            "with the command line)"
        )
