"""``WordFilter``: blocked words, matched as words, fast with thousands of them.

Kinds of entry, matched different ways (both sides, the text and the entry, are folded
the same way; an entry that cannot be accepted raises ``WordError`` from ``check_entry``,
which the API turns into a 422, and is skipped, listed in ``refused``, by ``WordFilter``):

* **Words of scripts written without spaces** (Chinese, Japanese kana, Thai: any entry
  holding such a character) are found anywhere in the text, after ``normalize`` (case,
  full/half width, spacing and invisible-character tricks, repeated characters) of both:
  "广告" is caught in "这是广 告". One Aho-Corasick automaton (pyahocorasick) finds any of
  them in one pass: the cost grows with the text, not with the number of words. A ``*``
  there stands for up to ``CJK_STAR`` (3) characters: "广*告" catches "广X告".
* **Words of scripts with spaces** (Latin, Cyrillic, Greek, digits, ...) match whole
  words only, so "ass" does not refuse "classic", "was", "assess" or "as expected", and
  "hell" does not refuse "hello" or "help". A text word matches a blocked word when it
  has the same letters in the same order, each repeated at least as often: "assss" and
  "SPAAAM" match "ass" and "spam", "as" does not match "ass". Letters spaced or dotted
  out one by one are joined back ("s p a m", "a.s.s", "a-s-s", "a_s_s" match), but two
  words of two letters or more are never joined ("as so" is not "asso"). A blocked
  phrase ("free money") matches those words in a row. A ``*`` stands for any run of
  letters or digits inside one word (``f*ck``, ``spam*``, ``*coin``); such an entry is
  one word, with letters before its first or after its last ``*``.
* **Regular expressions** ``re:PATTERN`` (at most ``MAX_REGEX`` characters) are searched,
  case-insensitively, in the first ``REGEX_TEXT`` characters of the text folded for case,
  width and invisible characters (spaces kept, so ``\\b`` and ``\\s`` work). Refused:
  backreferences, lookarounds, a quantifier or an alternation inside a repeated group
  (``(a+)+``, ``(a|b)*``), more than one unbounded repeat (``x+``, ``x*``, ``x{2,}``), as
  these take time that grows faster than the text. At most ``MAX_REGEXES`` of them are
  used (their cost does grow with their number); the rest are listed in ``refused``.

Folding of scripts with spaces, in order: NFKC and invisible characters removed; then
**leetspeak**, only in a whitespace-separated chunk that holds a letter: ``@`` -> a,
``$`` -> s everywhere in it, ``!`` and ``|`` -> i or l when a letter or digit follows
(a final "!" is punctuation: "spam!!!" is "spam"); the digits ``0`` -> o, ``1`` -> i or
l, ``3`` -> e, ``5`` -> s, ``7`` -> t only in a word (letters and digits) that holds a
letter and no more digits than letters, so numbers stay numbers: "2333", "1080p",
"720p", "100k" are left alone, "h3ll", "5h1t", "b00bs" are read as words. Ambiguous
``1``/``!``/``|`` are tried both as i and as l. The text is checked as written and as
read this way; an entry with leet characters is stored read this way. Then
**confusables**, only in a word that mixes Latin letters with other scripts: Cyrillic,
Greek, Armenian and Cherokee look-alikes of Latin letters become those letters ("hеll"
with a Cyrillic е is "hell"), from the vendored table of ``danmaku.rules.nicks``; a
word wholly in another script keeps its letters (a Russian "сор" is not "cop": block
the word in its own script). Then case folding.

Pure and immutable once built; build a new one when the list changes (~1 ms per
thousand words).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator

# The parser is private but stable (3.11+): it vets re: entries before they are used.
from re import _constants as _rc  # type: ignore[attr-defined]
from re import _parser as _rp  # type: ignore[attr-defined]
from typing import Any

import ahocorasick

from danmaku.rules.nicks import CONFUSABLES
from danmaku.rules.normalize import normalize

__all__ = ["WordError", "WordFilter", "check_entry", "words_of"]

MAX_PHRASE = 8  # words in a blocked phrase that are looked at
MAX_WORD = 64  # characters of an entry that is not re:
CJK_STAR = 3  # characters a * stands for in a script without spaces
MAX_REGEX = 100  # characters of a re: pattern
REGEX_TEXT = 100  # characters of the folded text a re: entry is searched in
MAX_REGEXES = 16  # re: entries used by one filter
REGEX_PREFIX = "re:"

_NO_SPACE_CHARS = (
    r"\u0e00-\u0e7f\u0e80-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3100-\u312f"
    r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f"
)
# Scripts written without spaces between words: a word there is found anywhere.
_NO_SPACES = re.compile(f"[{_NO_SPACE_CHARS}]")
# A word of a script with spaces: letters and digits, none of the scripts above.
_WORD = re.compile(f"(?:(?![{_NO_SPACE_CHARS}])[^\\W_])+")
# Invisible characters removed before words are cut (as ``normalize`` does).
_INVISIBLE = re.compile(
    r"[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
    r"\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0"
    r"\U0001bca0-\U0001bca3\U000e0000-\U000e007f\U000e0100-\U000e01ef]+"
)
# Leetspeak: a text without these reads as written (a leet digit is read only in a word
# with letters, so one of them touches a letter; a final "!" is punctuation).
_LEET_ANY = re.compile(r"[@$]|[!|](?=[^\W_])|(?<=[^\W\d_])[01357]|[01357](?=[^\W\d_])")
_LETTER = re.compile(r"[^\W\d_]")
_CHUNK = re.compile(r"\S+")
_ALNUM = re.compile(r"[^\W_]+")
_BANG = re.compile(r"[!|]+(?=[^\W_])")  # ! and | followed by a letter or digit
_SYMBOLS = str.maketrans({"@": "a", "$": "s"})
_DIGITS = {one: str.maketrans({"0": "o", "1": one, "3": "e", "5": "s", "7": "t"}) for one in "il"}
# Look-alikes of Latin letters (non-ASCII source, ASCII letter prototype), lower case.
# TR39 maps capital I look-alikes to "l" (I and l look alike); a word filter reads them
# as the letter they imitate, "i".
_LOOKALIKES = {
    k: v.lower() for k, v in CONFUSABLES.items() if k > 0x7F and v.isascii() and v.isalpha()
}
_LOOKALIKES.update({ord("І"): "i", ord("Ι"): "i", ord("Ӏ"): "i"})
_ASCII_LETTER = re.compile(r"[a-zA-Z]")

Runs = tuple[tuple[str, int], ...]  # a word as (character, how many in a row)


class WordError(ValueError):
    """The entry cannot be a blocked word; the message says why."""


def _runs(word: str) -> Runs:
    out: list[tuple[str, int]] = []
    for ch in word:
        if out and out[-1][0] == ch:
            out[-1] = (ch, out[-1][1] + 1)
        else:
            out.append((ch, 1))
    return tuple(out)


def _skeleton(runs: Runs) -> str:
    return "".join(ch for ch, _ in runs)


def _covers(text: Runs, word: Runs) -> bool:
    """Same characters in the same order, each run at least as long as the word's."""
    return all(t >= w for (_, t), (_, w) in zip(text, word, strict=True))


