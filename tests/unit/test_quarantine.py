"""RoomQuarantine: per-room backoff after a failed tick, pure, with ``now`` passed in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from danmaku.worker.quarantine import RoomQuarantine


def test_a_failing_room_waits_longer_each_time_up_to_the_cap() -> None:
    q = RoomQuarantine(first=0.5, cap=4.0, stable_s=30.0)
    now, delays = 0.0, []
    for _ in range(6):
        delay = q.failed("r", now)
        delays.append(delay)
        assert q.blocked("r", now + delay - 0.01) and not q.blocked("r", now + delay)
        now += delay
        q.retried("r", now)
        now += 0.1  # fails again at once
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert not q.blocked("other", now)


def test_a_room_that_ran_stable_starts_from_the_first_delay_and_is_forgotten() -> None:
    q = RoomQuarantine(first=0.5, cap=30.0, stable_s=10.0)
    assert q.failed("r", 0.0) == 0.5
    q.retried("r", 0.5)
    assert q.failed("r", 1.0) == 1.0
    q.retried("r", 2.0)
    q.forget_recovered(5.0)
    assert len(q) == 1  # not stable yet
    q.forget_recovered(12.0)
    assert len(q) == 0
    assert q.failed("r", 13.0) == 0.5


@given(st.lists(st.tuples(st.integers(0, 50), st.floats(0, 1e6)), max_size=300))
def test_memory_is_bounded(events: list[tuple[int, float]]) -> None:
    q = RoomQuarantine(max_rooms=20)
    for room, now in events:
        q.failed(f"r{room}", now)
        assert len(q) <= 20
