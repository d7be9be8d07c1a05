"""``plan``: how a connection that asks to resume (``since=SEQ[&epoch=E]``) starts.

Pure: the gateway passes what it knows (its hub's last seq and epoch, and, when asked
for, the room's position read fresh from the store) and acts on the answer
(``Sessions.attach``). The promise, after Centrifugo's offset + epoch: a client either
gets every frame after ``since`` with no gap and no duplicate, or an explicit
``resume_failed`` notice (with a reason) and a fresh start at the live edge; never a
silent skip.

* no ``since``: live, as always;
* an ``epoch`` other than the room's: the history the client knew was reset or lost,
  so its ``since`` means nothing here, even when it falls inside the new numbering:
  ``epoch``;
* ``since`` behind the gateway's last frame: replay from history (a frame missing
  there is a ``gap``, decided while reading);
* ``since`` at the gateway's last frame: live, nothing to replay;
* ``since`` beyond the gateway's last frame: the gateway may just lag the room by a
  frame or two, so the room's own position decides (``CHECK``): within it, live from
  ``since + 1`` (the gateway's feed brings the rest); beyond it, the client saw frames
  this room never committed (history rolled back with data lost): ``ahead``.

Clients without ``epoch`` (older players) get the same, minus the epoch check.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Start:
    """What to do. ``replay``: read history after ``since`` first; ``check``: read the
    room's position and plan again; ``min_seq``: live frames below it are not sent;
    ``failed``: the reason of a ``resume_failed`` notice (``None``: none)."""

    replay: bool = False
    check: bool = False
    min_seq: int = 0
    failed: str | None = None

    @property
    def outcome(self) -> str:
        """The label of ``danmaku_resumes_total`` (for a start without ``since``: live)."""
        return self.failed or ("replayed" if self.replay else "live")


LIVE = Start()
CHECK = Start(check=True)


def fresh(reason: str) -> Start:
    """A fresh start at the live edge after a ``resume_failed`` notice."""
    return Start(failed=reason)


def plan(
    since: int | None,
    epoch: str,
    room_epoch: str,
    hub_seq: int,
    room_seq: int | None = None,
) -> Start:
    """How to start. ``epoch``: the client's ("" = none given); ``room_epoch``: the
    room's as the gateway knows it; ``hub_seq``: the gateway's last frame of the room;
    ``room_seq``: the room's last committed frame read fresh (``None``: not read yet)."""
    if since is None:
        return LIVE
    if epoch and room_epoch and epoch != room_epoch:
        return fresh("epoch")
    if since < hub_seq:
        return Start(replay=True)
    if since == hub_seq:
        return Start(min_seq=since + 1)
    if room_seq is None:
        return CHECK
    if since > room_seq:
        return fresh("ahead")
    return Start(min_seq=since + 1)
