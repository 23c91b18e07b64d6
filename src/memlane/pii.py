"""Personal data found in text, and what a policy does with it before anything is stored.

A :class:`Detector` finds spans of one kind (``email``, ``phone``, ``card``, ``iban``,
``ssn``, ``ip``, ``secret``) in a text; the built-in ones check what can be checked (a
payment card's Luhn digit, an IBAN's mod-97 checksum, an SSN's reserved ranges, an IP's
octets) so that order numbers, dates and prices are not taken for personal data. A
:class:`PiiPolicy` says per kind whether a span is kept, masked (``[EMAIL]``),
pseudonymized (a stable keyed token, ``[EMAIL:3f9a1c0b2e]``: the same address gives the
same token, so memories about it still find each other, and a search for the address
finds them) or refused (:class:`~memlane.errors.PiiRefusedError`: nothing is stored).
Any object with a ``kind`` and a ``find(text)`` is a detector: Microsoft Presidio or a
house list of customer numbers plug in beside the built-ins.

Measured on a labelled set in ``bench/pii.py`` (bench/pii.md).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from memlane.errors import PiiRefusedError, ValidationError

Action = Literal["keep", "mask", "pseudonymize", "refuse"]
ACTIONS: tuple[Action, ...] = ("keep", "mask", "pseudonymize", "refuse")


@dataclass(frozen=True, slots=True)
class Span:
    """One finding: characters ``start:end`` of the text are a ``kind``."""

    kind: str
    start: int
    end: int


@runtime_checkable
class Detector(Protocol):
    """Finds the spans of one kind of personal data in a text."""

    @property
    def kind(self) -> str: ...

    def find(self, text: str) -> Iterable[Span]: ...


@dataclass(frozen=True, slots=True)
class PatternDetector:
    """Spans that match ``pattern`` (group ``group``) and pass ``check``."""

    kind: str
    pattern: re.Pattern[str]
    check: Callable[[str], bool] = lambda _: True
    group: int = 0

    def find(self, text: str) -> Iterable[Span]:
        for m in self.pattern.finditer(text):
            if self.check(m[self.group]):
                yield Span(self.kind, m.start(self.group), m.end(self.group))


def luhn(digits: str) -> bool:
    """Whether a card number's digits (separators allowed) pass the Luhn check."""
    numbers = [int(c) for c in digits if c.isdigit()]
    total = 0
    for i, n in enumerate(reversed(numbers)):
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return 13 <= len(numbers) <= 19 and total % 10 == 0 and len(set(numbers)) > 1


_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AT": 20, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GI": 23, "GL": 18, "GR": 27, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IS": 26, "IT": 27, "KW": 30, "KZ": 20, "LB": 28, "LI": 21,
    "LT": 20, "LU": 20, "LV": 21, "MC": 27, "ME": 22, "MK": 19, "MT": 31, "MU": 30,
    "NL": 18, "NO": 15, "PL": 28, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29,
}  # fmt: skip


