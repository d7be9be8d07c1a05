"""Export order with bounded memory: a recording is read in pages of its stream (id
order) but exported by ``(offset_ms, id)``.

The two orders almost agree (a comment's offset comes from the gateway's clock, its id
from Redis a few milliseconds later), but nothing guarantees it, so ``Ordering`` decides,
from a first pass's per-page summaries (``PageSummary``: the smallest and largest key of
the page's kept comments), which pages to read and when a held comment is final:

- after reading page ``i``, a held comment whose key is below every key of pages
  ``i+1..`` (the suffix minimum) is final and is emitted, in order;
- at most ``cap`` comments are held: beyond that the largest are let go (``dropped``),
  and the scan goes on only while later pages may hold keys below the smallest one let
  go; then a new round starts from the first page not fully emitted.

For a recording in (nearly) key order this is one pass holding about a page; for any
order it is exact, holds at most ``cap`` plus one page of comments, and reads the stream
at most ``len / cap`` more times. Pure: no I/O, the caller reads the pages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Generic, TypeVar

Key = tuple[int, str]  # (offset_ms, comment id): the export order
V = TypeVar("V")
_first = itemgetter(0)


@dataclass(frozen=True, slots=True)
class PageSummary:
    """One page of a recording as a first pass saw it: its last stream id (pages are
    ``(previous page's last_id, last_id]``), how many kept comments it holds and their
    smallest and largest key (``None`` when it holds none)."""

    last_id: str
    count: int
    lo: Key | None
    hi: Key | None


def _min(a: Key | None, b: Key | None) -> Key | None:
    """The smaller of two bounds, ``None`` meaning no bound (above every key)."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


class Ordering(Generic[V]):
    """Drives the reading of pages so that ``feed`` returns every kept comment exactly
    once, in key order (see the module docstring). Use::

        while (i := ordering.next_page()) is not None:
            emit(ordering.feed(i, read_page(i)))  # read_page: [(key, value), ...]
    """

    def __init__(self, pages: Sequence[PageSummary], cap: int) -> None:
        if cap < 1:
            raise ValueError("cap must be at least 1")
        self.cap = cap
        self._lo = [p.lo for p in pages]
        self._hi = [p.hi for p in pages]
        self._suffix: list[Key | None] = []
        self._after: Key | None = None  # everything up to here is emitted
        self._dropped: Key | None = None  # smallest key let go in this round
        self._held: list[tuple[Key, V]] = []
        self._next = self._new_round()
        self.reads = 0  # pages read (fed) so far
        self.max_held = 0  # most comments held at once (after a page was added)

    def _open_from(self, start: int) -> int | None:
        """The first page from ``start`` that still holds a comment not emitted."""
        after = self._after
        for i in range(start, len(self._hi)):
            hi = self._hi[i]
            if hi is not None and (after is None or hi > after):
                return i
        return None

    def _new_round(self) -> int | None:
        """Start a scan: the lower bound of what each page still holds, over the pages
        not fully emitted (a page fully emitted must not hold the bound down)."""
        self._dropped = None
        n = len(self._lo)
        suffix: list[Key | None] = [None] * (n + 1)
        after = self._after
        for i in range(n - 1, -1, -1):
            hi = self._hi[i]
            is_open = hi is not None and (after is None or hi > after)
            suffix[i] = _min(self._lo[i], suffix[i + 1]) if is_open else suffix[i + 1]
        self._suffix = suffix
        return self._open_from(0)

    def next_page(self) -> int | None:
        """The page to read next, or ``None`` when every comment has been emitted."""
        return self._next

    def feed(self, page: int, items: Sequence[tuple[Key, V]]) -> list[tuple[Key, V]]:
        """Take page ``page``'s kept comments (any order; a subset of what the summary
        counted is fine, e.g. after a delete) and return those now final, in order."""
        if page != self._next:
            raise ValueError(f"expected page {self._next}, got {page}")
        self.reads += 1
        after, dropped, held = self._after, self._dropped, self._held
        for item in items:
            key = item[0]
            if (after is None or key > after) and (dropped is None or key < dropped):
                held.append(item)
        self.max_held = max(self.max_held, len(held))
        held.sort(key=_first)
        if len(held) > self.cap:
            self._dropped = dropped = held[self.cap][0]
            del held[self.cap :]
        rest = self._suffix[page + 1]
        bound = _min(rest, dropped)
        n = (
            len(held)
            if bound is None
            else next((j for j, item in enumerate(held) if item[0] >= bound), len(held))
        )
        out = held[:n]
        del held[:n]
        if out:
            self._after = out[-1][0]
        nxt = None if rest is None else self._open_from(page + 1)
        if dropped is not None and (nxt is None or (rest is not None and rest >= dropped)):
            # No later page holds a key below what was let go: this round is over (all
            # held keys were below it, so all are out); the next one starts over.
            nxt = self._new_round()
        self._next = nxt
        return out
