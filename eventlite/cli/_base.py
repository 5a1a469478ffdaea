"""What every command shares: exit codes, errors, the command registry, the context a
command runs in (its store opened through the library), and loading the operator's app.

The command modules import from here, never from the package, so importing
``eventlite.cli`` runs no import cycle.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from ..exceptions import EventliteError
from ..postgres import is_postgres_url, mask_url

if TYPE_CHECKING:
    from ..codec import Codec
    from ..store.storage import Storage, StorageInfo

__all__ = [
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "Arguments",
    "CliCommand",
    "CliError",
    "CommandContext",
    "Runner",
    "add_subcommands",
    "app_from_factory",
    "commands",
    "load_target",
    "open_storage",
    "register_command",
    "safe_line",
]

EXIT_OK = 0
"""The command did its job."""
EXIT_NOT_FOUND = 1
"""The command looked and found nothing: no event matched, an unknown id, nothing to
retry or purge."""
EXIT_USAGE = 2
"""Bad usage or bad input: a malformed argument, a missing file, a file that is not an
eventlite store, an application that cannot be imported, a store that cannot be read or
written, a store the backend does not keep."""


class CliError(Exception):
    """A command cannot go on: :func:`~eventlite.cli.main` prints the message as one line
    on stderr and exits with ``code``."""

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


def add_db_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--db`` to a (sub)parser, so it may come anywhere on the line."""
    parser.add_argument(
        "--db",
        metavar="FILE|URL",
        default=argparse.SUPPRESS,
        help="the store: a SQLite file or a postgresql:// URL",
    )


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
        add_db_option(p)
        if arguments is not None:
            arguments(p)


# -- opening stores ----------------------------------------------------------------------

_STORE_NAMES: dict[str, tuple[str, str]] = {
    "checkpoints": ("subscriber checkpoints", "durable subscribers' checkpoints"),
    "inbox": ("inbox table", "inboxes"),
    "retries": ("delayed-retry table", "delayed retries"),
    "dead_letters": ("dead-letter table", "dead letters"),
    "queues": ("work-queue table", "work queues"),
    "idempotency": ("idempotency table", "idempotency keys"),
    "sagas": ("saga table", "sagas"),
    "processes": ("process-manager table", "process managers"),
    "projections": ("projection table", "projections"),
    "leases": ("lease table", "leases"),
    "claims": ("claim table", "unique claims"),
    "streams": ("stream-processor tables", "stream processing"),
}
"""For each store: what an older file lacks (its table), and what a backend lacks."""


def open_storage(target: str, *, readonly: bool, codec: Codec | None = None) -> Storage:
    """The storage at ``target`` (a SQLite path or a ``postgresql://`` URL), opened
    through the library: read-only (nothing created, migrated or written) or for writing.

    Raises :class:`~eventlite.exceptions.StorageError` or
    :class:`~eventlite.exceptions.SchemaError` as the backend does, and
    :class:`CliError` for a URL of another kind.
    """
    if is_postgres_url(target):
        from ..postgres import PostgresStorage

        return PostgresStorage(
            target, codec=codec, readonly=readonly, pool_min_size=0, pool_max_size=4
        )
    scheme, sep, _ = target.partition("://")
    if sep and scheme.isidentifier():
        raise CliError(
            f"{mask_url(target)}: --db takes a SQLite file path or a postgresql:// URL, "
            f"not a {scheme}:// URL"
        )
    from ..sqlite import SQLiteStorage

    return SQLiteStorage(target, codec=codec, readonly=readonly)


