"""Replay exports: each format parses with a real parser and keeps what viewers need."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import orjson
import pysubs2

from danmaku.rules import replay_export


def comments() -> list[dict[str, object]]:
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
