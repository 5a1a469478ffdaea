"""The schema of an eventlite SQLite file: every table, in ordered migration steps.

The schema is versioned with ``PRAGMA user_version`` and marked as eventlite's with
``PRAGMA application_id``. :data:`MIGRATIONS` is the ordered list of steps; step ``n``
(1-based) brings a file from version ``n - 1`` to ``n``. To add tables, append a
:class:`Migration` to the list: never edit or reorder a step that has shipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import attrs

if TYPE_CHECKING:
    import sqlite_utils

__all__ = ["APPLICATION_ID", "MIGRATIONS", "SCHEMA_VERSION", "Migration"]

APPLICATION_ID: Final = 0x45564C54
"""``PRAGMA application_id`` of an eventlite file (the bytes ``EVLT``)."""


@attrs.frozen
class Migration:
    """One step of the schema: what it adds, and the function that adds it."""

    name: str
    """A short name, shown in errors and logs."""
    apply: Callable[[sqlite_utils.Database], None]
    """Creates tables and indexes, inside the migration's transaction."""


def _create_event_store(db: sqlite_utils.Database) -> None:
    db.table("events").create(
        {
            "position": int,
            "stream_id": str,
            "version": int,
            "id": str,
            "type": str,
            "schema_version": int,
            "data": str,
            "correlation_id": str,
            "causation_id": str,
            "user_id": str,
            "headers": str,
            "timestamp": int,
        },
        pk="position",
        not_null=[
            "stream_id",
            "version",
            "id",
            "type",
            "schema_version",
            "data",
            "correlation_id",
            "timestamp",
        ],
    )
    db.table("events").create_index(
        ["stream_id", "version"], index_name="events_stream_version", unique=True
    )
    db.table("events").create_index(["id"], index_name="events_id", unique=True)
    db.table("streams").create(
        {"stream_id": str, "version": int}, pk="stream_id", not_null=["version"]
    )


def _create_snapshots(db: sqlite_utils.Database) -> None:
    db.table("snapshots").create(
        {"stream_id": str, "version": int, "fingerprint": str, "state": str},
        pk="stream_id",
        not_null=["version", "fingerprint", "state"],
    )


def _create_delivery(db: sqlite_utils.Database) -> None:
    # Durable subscribers: one checkpoint per subscriber over the events table; the
    # inbox of message ids handled through a unit of work; deliveries waiting for a
    # delayed retry (due_at set) or parked behind one (due_at NULL); idempotency keys.
    db.table("subscriber_checkpoints").create(
        {"name": str, "position": int, "updated_at": float},
        pk="name",
        not_null=["position", "updated_at"],
    )
    db.table("inbox").create(
        {"subscriber": str, "message_id": str, "handled_at": float},
        pk=("subscriber", "message_id"),
        not_null=["handled_at"],
    )
    db.table("inbox").create_index(["handled_at"], index_name="inbox_handled_at")
    db.table("delivery_retries").create(
        {
            "subscriber": str,
            "position": int,
            "key": str,
            "attempts": int,
            "due_at": float,
            "first_failed_at": float,
            "error": str,
        },
        pk=("subscriber", "position"),
        not_null=["key", "attempts"],
    )
    db.table("delivery_retries").create_index(
        ["subscriber", "key", "position"], index_name="delivery_retries_key"
    )
    db.table("delivery_retries").create_index(
        ["subscriber", "due_at"], index_name="delivery_retries_due"
    )
    db.table("idempotency_keys").create(
        {
            "key": str,
            "state": str,
            "result": str,
            "owner": str,
            "started_at": float,
            "lease_until": float,
            "expires_at": float,
        },
        pk="key",
        not_null=["state", "owner", "started_at"],
    )
    db.table("idempotency_keys").create_index(
        ["expires_at"], index_name="idempotency_keys_expires_at"
    )


