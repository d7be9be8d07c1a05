"""``rules.resume.plan``: a resume either continues with no gap or says why it cannot;
never a silent skip. Properties over every position, plus the named cases of issue 21."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from danmaku.rules.resume import plan

seqs = st.integers(0, 50)
epochs = st.sampled_from(["", "e1", "e2"])


@given(since=st.none() | seqs, epoch=epochs, room_epoch=epochs, hub=seqs, lag=st.integers(0, 5))
def test_a_resume_continues_exactly_or_says_why(
    since: int | None, epoch: str, room_epoch: str, hub: int, lag: int
) -> None:
    room = hub + lag  # the room's committed position; this gateway may lag behind it
    start = plan(since, epoch, room_epoch, hub)
    if start.check:
        start = plan(since, epoch, room_epoch, hub, room)
    assert not start.check
    if since is None:
        assert start.failed is None and start.min_seq == 0 and not start.replay
        return
    stale = bool(epoch and room_epoch and epoch != room_epoch)
    assert (start.failed == "epoch") == stale
    if start.failed is not None:
        # A fresh start: nothing withheld, nothing replayed.
        assert start.min_seq == 0 and not start.replay
        assert start.failed in ("epoch", "ahead")
        assert stale or since > room
        return
    # Continuing: either replay from since (the gap check happens while reading), or
    # join live withholding exactly the frames the client has, never one it lacks.
    assert since <= room
    if start.replay:
        assert since < hub
    else:
        assert start.min_seq == since + 1 and since >= hub


def test_a_reset_room_with_the_old_epoch_inside_the_new_numbering() -> None:
    # Old era: the client saw up to 3. New era: the room is at 10 (3 is inside it).
    start = plan(3, "old", "new", 10)
    assert start.failed == "epoch" and start.outcome == "epoch"


def test_a_client_ahead_of_the_room_is_told_not_skipped() -> None:
    assert plan(15, "e", "e", 10).check  # this gateway might lag: ask the room
    assert plan(15, "e", "e", 10, 12).failed == "ahead"
    assert plan(12, "e", "e", 10, 12).min_seq == 13  # the gateway lagged: live, no repeat


def test_old_clients_without_epoch_resume_as_before() -> None:
    assert plan(5, "", "e", 10).replay
    assert plan(10, "", "e", 10).min_seq == 11
    assert plan(None, "", "e", 10).outcome == "live"
