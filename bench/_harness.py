"""Timing helpers and the result table shared by every benchmark suite."""

from __future__ import annotations

import gc
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path


@dataclass
class Row:
    """One measurement beside its baseline.

    ``higher_is_better`` says how to read the ratio; ``target`` is the goal from the issue,
    as text (for instance ``"ratio <= 1.0"``), and ``met`` whether this run reached it.
    """

    name: str
    value: float
    unit: str
    baseline: str = ""
    baseline_value: float | None = None
    target: str = ""
    met: bool | None = None
    higher_is_better: bool = False

    @property
    def ratio(self) -> float | None:
        if not self.baseline_value:
            return None
        return self.value / self.baseline_value


@contextmanager
def workdir() -> Iterator[Path]:
    """A fresh temporary folder for a benchmark's files, removed afterwards.

    On disk (``BENCH_DIR``, else the system's temp folder), not ``/dev/shm``: rows with
    ``synchronous="full"`` must measure real fsyncs."""
    path = Path(tempfile.mkdtemp(prefix="eventlite-bench-", dir=os.environ.get("BENCH_DIR")))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def per_call_us(fn: Callable[[], object], number: int, repeat: int = 5) -> float:
    """Best-of-``repeat`` microseconds per call of ``fn`` over ``number`` calls."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            elapsed = time.perf_counter() - t0
        finally:
            gc.enable()
        best = min(best, elapsed)
    return best / number * 1e6


def rate(fn: Callable[[], int], repeat: int = 3) -> float:
    """Best-of-``repeat`` items per second; ``fn`` does the work and returns how many items."""
    best = 0.0
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        n = fn()
        elapsed = time.perf_counter() - t0
        best = max(best, n / elapsed)
    return best


def machine() -> str:
    """One line naming the machine, Python and SQLite versions, and the date."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"SQLite {sqlite3.sqlite_version}; {datetime.now(timezone.utc):%Y-%m-%d}"
    )


def print_rows(title: str, rows: list[Row], out: object = sys.stdout) -> None:
    """Print a suite's rows as a Markdown table."""
    lines = [
        f"### {title}",
        "",
        "| benchmark | eventlite | baseline | baseline value | ratio | target | met |",
        "| --- | ---: | --- | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else ""
        base = f"{r.baseline_value:,.2f} {r.unit}" if r.baseline_value is not None else ""
        met = "" if r.met is None else ("yes" if r.met else "NO")
        lines.append(
            f"| {r.name} | {r.value:,.2f} {r.unit} | {r.baseline} | {base} | {ratio} "
            f"| {r.target} | {met} |"
        )
    print("\n".join(lines) + "\n", file=out)  # type: ignore[call-overload]
