"""The SQLite store under SIGKILL and under two processes appending to one file."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from eventlite import Codec, Registry
from eventlite.messages import event
from eventlite.sqlite import SQLiteEventStore

registry = Registry()


@event(registry=registry, name="crash.Tick")
class Tick:
    batch: str
    index: int
    size: int


# Appends batches of 1-4 events from several threads, printing one line per committed
# append: "<batch> <first position> <last position>". A count of -1 runs until killed.
CHILD = """
import sys, threading
from eventlite import Codec, Registry
from eventlite.sqlite import SQLiteEventStore
from eventlite.messages import event

registry = Registry()

@event(registry=registry, name="crash.Tick")
class Tick:
    batch: str
    index: int
    size: int

path, threads, tag, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
store = SQLiteEventStore(path, codec=Codec(registry))
if count >= 0:
    sys.stdin.readline()  # wait for "go", so that sibling processes start together
out = threading.Lock()

def work(t):
    stream = f"{tag}-{t}"
    version = store.stream_version(stream)
    i = 0
    while count < 0 or i < count:
        size = 1 + (i + t) % 4
        batch = f"{stream}-{i}"
        recorded = store.append(
            stream, [Tick(batch, k, size) for k in range(size)], expected_version=version
        )
        version += size
        with out:
            sys.stdout.write(f"{batch} {recorded[0].position} {recorded[-1].position}\\n")
            sys.stdout.flush()
        i += 1

workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
store.close()
"""


def _child(path: Path, threads: int, tag: str, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(threads), tag, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run_together(children: list[subprocess.Popen[str]], timeout: float) -> list[list[str]]:
    """Tell every child to start, then collect their stdout lines."""
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=timeout)
        assert 0 == child.returncode, err
        outputs.append(out.splitlines(keepends=True))
    return outputs


def _reported(lines: list[str]) -> dict[str, tuple[int, int]]:
    out = {}
    for line in lines:
        if not line.endswith("\n"):
            continue  # cut off by the kill
        batch, first, last = line.split()
        out[batch] = (int(first), int(last))
    return out


def _check_file(path: Path, reported: dict[str, tuple[int, int]]) -> int:
    """Integrity, gap-free positions, whole batches, every reported append present."""
    raw = sqlite3.connect(path)
    try:
        assert [("ok",)] == raw.execute("PRAGMA integrity_check").fetchall()
    finally:
        raw.close()
    with SQLiteEventStore(path, codec=Codec(registry)) as store:
        log = list(store.read_all())
        head = store.head_position()
        streams = {e.stream_id for e in log}
        for stream in streams:
            versions = [e.version for e in store.read_stream(str(stream))]
            assert list(range(1, len(versions) + 1)) == versions
    assert list(range(1, head + 1)) == [e.position for e in log]
    batches: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for e in log:
        batches[e.message.batch].append((e.message.index, e.message.size, e.position or 0))
    for batch, rows in batches.items():
        size = rows[0][1]
        first = rows[0][2]
        expected = [(k, size, first + k) for k in range(size)]
        assert (batch, expected) == (batch, rows)
    for batch, (first, last) in reported.items():
        rows = batches.get(batch, [])
        assert (batch, first, last) == (batch, rows[0][2], rows[-1][2])
    return len(log)


def _kill_at_random(path: Path, rng: random.Random, max_lines: int) -> tuple[int, int]:
    """Start an appending child, SIGKILL it after a random number of appends, check."""
    target = rng.randint(1, max_lines)
    child = _child(path, threads=rng.choice([1, 4]), tag=f"k{rng.randrange(10**6)}", count=-1)
    assert child.stdout is not None
    lines = []
    try:
        for line in child.stdout:
            lines.append(line)
            if len(lines) >= target:
                break
        os.kill(child.pid, signal.SIGKILL)
        lines.extend(child.stdout.readlines())
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
        assert child.stderr is not None
        errors = child.stderr.read()
        child.stderr.close()
    assert len(lines) >= target, errors
    reported = _reported(lines)
    return len(reported), _check_file(path, reported)


def test_sigkill_loses_no_committed_append(tmp_path: Path) -> None:
    """A child killed with SIGKILL while appending leaves an intact file that holds every
    append it reported, whole, and no partial batch; appending goes on after reopening."""
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    path = tmp_path / "crash.db"
    reported, stored = _kill_at_random(path, rng, max_lines=80)
    assert reported <= stored, f"seed {seed}"
    reported2, stored2 = _kill_at_random(path, rng, max_lines=80)
    assert reported + reported2 <= stored2, f"seed {seed}"


@pytest.mark.slow
def test_sigkill_repeatedly(tmp_path: Path) -> None:
    """Twenty kills at random moments into the same file: it stays intact and complete."""
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    path = tmp_path / "crash.db"
    for _ in range(20):
        _kill_at_random(path, rng, max_lines=600)


@pytest.mark.parametrize("threads", [1, 3])
def test_two_processes_append_to_one_file(tmp_path: Path, threads: int) -> None:
    """Two processes appending to one file at once lose nothing; positions stay gap-free
    and each process sees its own positions in increasing order."""
    path = tmp_path / "shared.db"
    SQLiteEventStore(path, codec=Codec(registry)).close()
    count = 40
    children = [_child(path, threads, tag, count) for tag in ("p", "q")]
    outputs = _run_together(children, timeout=120)
    reported: dict[str, tuple[int, int]] = {}
    for lines in outputs:
        assert threads * count == len(lines)
        reported.update(_reported(lines))
    stored = _check_file(path, reported)
    batch_sizes = sum(1 + (i + t) % 4 for t in range(threads) for i in range(count))
    assert 2 * batch_sizes == stored


@pytest.mark.slow
def test_two_processes_many_rounds(tmp_path: Path) -> None:
    """Four processes of four threads each, appending 300 batches per thread, lose
    nothing."""
    path = tmp_path / "shared.db"
    SQLiteEventStore(path, codec=Codec(registry)).close()
    children = [_child(path, 4, tag, 300) for tag in "pqrs"]
    reported: dict[str, tuple[int, int]] = {}
    for lines in _run_together(children, timeout=600):
        reported.update(_reported(lines))
    assert 4 * 4 * 300 == len(reported)
    _check_file(path, reported)
