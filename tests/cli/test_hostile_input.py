"""The CLI never prints a traceback (issue 9, §4): numbers past 64 bits, rows eventlite
never writes, FIFOs and devices, read-only directories, and whatever a command line may
hold end in ``eventlite:`` lines and exit codes 0, 1 or 2."""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sqlite3
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventlite import cli
from eventlite.cli import _log

from ._run import Result, digest, run
from .conftest import CORRUPT_ROWS, CorruptStore, make_corrupt_store

BIG = str(2**64)
HUGE = "9" * 400


def _one_line(result: Result, code: int = 2) -> None:
    """The run ended with ``code``, nothing on stdout, one ``eventlite:`` line on stderr."""
    assert (code, "", 1, True) == (
        result.code,
        result.out,
        len(result.err.splitlines()),
        result.err.startswith("eventlite: "),
    ), result.err


# -- numbers past 64 bits ---------------------------------------------------------------------

TOO_BIG = [
    ["events", "--from-position", BIG],
    ["events", "--limit", BIG],
    ["events", "--from-position", HUGE],
    ["event-streams", "--limit", BIG],
    ["dlq", "list", "--limit", BIG],
    ["dlq", "show", BIG],
    ["dlq", "retry", BIG],
    ["dlq", "discard", BIG],
    ["sagas", "list", "--limit", BIG],
    ["dlq", "purge", "--older-than", "999999999999999999999w"],
    ["dlq", "purge", "--older-than", HUGE + "s"],
    ["events", "--interval", "1e400"],
    ["events", "--follow-timeout", "inf"],
    ["events", "--interval", "nan"],
    ["events", "--from-position", "-1"],
    ["events", "--since", "10000-01-01"],
]


@pytest.mark.parametrize("argv", TOO_BIG, ids=[" ".join(a)[:40] for a in TOO_BIG])
def test_numbers_no_store_can_hold_are_one_line(corrupt: CorruptStore, argv: list[str]) -> None:
    """A number past 2**63 - 1, a span past any date, or an infinite wait: one
    ``eventlite:`` line naming the argument, exit code 2, the store unchanged."""
    result = run("--db", corrupt.path, *argv, watch=[corrupt.path])
    _one_line(result)
    assert "argument" in result.err


@pytest.mark.parametrize(
    "argv",
    [
        ["trace", "9" * 30],
        ["trace", "#" + BIG],
        ["trace", "#0"],
        ["events", "--stream", "Order-1", "--since", "9999-12-31T23:59:59-23:59"],
        ["events", "--stream", "Order-1", "--until", "0001-01-01T00:00:00+23:59"],
    ],
)
def test_numbers_at_the_edges_find_nothing(corrupt: CorruptStore, argv: list[str]) -> None:
    """Positions past the log and times at the edges of the calendar are valid input
    that finds nothing: exit code 1, one line."""
    _one_line(run("--db", corrupt.path, *argv, watch=[corrupt.path]), 1)


def test_the_library_refuses_out_of_range_reads_with_value_error(corrupt: CorruptStore) -> None:
    """read_stream, read_all, find_records and record_at given numbers past 64 bits raise
    ValueError (not OverflowError): what the CLI reports in one line."""
    storage = cli.open_storage(str(corrupt.path), readonly=True)
    try:
        for call in (
            lambda: storage.events.read_stream("Order-1", 2**70),
            lambda: list(storage.events.read_all(2**70)),
            lambda: storage.events.find_records(2**70),
            lambda: storage.events.record_at(2**70),
        ):
            with pytest.raises(ValueError):
                call()
    finally:
        storage.close()


# -- rows eventlite never writes ----------------------------------------------------------------


def test_events_shows_every_corrupt_row(corrupt: CorruptStore) -> None:
    """``events`` over rows with dates out of range, deep JSON, BLOBs, text that is not
    UTF-8, numbers where text belongs: every row is one line, what could not be read is
    marked, exit code 0, nothing on stderr."""
    result = run("--db", corrupt.path, "events", watch=[corrupt.path])
    assert (0, "", corrupt.good + len(CORRUPT_ROWS)) == (
        result.code,
        result.err,
        len(result.lines),
    )
    marked = [line for line in result.lines if "[undecodable: " in line]
    assert len(marked) >= 12
    assert "[undecodable: timestamp: not a date: 1000000000000000000]" in result.out
    assert "data: JSON nested too deeply to parse (shown as stored)" in result.out


