"""``python -m eventlite streams``: each stream processor's position, lag, watermark, open
windows, late events and error, read from the file without the application."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from eventlite.cli import EXIT_NOT_FOUND, EXIT_OK, main
from eventlite.sqlite import SQLiteStorage
from eventlite.streams import StreamRunner

from .conftest import Reading, codec
from .durable import append_batches
from .pipelines import TABLES, everything


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A file where the stream "everything" processed three readings, one of them late
    (its side output is the fourth event)."""
    file = tmp_path / "app.db"
    storage = SQLiteStorage(file, codec=codec)
    try:
        runner = StreamRunner(storage, codec)
        runner.add(everything(), tables=TABLES)
        append_batches(storage, [[Reading(1, "a", 100, 1), Reading(2, "a", 50, 1)]])
        append_batches(storage, [[Reading(3, "b", 101, 1)]])
        runner.catch_up()
        runner.close()
    finally:
        storage.close()
    return file


def test_the_table_shows_each_stream(path: Path) -> None:
    """One line per stream: state, position/head, lag, watermark, open, late, error."""
    code, out, _ = _run("--db", str(path), "streams")
    header, line = out.splitlines()
    assert EXIT_OK == code
    assert ["STREAM", "STATE", "POSITION", "LAG", "WATERMARK"] == header.split()[:5]
    cells = line.split()
    assert ["everything", "live", "4/4", "0", "-"] == cells[:5]  # Other has seen nothing
    assert ("4", "-") == (cells[6], cells[-1])  # late for 4 of the operators


def test_one_stream_in_detail_and_as_json(path: Path) -> None:
    """``streams NAME`` lists each source's watermark and each operator's counts;
    ``--json`` gives them as one object."""
    code, out, _ = _run("--db", str(path), "streams", "everything")
    assert EXIT_OK == code
    assert "position: 4 of 4 (lag 0)" in out
    assert "Reading  1970-01-01T00:00:00+00:00" in out
    assert "Other    -" in out
    assert "hopping-sum  6     1" in out
    code, out, _ = _run("--db", str(path), "streams", "--json")
    data = json.loads(out)
    assert (EXIT_OK, "everything", 4, None) == (code, data["name"], data["head"], data["error"])
    assert {"aggregate1": 1, "aggregate2": 1, "hopping-sum": 1, "join1": 1, "aggregate3": 0} == (
        data["late"]
    )


def test_nothing_found_exits_1(path: Path, tmp_path: Path) -> None:
    """An unknown name, or a file without streams, exits with 1 and says so."""
    code, _, err = _run("--db", str(path), "streams", "nope")
    assert (EXIT_NOT_FOUND, "eventlite: no stream processor named 'nope'\n") == (code, err)
    SQLiteStorage(tmp_path / "empty.db").close()
    code, _, err = _run("--db", str(tmp_path / "empty.db"), "streams")
    assert (EXIT_NOT_FOUND, "eventlite: no stream processor has state in this file\n") == (
        code,
        err,
    )
