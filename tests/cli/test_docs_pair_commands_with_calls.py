"""The CLI and the library mirror each other: docs/cli.md pairs every command (and every
subcommand) with the Python call it makes, and documents the exit codes main() returns."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from eventlite import cli

PAGE = Path(__file__).resolve().parent.parent.parent / "docs" / "cli.md"


def _command_words() -> list[str]:
    """Every command line the CLI accepts, down to subcommands: ``info``, ``dlq list``."""
    words: list[str] = []
    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, sub in commands.choices.items():
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            words.extend(f"{name} {word}" for word in nested[0].choices)
        else:
            words.append(name)
    return words


def _table_rows() -> dict[str, str]:
    """The rows of the page's command table: the command's words -> the Python call."""
    rows = {}
    for line in PAGE.read_text().splitlines():
        match = re.match(r"\| \[`([^`]+)`\]\([^)]*\) \| [^|]+ \| (.+) \|$", line)
        if match:
            words = " ".join(w for w in match.group(1).split() if not w.isupper())
            rows[words] = match.group(2)
    return rows


def test_every_command_is_paired_with_a_python_call() -> None:
    """Each command and subcommand has a row in the table of docs/cli.md naming the
    library call it makes, and each row is a command that exists."""
    rows = _table_rows()
    assert sorted(_command_words()) == sorted(rows)
    assert [] == [words for words, call in rows.items() if "`" not in call]


def test_every_command_has_a_section() -> None:
    """Each command's name heads a section of the page."""
    headings = re.findall(r"^## `([a-z-]+)", PAGE.read_text(), re.M)
    assert set(cli.commands()) <= set(headings)


def test_the_exit_codes_are_documented() -> None:
    """The page's exit-code table lists exactly the codes main() uses."""
    codes = re.findall(r"^\| ([0-9]) \| ", PAGE.read_text(), re.M)
    assert [str(cli.EXIT_OK), str(cli.EXIT_NOT_FOUND), str(cli.EXIT_USAGE)] == codes