def iban(value: str) -> bool:
    """Whether ``value`` (spaces allowed) is an IBAN: a known country's length and a
    mod-97 checksum of 1."""
    compact = re.sub(r"[ .-]", "", value).upper()
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isalnum():
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def ssn(value: str) -> bool:
    """Whether ``value`` is a US social security number the SSA could have issued."""
    area, group, serial = re.split(r"[ .-]", value)
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def ip_address(value: str) -> bool:
    """Whether ``value`` is an IPv4 or IPv6 address (not a version like 1.2.3.4 in a
    sentence about software: see the pattern's context)."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    return not (address.version == 6 and value.count(":") < 3)


def entropy(value: str) -> float:
    """Shannon entropy of ``value`` in bits per character."""
    counts: dict[str, int] = {}
    for c in value:
        counts[c] = counts.get(c, 0) + 1
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def password_like(value: str) -> bool:
    """A value named as a password or key that looks like one: a digit, a symbol, or a
    capital past its first letter ("hunter2!", "Tr0ub4dor", "xK9qLm"), not a word
    ("stored", "invalid", "Patience")."""
    word = value.rstrip(".,;:!?)")
    if len(word) < 6:
        return False
    mixed = any(c.isupper() for c in word[1:]) and any(c.islower() for c in word)
    return mixed or any(c.isdigit() for c in word) or not word.isalpha()


def secret_like(value: str) -> bool:
    """A long token mixing letters and digits with the entropy of a random key, and not a
    plain hexadecimal hash (commit ids and checksums are not secrets)."""
    classes = sum(any(f(c) for c in value) for f in (str.islower, str.isupper, str.isdigit))
    hex_only = re.fullmatch(r"[0-9a-fA-F]+", value) is not None
    return classes >= 3 and not hex_only and entropy(value) >= 4.0


_SECRET_PREFIXES = re.compile(
    r"(?<![\w-])("
    r"sk-(?:proj-|ant-)?[A-Za-z0-9_\-]{20,}"  # OpenAI, Anthropic
    r"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub
    r"|github_pat_[A-Za-z0-9_]{40,}"
    r"|(?:AKIA|ASIA)[A-Z0-9]{16}"  # AWS access key id
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza[0-9A-Za-z_\-]{35}"  # Google API key
    r"|glpat-[A-Za-z0-9_\-]{20,}"  # GitLab
    r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"  # a JWT
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"
    r")"
)
_SECRET_AFTER_WORD = re.compile(
    r"(?i)\b(?:password|passwd|pwd|pw|passphrase|pin|api[_ -]?key|secret|token|access[_ -]?key)"
    r"\b\s*(?:is|[:=])\s*[\"']?"
    r"(?!(?:password|passwd|pwd|passphrase|secret|token)\b)([^\s\"']{6,}?)[.,;:)]*(?=[\s\"']|$)"
)
_URL_PASSWORD = re.compile(r"://[^/\s:@]+:([^/\s@]+)@")
"""The password of ``scheme://user:password@host``."""
_RANDOM_TOKEN = re.compile(r"(?<![\w/.-])([A-Za-z0-9_\-+/]{32,}={0,2})(?![\w/-]|\.\w)")

EMAIL = PatternDetector(
    "email",
    re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b"),
)
PHONE = PatternDetector(
    "phone",
    re.compile(
        # international: a + and the country code, then groups
        r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?)(?:[ .-]?\d{2,8}(?!\d)){1,5}(?![\w-])"
        # North American: (415) 555-0134, 415-555-0134, 415.555.0134
        r"|(?<![\w+-])(?<!\d[ .-])(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w-]|[ .-]\d)"
        # national with a trunk 0: (020) 7946 0958, 07700 900123, 030 12345678
        r"|(?<![\w+-])(?<!\d[ .-])(?:\(0\d{1,4}\)|0\d{1,4})[ .-]?\d{3,8}(?:[ .-]\d{2,8})?"
        r"(?![\w-]|[ .-]\d)"
    ),
    lambda v: _phone_digits(v),
)


_CARD_GROUPS = {(4, 4, 4, 4), (4, 6, 5), (4, 4, 4, 3), (4, 4, 4, 4, 3), (4, 6, 4)}


_CARD_BRANDS = re.compile(
    r"4\d{12}(?:\d{3}){0,2}"  # Visa: 13, 16 or 19 digits
    r"|5[1-5]\d{14}|2(?:2[2-9][1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)\d{12}"  # Mastercard
    r"|3[47]\d{13}"  # American Express
    r"|3(?:0[0-5]|[68]\d)\d{11,16}"  # Diners Club
    r"|35\d{14,17}"  # JCB
    r"|6(?:011|5\d\d|4[4-9]\d)\d{12,15}"  # Discover
    r"|62\d{14,17}"  # UnionPay
)


def card_number(value: str) -> bool:
    """A payment card number: a brand's prefix and length, written whole or in the
    groups cards are printed in (4-4-4-4, Amex's 4-6-5, 4-4-4-4-3 …), with a valid Luhn
    digit (a reference number of the same length passes Luhn one time in ten; the
    brands' prefixes halve that again)."""
    groups = tuple(len(g) for g in re.split(r"[ .-]", value))
    digits = re.sub(r"\D", "", value)
    whole = len(groups) == 1 or groups in _CARD_GROUPS
    return whole and _CARD_BRANDS.fullmatch(digits) is not None and luhn(digits)


