"""Replay exports of a broadcast's comments: our JSON, Bilibili-style XML, ASS subtitles.

Each format is an *encoder* that builds the file piece by piece, so a broadcast of any
size is exported with a page of comments in memory at a time: ``head(count)`` first,
then ``feed(comments)`` for each page of recorded comments (dicts with ``id``,
``offset_ms``, ``uid``, ``nick``, ``text``, ``color``, ``mode``, ``prio``, ``ts``) in
export order (``offset_ms``, then ``id``), then ``tail()``. The bytes are the same as
building the whole document at once (``to_json``, ``to_bilibili_xml``, ``to_ass``; the
JSON is orjson's 2-space indented form).

The ASS file follows pysubs2's layout (a maintained subtitle library) so common players
(mpv, VLC, anything on libass) render it: scrolling comments move right to left with
``\\move`` in lanes that do not overlap, top and bottom ones are centred for a few
seconds.

Escaping (user text is hostile): in ASS, a comment's text cannot become markup or a new
line (backslashes and braces become full-width look-alikes, so a typed ``\\N``, ``\\h``
or ``{\\b1}`` shows as typed; line breaks and control characters become spaces), and a
broadcast title cannot start a new line or section. In XML, characters XML 1.0 does not
allow (C0 controls but tab and newline, carriage return, U+FFFE/U+FFFF, surrogates) are
removed and ``& < >`` (and ``"`` in attributes) are escaped, exactly as
``xml.etree`` writes them; ``"`` and ``'`` need no escaping in element text.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import orjson
import pysubs2
from pysubs2.formats.substation import SubstationFormat

Comment = dict[str, Any]

WIDTH, HEIGHT = 1920, 1080
FONT_SIZE = 48
LANE_H = int(FONT_SIZE * 1.25)
SCROLL_MS = 8000  # time a scrolling comment takes to cross the screen
FIXED_MS = 4000  # time a top/bottom comment stays
_BILI_MODE = {"scroll": 1, "bottom": 4, "top": 5}
FORMATS = ("json", "xml", "ass")

# XML 1.0 allows #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF];
# #xD is dropped too, since a parser reads it back as #xA.
_XML_BAD = re.compile("[^\t\n\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Whatever any reader may take for a line break, and the other control characters.
_ASS_BREAKS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class Encoder(Protocol):
    """One export format, built piece by piece (see the module docstring)."""

    def head(self, count: int) -> bytes: ...

    def feed(self, comments: Iterable[Comment]) -> bytes: ...

    def tail(self) -> bytes: ...


# ---- JSON ------------------------------------------------------------------------------
class JsonEncoder:
    """Our schema: ``{"room", "broadcast", "count", "comments": [...]}``, 2-space indent."""

    def __init__(self, room: str, broadcast: dict[str, Any]) -> None:
        self.room = room
        self.broadcast = broadcast
        self._first = True

    def head(self, count: int) -> bytes:
        doc = {"room": self.room, "broadcast": self.broadcast, "count": count, "comments": []}
        whole = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
        return whole.removesuffix(b"]\n}")  # ends with '"comments": ['

    def feed(self, comments: Iterable[Comment]) -> bytes:
        parts = []
        for c in comments:
            # Strings never hold a raw newline in JSON: re-indenting by lines is exact.
            one = orjson.dumps(c, option=orjson.OPT_INDENT_2).replace(b"\n", b"\n    ")
            parts.append((b"\n    " if self._first else b",\n    ") + one)
            self._first = False
        return b"".join(parts)

    def tail(self) -> bytes:
        return b"]\n}" if self._first else b"\n  ]\n}"


# ---- Bilibili XML ----------------------------------------------------------------------
def xml_clean(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot hold (and without CR)."""
    return _XML_BAD.sub("", text)