def test_events_json_is_valid_json_whatever_the_rows(corrupt: CorruptStore) -> None:
    """``events --json`` writes one valid JSON object per row; a lone surrogate comes out
    as its JSON escape; the fields that could not be read are named in ``undecodable``."""
    result = run("--db", corrupt.path, "events", "--json", watch=[corrupt.path])
    rows = [json.loads(line) for line in result.lines]
    assert (0, corrupt.good + len(CORRUPT_ROWS)) == (result.code, len(rows))
    by_stream = {str(r["stream_id"]): r for r in rows}
    assert "not a date: 1000000000000000000" == by_stream["Bad-0"]["undecodable"]["timestamp"]
    assert {"name": "caf\udcc3"} == by_stream["Bad-6"]["data"]
    assert "data" in by_stream["Bad-3"]["undecodable"]
    assert "undecodable" not in by_stream["Order-1"]


def test_events_decoded_by_an_app_warns_and_goes_on(corrupt: CorruptStore) -> None:
    """With ``--app``, rows the codec cannot decode are printed as stored after one
    warning line each; the good ones are decoded."""
    result = run(
        "--db", corrupt.path, "events", "--app", "tests.cli.conftest:registry", watch=[corrupt.path]
    )
    warnings = result.err.splitlines()
    assert (0, corrupt.good + len(CORRUPT_ROWS)) == (result.code, len(result.lines))
    assert len(warnings) >= 12
    assert all(w.startswith("eventlite: warning: #") for w in warnings)


@pytest.mark.parametrize(
    "argv",
    [
        ["event-streams"],
        ["event-streams", "--json"],
        ["info"],
        ["info", "--json"],
        ["trace", "bad-flow-3"],
        ["trace", "#5"],
        ["trace", "Bad-0"],
        ["trace", "bad-14"],
        ["dlq", "list"],
        ["dlq", "list", "--json"],
        ["dlq", "show", "3"],
        ["dlq", "show", "4", "--json"],
        ["dlq", "show", "5"],
        ["subscribers"],
        ["subscribers", "--json"],
        ["sagas", "list"],
    ],
)
def test_every_reading_command_reads_a_corrupt_store(
    corrupt: CorruptStore, argv: list[str]
) -> None:
    """Every reading command shows what it can of a store holding rows eventlite never
    writes (and dead letters of deep JSON, bytes, surrogates): exit code 0, nothing on
    stderr, the store unchanged."""
    result = run("--db", corrupt.path, *argv, watch=[corrupt.path])
    assert (0, "") == (result.code, result.err)
    if "--json" in argv:
        [json.loads(line) for line in result.lines]


# -- FIFOs, devices, directories -----------------------------------------------------------------


def _run_briefly(*argv: str) -> Result:
    """The CLI in a thread that must end within 20 s (a FIFO opened for reading would
    block forever)."""
    done: list[Result] = []
    thread = threading.Thread(target=lambda: done.append(run(*argv)), daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), f"{argv} hangs"
    return done[0]


@pytest.mark.parametrize("command", [["info"], ["events"], ["dlq", "purge", "--all"]])
def test_a_fifo_is_refused_not_waited_on(tmp_path: Path, command: list[str]) -> None:
    """A FIFO given as --db is refused at once in one line, for reading and writing
    commands alike."""
    fifo = tmp_path / "store.db"
    os.mkfifo(fifo)
    result = _run_briefly("--db", str(fifo), *command)
    _one_line(result)
    assert f"eventlite: {fifo}: is a FIFO, not an eventlite store\n" == result.err


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero", "/dev/urandom"])
def test_a_device_is_refused(device: str) -> None:
    """A character device given as --db is refused in one line."""
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    result = _run_briefly("--db", device, "info")
    assert f"eventlite: {device}: is a character device, not an eventlite store\n" == result.err


@pytest.fixture
def readonly_dir(corrupt: CorruptStore) -> Iterator[Path]:
    """A directory this process cannot write holding a copy of the store (no -wal), made
    read-only by its mode (or, run as root, whom modes do not stop, by reading as
    ``nobody``)."""
    base = Path(tempfile.mkdtemp(prefix="eventlite-ro-"))
    shutil.copy(corrupt.path, base / "store.db")
    os.chmod(base / "store.db", 0o644)
    os.chmod(base, 0o555)
    try:
        yield base
    finally:
        os.chmod(base, 0o755)
        shutil.rmtree(base)