CARD = PatternDetector(
    "card", re.compile(r"(?<![\w.-])\d(?:[ .-]?\d){12,18}(?![\w-]|\.\d)"), card_number
)
_IBAN_RUN = re.compile(r"\b[A-Za-z]{2}\d{2}(?:[ .-]?[A-Za-z0-9]){11,34}")


@dataclass(frozen=True, slots=True)
class IbanDetector:
    """IBANs, grouped or not, in either case: the longest run of groups that passes the
    checksum (a word after the number is not part of it)."""

    kind: str = "iban"

    def find(self, text: str) -> Iterable[Span]:
        for m in _IBAN_RUN.finditer(text):
            parts = list(re.finditer(r"[A-Za-z0-9]+", m[0]))
            for k in range(len(parts), 0, -1):
                end = parts[k - 1].end()
                if iban(m[0][:end]):
                    yield Span(self.kind, m.start(), m.start() + end)
                    break


IBAN = IbanDetector()
SSN = PatternDetector("ssn", re.compile(r"(?<![\d.-])\d{3}([ .-])\d{2}\1\d{4}(?![\d-]|\.\d)"), ssn)
IP = PatternDetector(
    "ip",
    re.compile(
        r"(?<![\w.:])(?<!\b[vV]ersion )(?<!\b[vV]er )"
        r"((?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})"
        r"(?:(?::\d{1,5})(?!\d))?(?![\w:]|\.\w)"
    ),
    ip_address,
    group=1,
)


def _phone_digits(value: str) -> bool:
    """A phone number has 9 to 15 digits (7 to 8 with a leading +), is not a date, and
    does not look like an amount ("1 000 000")."""
    digits = sum(c.isdigit() for c in value)
    if value.startswith("+"):
        return 8 <= digits <= 15
    if re.fullmatch(r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}", value):  # a date
        return False
    if re.fullmatch(r"\d{1,3}(?: \d{3})+", value):  # an amount with thousands spaces
        return False
    return 9 <= digits <= 15


@dataclass(frozen=True, slots=True)
class SecretDetector:
    """API keys and tokens by their known prefixes, values named as passwords or keys,
    and long random-looking tokens (:func:`secret_like`)."""

    kind: str = "secret"

    def find(self, text: str) -> Iterable[Span]:
        for m in _SECRET_PREFIXES.finditer(text):
            yield Span(self.kind, m.start(1), m.end(1))
        for m in _URL_PASSWORD.finditer(text):
            yield Span(self.kind, m.start(1), m.end(1))
        for m in _SECRET_AFTER_WORD.finditer(text):
            if password_like(m[1]):
                yield Span(self.kind, m.start(1), m.end(1))
        for m in _RANDOM_TOKEN.finditer(text):
            if secret_like(m[1]):
                yield Span(self.kind, m.start(1), m.end(1))


BUILT_IN: tuple[Detector, ...] = (SecretDetector(), EMAIL, IBAN, CARD, SSN, IP, PHONE)
"""The built-in detectors, the more specific first: where spans overlap the earlier
detector's wins (an IBAN's digits are not also a phone number)."""

KINDS = tuple(d.kind for d in BUILT_IN)


_FULLWIDTH = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
"""Fullwidth forms to ASCII, one character for one: spans keep their offsets."""


def find(text: str, detectors: Sequence[Detector] = BUILT_IN) -> list[Span]:
    """The spans of personal data in ``text``, in order, none overlapping: where two
    overlap, the one from the earlier detector stays (the longer from the same one).
    Fullwidth digits and letters are read as their ASCII forms."""
    text = text.translate(_FULLWIDTH)
    taken: list[Span] = []
    for detector in detectors:
        found = sorted(detector.find(text), key=lambda s: (s.start, -(s.end - s.start)))
        for span in found:
            if span.end > span.start and all(
                span.end <= t.start or span.start >= t.end for t in taken
            ):
                taken.append(span)
    return sorted(taken, key=lambda s: s.start)


