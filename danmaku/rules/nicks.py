"""Nicknames people can trust (pure, no I/O).

``clean`` is applied wherever a nick enters (``POST /api/session``, token claims):
NFKC; no control, format (bidi overrides and isolates, zero-width joiners and spaces,
soft hyphen), private-use, unassigned or invisible filler characters; runs of white
space become one space; at most ``MAX_MARKS`` combining marks on one letter (no
"zalgo" towers over the neighbours' names); capped in length.

``skeleton`` is the Unicode TR39 confusable skeleton, so that "Ѕtrеamеr" (Cyrillic
Ѕ and е) and "StreamerI" vs "Streamerl" compare equal: each character mapped to its
prototype by ``CONFUSABLES`` (before and after NFKC), then case-folded (comparison
ignores case: "STREAMER" is the streamer's name too), then ``m`` -> ``rn`` and ``d`` ->
``cl`` as TR39 does, then NFD. A room refuses a guest's or viewer's nick whose
skeleton equals a staff member's (``StaffNicks``).

``CONFUSABLES`` is a small vendored subset of Unicode's confusables.txt (UTS #39,
Unicode Security Mechanisms; data © Unicode, Inc., under the Unicode License v3,
https://www.unicode.org/license.txt): the Cyrillic, Greek, Armenian, Cherokee and
fullwidth/mathematical letters and the digits and symbols that pass for Latin letters
in names, with their confusables.txt prototypes. Capital forms are mapped before case
folding (Cyrillic "В" is Latin "B"; its small form "в" is not "b"). Characters outside
the subset keep their own identity: the check catches the common impersonations, not
every possible one.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping

MAX_MARKS = 2  # combining marks kept on one base character

# Invisible characters that are letters or symbols to Unicode (so the category test
# below keeps them): Hangul fillers, the braille blank, the Khmer inherent vowels,
# the Mongolian vowel separator, the combining grapheme joiner.
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u2800\u17b4\u17b5\u180e\u034f")
_DROP_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn"})

# fmt: off
# source -> prototype, after NFKC (so fullwidth and mathematical letters, already
# folded to ASCII by NFKC, need no entry).
_PAIRS = {
    # Cyrillic capitals
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
    "С": "C", "Т": "T", "Х": "X", "У": "Y", "Ѕ": "S", "І": "l", "Ј": "J", "Ԛ": "Q",
    "Ԝ": "W", "Ү": "Y", "Ӏ": "l", "З": "3", "Ь": "b",
    # Cyrillic small letters
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "ѕ": "s",
    "і": "i", "ј": "j", "ԁ": "d", "һ": "h", "ӏ": "l", "ԛ": "q", "ԝ": "w", "ү": "y",
    "ɡ": "g", "ь": "b", "ѵ": "v", "ԍ": "G",
    # Greek capitals
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "l", "Κ": "K", "Μ": "M",
    "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Greek small letters
    "α": "a", "ο": "o", "ν": "v", "ρ": "p", "ι": "i", "κ": "k", "υ": "u", "χ": "x",
    "γ": "y", "σ": "o", "ϲ": "c", "ϳ": "j",
    # Armenian and Cherokee letters that pass for Latin ones
    "Օ": "O", "օ": "o", "ս": "u", "հ": "h", "ո": "n", "ց": "g", "զ": "q",
    "Ꭺ": "A", "Ᏼ": "B", "Ꮯ": "C", "Ꭼ": "E", "Ꮋ": "H", "Ꮶ": "K", "Ꮇ": "M",
    "Ꮲ": "P", "Ꭲ": "T", "Ꮃ": "W", "Ꮪ": "S", "Ꮓ": "Z",
    # Latin look-alikes: I and l and the digit 1 and the bar; 0 and O
    "I": "l", "1": "l", "|": "l", "ǀ": "l", "0": "O", "ı": "i", "ȷ": "j",
    "ɑ": "a", "ɩ": "i", "ʏ": "y", "ℓ": "l",
}
# fmt: on
CONFUSABLES: Mapping[int, str] = {ord(k): v for k, v in _PAIRS.items()}
# Multi-letter prototypes (confusables.txt maps m -> rn, d -> cl), after case folding.
_SEQUENCES = (("m", "rn"), ("d", "cl"))


class NickError(ValueError):
    """The nick is empty once cleaned."""


def clean(raw: str, max_chars: int) -> str:
    """The nick as it may be shown. Raises ``NickError`` when nothing printable is left."""
    # Marks are counted decomposed (NFKC would hide one in a precomposed letter), and the
    # result composed again: NFKC's output.
    text = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", raw))
    out: list[str] = []
    marks = 0
    for ch in text:
        cat = unicodedata.category(ch)
        if cat in ("Zs", "Zl", "Zp") or ch.isspace():  # tabs and newlines too (Cc)
            ch, cat = " ", "Zs"
        elif cat in _DROP_CATEGORIES or ch in _INVISIBLE:
            continue
        if cat in ("Mn", "Me"):
            marks += 1
            if marks > MAX_MARKS or not out:
                continue
        else:
            marks = 0
        out.append(ch)
    nick = " ".join(unicodedata.normalize("NFC", "".join(out)).split())
    nick = nick[: max(1, max_chars)].strip()
    if not nick:
        raise NickError("the nick is empty once invisible and control characters are removed")
    return nick


def skeleton(nick: str) -> str:
    """The TR39 skeleton (case-insensitive) of ``nick``: equal for look-alikes."""
    # The table before NFKC too: NFKC turns some look-alikes into other letters (Greek
    # lunate sigma "ϲ", a "c", becomes "σ"); after it for what NFKC folds (fullwidth).
    # The table maps capital "I" to "l" (they look alike), so case aside "NICK" would
    # differ from "nick": "l" and "i" are one letter here ("Inick" still looks like
    # "lnick", and "NICK" is "nick").
    text = unicodedata.normalize("NFD", nick).translate(CONFUSABLES)
    text = unicodedata.normalize("NFKC", text).translate(CONFUSABLES).casefold()
    for seq, proto in _SEQUENCES:
        text = text.replace(seq, proto)
    text = "".join(ch for ch in text if ch not in _INVISIBLE and unicodedata.category(ch) != "Cf")
    return unicodedata.normalize("NFD", " ".join(text.split())).replace("l", "i")


class StaffNicks:
    """A room's staff nicks (uid -> nick) and their skeletons."""

    __slots__ = ("_by_skeleton", "nicks")

    def __init__(self, nicks: Mapping[str, str] | None = None) -> None:
        self.nicks = dict(nicks or {})
        self._by_skeleton: dict[str, set[str]] = {}
        for uid, nick in self.nicks.items():
            self._by_skeleton.setdefault(skeleton(nick), set()).add(uid)

    def __len__(self) -> int:
        return len(self.nicks)

    def mimics(self, nick: str, uid: str) -> str | None:
        """The staff nick that ``nick`` (of user ``uid``) looks like, if it is not the
        user's own: ``None`` when it may be used."""
        if not self.nicks:
            return None
        owners = self._by_skeleton.get(skeleton(nick))
        if not owners or uid in owners:
            return None
        return self.nicks[next(iter(sorted(owners)))]
