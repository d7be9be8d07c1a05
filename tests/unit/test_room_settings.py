"""The room-settings schema (``rules/room_settings.py``): what is stored, what is shown."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from danmaku.config import Settings
from danmaku.rules.room_settings import SCHEMA, by_name, effective, encode_changes, public


def shown_values(name: str) -> st.SearchStrategy[object]:
    s = by_name(name)
    assert s is not None
    if s.kind == "choice":
        return st.sampled_from(s.choices)
    if s.kind == "flag":
        return st.booleans()
    if s.kind == "text":
        return st.sampled_from(["https://cdn.example/live/room.m3u8", "http://a.b/c.mp4"])
    assert s.lo is not None and s.hi is not None
    return st.floats(s.lo, s.hi)


@given(data=st.data())
def test_every_value_the_api_takes_is_stored_as_a_number_and_shown_back(
    data: st.DataObject,
) -> None:
    for setting in SCHEMA:
        value = data.draw(shown_values(setting.name))
        stored = encode_changes({setting.name: value}) if setting.writable else None
        number = setting.encode(value)  # type: ignore[arg-type]
        assert isinstance(number, str if setting.kind == "text" else float)
        if stored is not None:
            assert stored == {setting.name: number}
        assert public({setting.name: number}) == {setting.name: value}


def test_unset_settings_take_the_server_defaults() -> None:
    settings = Settings(display_budget=25.0, guests="watch", first_chat_minutes=3.0)
    values = effective({}, settings)
    assert set(values) == {s.name for s in SCHEMA}
    assert values["budget"] == 25.0 and values["guests"] == "watch"
    assert values["first_chat_min"] == 3.0 and values["review"] == "off"
    assert values["mute"] is False and values["shield"] is False
    # what a room set wins; counters in the hash are not settings
    room = effective({"budget": 70.0, "guests": 2.0, "words_v": 9.0}, settings)
    assert room["budget"] == 70.0 and room["guests"] == "off" and "words_v" not in room


def test_a_stored_number_no_choice_has_shows_the_default() -> None:
    assert public({"review": 7.0, "guests": 0.5}) == {"review": "off", "guests": "comment"}


def test_only_writable_known_settings_can_be_patched() -> None:
    assert encode_changes({"budget": None, "mute": True}) == {"budget": None, "mute": 1.0}
    assert encode_changes({"stream_url": ""}) == {"stream_url": None}  # back to the default
    with pytest.raises(ValueError):
        encode_changes({"shield": True})
    with pytest.raises(ValueError):
        encode_changes({"words_v": 1.0})