def _as_nobody(*argv: str) -> Result:
    """The CLI run by a user that cannot write the directory (root drops to ``nobody``
    for the run; modules are imported first, which ``nobody`` could not read)."""
    if os.geteuid() != 0:
        return run(*argv)
    try:
        import pwd

        nobody = pwd.getpwnam("nobody").pw_uid
    except (ImportError, KeyError):
        pytest.skip("no user 'nobody' to drop to")
    os.seteuid(nobody)
    try:
        return run(*argv)
    finally:
        os.seteuid(0)


def test_a_readonly_directory_is_read(readonly_dir: Path, corrupt: CorruptStore) -> None:
    """A store in a directory that cannot be written (where SQLite cannot make the -shm
    file a WAL reader needs) is read as immutable when its -wal holds nothing: nothing
    can be writing it."""
    path = readonly_dir / "store.db"
    run("--db", corrupt.path, "info", "--json")  # imports what the run needs
    result = _as_nobody("--db", str(path), "info", "--json")
    assert (0, "", corrupt.good + len(CORRUPT_ROWS)) == (
        result.code,
        result.err,
        json.loads(result.out)["events"],
    )
    assert ["store.db"] == os.listdir(readonly_dir)


def test_a_readonly_directory_with_commits_in_the_wal_says_so(
    readonly_dir: Path, corrupt: CorruptStore
) -> None:
    """When the -wal beside it holds commits, the store cannot be read without writing
    the directory: one line says so (never "not a SQLite database"), exit code 2."""
    path = readonly_dir / "store.db"
    os.chmod(readonly_dir, 0o755)
    (readonly_dir / "store.db-wal").write_bytes(b"\0" * 64)
    os.chmod(readonly_dir, 0o555)
    run("--db", corrupt.path, "info")
    result = _as_nobody("--db", str(path), "info")
    _one_line(result)
    assert "not a SQLite database" not in result.err
    assert f"its directory {readonly_dir} cannot be written" in result.err


def test_an_unreadable_file_is_named(corrupt: CorruptStore, tmp_path: Path) -> None:
    """A file that cannot be read is reported as such, not as "not a SQLite database"."""
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    path = tmp_path / "locked.db"
    shutil.copy(corrupt.path, path)
    os.chmod(path, 0)
    result = run("--db", path, "info")
    _one_line(result)
    assert "permission denied" in result.err


