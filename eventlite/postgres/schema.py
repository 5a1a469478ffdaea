"""The schema of an eventlite PostgreSQL store: every table, in ordered migration steps.

Every table lives in one schema (``public`` unless ``PostgresStorage(schema=...)`` names
another), marked as eventlite's by the ``eventlite_schema`` table, which holds the marker
and the version. :data:`MIGRATIONS` is the ordered list of steps; step ``n`` (1-based)
brings a schema from version ``n - 1`` to ``n``. To add tables, append a :class:`Migration`
to the list: never edit or reorder a step that has shipped.

Statements are unqualified: they run with the store's schema first on the
``search_path``, so they create, and later find, the tables there.
"""

from __future__ import annotations

from typing import Final

import attrs

__all__ = ["MARKER", "MIGRATIONS", "SCHEMA_VERSION", "VERSION_TABLE", "Migration"]

MARKER: Final = "eventlite"
"""What the ``marker`` column of :data:`VERSION_TABLE` holds in an eventlite schema."""

VERSION_TABLE: Final = "eventlite_schema"
"""The table holding the marker and the schema version (one row)."""


@attrs.frozen
class Migration:
    """One step of the schema: what it adds, and the statements that add it."""

    name: str
    """A short name, shown in errors and logs."""
    statements: tuple[str, ...]
    """DDL run in order inside the migration's transaction."""


# The append function: one call appends a whole group commit (several callers' appends,
# each of one or more stream parts), so a batch costs one round trip and a handful of
# statements. It first takes the log's lock (a transaction-level advisory lock, the
# p_lock key): from there to the commit every appending transaction of every process is
# serialized, which is what keeps positions gap-free and in commit order. The head and
# the stream versions are read after the lock, so they include every commit before it.
_APPEND_FUNCTION = r"""
CREATE FUNCTION eventlite_append(
    p_lock bigint,
    p_channel text,
    p_known text[],
    p_appends integer[],
    p_idx integer[],
    p_expected bigint[],
    p_counts integer[],
    p_parts integer[],
    p_offsets integer[],
    p_ids text[],
    p_types text[],
    p_schema_versions integer[],
    p_data text[],
    p_correlations text[],
    p_causations text[],
    p_users text[],
    p_headers text[],
    p_timestamps bigint[],
    OUT failed integer[],
    OUT actual bigint[],
    OUT versions bigint[],
    OUT positions bigint[]
) LANGUAGE plpgsql AS $fn$
-- p_known: the distinct streams of the batch. Per part: p_appends numbers the appends
-- from 1, nondecreasing; p_idx is the part's stream in p_known; p_expected a version
-- >= 0, -1 ANY, -2 NO_STREAM, -3 STREAM_EXISTS; p_counts its events. Per event: p_parts
-- and p_offsets, its part and its 1-based place in it, then the columns. Out: per append,
-- NULL or the first part whose expected version failed, and that stream's version
-- (nothing of such an append is written); per part, the stream version and the log
-- position just before its first event.
DECLARE
    n_parts integer := coalesce(cardinality(p_idx), 0);
    first_head bigint;
    head bigint;
    known_v bigint[];
    start_v bigint[];
    ok boolean[];
    trial bigint[];
    i integer := 1;
    j integer;
    k integer;
    a integer;
    v bigint;
    want bigint;
    bad integer;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock);
    SELECT (SELECT coalesce(max(position), 0) FROM events),
           coalesce(array_agg(coalesce(st.version, 0) ORDER BY u.ord), '{}')
      INTO head, known_v
      FROM unnest(p_known) WITH ORDINALITY AS u(sid, ord)
      LEFT JOIN streams AS st ON st.stream_id = u.sid;
    first_head := head;
    start_v := known_v;
    failed := array_fill(NULL::integer, ARRAY[coalesce(p_appends[n_parts], 0)]);
    actual := failed;
    versions := array_fill(NULL::bigint, ARRAY[n_parts]);
    positions := versions;
    ok := array_fill(false, ARRAY[n_parts]);
    WHILE i <= n_parts LOOP
        a := p_appends[i];
        j := i;
        WHILE j <= n_parts AND p_appends[j] = a LOOP
            j := j + 1;
        END LOOP;
        trial := known_v;
        bad := NULL;
        FOR k IN i .. j - 1 LOOP
            v := trial[p_idx[k]];
            want := p_expected[k];
            IF NOT (want = -1 OR (want = -2 AND v = 0) OR (want = -3 AND v > 0) OR want = v) THEN
                bad := k;
                EXIT;
            END IF;
            trial[p_idx[k]] := v + p_counts[k];
        END LOOP;
        IF bad IS NULL THEN
            FOR k IN i .. j - 1 LOOP
                versions[k] := known_v[p_idx[k]];
                known_v[p_idx[k]] := versions[k] + p_counts[k];
                positions[k] := head;
                head := head + p_counts[k];
                ok[k] := true;
            END LOOP;
        ELSE
            failed[a] := bad;
            actual[a] := v;
        END IF;
        i := j;
    END LOOP;
    IF head > first_head THEN
        WITH written AS (
            INSERT INTO events (position, stream_id, version, id, type, schema_version, data,
                                correlation_id, causation_id, user_id, headers, "timestamp")
            SELECT positions[e.part] + e.off, p_known[p_idx[e.part]], versions[e.part] + e.off,
                   e.id, e.typ, e.sv, e.body, e.corr, e.caus, e.usr, e.hdrs, e.ts
              FROM unnest(p_parts, p_offsets, p_ids, p_types, p_schema_versions, p_data,
                          p_correlations, p_causations, p_users, p_headers, p_timestamps)
                   AS e(part, off, id, typ, sv, body, corr, caus, usr, hdrs, ts)
             WHERE ok[e.part]
        )
        INSERT INTO streams (stream_id, version)
        SELECT t.sid, t.ver FROM unnest(p_known, known_v, start_v) AS t(sid, ver, was)
         WHERE t.ver <> t.was
        ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version;
        PERFORM pg_notify(p_channel, head::text);
    END IF;
END
$fn$
"""

