"""Replay exports: each format parses with a real parser and keeps what viewers need."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from typing import Any

import orjson
import pysubs2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from danmaku.rules import replay_export


def comments() -> list[dict[str, Any]]:
    return [
        {
            "id": "1-0",
            "offset_ms": 1500,
            "uid": "a",
            "nick": "A",
            "text": "hello",
            "color": "#ff0000",
            "mode": "scroll",
            "prio": 0,
            "ts": 1_700_000_001_500,
        },
        {
            "id": "2-0",
            "offset_ms": 2000,
            "uid": "b",
            "nick": "B",
            "text": "置顶 {\\b1}",
            "color": "#00ff00",
            "mode": "top",
            "prio": 2,
            "ts": 1_700_000_002_000,
        },
        {
            "id": "3-0",
            "offset_ms": 2100,
            "uid": "c",
            "nick": "C",
            "text": "bottom <x>&",
            "color": "#0000ff",
            "mode": "bottom",
            "prio": 0,
            "ts": 1_700_000_002_100,
        },
    ] + [
        {
            "id": f"{9 + k}-0",
            "offset_ms": 3000 + k * 10,
            "uid": f"u{k}",
            "nick": "n",
            "text": f"burst comment {k}",
            "color": "#ffffff",
            "mode": "scroll",
            "prio": 0,
            "ts": 1,
        }
        for k in range(40)
    ]


def test_json_export() -> None:
    doc = orjson.loads(replay_export.to_json("r", {"id": "b1"}, comments()))
    assert doc["room"] == "r" and doc["count"] == 43 and doc["comments"][0]["offset_ms"] == 1500


def test_bilibili_xml_parses_with_times_modes_and_colours() -> None:
    root = ET.fromstring(replay_export.to_bilibili_xml(comments(), chat_id="b1"))
    ds = root.findall("d")
    assert len(ds) == 43
    p = ds[0].get("p", "").split(",")
    assert p[0] == "1.500" and p[1] == "1" and p[3] == str(0xFF0000) and p[7] == "1-0"
    assert ds[1].get("p", "").split(",")[1] == "5" and ds[2].get("p", "").split(",")[1] == "4"
    assert ds[2].text == "bottom <x>&"  # escaped in the file, intact when parsed


def test_ass_parses_and_places_comments_without_overlap() -> None:
    subs = pysubs2.SSAFile.from_string(replay_export.to_ass(comments(), title="t"))
    assert len(subs.events) == 43
    first = subs.events[0]
    assert first.start == 1500 and first.end == 1500 + replay_export.SCROLL_MS
    assert "\\move(1920," in first.text and "\\c&H0000FF&" in first.text
    top = subs.events[1]
    assert "\\an8" in top.text
    # user braces and backslashes never become override tags
    assert top.plaintext.endswith("置顶 ｛＼b1｝")
    # the burst is spread over lanes: no two comments share a row at the same moment
    rows = [e.text.split("\\move(1920,")[1].split(",")[0] for e in subs.events[3:]]
    assert len(set(rows)) > 10


# ---- streamed == built the old way -------------------------------------------------------
# The reference is the code before exports were streamed (commit 344c614): the whole
# document built at once with xml.etree and pysubs2, user text cleaned the same way.


def reference_xml(comments: list[dict[str, Any]], chat_id: str) -> bytes:
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
                str({"scroll": 1, "bottom": 4, "top": 5}.get(str(c.get("mode")), 1)),
                "25",
                str(color),
                str(int(c.get("ts", 0)) // 1000),
                "0",
                uid_hash,
                str(c["id"]),
            ]
        )
        text = replay_export.xml_clean(str(c.get("text", "")))
        ET.SubElement(root, "d", p=p).text = text
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body


def reference_ass(comments: list[dict[str, Any]], title: str) -> str:
    x = replay_export
    subs = pysubs2.SSAFile()
    subs.info.update({"Title": x.ass_line(title), "PlayResX": "1920", "PlayResY": "1080"})
    subs.styles["Danmaku"] = pysubs2.SSAStyle(
        fontname="WenQuanYi Micro Hei",
        fontsize=x.FONT_SIZE,
        outline=2.0,
        shadow=0.0,
        primarycolor=pysubs2.Color(255, 255, 255),
        outlinecolor=pysubs2.Color(0, 0, 0),
        alignment=pysubs2.Alignment.TOP_LEFT,
    )
    rows = max(1, x.HEIGHT // x.LANE_H - 1)
    scroll, top, bottom = x._Lanes(rows), x._Lanes(rows), x._Lanes(rows)
    for c in comments:
        t = float(c["offset_ms"])
        text = x.ass_text(str(c.get("text", "")))
        if c.get("count", 1) > 1:
            text += f" ×{c['count']}"
        color = x._ass_color(str(c.get("color", "#ffffff")))
        mode = c.get("mode", "scroll")
        if mode == "top":
            y = top.fix(t) * x.LANE_H
            tags, end = f"\\an8\\pos({x.WIDTH // 2},{y})", t + x.FIXED_MS
        elif mode == "bottom":
            y = x.HEIGHT - bottom.fix(t) * x.LANE_H
            tags, end = f"\\an2\\pos({x.WIDTH // 2},{y})", t + x.FIXED_MS
        else:
            width = x._text_width(text)
            y = scroll.scroll(t, width) * x.LANE_H
            tags, end = f"\\move({x.WIDTH},{y},{-width},{y})", t + x.SCROLL_MS
        subs.append(
            pysubs2.SSAEvent(
                start=int(t), end=int(end), style="Danmaku", text=f"{{{tags}\\c{color}}}{text}"
            )
        )
    return str(subs.to_string("ass"))


def streamed(enc: replay_export.Encoder, items: list[dict[str, Any]], page: int) -> bytes:
    chunks = [enc.head(len(items))]
    chunks += [enc.feed(items[i : i + page]) for i in range(0, len(items), page)]
    return b"".join(chunks) + enc.tail()


@pytest.mark.parametrize("page", [1, 7, 1000])
def test_streamed_exports_equal_the_whole_document_built_the_old_way(page: int) -> None:
    items = [*comments(), dict(comments()[0], id="99-0", text="x2", count=3)]
    meta = {"id": "b1", "title": "Finals", "start": 1, "end": None, "by": "mod"}
    json_doc = orjson.dumps(
        {"room": "r", "broadcast": meta, "count": len(items), "comments": items},
        option=orjson.OPT_INDENT_2,
    )
    assert streamed(replay_export.JsonEncoder("r", meta), items, page) == json_doc
    assert streamed(replay_export.XmlEncoder("b1"), items, page) == reference_xml(items, "b1")
    ass = streamed(replay_export.AssEncoder("Finals"), items, page)
    assert ass == reference_ass(items, "Finals").encode()


def test_empty_exports_equal_the_old_way() -> None:
    meta = {"id": "b1"}
    empty = orjson.dumps(
        {"room": "r", "broadcast": meta, "count": 0, "comments": []}, option=orjson.OPT_INDENT_2
    )
    assert replay_export.to_json("r", meta, []) == empty
    assert replay_export.to_bilibili_xml([], "b1") == reference_xml([], "b1")
    assert replay_export.to_ass([], "t") == reference_ass([], "t")


# ---- escaping: arbitrary user text -------------------------------------------------------
def comment(k: int, text: str, nick: str, mode: str) -> dict[str, Any]:
    return {
        "id": f"{k + 1}-0",
        "offset_ms": 1000 * k,
        "uid": nick,
        "nick": nick,
        "text": text,
        "color": "#ffffff",
        "mode": mode,
        "prio": 0,
        "ts": 1_700_000_000_000 + 1000 * k,
    }


texts = st.lists(
    st.tuples(st.text(), st.text(max_size=20), st.sampled_from(["scroll", "top", "bottom"])),
    max_size=12,
)
NASTY = ["\n", "\r\n", "\\N", "\\n", "\\h", "{\\b1}", "}{", "\x00", "\x0b", "\u2028", "[Events]"]
nasty_text = st.lists(st.sampled_from(NASTY) | st.text(max_size=5)).map("".join)


@settings(max_examples=300, deadline=None)
@given(title=nasty_text | st.text(), items=texts, nasty=st.lists(nasty_text, max_size=4))
def test_ass_has_one_dialogue_per_comment_and_its_sections_intact(
    title: str, items: list[tuple[str, str, str]], nasty: list[str]
) -> None:
    cs = [comment(k, t, n, m) for k, (t, n, m) in enumerate(items)]
    cs += [comment(len(cs) + k, t, "x", "scroll") for k, t in enumerate(nasty)]
    doc = replay_export.to_ass(cs, title=title)
    lines = doc.split("\n")
    # No reader may see more lines than we wrote.
    assert doc.splitlines() == lines[:-1] and lines[-1] == ""
    assert [ln for ln in lines if ln.startswith("[")] == [
        "[Script Info]",
        "[V4+ Styles]",
        "[Events]",
    ]
    assert sum(ln.startswith("Title:") for ln in lines) == 1
    dialogues = [ln for ln in lines if ln.startswith("Dialogue:")]
    assert len(dialogues) == len(cs)
    assert lines.index("[Events]") < lines.index(dialogues[0]) if dialogues else True
    for line, c in zip(dialogues, cs, strict=True):
        body = line.split(",", 9)[9]
        # one override block, ours; the user's text holds no markup and no break
        assert body.startswith("{") and body.count("{") == 1 and body.count("}") == 1
        shown = body[body.index("}") + 1 :]
        assert "\\" not in shown
        assert len(shown) == len(c["text"]), "one character shown per character typed"
    parsed = pysubs2.SSAFile.from_string(doc)
    assert len(parsed.events) == len(cs)
    assert parsed.info["Title"] == replay_export.ass_line(title).strip()


@settings(max_examples=300, deadline=None)
@given(
    items=texts, nasty=st.lists(nasty_text | st.text(alphabet="<>&\"'\x00\x1f\ufffe"), max_size=4)
)
def test_xml_parses_and_reads_back_every_text(
    items: list[tuple[str, str, str]], nasty: list[str]
) -> None:
    cs = [comment(k, t, n, m) for k, (t, n, m) in enumerate(items)]
    cs += [comment(len(cs) + k, t, "x", "scroll") for k, t in enumerate(nasty)]
    root = ET.fromstring(replay_export.to_bilibili_xml(cs, chat_id="b1"))
    ds = root.findall("d")
    assert len(ds) == len(cs)
    for d, c in zip(ds, cs, strict=True):
        assert (d.text or "") == "".join(ch for ch in c["text"] if xml_allowed(ch))
        assert d.get("p", "").split(",")[7] == c["id"]


def xml_allowed(ch: str) -> bool:
    """XML 1.0's Char production (CR left out: a parser reads it back as LF)."""
    o = ord(ch)
    return (
        o in (0x9, 0xA) or 0x20 <= o <= 0xD7FF or 0xE000 <= o <= 0xFFFD or 0x10000 <= o <= 0x10FFFF
    )


