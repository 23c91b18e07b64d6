"""The plain values every record is made of: times, hashed text, checked ids, the scope.

Times are timezone-aware UTC ``datetime`` objects; on disk they are ISO-8601 strings in one
fixed format, so they sort as text.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from memlane.errors import ValidationError

ANONYMOUS_USER = "anonymous"
"""The user id of the explicit anonymous scope (see :meth:`Scope.anonymous`)."""

MAX_ID_CHARS = 256


# ---------------------------------------------------------------------------- time


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_iso(value: datetime) -> str:
    """Render a time in memlane's one on-disk format (UTC, microseconds, sortable)."""
    if value.tzinfo is None:
        raise ValidationError(f"naive datetime {value!r}: pass a timezone-aware time")
    # isoformat pads the year to four digits (strftime's %Y does not on every platform).
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def from_iso(value: str) -> datetime:
    """Parse an ISO-8601 time; a time without zone is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"not an ISO-8601 time: {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def opt_iso(value: datetime | None) -> str | None:
    return None if value is None else to_iso(value)


def opt_time(value: str | None) -> datetime | None:
    return None if value is None else from_iso(value)


# ---------------------------------------------------------------------------- text


_MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June", "July", "August",
    "September", "October", "November", "December",
)  # fmt: skip


def format_period(start: datetime, end: datetime) -> str:
    """The period ``[start, end)`` as an ISO 8601 interval, ``"<start>/<end>"``."""
    return f"{to_iso(start)}/{to_iso(end)}"


def parse_period(value: str) -> tuple[datetime, datetime]:
    """``[start, end)`` from :func:`format_period`'s text. Raises ValidationError."""
    start, sep, end = value.partition("/")
    if not sep:
        raise ValidationError(f"a period is '<start>/<end>' in ISO 8601, got {value!r}")
    return from_iso(start), from_iso(end)


def month_names() -> tuple[str, ...]:
    """The English month names period words use ("January" ... "December")."""
    return _MONTH_NAMES


def period_words(start: datetime, end: datetime) -> str:
    """The period in the words people search with: ``"7 May 2023"`` for a day,
    ``"May 2023"`` for a month (and for a week or weekend, the months its days are in),
    ``"2023"`` for a year or longer."""
    days = (end - start).days
    if days >= 365:
        return " ".join(str(y) for y in range(start.year, (end - timedelta(days=1)).year + 1))
    month = f"{_MONTH_NAMES[start.month - 1]} {start.year}"
    if days <= 1:
        return f"{start.day} {month}"
    last = end - timedelta(days=1)
    months = dict.fromkeys([month, f"{_MONTH_NAMES[last.month - 1]} {last.year}"])
    return " ".join(months)


def normalize_text(text: str) -> str:
    """Canonical form used for hashing: NFC, collapsed whitespace, case-folded."""
    return " ".join(unicodedata.normalize("NFC", text).split()).casefold()


def content_hash(text: str) -> str:
    """A stable hash of the normalized text; equal hashes mean 'the same words'."""
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


def check_id(name: str, value: object, *, required: bool = True) -> str | None:
    """Validate an identifier argument (user id, session id ...)."""
    if value is None:
        if required:
            raise ValidationError(f"{name} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{name} must be a non-empty string, got {value!r}")
    if len(value) > MAX_ID_CHARS:
        raise ValidationError(f"{name} is longer than {MAX_ID_CHARS} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValidationError(f"{name} contains control characters")
    if not is_unicode(value):
        raise ValidationError(f"{name} is not valid Unicode (a lone surrogate)")
    return value


def is_unicode(text: str) -> bool:
    """Whether ``text`` can be stored: it encodes as UTF-8 (no lone surrogates, which is
    what Python makes of undecodable bytes)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_count(name: str, value: object, *, minimum: int = 1) -> int:
    """Validate a count argument (page size, retries ...): an int of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive" if minimum == 1 else "a non-negative" if minimum == 0 else "an"
        raise ValidationError(f"{name} must be {kind} integer (>= {minimum}), got {value!r}")
    return value


# ---------------------------------------------------------------------------- scope


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose memory a read or write touches.

    ``user_id`` is always required; use :meth:`anonymous` to say on purpose that the
    memory belongs to nobody in particular. ``agent_id``, ``team`` and ``session_id``
    narrow the scope further when given.
    """

    user_id: str
    agent_id: str | None = None
    team: str | None = None
    session_id: str | None = None

    def __post_init__(self) -> None:
        check_id("user_id", self.user_id)
        check_id("agent_id", self.agent_id, required=False)
        check_id("team", self.team, required=False)
        check_id("session_id", self.session_id, required=False)

    @classmethod
    def anonymous(cls, **kwargs: str | None) -> Scope:
        """The explicit anonymous scope: memory that is shared by every anonymous caller."""
        return cls(ANONYMOUS_USER, **kwargs)