def _xml_text(text: str) -> str:
    return xml_clean(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _xml_attr(text: str) -> str:
    return _xml_text(text).replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#09;")


class XmlEncoder:
    """Bilibili's danmaku XML: ``<d p="time,mode,size,color,timestamp,pool,uid_hash,id">``
    (time in seconds, mode 1 scroll / 4 bottom / 5 top, colour as a decimal RGB)."""

    def __init__(self, chat_id: str = "0") -> None:
        self.chat_id = chat_id

    def head(self, count: int) -> bytes:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n<i><chatserver>danmaku</chatserver>'
            f"<chatid>{_xml_text(self.chat_id)}</chatid><maxlimit>{count}</maxlimit>"
        ).encode()

    def feed(self, comments: Iterable[Comment]) -> bytes:
        parts = []
        for c in comments:
            color = int(str(c.get("color", "#ffffff"))[1:], 16)
            uid_hash = hashlib.blake2b(str(c.get("uid", "")).encode(), digest_size=4).hexdigest()
            p = ",".join(
                [
                    f"{c['offset_ms'] / 1000:.3f}",
                    str(_BILI_MODE.get(str(c.get("mode")), 1)),
                    "25",
                    str(color),
                    str(int(c.get("ts", 0)) // 1000),
                    "0",
                    uid_hash,
                    str(c["id"]),
                ]
            )
            text = _xml_text(str(c.get("text", "")))
            # xml.etree's form: an element without text is written self-closed.
            parts.append(
                f'<d p="{_xml_attr(p)}">{text}</d>' if text else f'<d p="{_xml_attr(p)}" />'
            )
        return "".join(parts).encode()

    def tail(self) -> bytes:
        return b"</i>"


# ---- ASS -------------------------------------------------------------------------------
def ass_line(text: str) -> str:
    """``text`` on one line: line breaks and control characters become spaces."""
    return _ASS_BREAKS.sub(" ", text)


def ass_text(text: str) -> str:
    """User text that can never become ASS markup or a line break: braces and
    backslashes are replaced by their full-width look-alikes (so ``\\N``, ``\\h`` and
    ``{...}`` show as typed), line breaks and control characters by spaces."""
    return ass_line(text).replace("\\", "＼").replace("{", "｛").replace("}", "｝")


def _ass_color(color: str) -> str:
    rr, gg, bb = color[1:3], color[3:5], color[5:7]
    return f"&H{bb}{gg}{rr}&".upper()


def _text_width(text: str) -> int:
    return sum(FONT_SIZE if ord(ch) > 0x2E7F else FONT_SIZE // 2 + 2 for ch in text)


class _Lanes:
    """Row allocation without overlap: a scrolling comment takes a row once the one ahead
    has fully entered the screen and will not be caught before it leaves."""

    def __init__(self, rows: int) -> None:
        self.free_at = [0.0] * rows  # when the row's last comment has fully entered
        self.leaves_at = [0.0] * rows  # when it has left the screen
        self.fixed = [0.0] * rows

    def scroll(self, t: float, width: int) -> int:
        speed = (WIDTH + width) / SCROLL_MS
        for row in range(len(self.free_at)):
            # The new comment's head reaches x=0 at t + WIDTH/speed; it must not catch the
            # previous one, which leaves at leaves_at.
            if self.free_at[row] <= t and t + WIDTH / speed >= self.leaves_at[row]:
                self.free_at[row] = t + width / speed
                self.leaves_at[row] = t + SCROLL_MS
                return row
        row = min(range(len(self.free_at)), key=lambda r: self.free_at[r])
        self.free_at[row] = t + width / speed
        self.leaves_at[row] = t + SCROLL_MS
        return row

    def fix(self, t: float) -> int:
        for row in range(len(self.fixed)):
            if self.fixed[row] <= t:
                self.fixed[row] = t + FIXED_MS
                return row
        row = min(range(len(self.fixed)), key=lambda r: self.fixed[r])
        self.fixed[row] = t + FIXED_MS
        return row


class AssEncoder:
    """ASS subtitles for the recording (1920x1080 script resolution), one ``Dialogue``
    line per comment. Lane allocation carries over from page to page."""

    def __init__(self, title: str = "danmaku") -> None:
        self.title = ass_line(title)
        rows = max(1, HEIGHT // LANE_H - 1)
        self._scroll, self._top, self._bottom = _Lanes(rows), _Lanes(rows), _Lanes(rows)

    def head(self, count: int) -> bytes:
        subs = pysubs2.SSAFile()
        subs.info.update({"Title": self.title, "PlayResX": str(WIDTH), "PlayResY": str(HEIGHT)})
        subs.styles["Danmaku"] = pysubs2.SSAStyle(
            fontname="WenQuanYi Micro Hei",
            fontsize=FONT_SIZE,
            outline=2.0,
            shadow=0.0,
            primarycolor=pysubs2.Color(255, 255, 255),
            outlinecolor=pysubs2.Color(0, 0, 0),
            alignment=pysubs2.Alignment.TOP_LEFT,
        )
        return str(subs.to_string("ass")).encode()  # ends with the [Events] Format line

    def feed(self, comments: Iterable[Comment]) -> bytes:
        stamp = SubstationFormat.ms_to_timestamp
        lines = []
        for c in comments:
            t = float(c["offset_ms"])
            text = ass_text(str(c.get("text", "")))
            if c.get("count", 1) > 1:
                text += f" ×{c['count']}"
            color = _ass_color(str(c.get("color", "#ffffff")))
            mode = c.get("mode", "scroll")
            if mode == "top":
                y = self._top.fix(t) * LANE_H
                tags, end = f"\\an8\\pos({WIDTH // 2},{y})", t + FIXED_MS
            elif mode == "bottom":
                y = HEIGHT - self._bottom.fix(t) * LANE_H
                tags, end = f"\\an2\\pos({WIDTH // 2},{y})", t + FIXED_MS
            else:
                width = _text_width(text)
                y = self._scroll.scroll(t, width) * LANE_H
                tags, end = f"\\move({WIDTH},{y},{-width},{y})", t + SCROLL_MS
            lines.append(
                f"Dialogue: 0,{stamp(int(t))},{stamp(int(end))},Danmaku,,0,0,0,,"
                f"{{{tags}\\c{color}}}{text}\n"
            )
        return "".join(lines).encode()

    def tail(self) -> bytes:
        return b""


class Aligned:
    """An encoder whose comments are moved ``delay_ms`` earlier (not before 0): the
    viewers' video delay of the broadcast (``delay_ms`` in its meta, from the room's
    ``replay_offset_s``), so a comment lands on the moment of the video its author saw.
    Export order is kept: every offset moves by the same amount (those that would fall
    before 0 all land on 0, still in order)."""

    def __init__(self, inner: Encoder, delay_ms: int) -> None:
        self.inner = inner
        self.delay_ms = delay_ms

    def head(self, count: int) -> bytes:
        return self.inner.head(count)

    def feed(self, comments: Iterable[Comment]) -> bytes:
        d = self.delay_ms
        moved = [c | {"offset_ms": max(0, int(c.get("offset_ms", 0)) - d)} for c in comments]
        return self.inner.feed(moved)

    def tail(self) -> bytes:
        return self.inner.tail()


def delay_of(broadcast: dict[str, Any]) -> int:
    """The broadcast's video delay in ms (0 when it has none or it is not a number)."""
    d = broadcast.get("delay_ms")
    return int(d) if isinstance(d, int | float) and not isinstance(d, bool) and d > 0 else 0


def encoder(fmt: str, room: str, broadcast: dict[str, Any]) -> Encoder:
    """The encoder of ``fmt`` (one of ``FORMATS``) for a broadcast of ``room``; the
    offsets move by the broadcast's ``delay_ms`` (``Aligned``) where it has one."""
    enc: Encoder
    if fmt == "xml":
        enc = XmlEncoder(chat_id=str(broadcast["id"]))
    elif fmt == "ass":
        enc = AssEncoder(title=str(broadcast.get("title") or f"{room} {broadcast['id']}"))
    elif fmt == "json":
        enc = JsonEncoder(room, broadcast)
    else:
        raise ValueError(f"unknown export format {fmt!r}")
    delay = delay_of(broadcast)
    return Aligned(enc, delay) if delay else enc


def whole(enc: Encoder, comments: Sequence[Comment]) -> bytes:
    """The whole file at once (small exports and tests)."""
    return enc.head(len(comments)) + enc.feed(comments) + enc.tail()


def to_json(room: str, broadcast: dict[str, Any], comments: Sequence[Comment]) -> bytes:
    return whole(JsonEncoder(room, broadcast), comments)


def to_bilibili_xml(comments: Sequence[Comment], chat_id: str = "0") -> bytes:
    return whole(XmlEncoder(chat_id), comments)


def to_ass(comments: Sequence[Comment], title: str = "danmaku") -> str:
    return whole(AssEncoder(title), comments).decode()
