"""Dead letters: messages a consumer gave up on, kept in sequenced lines per key.

:class:`DeadLetterStore` is what a backend implements; :class:`~eventlite.dlq.DeadLetterQueue`
is the facade users and consumers call. The records it exchanges live here:
:class:`DeadLetter`, :class:`DeadLetterStatus`, :class:`Failure`, and the error
:class:`DeadLetterNotFound`.
"""

from __future__ import annotations

import abc
import builtins
import enum
import json
import traceback as _traceback
from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING, Final

import attrs

from ..exceptions import EventliteError

if TYPE_CHECKING:
    from ..codec import Codec
    from ..envelope import Envelope

__all__ = [
    "MAX_ERROR_MESSAGE",
    "MAX_ERROR_TYPE",
    "MAX_TRACEBACK",
    "DeadLetter",
    "DeadLetterNotFound",
    "DeadLetterStatus",
    "DeadLetterStore",
    "Failure",
    "correlation_of",
    "correlation_set",
    "describe_raw",
    "safe_text",
    "storable_message",
]

MAX_ERROR_TYPE: Final = 1_000
"""Characters of an exception's class name a dead letter keeps."""
MAX_ERROR_MESSAGE: Final = 16_384
"""Characters of an exception's message a dead letter keeps (the head; a note says how
many more there were)."""
MAX_TRACEBACK: Final = 65_536
"""Characters of a formatted traceback a dead letter keeps (its head and its tail, which
names the exception; a note in between says how many were cut)."""

_DESCRIBE_LIMIT = 1 << 20  # raw text longer than this is not parsed to find its type


def _cut(text: str, limit: int, *, keep_tail: bool) -> str:
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    note = f" [... {cut} characters cut ...] "
    if not keep_tail:
        return text[:limit] + note
    half = limit // 2
    return text[:half] + note + text[-(limit - half) :]


def safe_text(text: object, limit: int | None = None, *, keep_tail: bool = False) -> str:
    """``text`` as a str any backend stores and any terminal prints: a NUL character
    becomes ``\\x00`` and a lone surrogate (what ``os.listdir`` gives for a name that is
    not UTF-8) its escape ``\\udcff``; longer than ``limit`` characters, it is cut to that
    with a note saying how many characters went (the head kept, or head and tail).

    The same text always gives the same result, so a key made safe on write is found by
    the same key made safe on lookup. A value that is not a str is ``str()``-ed first.
    """
    if isinstance(text, str):
        if text.isascii() and (limit is None or len(text) <= limit):
            return text.replace("\x00", "\\x00") if "\x00" in text else text
    else:
        try:
            text = str(text)
        except Exception:
            text = f"<unprintable {type(text).__qualname__}>"
    if limit is not None:
        text = _cut(text, limit, keep_tail=keep_tail)
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _error_type(value: object) -> str:
    return safe_text(value, MAX_ERROR_TYPE)


def _error_message(value: object) -> str:
    return safe_text(value, MAX_ERROR_MESSAGE)


def _traceback_text(value: object) -> str:
    return safe_text(value, MAX_TRACEBACK, keep_tail=True)