# The same for the commonest batch, one append to one stream, with fewer steps.
_APPEND_ONE_FUNCTION = r"""
CREATE FUNCTION eventlite_append_one(
    p_lock bigint,
    p_channel text,
    p_stream text,
    p_expected bigint,
    p_ids text[],
    p_types text[],
    p_schema_versions integer[],
    p_data text[],
    p_correlations text[],
    p_causations text[],
    p_users text[],
    p_headers text[],
    p_timestamps bigint[],
    OUT actual bigint,
    OUT version bigint,
    OUT head bigint
) LANGUAGE plpgsql AS $fn$
-- Out: the stream's version and the head position before the append; actual is the
-- stream's version when p_expected failed (then nothing is written), else NULL.
DECLARE
    n integer := coalesce(cardinality(p_ids), 0);
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock);
    SELECT (SELECT coalesce(max(e.position), 0) FROM events AS e),
           coalesce((SELECT s.version FROM streams AS s WHERE s.stream_id = p_stream), 0)
      INTO head, version;
    IF NOT (p_expected = -1 OR (p_expected = -2 AND version = 0)
            OR (p_expected = -3 AND version > 0) OR p_expected = version) THEN
        actual := version;
        RETURN;
    END IF;
    IF n > 0 THEN
        WITH written AS (
            INSERT INTO events (position, stream_id, version, id, type, schema_version, data,
                                correlation_id, causation_id, user_id, headers, "timestamp")
            SELECT head + e.ord, p_stream, version + e.ord, e.id, e.typ, e.sv, e.body,
                   e.corr, e.caus, e.usr, e.hdrs, e.ts
              FROM unnest(p_ids, p_types, p_schema_versions, p_data, p_correlations,
                          p_causations, p_users, p_headers, p_timestamps)
                   WITH ORDINALITY AS e(id, typ, sv, body, corr, caus, usr, hdrs, ts, ord)
        )
        INSERT INTO streams AS s (stream_id, version) VALUES (p_stream, version + n)
        ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version;
        PERFORM pg_notify(p_channel, (head + n)::text);
    END IF;
END
$fn$
"""

# For large appends, which write their rows with COPY: take the log's lock, then read the
# head and the versions of the given streams (after the lock, so they are current).
_LOCK_FUNCTION = r"""
CREATE FUNCTION eventlite_lock_log(
    p_lock bigint, p_known text[], OUT head bigint, OUT versions bigint[]
) LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock);
    SELECT (SELECT coalesce(max(position), 0) FROM events),
           coalesce(array_agg(coalesce(st.version, 0) ORDER BY u.ord), '{}')
      INTO head, versions
      FROM unnest(p_known) WITH ORDINALITY AS u(sid, ord)
      LEFT JOIN streams AS st ON st.stream_id = u.sid;
END
$fn$
"""