def _unfold(text: str) -> str:
    """NFKC without invisible characters; case kept (look-alike capitals need it)."""
    if text.isascii():
        return text
    return unicodedata.normalize("NFKC", _INVISIBLE.sub("", text))


def _fold_word(word: str) -> str:
    if word.isascii():
        return word.lower()
    if _ASCII_LETTER.search(word):  # mixed scripts: look-alikes are the Latin letters
        word = word.translate(_LOOKALIKES)
    return word.casefold()


def _leet_word(word: str, one: str) -> str:
    digits = sum(ch.isdigit() for ch in word)
    if digits and len(word) - digits >= digits:
        return word.translate(_DIGITS[one])
    return word


def _leet(text: str, one: str) -> str:
    """``text`` read as leetspeak, ``1``/``!``/``|`` as ``one`` (see the module doc)."""

    def chunk(m: re.Match[str]) -> str:
        part = m[0]
        if not _LETTER.search(part):
            return part
        part = _BANG.sub(lambda b: one * len(b[0]), part.translate(_SYMBOLS))
        return _ALNUM.sub(lambda w: _leet_word(w[0], one), part)

    return _CHUNK.sub(chunk, text)


def _readings(text: str) -> list[str]:
    """``text`` (unfolded) as written, then read as leetspeak when that differs."""
    out = [text]
    if _LEET_ANY.search(text):
        for one in "il":
            read = _leet(text, one)
            if read not in out:
                out.append(read)
    return out