@dataclass(frozen=True, slots=True)
class PiiPolicy:
    """What happens to each kind of personal data before it is stored.

    ``actions`` maps a kind to ``"keep"``, ``"mask"``, ``"pseudonymize"`` or ``"refuse"``;
    kinds not named get ``default``. ``key`` (at least 16 bytes) keys the pseudonyms: the
    same value under the same key always gives the same token, and without the key a
    token cannot be linked back to a guess. ``detectors`` replace the built-in ones
    (add yours to :data:`BUILT_IN` to keep them). Raises ValidationError for an unknown
    action or a pseudonymizing policy without a key."""

    actions: Mapping[str, Action] = field(default_factory=dict)
    default: Action = "keep"
    key: bytes | None = None
    detectors: Sequence[Detector] = BUILT_IN

    def __post_init__(self) -> None:
        for kind, action in {**self.actions, "(default)": self.default}.items():
            if action not in ACTIONS:
                raise ValidationError(f"PII action for {kind} must be one of {ACTIONS}")
        uses_key = "pseudonymize" in (self.default, *self.actions.values())
        if uses_key and (self.key is None or len(self.key) < 16):
            raise ValidationError("a pseudonymizing PII policy needs a key of 16 bytes or more")
        for d in self.detectors:
            if not isinstance(d, Detector):
                raise ValidationError(f"a PII detector needs a kind and find(text): {d!r}")

    def action(self, kind: str) -> Action:
        return self.actions.get(kind, self.default)

    def apply(self, text: str, what: str = "text", *, query: bool = False) -> str:
        """``text`` as the policy stores it. Raises PiiRefusedError (naming the kinds,
        never the values) when a kind found is refused. With ``query`` (a search's query,
        which is embedded and matched, not stored) nothing is refused: refused kinds are
        masked, and pseudonyms are made as for storing, so that they find what was
        stored."""
        if self.default == "keep" and all(a == "keep" for a in self.actions.values()):
            return text
        spans = [s for s in find(text, self.detectors) if self.action(s.kind) != "keep"]
        refused = sorted({s.kind for s in spans if self.action(s.kind) == "refuse"})
        if refused and not query:
            raise PiiRefusedError(f"{what} holds {', '.join(refused)}, which this policy refuses")
        out, at = [], 0
        for span in spans:
            out.append(text[at : span.start])
            out.append(self._replacement(span.kind, text[span.start : span.end]))
            at = span.end
        out.append(text[at:])
        return "".join(out)

    def apply_json(self, value: Any, what: str) -> Any:
        """A JSON document with the policy applied to every string in it, keys too (keys
        that become equal are numbered: ``[CARD]``, ``[CARD] 2``), and to every number,
        read as its digits (a card number stored as an integer is a card number; one the
        policy changes is stored as the string it becomes)."""
        if isinstance(value, str):
            return self.apply(value, what)
        if isinstance(value, int | float) and not isinstance(value, bool):
            whole = isinstance(value, float) and value.is_integer() and abs(value) < 1e19
            digits = str(int(value)) if whole else str(value)
            changed = self.apply(digits, what)
            return value if changed == digits else changed
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for k, v in value.items():
                key, n = self.apply(str(k), what), 1
                while key in out:
                    n += 1
                    key = f"{self.apply(str(k), what)} {n}"
                out[key] = self.apply_json(v, what)
            return out
        if isinstance(value, list | tuple):
            return [self.apply_json(v, what) for v in value]
        return value

    def _replacement(self, kind: str, value: str) -> str:
        action = self.action(kind)
        label = kind.upper()
        if action != "pseudonymize":  # mask, or a refused kind in a query
            return f"[{label}]"
        assert self.key is not None
        normal = unicodedata.normalize("NFKC", value)  # fullwidth digits are digits
        if kind in ("phone", "card", "iban", "ssn"):  # the same number however spaced
            normal = re.sub(r"[\s()./-]", "", normal).upper()
        elif kind in ("email", "ip"):
            normal = normal.lower()
        digest = hmac.new(self.key, f"{kind}:{normal}".encode(), hashlib.sha256).hexdigest()
        return f"[{label}:{digest[:10]}]"


PolicyFor = Callable[[str], "PiiPolicy | None"]
"""The policy of a user scope (None: keep everything), for policies that differ by scope."""
