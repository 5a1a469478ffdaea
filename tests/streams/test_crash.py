"""Exactly-once under SIGKILL: a child process runs a stream over a prepared log and is
killed at random moments, again and again, then run to the end. The events it appended,
its table rows and its dead letters are those of an uninterrupted run over a copy of the
same log: no window lost, none emitted twice, nothing appended twice. After every kill,
what is stored is a prefix of the uninterrupted run's output."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from eventlite.sqlite import SQLiteStorage
from eventlite.streams import StreamRunner

from .conftest import Other, Reading, codec
from .durable import stored_dead, stored_rows
from .pipelines import TABLES, everything

ROOT = Path(__file__).resolve().parents[2]
TABLE_NAMES = ("hopping", "sessions", "pairs", "names")
OUTPUT_TYPES = ["test.streams.Total", "test.streams.Late"]
BATCH = 20

# Runs the stream "everything" over the file in small batches (so a kill lands mid-run),
# with a fixed owner (a restarted child takes its lease back at once). Prints "ready" once
# its runner is made, "done" when it has caught up with the log.
CHILD = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from eventlite.sqlite import SQLiteStorage
from eventlite.streams import StreamRunner
from tests.streams.conftest import codec
from tests.streams.pipelines import TABLES, everything

storage = SQLiteStorage(sys.argv[1], codec=codec, synchronous="normal")
runner = StreamRunner(storage, codec, batch_size={BATCH}, owner="crash-child")
runner.add(everything(), tables=TABLES)
print("ready", flush=True)
runner.catch_up()
print("done", flush=True)
runner.close()
storage.close()
"""


def _prepare(path: Path, n: int, seed: int) -> None:
    """A log of ``n`` readings and others, out of order by up to 15 ticks (some late)."""
    rnd = random.Random(seed)
    storage = SQLiteStorage(path, codec=codec, synchronous="normal")
    try:
        batch = []
        for i in range(1, n + 1):
            kind = Reading if rnd.random() < 0.7 else Other
            t = i * 3 - rnd.randrange(16) - (40 if rnd.random() < 0.01 else 0)
            batch.append(kind(i, rnd.choice("abc"), max(t, 0), rnd.randrange(-3, 9)))
            if len(batch) == 97:
                storage.events.append_many([(f"in-{e.key}", [e]) for e in batch])
                batch = []
        if batch:
            storage.events.append_many([(f"in-{e.key}", [e]) for e in batch])
    finally:
        storage.close()


def _outcome(path: Path) -> tuple[Any, ...]:
    """The stored outputs: appended events (id, stream, message) in log order, rows,
    dead letters."""
    storage = SQLiteStorage(path, codec=codec)
    try:
        events = [
            (e.id, e.stream_id, e.message) for e in storage.events.read_all(types=OUTPUT_TYPES)
        ]
        return events, stored_rows(storage, TABLE_NAMES), stored_dead(storage, "everything")
    finally:
        storage.close()


def _uninterrupted(path: Path) -> tuple[Any, ...]:
    storage = SQLiteStorage(path, codec=codec, synchronous="normal")
    try:
        runner = StreamRunner(storage, codec, batch_size=BATCH, owner="reference")
        runner.add(everything(), tables=TABLES)
        runner.catch_up()
        (status,) = runner.status()
        assert 0 == status.lag
        runner.close()
    finally:
        storage.close()
    return _outcome(path)


def _start(path: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    # The first line is read from the pipe itself, a byte at a time: a buffered readline
    # could also take "done" (a short final run prints both at once), and communicate(),
    # which reads the pipe directly, would then never see it.
    fd, raw = child.stdout.fileno(), b""
    while not raw.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            break
        raw += chunk
    line = raw.decode()
    if line.strip() != "ready":
        child.kill()
        _, err = child.communicate(timeout=30)
        raise AssertionError(f"the child did not start: {line!r}\n{err[-3000:]}")
    return child


def _is_prefix(part: tuple[Any, ...], whole: tuple[Any, ...]) -> bool:
    events, _, dead = part
    return events == whole[0][: len(events)] and dead == whole[2][: len(dead)]  # type: ignore[no-any-return]


def _kill_and_restart(tmp_path: Path, n: int, kills: int, seed: int) -> None:
    path = tmp_path / "log.db"
    _prepare(path, n, seed)
    reference = tmp_path / "reference.db"
    shutil.copy(path, reference)
    expected = _uninterrupted(reference)
    assert expected[0] and expected[2], "the workload should append events and dead letters"
    rnd = random.Random(seed)
    killed = 0
    for _ in range(kills * 3):
        child = _start(path)
        time.sleep(rnd.uniform(0.0, 0.4))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            killed += 1
        child.wait(30)
        assert _is_prefix(_outcome(path), expected), "a kill left output no run makes"
        if killed >= kills:
            break
    child = _start(path)
    out, err = child.communicate(timeout=120)
    assert 0 == child.returncode, err[-3000:]
    assert "done" in out
    assert killed >= 1, "no run was killed before it finished: make the log longer"
    assert expected == _outcome(path)


def test_killed_runs_end_with_the_uninterrupted_result(tmp_path: Path) -> None:
    """A few SIGKILLs at random moments of a run over 2,000 events, then a run to the
    end: the same appended events (ids included), rows and dead letters as a run that was
    never stopped."""
    _kill_and_restart(tmp_path, 2000, kills=3, seed=7)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_killed_runs_end_with_the_uninterrupted_result_many_times(
    tmp_path: Path, seed: int
) -> None:
    """The same with 20,000 events and 25 kills per run, for several seeds."""
    _kill_and_restart(tmp_path, 20_000, kills=25, seed=seed)