def words_of(text: str) -> list[str]:
    """The words of ``text`` (scripts with spaces) as written, folded, in order."""
    return [_fold_word(w) for w in _WORD.findall(_unfold(text))]


def spelled_out(found: list[str]) -> list[str]:
    """The words that runs of one-letter words spell ("s p a m" -> "spam")."""
    out: list[str] = []
    letters: list[str] = []
    for word in [*found, ""]:
        if len(word) == 1:
            letters.append(word)
            continue
        if len(letters) > 1:
            out.append("".join(letters))
        letters = []
    return out


def _check_regex(pattern: str) -> re.Pattern[str]:
    if not pattern:
        raise WordError("a re: entry needs a pattern after 're:'")
    if len(pattern) > MAX_REGEX:
        raise WordError(f"a re: pattern is at most {MAX_REGEX} characters")
    try:
        tree = _rp.parse(pattern)
        compiled = re.compile(pattern, re.IGNORECASE)
    except (re.error, RecursionError, OverflowError) as exc:
        raise WordError(f"not a valid regular expression: {exc}") from None
    repeats = 0

    def walk(items: Iterable[tuple[Any, Any]], inside: bool) -> None:
        nonlocal repeats
        for op, av in items:
            if op in (_rc.ASSERT, _rc.ASSERT_NOT):
                raise WordError("lookarounds are not allowed in a re: entry")
            if op in (_rc.GROUPREF, _rc.GROUPREF_EXISTS):
                raise WordError("backreferences are not allowed in a re: entry")
            if op in (_rc.MAX_REPEAT, _rc.MIN_REPEAT, getattr(_rc, "POSSESSIVE_REPEAT", None)):
                _lo, hi, sub = av
                if hi > 1:
                    if inside:
                        raise WordError(
                            "a quantifier inside a repeated group (like (a+)+) is not allowed"
                        )
                    repeats += 1
                    if repeats > 1:
                        raise WordError("a re: entry has at most one repeat (+, *, {n,m})")
                walk(sub, inside or hi > 1)
            elif op == _rc.BRANCH:
                if inside:
                    raise WordError("an alternation inside a repeated group is not allowed")
                for branch in av[1]:
                    walk(branch, inside)
            elif op == _rc.SUBPATTERN:
                walk(av[-1], inside)
            elif op == getattr(_rc, "ATOMIC_GROUP", None):
                walk(av, inside)

    walk(list(tree), False)
    if compiled.search(""):
        raise WordError("a re: pattern that matches the empty text would block everything")
    return compiled


def _wildcard_regex(pieces: list[str]) -> re.Pattern[str]:
    parts = []
    for piece in pieces:
        parts.append(
            "".join(re.escape(ch) + ("+" if n == 1 else f"{{{n},}}") for ch, n in _runs(piece))
        )
    return re.compile(r"[^\W_]*".join(parts))


