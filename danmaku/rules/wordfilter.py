"""``WordFilter``: blocked words, matched as words, fast with thousands of them.

Two kinds of blocked word, matched two ways:

* **Words of scripts written without spaces** (Chinese, Japanese kana, Thai: any word
  holding such a character) are found anywhere in the text, after ``normalize`` (case,
  full/half width, spacing and invisible-character tricks, repeated characters) of both:
  "广告" is caught in "这是广 告". One Aho-Corasick automaton (pyahocorasick) finds any of
  them in one pass: the cost grows with the text, not with the number of words.
* **Words of scripts with spaces** (Latin, Cyrillic, Greek, digits, ...) match whole
  words only, so "ass" no longer refuses "classic", "was" or "as expected", and "hell"
  no longer refuses "hello" or "help". The text is cut into words (letters and digits;
  everything else, and a change to a no-space script, separates them) after NFKC, case
  folding and removing invisible characters. A text word matches a blocked word when it
  has the same letters in the same order, each repeated at least as often: "assss" and
  "SPAAAM" match "ass" and "spam", "as" does not match "ass". Letters spaced or dotted
  out one by one are joined back ("s p a m", "s.p.a.m" match "spam"). A blocked phrase
  ("free money") matches those words in a row.

Pure and immutable once built; build a new one when the list changes (~1 ms per
thousand words).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator

import ahocorasick

from danmaku.rules.normalize import normalize

# Scripts written without spaces between words: a word there is found anywhere.
_NO_SPACES = re.compile(
    r"[\u0e00-\u0e7f\u0e80-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3100-\u312f"
    r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f]"
)
# A word of a script with spaces: letters and digits, none of the scripts above.
_WORD = re.compile(
    r"(?:(?![\u0e00-\u0e7f\u0e80-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff"
    r"\u3100-\u312f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
    r"\U00020000-\U0003134f])[^\W_])+"
)
# Invisible characters removed before words are cut (as ``normalize`` does).
_INVISIBLE = re.compile(
    r"[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
    r"\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0"
    r"\U0001bca0-\U0001bca3\U000e0000-\U000e007f\U000e0100-\U000e01ef]+"
)
MAX_PHRASE = 8  # words in a blocked phrase that are looked at

Runs = tuple[tuple[str, int], ...]  # a word as (character, how many in a row)


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


def words_of(text: str) -> list[str]:
    """The words of ``text`` (scripts with spaces), folded, in order."""
    if text.isascii():
        folded = text.lower()
    else:
        folded = unicodedata.normalize("NFKC", _INVISIBLE.sub("", text)).casefold()
    return _WORD.findall(folded)


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


class WordFilter:
    def __init__(self, words: Iterable[str]) -> None:
        self.words: frozenset[str] = frozenset(w for w in words if w and normalize(w))
        self._automaton = ahocorasick.Automaton()
        substring = False
        # skeleton of the phrase's words -> (the phrase's runs per word, as listed)
        self._phrases: dict[tuple[str, ...], list[tuple[tuple[Runs, ...], str]]] = {}
        self._longest = 0
        for word in self.words:
            if _NO_SPACES.search(word):
                self._automaton.add_word(normalize(word), word)
                substring = True
                continue
            parts = words_of(word)[:MAX_PHRASE]
            if not parts:  # punctuation only ("!!!"): found anywhere, like the above
                self._automaton.add_word(normalize(word), word)
                substring = True
                continue
            runs = tuple(_runs(p) for p in parts)
            key = tuple(_skeleton(r) for r in runs)
            self._phrases.setdefault(key, []).append((runs, word))
            self._longest = max(self._longest, len(key))
        self._substring = substring
        if substring:
            self._automaton.make_automaton()

    def __len__(self) -> int:
        return len(self.words)

    def match(self, text: str, key: str | None = None) -> str | None:
        """The first blocked word found in ``text`` (as it was listed), or ``None``.
        ``key``: ``normalize(text)`` if the caller has it already (a gateway normalises
        each comment once, for this and for the door's duplicate guard)."""
        if self._substring:
            for _end, word in self._automaton.iter(normalize(text) if key is None else key):
                return str(word)
        if self._phrases:
            found = words_of(text)
            for word in self._phrase_hits(found, self._longest):
                return word
            for word in self._phrase_hits(spelled_out(found), 1):
                return word
        return None

    def _phrase_hits(self, found: list[str], longest: int) -> Iterator[str]:
        """Blocked words and phrases among ``found`` (words in a row, up to ``longest``)."""
        runs = [_runs(w) for w in found]
        skeletons = [_skeleton(r) for r in runs]
        for i in range(len(found)):
            for n in range(1, min(longest, len(found) - i) + 1):
                for want, word in self._phrases.get(tuple(skeletons[i : i + n]), ()):
                    if all(_covers(t, w) for t, w in zip(runs[i : i + n], want, strict=True)):
                        yield word