MIGRATIONS: list[Migration] = [
    Migration(
        "event store: events, streams and the append function",
        (
            f"CREATE TABLE {VERSION_TABLE} (marker text NOT NULL, version integer NOT NULL)",
            f"INSERT INTO {VERSION_TABLE} (marker, version) VALUES ('{MARKER}', 0)",
            """
            CREATE TABLE events (
                position bigint PRIMARY KEY,
                stream_id text NOT NULL,
                version bigint NOT NULL,
                id text NOT NULL,
                type text NOT NULL,
                schema_version integer NOT NULL,
                data text NOT NULL,
                correlation_id text NOT NULL,
                causation_id text,
                user_id text,
                headers text,
                "timestamp" bigint NOT NULL,
                CONSTRAINT events_stream_version UNIQUE (stream_id, version),
                CONSTRAINT events_id UNIQUE (id)
            )
            """,
            "CREATE TABLE streams (stream_id text PRIMARY KEY, version bigint NOT NULL)",
            _APPEND_FUNCTION,
            _APPEND_ONE_FUNCTION,
            _LOCK_FUNCTION,
        ),
    ),
    Migration(
        "aggregate snapshots",
        (
            """
            CREATE TABLE snapshots (
                stream_id text PRIMARY KEY,
                version bigint NOT NULL,
                fingerprint text NOT NULL,
                state text NOT NULL
            )
            """,
        ),
    ),
    Migration(
        "leases: who owns each piece of background work",
        (
            # owner NULL: released (the row stays, so generations only ever grow)
            """
            CREATE TABLE leases (
                name text PRIMARY KEY,
                owner text,
                generation bigint NOT NULL,
                expires_at double precision
            )
            """,
        ),
    ),
    Migration(
        "dead letters and work queues",
        (
            # Identity columns: a dead letter id shown to an operator, and a queue row's
            # seq inside a receipt, are never handed out again after the row is deleted.
            # A message is kept as its bytes (message_is_text: it was a str, UTF-8 here),
            # since a text column cannot hold NUL characters and a message may.
            """
            CREATE TABLE dead_letters (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                source text NOT NULL,
                key text,
                queue_group text,
                status text NOT NULL,
                message bytea NOT NULL,
                message_is_text boolean NOT NULL,
                type_name text,
                message_id text,
                position bigint,
                error_type text,
                error_message text,
                traceback text,
                attempts integer NOT NULL,
                first_failed_at double precision,
                last_failed_at double precision,
                created_at double precision NOT NULL
            )
            """,
            "CREATE INDEX dead_letters_key ON dead_letters (source, key, id)",
            "CREATE INDEX dead_letters_status ON dead_letters (source, status, id)",
            # visible_at is NULL for a message waiting behind the head of its FIFO group
            """
            CREATE TABLE queue_messages (
                seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                queue text NOT NULL,
                id text NOT NULL,
                body bytea NOT NULL,
                body_is_text boolean NOT NULL,
                queue_group text,
                not_before double precision NOT NULL,
                visible_at double precision,
                expires_at double precision,
                sent_at double precision NOT NULL,
                receives integer NOT NULL DEFAULT 0,
                in_flight boolean NOT NULL DEFAULT false,
                error_type text,
                error_message text,
                traceback text,
                first_failed_at double precision,
                last_failed_at double precision
            )
            """,
            "CREATE INDEX queue_messages_ready ON queue_messages (queue, visible_at, seq) "
            "WHERE visible_at IS NOT NULL",
            "CREATE INDEX queue_messages_group ON queue_messages (queue, queue_group, seq) "
            "WHERE queue_group IS NOT NULL",
            "CREATE INDEX queue_messages_expiry ON queue_messages (queue, expires_at) "
            "WHERE expires_at IS NOT NULL",
            "CREATE INDEX queue_messages_sent ON queue_messages (queue, sent_at)",
            """
            CREATE TABLE queue_dedup (
                queue text NOT NULL,
                dedup_id text NOT NULL,
                message_id text NOT NULL,
                until double precision NOT NULL,
                PRIMARY KEY (queue, dedup_id)
            )
            """,
            "CREATE INDEX queue_dedup_until ON queue_dedup (queue, until)",
        ),
    ),
    Migration(
        "idempotency keys",
        (
            """
            CREATE TABLE idempotency_keys (
                key text PRIMARY KEY,
                state text NOT NULL,
                result text,
                owner text NOT NULL,
                started_at double precision NOT NULL,
                lease_until double precision,
                expires_at double precision
            )
            """,
            "CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at)",
        ),
    ),
    Migration(
        "projection checkpoints and saga instances",
        (
            """
            CREATE TABLE projections (
                name text PRIMARY KEY,
                mode text NOT NULL,
                position bigint NOT NULL,
                status text NOT NULL,
                error text,
                updated_at double precision NOT NULL,
                rebuilt_at double precision
            )
            """,
            """
            CREATE TABLE sagas (
                id text PRIMARY KEY,
                name text NOT NULL,
                status text NOT NULL,
                data text NOT NULL,
                step_index integer NOT NULL,
                completed text NOT NULL,
                compensated text NOT NULL,
                compensation_errors text NOT NULL,
                failed_step text,
                error text,
                revision bigint NOT NULL,
                started_at double precision NOT NULL,
                updated_at double precision NOT NULL,
                finished_at double precision
            )
            """,
            "CREATE INDEX sagas_status ON sagas (status, name)",
        ),
    ),
    Migration(
        "process managers: instances and timeouts",
        (
            """
            CREATE TABLE process_instances (
                process text NOT NULL,
                key text NOT NULL,
                status text NOT NULL,
                state text NOT NULL,
                revision bigint NOT NULL,
                started_at double precision NOT NULL,
                updated_at double precision NOT NULL,
                finished_at double precision,
                PRIMARY KEY (process, key)
            )
            """,
            "CREATE INDEX process_instances_status ON process_instances (process, status)",
            """
            CREATE TABLE process_timeouts (
                id text PRIMARY KEY,
                process text NOT NULL,
                key text NOT NULL,
                name text,
                type text NOT NULL,
                schema_version integer NOT NULL,
                data text NOT NULL,
                correlation_id text NOT NULL,
                causation_id text,
                due_at double precision NOT NULL,
                fired_at double precision,
                created_at double precision NOT NULL
            )
            """,
            "CREATE INDEX process_timeouts_due ON process_timeouts (process, due_at) "
            "WHERE fired_at IS NULL",
            "CREATE INDEX process_timeouts_key ON process_timeouts (process, key)",
            "CREATE UNIQUE INDEX process_timeouts_name ON process_timeouts (process, key, name) "
            "WHERE name IS NOT NULL",
        ),
    ),
    Migration(
        "unique claims across aggregates",
        (
            """
            CREATE TABLE claims (
                scope text NOT NULL,
                value text NOT NULL,
                owner text NOT NULL,
                PRIMARY KEY (scope, value)
            )
            """,
            "CREATE INDEX claims_owner ON claims (scope, owner)",
        ),
    ),
    Migration(
        "durable delivery: checkpoints, inbox, delayed retries",
        (
            """
            CREATE TABLE subscriber_checkpoints (
                name text PRIMARY KEY,
                position bigint NOT NULL,
                updated_at double precision NOT NULL
            )
            """,
            """
            CREATE TABLE inbox (
                subscriber text NOT NULL,
                message_id text NOT NULL,
                handled_at double precision NOT NULL,
                PRIMARY KEY (subscriber, message_id)
            )
            """,
            "CREATE INDEX inbox_handled_at ON inbox (handled_at)",
            """
            CREATE TABLE delivery_retries (
                subscriber text NOT NULL,
                position bigint NOT NULL,
                key text NOT NULL,
                attempts integer NOT NULL,
                due_at double precision,
                first_failed_at double precision,
                error text,
                PRIMARY KEY (subscriber, position)
            )
            """,
            "CREATE INDEX delivery_retries_key ON delivery_retries (subscriber, key, position)",
            "CREATE INDEX delivery_retries_due ON delivery_retries (subscriber, due_at)",
        ),
    ),
    Migration(
        "stream processors: state entries and status",
        (
            """
            CREATE TABLE stream_processors (
                name text PRIMARY KEY,
                position bigint NOT NULL,
                status text NOT NULL,
                watermarks text NOT NULL,
                open text NOT NULL,
                late text NOT NULL,
                error text,
                updated_at double precision NOT NULL,
                rebuilt_at double precision
            )
            """,
            """
            CREATE TABLE stream_processor_state (
                stream text NOT NULL,
                operator text NOT NULL,
                key text NOT NULL,
                value text NOT NULL,
                PRIMARY KEY (stream, operator, key)
            )
            """,
        ),
    ),
]
"""Every schema step, in order. Append new steps at the end; never change a shipped one."""

SCHEMA_VERSION: Final = len(MIGRATIONS)
"""The version this eventlite writes; a schema with a higher one is refused."""