class CommandContext:
    """What a running command gets: its arguments, where to write, and the store.

    The store is opened read-only through the library on first use of :attr:`storage`
    and closed when the command ends; :meth:`writable` opens it for writing.
    """

    def __init__(self, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
        self.args = args
        """The parsed command line."""
        self.out = out
        """Where results go (stdout)."""
        self.err = err
        """Where warnings and progress go (stderr); errors are raised as :class:`CliError`."""
        self._storage: Storage | None = None
        self._info: StorageInfo | None = None
        self._codec: Codec | None = None

    @property
    def target(self) -> str:
        """The store, from ``--db`` or ``EVENTLITE_DB``: a SQLite path or a
        ``postgresql://`` URL; :class:`CliError` when neither was given."""
        target: str | None = getattr(self.args, "db", None)
        if not target:
            raise CliError("this command needs --db FILE or URL (or the EVENTLITE_DB variable)")
        return target

    @property
    def where(self) -> str:
        """:attr:`target` as messages show it: a URL with its password masked."""
        return mask_url(self.target)

    def use_codec(self, codec: Codec) -> None:
        """Decode with ``codec`` (an application's): call it before :attr:`storage` is
        first used."""
        if self._storage is not None:
            raise RuntimeError("use_codec() must come before the store is opened")
        self._codec = codec

    @property
    def storage(self) -> Storage:
        """The store, opened read-only through the library (checked to be an eventlite
        store no newer than this eventlite); :class:`CliError` when it cannot be."""
        if self._storage is None:
            try:
                self._storage = open_storage(self.target, readonly=True, codec=self._codec)
            except EventliteError as exc:
                raise CliError(str(exc)) from None
        return self._storage

    @property
    def info(self) -> StorageInfo:
        """What the store holds (:meth:`Storage.info`), read once."""
        if self._info is None:
            self._info = self.storage.info()
        return self._info

    def require(self, store: str) -> None:
        """Raise :class:`CliError` unless the store keeps ``store`` (a
        :data:`~eventlite.store.STORES` name): exit 1 for a file an older eventlite made
        (an app of this version adds the table), exit 2 for a backend without it."""
        storage = self.storage
        if storage.keeps(store):
            return
        table, feature = _STORE_NAMES.get(store, (store, store))
        info = self.info
        old = info.schema_version is not None and (
            info.latest_schema_version is not None
            and info.schema_version < info.latest_schema_version
        )
        if old and info.backend == "sqlite":
            raise CliError(
                f"{self.where} has no {table} (schema version {info.schema_version}: an older "
                "eventlite made it; an app of this version adds it when it opens the file)",
                EXIT_NOT_FOUND,
            )
        raise CliError(
            f"{storage.description} keeps no {feature}: the {info.backend} backend of this "
            "eventlite does not have them"
        )

    @contextlib.contextmanager
    def writable(self) -> Iterator[Storage]:
        """The store opened for writing through the library, closed after the block.

        The store is checked read-only first (:attr:`storage`), so a missing file or one
        that is not an eventlite store is refused before anything could create or change
        it. A file written by an older eventlite is brought to the current schema, as any
        application opening it would.
        """
        self.storage  # noqa: B018 - refuses a missing or foreign store before a writer opens
        try:
            storage = open_storage(self.target, readonly=False, codec=self._codec)
        except EventliteError as exc:
            raise CliError(f"{self.where}: cannot open for writing: {exc}") from None
        try:
            yield storage
        finally:
            storage.close()

    def emit(self, line: str = "") -> None:
        """Write one line of output (text the output cannot encode escaped)."""
        self.out.write(safe_line(line, self.out) + "\n")

    def warn(self, message: str) -> None:
        """Write one warning line on stderr."""
        self.err.write(safe_line(f"eventlite: warning: {message}", self.err) + "\n")

    def close(self) -> None:
        """Close the store, if it was opened."""
        storage, self._storage = self._storage, None
        if storage is not None:
            storage.close()


def safe_line(text: str, stream: TextIO | None = None) -> str:
    """``text`` as ``stream`` can write it: characters its encoding cannot hold (lone
    surrogates, which no encoding holds, among them) as backslash escapes, so a
    surrogate becomes the JSON escape ``\\udcff``."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return text.encode(encoding, "backslashreplace").decode(encoding)
    except LookupError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


# -- loading the operator's application ---------------------------------------------------


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
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # its top-level code may raise anything, or exit
        raise CliError(f"importing {module_name} failed: {type(exc).__name__}: {exc}") from None
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(os.getcwd())
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CliError(f"{module_name} has no attribute {attr!r}") from None
        except Exception as exc:
            raise CliError(f"reading {spec} failed: {type(exc).__name__}: {exc}") from None
    return target


@contextlib.contextmanager
def app_from_factory(spec: str, factory: Callable[..., Any], db: str | None) -> Iterator[Any]:
    """What the application factory ``factory`` (named ``spec`` on the command line)
    makes, called by the one convention of :func:`~eventlite.app.call_app_factory`: given
    ``db`` (the ``--db`` store) when it takes a storage, or a temporary file when ``db``
    is None; closed after the block, and the temporary file removed."""
    from ..app import call_app_factory, factory_takes_db

    tmp: str | None = None
    if db is None and factory_takes_db(factory):
        tmp = tempfile.mkdtemp(prefix="eventlite-cli-")
        db = os.path.join(tmp, "app.db")
    made: Any = None
    try:
        try:
            made = call_app_factory(factory, db)
        except (KeyboardInterrupt, CliError):
            raise
        except BaseException as exc:
            raise CliError(f"calling {spec} failed: {type(exc).__name__}: {exc}") from None
        yield made
    finally:
        try:
            if made is not None:
                close_made(made)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)


def close_made(made: Any) -> None:
    """Close what a factory made: an App closes its parts and its store; a bare
    projector leaves its storage to be closed here."""
    from ..projection import Projector

    if isinstance(made, Projector):
        made.close()
        made.storage.close()
        return
    close = getattr(made, "close", None)
    if callable(close):
        close()
