"""One ``LISTEN`` connection per storage, waking whoever watches the log."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from ..exceptions import StorageError

if TYPE_CHECKING:
    import psycopg

    from ._database import PostgresDatabase

__all__ = ["LogListener"]

log = logging.getLogger("eventlite.postgres")

_TICK = 0.2  # how often the thread looks at its stop flag while nothing is announced
_BACKOFF = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)


class LogListener:
    """A daemon thread ``LISTEN``-ing on the storage's channel on a connection of its own.

    Each notification calls every watcher (in the thread, one after the other; an error
    from one is logged and the others still run). After the connection is lost it
    reconnects with backoff and calls every watcher once, for what it may have missed.
    Started by the first :meth:`watch`, stopped by :meth:`close`.
    """

    def __init__(self, database: PostgresDatabase) -> None:
        self._db = database
        self._lock = threading.Lock()
        self._watchers: tuple[Callable[[], None], ...] = ()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()
        """Set while the thread listens (tests wait for it)."""

    def watch(self, watcher: Callable[[], None]) -> Callable[[], None]:
        """Call ``watcher()`` on every announced commit; returns the function that stops it."""
        with self._lock:
            if self._stop.is_set():
                raise StorageError(f"{self._db.description}: the storage is closed")
            self._watchers = (*self._watchers, watcher)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="eventlite-postgres-listen", daemon=True
                )
                self._thread.start()

        def stop() -> None:
            with self._lock:
                self._watchers = tuple(w for w in self._watchers if w is not watcher)

        return stop

    def _wake(self) -> None:
        for watcher in self._watchers:
            try:
                watcher()
            except Exception:
                log.exception("a watcher of %s failed", self._db.description)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            conn: psycopg.Connection[Any] | None = None
            try:
                conn = self._db.connect()
                conn.execute(f'LISTEN "{self._db.channel}"')
                self.connected.set()
                if failures:
                    log.info("listening on %s again", self._db.description)
                    self._wake()  # commits made while the connection was down
                failures = 0
                while not self._stop.is_set():
                    for _ in conn.notifies(timeout=_TICK):
                        self._wake()
                        if self._stop.is_set():
                            break
            except Exception as exc:
                self.connected.clear()
                if self._stop.is_set():
                    break
                delay = _BACKOFF[min(failures, len(_BACKOFF) - 1)]
                failures += 1
                text = exc if isinstance(exc, StorageError) else self._db.error(exc, "listening")
                log.warning("%s; listening again in %.2fs (polling covers it)", text, delay)
                self._stop.wait(delay)
            finally:
                if conn is not None:
                    with suppress(Exception):
                        conn.close()
        self.connected.clear()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread (idempotent); returns within about ``timeout`` seconds."""
        with self._lock:
            self._stop.set()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
