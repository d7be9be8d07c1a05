"""One room's frame in a tick: the room's read fed into its merger and the frame to
commit built (``build``: the encoded frame, the retractions, what the broadcast on air
records), what a commit changes (``committed``), and the frame's figures
(``observe``). Pure but for the metrics: no Redis, no clock of its own."""

from __future__ import annotations

from typing import Any

import orjson

from danmaku.metrics import Metrics
from danmaku.protocol import encode_frame
from danmaku.rules.items import Item
from danmaku.rules.merge import Draft, stream_id_ms
from danmaku.store import FrameCommit
from danmaku.store.records import TickRead
from danmaku.worker.rooms import HeldRoom


def build(
    r: HeldRoom, got: TickRead, now_wall: float, now: float, max_items: int, metrics: Metrics
) -> tuple[Draft, FrameCommit] | None:
    """Feed one room's read into its merger; its next frame to commit, if any."""
    room = r.merger.room
    r.merger.retract(got.retracts.get(room, []))
    comments = got.comments.get(room)
    r.catching_up = len(comments or ()) >= max_items
    if comments:
        invalid = r.merger.invalid
        r.merger.add((c.id, c.payload) for c in comments)
        if r.merger.invalid > invalid:
            metrics.comments_invalid.inc(r.merger.invalid - invalid)
        r.last_active = r.last_comments = now
    if room in got.deleted:
        r.merger.drop(got.deleted[room])
    draft = r.merger.build(now_wall, clock=now)  # waits measured on trio's clock
    if draft is None:
        return None
    broadcast, start_ms, end_ms = got.on_air.get(room, ("", 0, 0))
    commit = FrameCommit(
        room=room,
        token=r.lease.token,
        seq=draft.seq,
        cursor=draft.cursor,
        payload=encode_frame(
            room, draft.seq, draft.ts_ms, draft.items, draft.dropped, r.online, draft.retract
        ),
        retracted=len(draft.retract),
        broadcast=broadcast,
        recorded=recording(r.merger.pending[: draft.consumed], start_ms, end_ms)
        if broadcast
        else (),
    )
    return draft, commit


def committed(r: HeldRoom, d: Draft, metrics: Metrics) -> None:
    """A frame of the room was committed: the merger moves on; counted."""
    r.merger.committed(d)
    r.comments_in += d.consumed
    r.shown += len(d.items)
    if len(r.latencies) < 10_000:
        r.latencies.extend(d.ts_ms - int(i.get("ts", d.ts_ms)) for i in d.items)
    r.dropped += d.dropped
    observe(metrics, d)


def observe(m: Metrics, d: Draft) -> None:
    """The frame's figures: items, drops per tier, folds, merge latency per item."""
    m.frames_built.inc()
    m.frame_items.observe(len(d.items))
    for tier, n in d.dropped_by_tier.items():
        m.items_dropped.labels(str(tier)).inc(n)
    if d.folded:
        m.items_folded.inc(d.folded)
    merge = m.latency.labels("merge")
    for item in d.items:
        merge.observe(max(0.0, (d.ts_ms - stream_id_ms(str(item["id"]))) / 1000))


# What replay keeps of paid, gift and system items besides (issue 24).
PLATFORM = frozenset({"kind", "amount", "currency", "gift", "tier"})


def recording(items: list[Item], start_ms: int, end_ms: int) -> list[tuple[str, bytes]]:
    """What replay keeps of each comment accepted between start and end (0 = on air):
    author, style, and its offset in the broadcast."""
    out = []
    for i in items:
        ts = int(i.get("ts", 0))
        if ts < start_ms or (end_ms and ts > end_ms):
            continue
        kept: dict[str, Any] = {
            k: i[k]
            for k in ("uid", "nick", "text", "color", "mode", "prio", "ts", "role")
            if k in i
        }
        kept |= {k: v for k, v in i.items() if k in PLATFORM}
        kept["offset_ms"] = ts - start_ms
        out.append((str(i["id"]), orjson.dumps(kept)))
    return out