def storable_message(raw: str | bytes) -> str | bytes:
    """A message as a dead letter keeps it: bytes and valid text unchanged (NUL included);
    a str holding lone surrogates, which no UTF-8 store accepts, as its bytes
    (``surrogateescape`` gives back the bytes a lenient decoding came from; any other
    surrogate is kept with ``surrogatepass``)."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        return bytes(raw)
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return raw.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return raw.encode("utf-8", "surrogatepass")
    return raw


def describe_raw(raw: str | bytes) -> tuple[str | None, str | None, int | None]:
    """(type name, message id, position) that raw envelope JSON says about itself, each
    None when it does not say (or is not JSON at all, or is too long or too deep to read).
    Never raises."""
    if len(raw) > _DESCRIBE_LIMIT:
        return None, None, None
    try:
        data = json.loads(raw)
    except Exception:  # ValueError, RecursionError, UnicodeDecodeError: it just says nothing
        return None, None, None
    if not isinstance(data, dict):
        return None, None, None
    type_name = data.get("type")
    message_id = data.get("id")
    position = data.get("position")
    return (
        safe_text(type_name) if isinstance(type_name, str) else None,
        safe_text(message_id) if isinstance(message_id, str) else None,
        position
        if isinstance(position, int) and not isinstance(position, bool) and 0 < position < 1 << 63
        else None,
    )


def correlation_of(raw: str | bytes) -> str | None:
    """The ``correlation_id`` that raw envelope JSON (a dead letter's message) holds; None
    when it holds none (or is not JSON, or is too long or too deep to read). Never
    raises."""
    if len(raw) > _DESCRIBE_LIMIT:
        return None
    try:
        data = json.loads(raw)
    except Exception:  # ValueError, RecursionError, UnicodeDecodeError: it holds none
        return None
    found = data.get("correlation_id") if isinstance(data, dict) else None
    return found if isinstance(found, str) else None


def correlation_set(correlation_ids: Collection[str], limit: int | None) -> frozenset[str]:
    """The arguments of :meth:`DeadLetterStore.find_by_correlation`, checked (for
    backends): ``TypeError`` for one str or a value that is not one, ``ValueError`` for a
    ``limit`` below 1."""
    if isinstance(correlation_ids, str):
        raise TypeError("correlation_ids must be a collection of str, not one str")
    wanted = frozenset(correlation_ids)
    for value in wanted:
        if not isinstance(value, str):
            raise TypeError(f"correlation_ids must hold str, got {value!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be an int >= 1 or None, got {limit!r}")
    return wanted


def _type_name(cls: type[BaseException]) -> str:
    qualname = getattr(cls, "__qualname__", None) or cls.__name__
    module = getattr(cls, "__module__", None)
    if module in (None, "builtins"):
        return str(qualname)
    return f"{module}.{qualname}"


@attrs.frozen
class Failure:
    """Why a delivery failed, as a dead letter keeps it; safe to store whatever the
    exception held (see :func:`safe_text`), each text bounded (:data:`MAX_ERROR_TYPE`,
    :data:`MAX_ERROR_MESSAGE`, :data:`MAX_TRACEBACK` characters). Make one with
    :meth:`of`."""

    error_type: str = attrs.field(converter=_error_type)
    """The exception's class: ``module.QualName``, builtins by their bare name."""
    error_message: str = attrs.field(converter=_error_message)
    """``str()`` of the exception."""
    traceback: str = attrs.field(converter=_traceback_text)
    """The formatted traceback, chained exceptions included."""

    @classmethod
    def of(cls, error: BaseException) -> Failure:
        """The failure ``error`` describes; never raises, even for an exception whose
        ``__str__`` does."""
        name = _type_name(type(error))
        try:
            message = str(error)
        except Exception:
            message = f"<str() of the {name} failed>"
        try:
            trace = "".join(_traceback.format_exception(type(error), error, error.__traceback__))
        except Exception:
            trace = f"{name}: {message}\n"
        return cls(name, message, trace)


class DeadLetterStatus(enum.Enum):
    """Where a dead letter stands."""

    DEAD = "dead"
    """Failed after all its attempts; waits for an operator's ``retry`` or ``discard``."""
    PARKED = "parked"
    """Never failed itself: waits behind a dead letter of the same source and key."""
    RETRYING = "retrying"
    """Released for redelivery; the consumer of its source will deliver it, in order."""


class DeadLetterNotFound(EventliteError, LookupError):
    """No dead letter has this id (it was never added, or was resolved, discarded or
    purged)."""

    __module__ = "eventlite.dlq"  # its public home; stores raise it too

    def __init__(self, id: int) -> None:
        self.id = id
        super().__init__(f"no dead letter with id {id} (resolved, discarded or never added)")


@attrs.frozen
class DeadLetter:
    """One entry of the dead-letter queue, as stored."""

    id: int
    """The entry's number: increasing in the order entries were added, never reused."""
    source: str
    """Who failed: the subscriber's name, or ``queue:<name>`` for a work queue."""
    key: str | None
    """The ordering key (stream id or publisher's key); None for a message without order."""
    status: DeadLetterStatus
    """``dead``, ``parked`` (waiting behind a dead letter of its key) or ``retrying``."""
    message: str | bytes
    """The envelope as wire JSON, or the raw text received when it could not be decoded
    (bytes when that was bytes, or text that is not valid Unicode)."""
    type_name: str | None
    """The message's registered type name, when known."""
    message_id: str | None
    """The envelope id, when known."""
    position: int | None
    """The stored event's global position, for an event from the store."""
    error_type: str | None
    """The last failure's exception class (``module.QualName``; builtins unqualified);
    None for an entry that was parked and never failed."""
    error_message: str | None
    """``str()`` of the last failure's exception (bounded: :data:`MAX_ERROR_MESSAGE`)."""
    traceback: str | None
    """The last failure's formatted traceback (bounded: :data:`MAX_TRACEBACK`)."""
    attempts: int
    """How many delivery attempts failed (0 for a parked entry)."""
    first_failed_at: datetime | None
    """When the first attempt failed (UTC); None for a parked entry."""
    last_failed_at: datetime | None
    """When the last attempt failed (UTC); None for a parked entry."""
    created_at: datetime
    """When the entry was added to the DLQ (UTC)."""
    group: str | None = None
    """The work queue's FIFO group of a message dead-lettered by a queue, else None."""

    def envelope(self, codec: Codec) -> Envelope:
        """The message's envelope, decoded by ``codec``.

        Raises the codec's :class:`~eventlite.exceptions.MessageDecodeError` or
        :class:`~eventlite.exceptions.UnknownMessageType` when the stored text cannot be
        decoded (which may be why it is here).
        """
        return codec.decode_envelope(self.message)

    def __str__(self) -> str:
        head = f"#{self.id} {self.status.value} source={self.source}"
        if self.key is not None:
            head += f" key={self.key}"
        if self.group is not None:
            head += f" group={self.group}"
        what = self.type_name or "<unknown type>"
        if self.message_id is not None:
            what += f" {self.message_id}"
        if self.position is not None:
            what += f" at position {self.position}"
        lines = [head, f"  message: {what}"]
        if self.error_type is not None:
            lines.append(f"  error: {self.error_type}: {self.error_message}")
        if self.first_failed_at is not None and self.last_failed_at is not None:
            lines.append(
                f"  attempts: {self.attempts}, first failed {self.first_failed_at.isoformat()}, "
                f"last failed {self.last_failed_at.isoformat()}"
            )
        if self.status is DeadLetterStatus.PARKED and self.error_type is None:
            lines.append(f"  parked since {self.created_at.isoformat()} behind a dead letter")
        return "\n".join(lines)


class DeadLetterStore(abc.ABC):
    """The entries of the sequenced dead-letter queue.

    **Lines.** The entries of one ``source`` and ``key`` form a *line*, ordered by id (ids
    increase in the order entries are added and are never reused, even after a delete).
    After every write the store keeps each line in one shape: the entries before its
    first ``dead`` one are ``retrying``, those after it ``parked`` (other ``dead`` ones
    stay dead). An entry with ``key=None`` is a line of its own and parks nothing.

    **Text.** Whatever text it is given, the store keeps it safely: ``source``, ``key``,
    ``group``, ``type_name`` and ``message_id`` go through :func:`safe_text` (so a lone
    surrogate or a NUL comes back escaped, and a lookup with the same text finds it);
    ``message`` through :func:`storable_message` (valid text and bytes come back as given,
    text with lone surrogates as its bytes); a :class:`Failure` is safe and bounded by
    construction. Nothing a consumer hands it can make a write fail, so nothing stalls a
    consumer.

    **Times** are epoch seconds given by the caller's clock (``now``); the store has no
    clock of its own. Records come back with aware UTC datetimes.

    **Transactions.** Every write joins the calling thread's open
    :meth:`Storage.transaction() <eventlite.store.Storage.transaction>` of the same storage
    (a savepoint of it), so a consumer can dead-letter a message and move its checkpoint
    in one commit; reads made inside it see its writes. Backend errors raise
    :class:`~eventlite.exceptions.StorageError`; an unknown id raises
    :class:`DeadLetterNotFound`.
    """

    @abc.abstractmethod
    def add(
        self,
        source: str,
        message: str | bytes,
        *,
        key: str | None,
        failure: Failure,
        attempts: int,
        first_failed_at: float,
        now: float,
        type_name: str | None = None,
        message_id: str | None = None,
        position: int | None = None,
        group: str | None = None,
    ) -> DeadLetter:
        """Add a ``dead`` entry that failed ``attempts`` times, last with ``failure`` at
        ``now``; later entries of its line are parked behind it. Returns it as stored."""

    @abc.abstractmethod
    def park(
        self,
        source: str,
        message: str | bytes,
        *,
        key: str,
        now: float,
        type_name: str | None = None,
        message_id: str | None = None,
        position: int | None = None,
    ) -> DeadLetter:
        """Add an entry that never failed at the end of the line of (source, key):
        ``parked`` behind a dead entry of the line, else ``retrying`` (it joins the
        redelivery, after the others). Returns it as stored."""

    @abc.abstractmethod
    def is_blocked(self, source: str, key: str | None) -> bool:
        """Whether the line of (source, key) holds any entry; False for ``key=None``."""

    @abc.abstractmethod
    def get(self, id: int) -> DeadLetter:
        """The entry with this id; raises :class:`DeadLetterNotFound`."""

    @abc.abstractmethod
    def list(
        self,
        source: str | None = None,
        *,
        status: DeadLetterStatus | None = None,
        limit: int | None = None,
    ) -> builtins.list[DeadLetter]:
        """Entries in id order, of one source and one status when given, at most
        ``limit`` (None: all)."""

    @abc.abstractmethod
    def count(self, source: str | None = None, *, status: DeadLetterStatus | None = None) -> int:
        """How many entries there are, of one source and one status when given."""

    @abc.abstractmethod
    def sources(self) -> dict[str, int]:
        """Every source with entries and how many it has, ordered by source."""

    @abc.abstractmethod
    def retry(self, id: int) -> builtins.list[DeadLetter]:
        """Make the entry ``retrying`` (then reshape its line) and return the entries this
        made ``retrying``, in id order: the entry and the parked ones behind it up to the
        next dead one; [] when it stays parked behind an earlier dead entry of its line or
        was retrying already. Raises :class:`DeadLetterNotFound`."""

    @abc.abstractmethod
    def retry_all(self, source: str) -> int:
        """Make every entry of ``source`` ``retrying``; returns how many changed."""

    @abc.abstractmethod
    def claim_retries(self, source: str, *, limit: int) -> builtins.list[DeadLetter]:
        """The ``retrying`` entries of ``source``, oldest first, at most ``limit``;
        changes nothing."""

    @abc.abstractmethod
    def resolve(self, id: int) -> None:
        """Delete the entry (it was delivered) and reshape its line. Raises
        :class:`DeadLetterNotFound`."""

    @abc.abstractmethod
    def fail_again(self, id: int, failure: Failure, *, now: float) -> DeadLetter:
        """The entry failed once more at ``now``: ``dead`` with one more attempt and this
        failure (its first failure time kept, or set to ``now`` for a parked one), its
        line reshaped. Returns it. Raises :class:`DeadLetterNotFound`."""

    @abc.abstractmethod
    def discard(self, id: int) -> DeadLetter:
        """Delete the entry, reshape its line, and return the entry as it was. Raises
        :class:`DeadLetterNotFound`."""

    @abc.abstractmethod
    def purge(self, source: str | None = None, *, failed_before: float | None = None) -> int:
        """Delete entries of ``source`` (None: every source) and reshape their lines;
        returns how many went.

        With ``failed_before``, only ``dead`` and ``retrying`` entries whose last failure
        (or, never failed, their creation) is at or before it: a ``parked`` entry never
        goes by its own age, so a purge never drops the messages queued behind a dead
        letter it keeps. Without it, every entry, parked ones included.
        """

    def find_by_correlation(
        self, correlation_ids: Collection[str], *, limit: int | None = None
    ) -> builtins.list[DeadLetter]:
        """The entries whose message is an envelope of one of these flows (its
        ``correlation_id``, as :func:`correlation_of` reads it), in id order, at most
        ``limit`` (None: all): the dead letters of a flow, for tracing it.

        The default reads every entry; backends may narrow the search first.
        """
        wanted = correlation_set(correlation_ids, limit)
        if not wanted:
            return []
        found = [d for d in self.list(limit=None) if correlation_of(d.message) in wanted]
        return found if limit is None else found[:limit]
