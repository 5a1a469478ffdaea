"""Running the CLI in-process, and checking that it left files alone."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from pathlib import Path

import attrs

from eventlite import cli


def digest(path: Path) -> str:
    """The file's SHA-256, or a marker when it does not exist."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "<none>"


@attrs.frozen
class Result:
    """One run of the CLI."""

    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        """Standard output, line by line."""
        return self.out.splitlines()


def run(*argv: str | Path, watch: Sequence[Path] = ()) -> Result:
    """Run the CLI in-process; every watched file must come out byte-for-byte unchanged."""
    before = {p: digest(p) for p in watch}
    out, err = io.StringIO(), io.StringIO()
    code = cli.main([str(a) for a in argv], stdout=out, stderr=err)
    assert before == {p: digest(p) for p in watch}
    return Result(code, out.getvalue(), err.getvalue())
