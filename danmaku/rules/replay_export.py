"""Replay exports of a broadcast's comments: our JSON, Bilibili-style XML, ASS subtitles.

Pure functions over a list of recorded comments (dicts with ``id``, ``offset_ms``,
``uid``, ``nick``, ``text``, ``color``, ``mode``, ``prio``), sorted by offset. The ASS
file is built with pysubs2 (a maintained subtitle library) so common players (mpv, VLC,
anything on libass) render it: scrolling comments move right to left with ``\\move`` in
lanes that do not overlap, top and bottom ones are centred for a few seconds.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any

import orjson
import pysubs2

Comment = dict[str, Any]

WIDTH, HEIGHT = 1920, 1080
FONT_SIZE = 48
LANE_H = int(FONT_SIZE * 1.25)
SCROLL_MS = 8000  # time a scrolling comment takes to cross the screen
FIXED_MS = 4000  # time a top/bottom comment stays
_BILI_MODE = {"scroll": 1, "bottom": 4, "top": 5}


def to_json(room: str, broadcast: dict[str, Any], comments: Sequence[Comment]) -> bytes:
    """Our schema: the broadcast's metadata and every kept comment with its offset."""
    return orjson.dumps(
        {"room": room, "broadcast": broadcast, "count": len(comments), "comments": list(comments)},
        option=orjson.OPT_INDENT_2,
    )


def to_bilibili_xml(comments: Sequence[Comment], chat_id: str = "0") -> bytes:
    """Bilibili's danmaku XML: ``<d p="time,mode,size,color,timestamp,pool,uid_hash,id">``
    (time in seconds, mode 1 scroll / 4 bottom / 5 top, colour as a decimal RGB)."""
    root = ET.Element("i")
    ET.SubElement(root, "chatserver").text = "danmaku"
    ET.SubElement(root, "chatid").text = chat_id
    ET.SubElement(root, "maxlimit").text = str(len(comments))
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
        ET.SubElement(root, "d", p=p).text = str(c.get("text", ""))
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body


def _ass_text(text: str) -> str:
    """User text can never become ASS markup: braces and backslashes are replaced by
    their full-width look-alikes."""
    return text.replace("\\", "＼").replace("{", "｛").replace("}", "｝")


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


def to_ass(comments: Sequence[Comment], title: str = "danmaku") -> str:
    """ASS subtitles for the recording (1920x1080 script resolution)."""
    subs = pysubs2.SSAFile()
    subs.info.update({"Title": title, "PlayResX": str(WIDTH), "PlayResY": str(HEIGHT)})
    subs.styles["Danmaku"] = pysubs2.SSAStyle(
        fontname="WenQuanYi Micro Hei",
        fontsize=FONT_SIZE,
        outline=2.0,
        shadow=0.0,
        primarycolor=pysubs2.Color(255, 255, 255),
        outlinecolor=pysubs2.Color(0, 0, 0),
        alignment=pysubs2.Alignment.TOP_LEFT,
    )
    rows = max(1, HEIGHT // LANE_H - 1)
    scroll, top, bottom = _Lanes(rows), _Lanes(rows), _Lanes(rows)
    for c in comments:
        t = float(c["offset_ms"])
        text = _ass_text(str(c.get("text", "")))
        if c.get("count", 1) > 1:
            text += f" ×{c['count']}"
        color = _ass_color(str(c.get("color", "#ffffff")))
        mode = c.get("mode", "scroll")
        if mode == "top":
            y = top.fix(t) * LANE_H
            tags, end = f"\\an8\\pos({WIDTH // 2},{y})", t + FIXED_MS
        elif mode == "bottom":
            y = HEIGHT - bottom.fix(t) * LANE_H
            tags, end = f"\\an2\\pos({WIDTH // 2},{y})", t + FIXED_MS
        else:
            width = _text_width(text)
            y = scroll.scroll(t, width) * LANE_H
            tags, end = f"\\move({WIDTH},{y},{-width},{y})", t + SCROLL_MS
        subs.append(
            pysubs2.SSAEvent(
                start=int(t), end=int(end), style="Danmaku", text=f"{{{tags}\\c{color}}}{text}"
            )
        )
    return str(subs.to_string("ass"))