def test_a_title_cannot_inject_subtitle_lines_or_sections() -> None:
    title = "Finals\n[Events]\nDialogue: 0,0:00:00.00,9:00:00.00,Danmaku,,0,0,0,,{\\fs200}PWNED"
    doc = replay_export.to_ass(comments()[:1], title=title)
    assert doc.split("\n").count("[Events]") == 1 and "\nDialogue: 0,0:00:00.00,9" not in doc
    assert len(pysubs2.SSAFile.from_string(doc).events) == 1


def test_typed_line_breaks_and_overrides_show_as_typed() -> None:
    cs = [comment(0, "a\\Nb\\nc\\hd{\\pos(0,0)}e\nf", "n", "scroll")]
    event = pysubs2.SSAFile.from_string(replay_export.to_ass(cs)).events[0]
    assert event.plaintext.endswith("a＼Nb＼nc＼hd｛＼pos(0,0)｝e f")
    assert "\\N" not in event.text and event.text.count("\\pos") == 0


def test_xml_drops_control_characters_and_escapes_markup() -> None:
    cs = [comment(0, "a\x00b\x1b<c>&\"d'\r\n", "n", "scroll")]
    body = replay_export.to_bilibili_xml(cs)
    assert b"a\x00" not in body and b"&lt;c&gt;&amp;" in body
    assert ET.fromstring(body).findall("d")[0].text == "ab<c>&\"d'\n"
