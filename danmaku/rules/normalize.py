"""``normalize``: the key under which comment texts are compared.

Used for spam folding (identical comments of one tick fold into one item with a
``count``), for the duplicate guard (same user, same text within a window) and, later,
for word filters (normalise both the text and the blocked word, then compare).

The result is a comparison key, never something to display. Steps, in this order:

1. Unicode NFKC: full-width and half-width forms, compatibility characters and ligatures
   become their plain forms (``"６６６"`` -> ``"666"``, ``"ｌｏｌ"`` -> ``"lol"``, ``"ﬁ"``
   -> ``"fi"``).
2. ``str.casefold``: case-insensitive (``"LOL"`` -> ``"lol"``, ``"Straße"`` ->
   ``"strasse"``).
3. Whitespace and invisible characters are removed: everything ``str.isspace`` says is
   whitespace, plus zero-width and formatting characters (U+00AD soft hyphen, U+034F,
   U+061C, U+115F/U+1160/U+3164/U+FFA0 Hangul fillers, U+17B4-U+17B5,
   U+180B-U+180F, U+200B-U+200F, U+202A-U+202E, U+2060-U+206F, U+FE00-U+FE0F and
   U+E0100-U+E01EF variation selectors, U+FEFF, U+1BCA0-U+1BCA3, U+E0000-U+E007F tags).
   So ``"6 6 6"``, ``"666 "`` and ``"6\\u200b66"`` all become ``"666"``.
4. NFKC again (removing a character or casefolding can leave a decomposed sequence).
5. Every run of the same character collapses to one occurrence: ``"6666666"`` ->
   ``"6"``, ``"哈哈哈哈"`` -> ``"哈"``, ``"looool"`` -> ``"lol"``, ``"2333"`` -> ``"23"``.
   Repeated units longer than one character are *not* folded: ``"lolol"`` stays
   ``"lolol"`` and differs from ``"lol"``.

Consequences worth knowing: ``"666"``, ``"６６６"``, ``"6666666"``, ``"666 "`` and ``"66"``
all normalise to ``"6"``; punctuation is kept (``"gg!"`` differs from ``"gg"``, but
``"gg!!!"`` equals ``"gg!"``); a text made only of whitespace or invisible characters
normalises to ``""``. The function is pure, total (never raises) and idempotent:
``normalize(normalize(s)) == normalize(s)``.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

__all__ = ["normalize"]

# Step 3: whitespace (``\s`` is str.isspace for str patterns) and invisible characters.
_INVISIBLE = re.compile(
    r"[\s\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
    r"\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0"
    r"\U0001bca0-\U0001bca3\U000e0000-\U000e007f\U000e0100-\U000e01ef]+"
)
# Step 5: a character followed by one or more copies of itself.
_RUN = re.compile(r"(.)\1+", re.DOTALL)


_NOT_ASCII = bytes(range(0x80, 0x100))


@lru_cache(maxsize=512)
def _byte_masks(n: int) -> tuple[int, int]:
    """``n`` bytes of 0x7F and ``n`` bytes of 0x80, as integers."""
    return int.from_bytes(b"\x7f" * n), int.from_bytes(b"\x80" * n)


def _collapse_ascii(key: str) -> str:
    """Step 5 for ASCII without the regex, which tries a group and a back-reference at
    every position (1-2 us a comment, a gateway's largest single cost per comment). With
    the bytes as one integer, all in C: XOR with the bytes shifted by one is a zero byte
    exactly where a character repeats the one before; the carry-free zero-byte test
    ``~(((x & 0x7f..) + 0x7f..) | x | 0x7f..) & 0x80..`` gives 0x80 in those bytes; set
    on the characters, it marks them (ASCII never has the high bit) for ``translate`` to
    delete."""
    if len(key) < 16:
        return _RUN.sub(_first, key)  # short ("666", "gg"): the regex is cheaper
    raw = key.encode()
    n = len(raw) - 1
    rest = int.from_bytes(raw[1:])
    x = rest ^ int.from_bytes(raw[:-1])
    low7, high = _byte_masks(n)
    repeats = ~(((x & low7) + low7) | x | low7) & high
    if not repeats:
        return key
    return (raw[:1] + (rest | repeats).to_bytes(n).translate(None, _NOT_ASCII)).decode()


def _first(run: re.Match[str]) -> str:
    # A function, not the template r"\1": Python 3.11 parses a template on every call.
    return run[1]


def normalize(text: str) -> str:
    """Return the comparison key of ``text`` (see the module docstring for the rules).

    Promises: pure and total; idempotent; two texts that differ only in width, case,
    whitespace, invisible characters or the length of runs of one character get the same
    key.
    """
    if text.isascii():
        # The same steps for ASCII, cheaper: NFKC leaves it as it is, casefold is lower,
        # and its only invisible characters are whitespace.
        return _collapse_ascii("".join(text.lower().split()))
    else:
        key = unicodedata.normalize("NFKC", text).casefold()
        key = _INVISIBLE.sub("", key)
        key = unicodedata.normalize("NFKC", key)
    return _RUN.sub(_first, key)
