"""Held for review, reports and shield mode: the decisions, without I/O.

* ``hold_reason`` is the door's hold step (``scripts.INGEST``, step 4): the door's
  executable spec, ``rules.door.DoorModel``, composes it as its rule 8, and
  ``tests/integration/test_door_conformance.py`` holds the Lua script to that model.
* ``ReviewCheck`` is the gateway's half: whether a text is suspicious by its content (a
  room's review word, or a link). The gateway flags such a comment ("r") and the door
  decides with the rest (mode, sender, first-time chatter), so the review setting takes
  effect at once in every gateway.
* ``shield_changes``: what shield mode sets over a room's settings, and what it restores.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from danmaku.rules import guests
from danmaku.rules.normalize import normalize
from danmaku.rules.wordfilter import WordFilter

# The room setting ``review``: its values and how the settings hash stores them (a number,
# so the door reads it with the others in one HMGET and every reader decodes it alike).
REVIEW_MODES = ("off", "suspicious", "all")
REPORT_REASONS = ("spam", "harassment", "hate", "sexual", "other")
HELD_ID = re.compile(r"^h[0-9]{1,12}$")  # what the door mints for a held comment

# A link: a scheme, "www.", or a host name ending in a well-known top-level domain, with
# dots written as full-width or ideographic ones too ("example．com") and spaces around
# them ("example . com"). Not every TLD: "e.g." or "v1.2" must stay ordinary text.
_TLDS = (
    "com|net|org|info|biz|io|co|me|tv|gg|ly|xyz|top|site|online|live|app|dev|link|click|"
    "shop|store|club|vip|fun|icu|cc|ru|cn|jp|kr|de|uk|fr|br|in|us|to|su|ws|be|nl|it|es|"
    "pl|au|ca|tk|ml|ga|cf|gq|pw|bit|onion"
)
# A separator between a name and its top-level domain: a dot (also the ideographic one,
# which NFKC leaves), spaces around it, or "dot" spelt out. Each alternative of ``_LINK``
# is anchored on something rare (a scheme's "://", "www", a separator before a TLD) and
# has no nested repetition, so a search is linear in the text.
_SEP = r"(?:\s*[.。]\s*|\s*[(\[]dot[)\]]\s*|\s+dot\s+)"
_LINK = re.compile(
    rf"[a-z0-9]:/|\bwww{_SEP}\w|\w{_SEP}(?:{_TLDS})\b(?!{_SEP}\w)"
)  # searched in lower case


def review_code(mode: str) -> float:
    """The stored number of a ``review`` value (``ValueError`` for another)."""
    return float(REVIEW_MODES.index(mode))


def review_mode(code: float | None) -> str:
    """The ``review`` value a stored number stands for (absent or unknown: ``off``)."""
    if code is None or not 0 <= code < len(REVIEW_MODES):
        return "off"
    return REVIEW_MODES[int(code)]


def has_link(text: str) -> bool:
    """Whether ``text`` holds a URL or a host name (after NFKC: full-width tricks fold)."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    low = text.lower()
    # Most comments have none of these: no regex for them (this runs per comment).
    if "." not in low and "。" not in low and ":/" not in low and "dot" not in low:
        return False
    return _LINK.search(low) is not None


class ReviewCheck:
    """A room's content check for review: its review words (matched like blocked words,
    ``WordFilter``) and links. Immutable; build a new one when the list changes."""

    def __init__(self, words: Iterable[str] = ()) -> None:
        self.words = WordFilter(words)

    def suspicious(self, text: str, key: str | None = None) -> bool:
        """Whether the text would be held as suspicious by its content. ``key``: the
        text's ``normalize`` if the caller has it."""
        if has_link(text):
            return True
        if not len(self.words):
            return False
        return self.words.match(text, normalize(text) if key is None else key) is not None


def hold_reason(
    mode: str,
    *,
    staff: bool,
    highlighted: bool,
    flagged: bool,
    first_ms: int | None,
    now_ms: int,
    first_chat_min: float,
) -> str | None:
    """Why the door holds an admitted comment (``None``: it is shown as usual). ``mode``:
    the room's ``review``; ``flagged``: ``ReviewCheck.suspicious`` said so; ``first_ms``:
    when the sender's first comment in the room was kept or held (``None``: this is it).

    Staff and highlighted senders are never held. ``all`` holds every other comment;
    ``suspicious`` holds flagged texts and the comments of first-time chatters (first
    comment less than ``first_chat_min`` minutes ago; 0: not held for that)."""
    if mode == "off" or staff or highlighted:
        return None
    if mode == "all":
        return "all"
    if flagged:
        return "content"
    first = now_ms if first_ms is None else first_ms
    if first_chat_min > 0 and now_ms - first < first_chat_min * 60_000:
        return "first_chat"
    return None


@dataclass(frozen=True)
class ShieldPlan:
    """What turning shield mode on writes (``changes``) and what turning it off puts
    back (``saved``: the values before, ``None`` where the room had none)."""

    changes: dict[str, float | str]
    saved: dict[str, float | str | None]


def shield_changes(
    current: Mapping[str, float | str],
    *,
    slow_mode_s: float,
    first_chat_min: float,
) -> ShieldPlan:
    """The shield preset over a room's own settings (``current``: only those set): guests
    may only watch, slow mode at least ``slow_mode_s``, review ``suspicious`` (unless it
    is ``all``), first-time chatters held for at least ``first_chat_min`` minutes. A
    stricter value the room already has is kept; ``saved`` holds every key written."""
    # stored as numbers, as the API writes them (rules/guests.py): gateways read numbers
    changes: dict[str, float | str] = {guests.SETTING: guests.code("watch"), "shield": 1.0}
    slow = current.get("slow_mode_s", 0.0)
    if not isinstance(slow, float) or slow < slow_mode_s:
        changes["slow_mode_s"] = float(slow_mode_s)
    if review_mode(_num(current.get("review"))) != "all":
        changes["review"] = review_code("suspicious")
    first = current.get("first_chat_min")
    if not isinstance(first, float) or first < first_chat_min:
        changes["first_chat_min"] = float(first_chat_min)
    saved = {k: current.get(k) for k in changes if k != "shield"}
    return ShieldPlan(changes, saved)


def _num(value: float | str | None) -> float | None:
    return value if isinstance(value, float) else None
