"""The latest dead letters the web view saw on rtd.dlq, for the dashboard.

Bounded on purpose: rtd.dlq can carry junk at any rate (a foreign producer, a
broken sensor), so the web view keeps only the newest :data:`RING_SIZE`, each
cut to a short excerpt of its raw bytes, and a count per reason. The excerpt
is plain text with every non-printable character escaped (``\\xNN``,
``\\n``...), never HTML: the page puts it in with ``textContent``.
"""

from __future__ import annotations

import base64
import binascii
from collections import Counter, deque
from typing import Any

from rtdstream.validation import Reason

#: Dead letters kept (and shown) at most.
RING_SIZE = 50
#: Characters of the raw bytes shown per dead letter.
EXCERPT_CHARS = 120
#: Characters of the validation's detail kept per dead letter.
DETAIL_CHARS = 200
#: Reasons counted by name; any other (a foreign producer's) counts as "other", so the counts stay bounded.
KNOWN_REASONS = frozenset(Reason)


def excerpt(raw: object, encoding: object, *, limit: int = EXCERPT_CHARS) -> str:
    """A short, printable rendering of a dead letter's raw field (UTF-8 text or base64 bytes)."""
    if not isinstance(raw, str):
        return ""
    if encoding == "base64":
        try:
            data = base64.b64decode(raw[: (limit * 4 // 3 + 4) // 4 * 4], validate=False)
        except (binascii.Error, ValueError):
            return "<undecodable base64>"
        text = data.decode("utf-8", errors="backslashreplace")
    else:
        text = raw[: limit + 1]
    shown = "".join(_printable(char) for char in text)
    return shown[:limit] + "…" if len(shown) > limit or len(raw) > len(text) else shown


def _printable(char: str) -> str:
    if char.isprintable() or char == " ":
        return char
    return char.encode("unicode_escape").decode("ascii")


class DeadLetterRing:
    """The newest dead letters, their counts by reason, and which ones the clients have not seen yet."""

    def __init__(self, size: int = RING_SIZE) -> None:
        self._latest: deque[dict[str, Any]] = deque(maxlen=size)
        self.counts: Counter[str] = Counter()
        self._sequence = 0
        self._announced = 0

    def add(self, record: dict[str, Any], received_ms: int) -> dict[str, Any]:
        """Keep a decoded rtd.dlq record as a short entry; the entry."""
        reason = record.get("reason")
        reason = reason if reason in KNOWN_REASONS else "other"
        self._sequence += 1
        entry = {
            "id": self._sequence,
            "time": received_ms,
            "reason": str(reason),
            "source": _text(record.get("source"), 64),
            "stage": _text(record.get("stage"), 32),
            "detail": _text(record.get("detail"), DETAIL_CHARS),
            "excerpt": excerpt(record.get("raw"), record.get("raw_encoding")),
            "size": record.get("raw_size") if isinstance(record.get("raw_size"), int) else _raw_size(record),
        }
        self._latest.append(entry)
        self.counts[entry["reason"]] += 1
        return entry

    def latest(self) -> list[dict[str, Any]]:
        """Newest first."""
        return list(reversed(self._latest))

    def take_new(self) -> list[dict[str, Any]]:
        """The entries added since the last call that are still kept, newest first."""
        new = [entry for entry in reversed(self._latest) if entry["id"] > self._announced]
        self._announced = self._sequence
        return new

    def summary(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "latest": self.latest()}


def _text(value: object, limit: int) -> str | None:
    if value is None:
        return None
    return "".join(_printable(char) for char in str(value)[:limit])


def _raw_size(record: dict[str, Any]) -> int | None:
    raw = record.get("raw")
    if not isinstance(raw, str):
        return None
    if record.get("raw_encoding") == "base64":
        return len(raw) * 3 // 4 - raw.count("=")
    return len(raw.encode("utf-8", errors="replace"))