class _Parsed:
    """One entry, compiled (``check_entry`` raises on the way)."""

    def __init__(self, entry: str) -> None:
        self.entry = entry
        self.regex: re.Pattern[str] | None = None
        self.cjk: list[tuple[str, re.Pattern[str] | None, int, int]] = []
        self.phrases: list[tuple[str, ...]] = []  # folded words
        self.wildcards: list[tuple[str, str, re.Pattern[str]]] = []  # prefix, suffix, regex
        if entry.startswith(REGEX_PREFIX):
            self.regex = _check_regex(entry[len(REGEX_PREFIX) :])
            return
        if len(entry) > MAX_WORD:
            raise WordError(f"an entry is at most {MAX_WORD} characters ({MAX_REGEX} after 're:')")
        if not normalize(entry.replace("*", "")):
            raise WordError("an entry needs letters besides '*' and spaces")
        if _NO_SPACES.search(entry):
            self._cjk(entry)
        elif "*" in entry:
            self._wildcard(entry)
        else:
            self._literal(entry)

    def _cjk(self, entry: str) -> None:
        pieces = [normalize(p) for p in entry.split("*")]
        while pieces and not pieces[0]:  # a * at either end adds nothing to a search
            pieces.pop(0)
        while pieces and not pieces[-1]:
            pieces.pop()
        if len(pieces) == 1:
            self.cjk.append((pieces[0], None, 0, 0))
            return
        star = f".{{0,{CJK_STAR}}}"
        regex = re.compile(star.join(re.escape(p) for p in pieces), re.DOTALL)
        i = max(range(len(pieces)), key=lambda j: len(pieces[j]))  # the longest: rarest
        before = sum(len(p) + CJK_STAR for p in pieces[:i]) + len(pieces[i])
        after = sum(len(p) + CJK_STAR for p in pieces[i + 1 :])
        self.cjk.append((pieces[i], regex, before, after))

    def _literal(self, entry: str) -> None:
        raw = _unfold(entry)
        readings = _readings(raw)
        for read in readings[1:] if len(readings) > 1 else readings:
            parts = tuple(_fold_word(w) for w in _WORD.findall(read))[:MAX_PHRASE]
            if not parts:  # punctuation only ("!!!"): found anywhere, like CJK
                self.cjk.append((normalize(entry), None, 0, 0))
                return
            if parts not in self.phrases:
                self.phrases.append(parts)

    def _wildcard(self, entry: str) -> None:
        raw = _unfold(entry)
        readings = _readings(raw)
        for read in readings[1:] if len(readings) > 1 else readings:
            pieces = []
            for piece in read.split("*"):
                if piece and not _WORD.fullmatch(piece):
                    raise WordError(
                        "a wildcard entry is one word: letters or digits and '*' (use re: for more)"
                    )
                pieces.append(_fold_word(piece))
            prefix, suffix = pieces[0], pieces[-1]
            if not prefix and not suffix:
                raise WordError(
                    "a wildcard entry needs letters before its first or after its last '*'"
                )
            regex = _wildcard_regex(pieces)
            item = (_skeleton(_runs(prefix)), _skeleton(_runs(suffix)), regex)
            if item not in self.wildcards:
                self.wildcards.append(item)


def check_entry(entry: str) -> None:
    """Raise ``WordError`` (a ``ValueError``) saying why ``entry`` cannot be a blocked
    word: only ``*``, a wildcard entry of several words, or a ``re:`` pattern that is
    too long, invalid, or could take time growing faster than the text."""
    _Parsed(entry)