def _create_dead_letters_and_queues(db: sqlite_utils.Database) -> None:
    # AUTOINCREMENT: a dead letter id shown to an operator, and a queue row's seq inside
    # a receipt, must never be handed out again after the row is deleted.
    db.execute(
        """
        CREATE TABLE dead_letters (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            source TEXT NOT NULL,
            key TEXT,
            queue_group TEXT,
            status TEXT NOT NULL,
            message NOT NULL,
            type_name TEXT,
            message_id TEXT,
            position INTEGER,
            error_type TEXT,
            error_message TEXT,
            traceback TEXT,
            attempts INTEGER NOT NULL,
            first_failed_at REAL,
            last_failed_at REAL,
            created_at REAL NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX dead_letters_key ON dead_letters (source, key, id)")
    db.execute("CREATE INDEX dead_letters_status ON dead_letters (source, status, id)")
    db.execute(
        """
        CREATE TABLE queue_messages (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            queue TEXT NOT NULL,
            id TEXT NOT NULL,
            body NOT NULL,
            queue_group TEXT,
            not_before REAL NOT NULL,
            visible_at REAL,
            expires_at REAL,
            sent_at REAL NOT NULL,
            receives INTEGER NOT NULL DEFAULT 0,
            in_flight INTEGER NOT NULL DEFAULT 0,
            error_type TEXT,
            error_message TEXT,
            traceback TEXT,
            first_failed_at REAL,
            last_failed_at REAL
        )
        """
    )
    # visible_at is NULL for a message waiting behind the head of its FIFO group
    db.execute(
        "CREATE INDEX queue_messages_ready ON queue_messages (queue, visible_at, seq) "
        "WHERE visible_at IS NOT NULL"
    )
    db.execute(
        "CREATE INDEX queue_messages_group ON queue_messages (queue, queue_group, seq) "
        "WHERE queue_group IS NOT NULL"
    )
    db.execute(
        "CREATE INDEX queue_messages_expiry ON queue_messages (queue, expires_at) "
        "WHERE expires_at IS NOT NULL"
    )
    db.execute("CREATE INDEX queue_messages_sent ON queue_messages (queue, sent_at)")
    db.execute(
        """
        CREATE TABLE queue_dedup (
            queue TEXT NOT NULL,
            dedup_id TEXT NOT NULL,
            message_id TEXT NOT NULL,
            until REAL NOT NULL,
            PRIMARY KEY (queue, dedup_id)
        ) WITHOUT ROWID
        """
    )
    db.execute("CREATE INDEX queue_dedup_until ON queue_dedup (queue, until)")


def _create_projections_and_sagas(db: sqlite_utils.Database) -> None:
    # One row per projection: the position its read model reflects (moved in the same
    # transaction as the read-model writes) and whether a rebuild is under way. One row per
    # saga instance, rewritten after every step; ``revision`` lets a writer notice that
    # another one moved the saga first.
    db.table("projections").create(
        {
            "name": str,
            "mode": str,
            "position": int,
            "status": str,
            "error": str,
            "updated_at": float,
            "rebuilt_at": float,
        },
        pk="name",
        not_null=["mode", "position", "status", "updated_at"],
    )
    db.table("sagas").create(
        {
            "id": str,
            "name": str,
            "status": str,
            "data": str,
            "step_index": int,
            "completed": str,
            "compensated": str,
            "compensation_errors": str,
            "failed_step": str,
            "error": str,
            "revision": int,
            "started_at": float,
            "updated_at": float,
            "finished_at": float,
        },
        pk="id",
        not_null=[
            "name",
            "status",
            "data",
            "step_index",
            "completed",
            "compensated",
            "compensation_errors",
            "revision",
            "started_at",
            "updated_at",
        ],
    )
    db.table("sagas").create_index(["status", "name"], index_name="sagas_status")


def _create_processes(db: sqlite_utils.Database) -> None:
    # One row per process-manager instance (a manager's name and a correlation key): its
    # state as JSON, running or done, and a revision a writer checks. One row per scheduled
    # timeout: the message to record in the log when it falls due (fired_at set then); the
    # row is deleted when the process handles the fired message, cancels it, or completes.
    db.table("process_instances").create(
        {
            "process": str,
            "key": str,
            "status": str,
            "state": str,
            "revision": int,
            "started_at": float,
            "updated_at": float,
            "finished_at": float,
        },
        pk=("process", "key"),
        not_null=["status", "state", "revision", "started_at", "updated_at"],
    )
    db.table("process_instances").create_index(
        ["process", "status"], index_name="process_instances_status"
    )
    db.table("process_timeouts").create(
        {
            "id": str,
            "process": str,
            "key": str,
            "name": str,
            "type": str,
            "schema_version": int,
            "data": str,
            "correlation_id": str,
            "causation_id": str,
            "due_at": float,
            "fired_at": float,
            "created_at": float,
        },
        pk="id",
        not_null=[
            "process",
            "key",
            "type",
            "schema_version",
            "data",
            "correlation_id",
            "due_at",
            "created_at",
        ],
    )
    db.execute(
        "CREATE INDEX process_timeouts_due ON process_timeouts (process, due_at) "
        "WHERE fired_at IS NULL"
    )
    db.execute("CREATE INDEX process_timeouts_key ON process_timeouts (process, key)")
    db.execute(
        "CREATE UNIQUE INDEX process_timeouts_name ON process_timeouts (process, key, name) "
        "WHERE name IS NOT NULL"
    )


def _create_leases(db: sqlite_utils.Database) -> None:
    # One row per lease: its owner (NULL once released; the row stays so that
    # generations only ever grow), the tenure's generation and when it expires.
    db.table("leases").create(
        {"name": str, "owner": str, "generation": int, "expires_at": float},
        pk="name",
        not_null=["generation"],
    )


def _create_claims(db: sqlite_utils.Database) -> None:
    # One row per claimed value: who holds it. WITHOUT ROWID: looked up only by its key.
    db.execute(
        "CREATE TABLE claims (scope TEXT NOT NULL, value TEXT NOT NULL, owner TEXT NOT NULL, "
        "PRIMARY KEY (scope, value)) WITHOUT ROWID"
    )
    db.execute("CREATE INDEX claims_owner ON claims (scope, owner)")


def _create_stream_processors(db: sqlite_utils.Database) -> None:
    # One row per stream processor (eventlite.streams): its checkpoint, live or rebuilding,
    # and a summary of its state for status pages (JSON objects). Its state entries, one
    # row each, JSON values by (stream, operator, key); WITHOUT ROWID: read by their key
    # or by the prefix (stream, operator) only. Not ``streams``: that table is the event
    # streams' versions.
    db.execute(
        """
        CREATE TABLE stream_processors (
            name TEXT NOT NULL PRIMARY KEY,
            position INTEGER NOT NULL,
            status TEXT NOT NULL,
            watermarks TEXT NOT NULL,
            open TEXT NOT NULL,
            late TEXT NOT NULL,
            error TEXT,
            updated_at REAL NOT NULL,
            rebuilt_at REAL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE stream_processor_state (
            stream TEXT NOT NULL,
            operator TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (stream, operator, key)
        ) WITHOUT ROWID
        """
    )


MIGRATIONS: list[Migration] = [
    Migration("event store: events, streams", _create_event_store),
    Migration("aggregate snapshots", _create_snapshots),
    Migration("durable delivery: checkpoints, inbox, retries, idempotency keys", _create_delivery),
    Migration("dead letters and work queues", _create_dead_letters_and_queues),
    Migration("projection checkpoints and saga instances", _create_projections_and_sagas),
    Migration("process managers: instances and timeouts", _create_processes),
    Migration("leases: who owns each piece of background work", _create_leases),
    Migration("unique claims across aggregates", _create_claims),
    Migration("stream processors: state entries and status", _create_stream_processors),
]
"""Every schema step, in order. Append new steps at the end; never change a shipped one."""

SCHEMA_VERSION: Final = len(MIGRATIONS)
"""The ``user_version`` this eventlite writes; a file with a higher one is refused."""
