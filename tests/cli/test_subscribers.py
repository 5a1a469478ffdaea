"""``subscribers``: per subscriber (and per segment, when a subscriber is split), the
checkpoint, head, lag, blocked keys, retries and dead letters, as the library reports
them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eventlite.cli import _status
from eventlite.relay import SubscriberStatus

from ._run import run
from .conftest import CorruptStore


def test_subscribers_show_checkpoint_lag_keys_and_dead_letters(corrupt: CorruptStore) -> None:
    """The failing mailer: its checkpoint against the head, its lag, its two dead
    letters and the streams held behind them; the JSON has room for segments (null)."""
    result = run("--db", corrupt.path, "subscribers")
    assert ["mailer", f"2/{corrupt.good + 18}", str(corrupt.good + 16), "0", "0", "2"] == (
        result.lines[1].split()[:6]
    )
    assert result.lines[1].endswith("Order-1, Order-2")
    (row,) = [json.loads(line) for line in run("--db", corrupt.path, "subscribers", "--json").lines]
    assert {
        "name": "mailer",
        "segment": None,
        "owner": None,
        "lease_expires_at": None,
        "checkpoint": 2,
        "lag": corrupt.good + 16,
        "dead_letters": 2,
        "blocked_keys": ["Order-1", "Order-2"],
    } == {
        k: row[k]
        for k in (
            "name",
            "segment",
            "owner",
            "lease_expires_at",
            "checkpoint",
            "lag",
            "dead_letters",
            "blocked_keys",
        )
    }


def test_segments_get_rows_of_their_own(
    corrupt: CorruptStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the library reports segments with their lease owners, each is a row with
    SEGMENT, OWNER and LEASE UNTIL columns, and the JSON carries them (a real split
    subscriber: tests/delivery/test_segments.py)."""

    def segmented(storage: Any, dlq: Any, name: str | None = None) -> list[SubscriberStatus]:
        common: Any = {"head": 20, "blocked_keys": (), "retrying": 0, "parked": 0}
        return [
            SubscriberStatus("mailer", 12, lag=8, dead_letters=0, updated_at=0.0, segment=0,
                             segments=2, owner="host-a:41", lease_expires_at=1_700_000_030.0,
                             **common),
            SubscriberStatus("mailer", 20, lag=0, dead_letters=1, updated_at=0.0, segment=1,
                             segments=2, owner=None, **common),
        ]  # fmt: skip

    monkeypatch.setattr(_status, "subscriber_status", segmented)
    result = run("--db", corrupt.path, "subscribers")
    assert ["SUBSCRIBER", "SEGMENT", "OWNER", "LEASE", "UNTIL", "CHECKPOINT"] == (
        result.lines[0].split()[:6]
    )
    assert ["mailer", "0", "host-a:41", "2023-11-14T22:13:50+00:00", "12/20", "8"] == (
        result.lines[1].split()[:6]
    )
    assert ["mailer", "1", "-", "-", "20/20", "0"] == result.lines[2].split()[:6]
    rows = [json.loads(line) for line in run("--db", corrupt.path, "subscribers", "--json").lines]
    assert [(0, "host-a:41"), (1, None)] == [(r["segment"], r["owner"]) for r in rows]
