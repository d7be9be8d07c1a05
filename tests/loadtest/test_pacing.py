"""Sender pacing: the schedule follows the target rate (ramps included) over distinct
senders, a late sender catches up within a bound, the process layout keeps senders apart
from viewers, and a local server's limits admit the schedule (pure, or trio on a mock
clock)."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import pytest
import trio
import trio.testing

from loadtest.client import MAX_LAG_S, Conn, ConnSpec, Counters, SenderPlan, _send_loop
from loadtest.generator import due_fn
from loadtest.localserver import server_env
from loadtest.scenario import Phase, Scenario, ScenarioError, load

SPIKE = ["viewers=500", "phases.1.join=1500", "procs=2", "senders=400"]  # bench's spike case


class FakeWS:
    """Records sends (trio time, nonce) and acks each at once; ``stall_at`` makes the send
    of that comment take ``stall_s`` (a blocked loop)."""

    def __init__(self, conn: Conn | None = None, stall_at: int = -1, stall_s: float = 0.0):
        self.closed: int | None = None
        self.sent: list[tuple[float, str]] = []
        self.conn, self.stall_at, self.stall_s = conn, stall_at, stall_s

    async def send_message(self, text: str) -> None:
        nonce = text.rsplit('"nonce":"', 1)[1].split('"', 1)[0]
        self.sent.append((trio.current_time(), nonce))
        if self.conn is not None:
            self.conn.inflight.pop(nonce, None)  # acked at once
        if len(self.sent) == self.stall_at:
            await trio.sleep(self.stall_s)


def test_phase_integral_and_its_inverse() -> None:
    ramp = Phase("spike", 10.0, 2000.0, rate_from=200.0)
    assert ramp.offered == pytest.approx(11_000)
    for x in (0.5, 100.0, 5000.0, 10_999.5):
        assert ramp.offered_by(ramp.time_for(x)) == pytest.approx(x)
    flat = Phase("flat", 4.0, 0.0)
    assert flat.offered == 0 and flat.time_for(1) == 4.0
    up_from_zero = Phase("up", 2.0, 10.0, rate_from=0.0)
    assert up_from_zero.time_for(up_from_zero.offered) == pytest.approx(2.0)


def test_due_times_give_every_phase_its_target() -> None:
    sc = load("celebrity-spike", SPIKE)
    due = [sc.due_time(n + 0.5) for n in range(11_302)]
    assert due[-2:] == [None, None] and due[11_299] is not None
    per_phase = [0, 0, 0]
    for t in due:
        if t is not None:
            per_phase[sc.phase_at(t)] += 1
    assert per_phase == [200, 11_000, 100]
    # 20/s in "before": the first second has 20 comments, not one per sender (the old
    # pacing sent all 400 senders' first comments within 0.2 s, then nothing for 20 s)
    assert sum(1 for t in due if t is not None and t < 1.0) == 20
    # within the ramp the rate grows from 200/s to 2000/s
    spike = [t for t in due if t is not None and 10.0 <= t < 20.0]
    assert sum(1 for t in spike if t < 11.0) == pytest.approx(290, abs=2)
    assert sum(1 for t in spike if t >= 19.0) == pytest.approx(1910, abs=2)


async def test_senders_offer_the_ramp_from_distinct_users(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """All 400 senders of the spike case on one clock: each phase gets its target, all 400
    senders send in the spike, and none exceeds 5/s (the per-sender peak)."""
    sc = load("celebrity-spike", SPIKE)
    c = Counters(len(sc.phases) + 2)
    t0 = trio.current_time() + 1.0
    sends: dict[int, list[float]] = defaultdict(list)

    async def one(j: int) -> None:
        conn = Conn(ConnSpec("u", "r"), c, is_viewer=False)
        ws = FakeWS(conn)
        plan = SenderPlan(f"s{j}", j, sc.senders, sc.max_inflight, sc.text_bytes)
        await _send_loop(ws, conn, plan, c, due_fn(sc, t0))  # type: ignore[arg-type]
        sends[j] = [t - t0 for t, _ in ws.sent]

    async with trio.open_nursery() as nursery:
        for j in range(sc.senders):
            nursery.start_soon(one, j)
    assert [st.sent for st in c.stages] == [0, 200, 11_000, 100, 0]
    assert sum(st.late + st.skipped for st in c.stages) == 0
    in_spike = {j for j, times in sends.items() if any(10 <= t < 20 for t in times)}
    assert len(in_spike) == 400
    gaps = [b - a for times in sends.values() for a, b in itertools.pairwise(times)]
    # 2000/s over 400 senders; jittered arrivals move each comment within its slot of
    # the aggregate schedule (1/2000 s), so a sender's gap is 400 slots +- 1
    assert min(gaps) >= (400 - 1) / 2000 - 1e-6


async def test_a_late_sender_catches_up_within_max_lag(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sc = Scenario(name="t", phases=(Phase("p", 10.0, 10.0),), senders=1)
    c = Counters(3)
    conn = Conn(ConnSpec("u", "r"), c, is_viewer=False)
    ws = FakeWS(conn, stall_at=30, stall_s=2.52)  # comment 30 (due 2.95 s) blocks 2.52 s
    t0 = trio.current_time()
    plan = SenderPlan("s0", 0, 1, 16, 24)
    await _send_loop(ws, conn, plan, c, due_fn(sc, t0))  # type: ignore[arg-type]
    st = c.stages[1]
    assert st.sent + st.late == 100 and st.skipped == 0
    # resumed at 5.47 s: comments due 3.05..4.45 s are more than 1 s late and dropped,
    # the last second's worth (due 4.55..5.45) goes out at once, then the schedule resumes
    assert st.late == 15
    burst = [t - t0 for t, _ in ws.sent if abs(t - t0 - 5.47) < 1e-6]
    assert len(burst) == 10 == MAX_LAG_S * 10
    assert ws.sent[-1][0] - t0 == pytest.approx(9.95)


async def test_unacked_comments_are_capped(autojump_clock: trio.testing.MockClock) -> None:
    sc = Scenario(name="t", phases=(Phase("p", 2.0, 20.0),), senders=1)
    c = Counters(3)
    conn = Conn(ConnSpec("u", "r"), c, is_viewer=False)
    ws = FakeWS(None)  # never acked
    plan = SenderPlan("s0", 0, 1, 5, 24)
    await _send_loop(ws, conn, plan, c, due_fn(sc, trio.current_time()))  # type: ignore[arg-type]
    assert (c.stages[1].sent, c.stages[1].skipped) == (5, 35)


def test_senders_get_processes_of_their_own() -> None:
    sc = load("celebrity-spike", SPIKE)
    assert sc.process_count == 3
    assert sc.senders_of(0) == sc.senders_of(1) == [] and sc.senders_of(2) == list(range(400))
    two = load("celebrity-spike", [*SPIKE, "sender_procs=2"])
    assert two.process_count == 4 and sorted(two.senders_of(2) + two.senders_of(3)) == list(
        range(400)
    )
    shared = load("celebrity-spike", [*SPIKE, "sender_procs=0"])
    assert shared.process_count == 2
    assert sorted(shared.senders_of(0) + shared.senders_of(1)) == list(range(400))
    assert load("steady", ["senders=0", "phases.0.rate=0"]).process_count == 1


@pytest.mark.parametrize(
    ("name", "overrides", "per_sender"),
    [
        ("celebrity-spike", SPIKE, 5.0),  # 2000/s peak over 400 senders
        ("steady", ["senders=10", "phases.0.rate=200"], 20.0),
        ("steady", ["senders=10", "phases.0.rate=300"], 30.0),  # past the flood default
    ],
)
def test_local_server_limits_admit_the_schedule(
    name: str, overrides: list[str], per_sender: float
) -> None:
    sc = load(name, overrides)
    assert sc.max_sender_rate() == per_sender
    env = server_env(sc, "secret")
    rate, burst = float(env["DANMAKU_RATE_PER_S"]), float(env["DANMAKU_RATE_BURST"])
    assert rate >= 2 * per_sender  # the bucket refills faster than the sender empties it
    assert burst >= math.ceil(per_sender * MAX_LAG_S) + 1  # a catch-up burst fits
    msgs = float(env["DANMAKU_MAX_MSGS_PER_S"])
    assert msgs >= 2 * per_sender and float(env["DANMAKU_MAX_MSGS_BURST"]) >= 3 * msgs - 1e-9


def test_jittered_arrivals_keep_the_target_and_spread_over_the_tick() -> None:
    """Jitter moves each comment within its slot only: every phase keeps its target, the
    schedule stays ordered, and at 20/s with a 100 ms tick the send times cover the tick
    evenly (even arrivals sit at two fixed phases of it)."""
    even = load("celebrity-spike", [*SPIKE, 'arrivals="even"'])
    jit = load("celebrity-spike", SPIKE)
    assert jit.arrivals == "jitter"
    due = [jit.due_time(n + jit.arrival_offset(n)) for n in range(11_300)]
    assert all(t is not None for t in due)
    times = [t for t in due if t is not None]
    assert times == sorted(times)
    per_phase = [0, 0, 0]
    for t in times:
        per_phase[jit.phase_at(t)] += 1
    assert per_phase == [200, 11_000, 100]

    def tick_phases(sc: Scenario) -> set[int]:  # 10 ms bins of the 100 ms tick, 20/s phase
        return {int((sc.due_time(n + sc.arrival_offset(n)) or 0) * 100) % 10 for n in range(200)}

    assert len(tick_phases(even)) == 2 and len(tick_phases(jit)) == 10
    assert jit.arrival_offset(7) == load("celebrity-spike", SPIKE).arrival_offset(7)  # seeded
    with pytest.raises(ScenarioError):
        load("celebrity-spike", ['arrivals="poisson"'])