class WordFilter:
    """Blocked words of a room (see the module docstring). ``refused``: entries that
    were skipped, with the reason (entries stored before they were checked)."""

    def __init__(self, words: Iterable[str]) -> None:
        accepted: set[str] = set()
        self.refused: dict[str, str] = {}
        # trigger (normalised) -> [(entry, check regex or None, chars before, after)]
        triggers: dict[str, list[tuple[str, re.Pattern[str] | None, int, int]]] = {}
        # skeleton of the phrase's words -> (the phrase's runs per word, as listed)
        self._phrases: dict[tuple[str, ...], list[tuple[tuple[Runs, ...], str]]] = {}
        self._prefixes: dict[str, list[tuple[re.Pattern[str], str]]] = {}
        self._suffixes: dict[str, list[tuple[re.Pattern[str], str]]] = {}
        self._regexes: list[tuple[re.Pattern[str], str]] = []
        self._longest = 0
        for word in sorted(w for w in words if w and normalize(w)):
            try:
                parsed = _Parsed(word)
            except WordError as exc:
                self.refused[word] = str(exc)
                continue
            if parsed.regex is not None:
                if len(self._regexes) >= MAX_REGEXES:
                    self.refused[word] = f"more than {MAX_REGEXES} re: entries"
                    continue
                self._regexes.append((parsed.regex, word))
            accepted.add(word)
            for key, check, before, after in parsed.cjk:
                triggers.setdefault(key, []).append((word, check, before, after))
            for parts in parsed.phrases:
                runs = tuple(_runs(p) for p in parts)
                skel = tuple(_skeleton(r) for r in runs)
                self._phrases.setdefault(skel, []).append((runs, word))
                self._longest = max(self._longest, len(skel))
            for prefix, suffix, regex in parsed.wildcards:
                if prefix:
                    self._prefixes.setdefault(prefix, []).append((regex, word))
                else:
                    self._suffixes.setdefault(suffix, []).append((regex, word))
        self.words: frozenset[str] = frozenset(accepted)
        self._automaton = ahocorasick.Automaton()
        for key, hits in triggers.items():
            self._automaton.add_word(key, tuple(hits))
        self._substring = bool(triggers)
        if self._substring:
            self._automaton.make_automaton()
        self._spaced = bool(self._phrases or self._prefixes or self._suffixes)
        self._affix_lengths = sorted({len(k) for k in (*self._prefixes, *self._suffixes)})

    def __len__(self) -> int:
        return len(self.words)

    def match(self, text: str, key: str | None = None) -> str | None:
        """The first blocked word found in ``text`` (as it was listed), or ``None``.
        ``key``: ``normalize(text)`` if the caller has it already (a gateway normalises
        each comment once, for this and for the door's duplicate guard)."""
        if self._substring:
            norm = normalize(text) if key is None else key
            for end, hits in self._automaton.iter(norm):
                for word, check, before, after in hits:
                    if check is None:
                        return str(word)
                    window = norm[max(0, end + 1 - before) : end + 1 + after]
                    if check.search(window):
                        return str(word)
        if self._spaced or self._regexes:
            raw = _unfold(text)
            if self._spaced:
                for read in _readings(raw):
                    found = [_fold_word(w) for w in _WORD.findall(read)]
                    for word in self._phrase_hits(found, self._longest):
                        return word
                    spelled = spelled_out(found)
                    for word in self._phrase_hits(spelled, 1):
                        return word
                    for word in self._wildcard_hits(found + spelled):
                        return word
            if self._regexes:
                folded = raw[:REGEX_TEXT].casefold()
                for regex, word in self._regexes:
                    if regex.search(folded):
                        return word
        return None

    def _phrase_hits(self, found: list[str], longest: int) -> Iterator[str]:
        """Blocked words and phrases among ``found`` (words in a row, up to ``longest``)."""
        if not self._phrases:
            return
        runs = [_runs(w) for w in found]
        skeletons = [_skeleton(r) for r in runs]
        for i in range(len(found)):
            for n in range(1, min(longest, len(found) - i) + 1):
                for want, word in self._phrases.get(tuple(skeletons[i : i + n]), ()):
                    if all(_covers(t, w) for t, w in zip(runs[i : i + n], want, strict=True)):
                        yield word

    def _wildcard_hits(self, found: list[str]) -> Iterator[str]:
        """Wildcard entries matching one of ``found``: looked up by each literal prefix
        and suffix length in use (a handful), then checked with the entry's regex."""
        if not self._affix_lengths:
            return
        for w in found:
            skel = _skeleton(_runs(w))
            for n in self._affix_lengths:
                if n > len(skel):
                    break
                for regex, word in self._prefixes.get(skel[:n], ()):
                    if regex.fullmatch(w):
                        yield word
                for regex, word in self._suffixes.get(skel[-n:], ()):
                    if regex.fullmatch(w):
                        yield word