def test_a_symlink_to_a_fifo_is_refused(tmp_path: Path) -> None:
    """What a link points to is what is checked."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    (tmp_path / "store.db").symlink_to(fifo)
    assert stat.S_ISFIFO(os.stat(tmp_path / "store.db").st_mode)
    _one_line(_run_briefly("--db", str(tmp_path / "store.db"), "event-streams"))


# -- any command line ---------------------------------------------------------------------------

_WRITING = {("dlq", "retry"), ("dlq", "retry-all"), ("dlq", "discard"), ("dlq", "purge")}
_SAFE_APPS = [
    "tests.cli.conftest:registry",
    "tests.cli.test_graph:build",
    "tests.cli.test_operations:rebuild_target",
    "tests.cli.conftest:make_corrupt_store",
    "tests.cli.conftest:nothing",
    "no_such_module_xyz:app",
    "nocolon",
    ":x",
    "tests.cli.conftest:",
]
"""What ``--app`` and ``graph`` may name in the random command lines: importing what a
random text names could run anything."""

HOSTILE = [
    BIG,
    HUGE,
    "-" + BIG,
    "0",
    "-1",
    "1",
    "2",
    "",
    " ",
    "nan",
    "inf",
    "-inf",
    "1e400",
    "#3",
    "#",
    "999999999999999999999w",
    "7d",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00+23:59",
    "caf\udcc3\udca9",
    "a\x00b",
    "Order-1",
    "bad-flow-3",
    "Bad-",
    "mailer",
    "saga-1",
    "raw",
    "dead",
    "-x",
    "--",
    "\u202e\ufeff",
]


def _shapes() -> list[tuple[list[str], list[argparse.Action]]]:
    """Each command line shape: the command words, and the actions it takes."""
    shapes = []
    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, sub in commands.choices.items():
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            for word, leaf in nested[0].choices.items():
                shapes.append(([name, word], list(leaf._actions)))
        else:
            shapes.append(([name], list(sub._actions)))
    return shapes


SHAPES = _shapes()
_VALUES = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(st.characters(exclude_categories=()), max_size=12),
    st.integers(-(2**70), 2**70).map(str),
)


def _valid(action: argparse.Action) -> st.SearchStrategy[str]:
    """Values the action takes, so that most command lines get past the parser."""
    from eventlite.cli import _format

    if action.choices is not None:
        return st.sampled_from([str(c) for c in action.choices])
    if action.type in (_format.positive, _format.seconds) or action.dest == "id":
        return st.integers(0, 30).map(str)
    if action.type is _format.moment:
        return st.sampled_from(["2023-11-14T22:13:20Z", "2030-01-01", "2000-01-01T00:00:00+05:00"])
    if action.type is _format.duration:
        return st.sampled_from(["0s", "90s", "7d", "2w"])
    return st.sampled_from(["Order-1", "Bad-", "bad-flow-3", "mailer", "raw", "saga-1", "#5"])


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    """A command line of one shape, its positionals and some of its options given values
    that are often hostile."""
    words, actions = draw(st.sampled_from(SHAPES))
    argv = list(words)
    for action in actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.dest == "db":
            continue
        safe = action.dest in ("app", "target")
        value = st.sampled_from(_SAFE_APPS) if safe else st.one_of(_valid(action), _VALUES)
        if not safe and draw(st.integers(0, 3)):
            value = _valid(action)
        if not action.option_strings:
            argv.append(draw(value))
        elif draw(st.booleans()):
            if action.nargs == 0:
                argv.append(action.option_strings[-1])
            else:
                argv += [action.option_strings[-1], draw(value)]
    if "--follow" in argv:
        argv += ["--follow-timeout", "0"]
    return argv


@given(argv=command_lines())
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_command_line_prints_a_traceback(
    corrupt: CorruptStore, tmp_path: Path, argv: list[str]
) -> None:
    """Whatever the command line (numbers past 64 bits, surrogates, NULs, empty text,
    dates at the ends of the calendar) over a store of corrupt rows: exit code 0, 1 or
    2, stderr only ``eventlite:`` lines, never a traceback or an unexpected error; a
    reading command leaves the store unchanged (writing ones run on a copy)."""
    path = corrupt.path
    if tuple(argv[:2]) in _WRITING or argv[:2] == ["projections", "rebuild"]:
        path = tmp_path / "copy.db"
        shutil.copy(corrupt.path, path)
    before = digest(corrupt.path)
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--db", str(path), *argv], stdout=out, stderr=err)
    lines = err.getvalue().splitlines()
    assert code in (0, 1, 2), (argv, err.getvalue())
    assert [] == [line for line in lines if not line.startswith("eventlite: ")], argv
    assert [] == [line for line in lines if "unexpected" in line or "Traceback" in line], argv
    assert before == digest(corrupt.path)


def test_ctrl_c_exits_130(corrupt: CorruptStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while a command runs ends it with exit code 130 and no traceback (while
    following the log, it is the way to stop: exit code 0)."""

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.CommandContext, "emit", interrupted)
    result = run("--db", corrupt.path, "events")
    assert (130, "") == (result.code, result.err)
    monkeypatch.undo()
    monkeypatch.setattr(_log, "_sleep", interrupted)
    assert 0 == run("--db", corrupt.path, "events", "--follow").code


def test_a_hostile_store_made_by_another_program(tmp_path: Path) -> None:
    """A SQLite file claiming to be an eventlite store (its application_id) whose tables
    are missing or of another shape: one line, exit code 2, never a traceback."""
    path = tmp_path / "fake.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 0x45564C54")
    conn.execute("PRAGMA user_version = 8")
    conn.execute("CREATE TABLE events (x)")
    conn.commit()
    conn.close()
    for argv in (["info"], ["events"], ["event-streams"], ["trace", "x"], ["dlq", "list"]):
        result = run("--db", path, *argv, watch=[path])
        _one_line(result)


def test_a_newer_store_is_refused(tmp_path: Path) -> None:
    """A store written by a newer eventlite is refused in one line, and left alone."""
    path = make_corrupt_store(tmp_path / "newer.db").path
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 999")
    conn.commit()
    conn.close()
    result = run("--db", path, "info", watch=[path])
    _one_line(result)
    assert "schema version 999, newer than" in result.err
