"""Redis key names. Every key of a room carries the hash tag ``{room}`` so a Redis
Cluster keeps all of a room's keys on one shard (and one Lua script may touch them all).
"""

from __future__ import annotations

PREFIX = "dm"
ROOMS = f"{PREFIX}:rooms"  # zset: room -> last activity (ms); the workers' discovery list
HOT = f"{PREFIX}:hot"  # zset: room -> last comment or moderation change (ms): what to read
WORKERS = f"{PREFIX}:workers"  # zset: worker id -> last heartbeat (ms)
GLOBAL_WORDS = f"{PREFIX}:words"  # set: blocked words in every room
GLOBAL_WORDS_VERSION = f"{PREFIX}:words:v"  # string: bumped on every change
GUEST_SESSIONS = f"{PREFIX}:guests"  # + ":{minute}:{ip}": guest tokens issued that minute
STAFF = f"{PREFIX}:staff"  # zset: uid -> highest rank seen on a token valid in every room


def comments(room: str) -> str:
    """Stream of accepted comments (XADD by the door, read by the room's worker); an
    entry packs up to ``scripts.ENTRY_MAX`` of them (``records.split_entry``)."""
    return f"{PREFIX}:{{{room}}}:in"


def frames(room: str) -> str:
    """Stream of built frames; entry id is ``<seq>-0`` so a seq range is an id range."""
    return f"{PREFIX}:{{{room}}}:frames"


def meta(room: str) -> str:
    """Hash: ``seq`` (last committed frame), ``cursor`` (last comment id merged),
    ``epoch`` (the history epoch: set when missing, by whoever reads the room first, so it
    changes exactly when the hash was lost; see ``store.presence``)."""
    return f"{PREFIX}:{{{room}}}:meta"


def lease(room: str) -> str:
    """String: the token of the worker that may merge the room (SET NX PX)."""
    return f"{PREFIX}:{{{room}}}:lease"


def online(room: str) -> str:
    """Hash: gateway id -> ``conns:stamp_ms:anonymous:mode`` of that gateway's viewers in
    the room (mode ``e``: its users are listed in ``who``; ``h``: in ``who_hll``)."""
    return f"{PREFIX}:{{{room}}}:online"


def who(room: str) -> str:
    """Hash: gateway id -> the uids of its viewers with a token, space-separated (rooms
    with few users on that gateway; ``rules.headcount``)."""
    return f"{PREFIX}:{{{room}}}:who"


def who_hll(room: str, bucket: int) -> str:
    """HyperLogLog: uids seen in the room by gateways with many users there, during one
    ``rules.headcount.HLL_BUCKET_MS`` bucket (expires after three)."""
    return f"{PREFIX}:{{{room}}}:who:{bucket}"


def who_tmp(room: str) -> str:
    """HyperLogLog used (and deleted) inside one count: the listed users, merged with
    ``who_hll``."""
    return f"{PREFIX}:{{{room}}}:who:tmp"


def stats(room: str) -> str:
    """Hash written by the room's worker each second: live rates (expires when idle)."""
    return f"{PREFIX}:{{{room}}}:stats"


def settings(room: str) -> str:
    """Hash of room settings set by moderators (budget, slow_mode_s, ingest_ceiling)."""
    return f"{PREFIX}:{{{room}}}:settings"


def users(room: str) -> str:
    """Hash: uid -> that user's state at the room's door, shared by all gateways (token
    bucket, last accepted time, recent nonces and their ids, recent text hashes). The
    current generation; see ``scripts.INGEST``."""
    return f"{PREFIX}:{{{room}}}:users"


def users_old(room: str) -> str:
    """Hash: the previous generation of ``users`` (read for users not in the current)."""
    return f"{PREFIX}:{{{room}}}:users:old"


def staff_buckets(room: str) -> str:
    """Hash: uid -> a staff member's token bucket at the room's door (struct ``<dd``:
    tokens, time), apart from the ordinary one (``scripts.INGEST``); expires when full."""
    return f"{PREFIX}:{{{room}}}:staff"


def door(room: str) -> str:
    """Hash: the door's own bookkeeping: ``id`` (last comment id minted), ``gen`` (when
    the users generation began, ms), ``avg`` (recent comments per stream entry), ``n``
    (comments stored, less those deleted). Never expires: it lives as long as the stream."""
    return f"{PREFIX}:{{{room}}}:door"


def deleted(room: str) -> str:
    """Sorted set: ids of comments deleted by moderators (score = the id's ms), capped;
    readers of the comment stream skip them (a packed entry cannot lose one comment)."""
    return f"{PREFIX}:{{{room}}}:deleted"


def offered(room: str) -> str:
    """Hash: gateway id -> ``rate:stamp_ms`` of comments offered (before shedding)."""
    return f"{PREFIX}:{{{room}}}:offered"


def bans(room: str) -> str:
    """Hash: uid -> banned-until (epoch seconds; 0 = permanent)."""
    return f"{PREFIX}:{{{room}}}:bans"


def words(room: str) -> str:
    """Set: the room's blocked words (``words_v`` in the settings hash bumps on change)."""
    return f"{PREFIX}:{{{room}}}:words"


def highlights(room: str) -> str:
    """Set: uids granted the highlighted tier in the room."""
    return f"{PREFIX}:{{{room}}}:hl"


def retract(room: str) -> str:
    """List: ids of deleted comments the next frame must retract."""
    return f"{PREFIX}:{{{room}}}:retract"


def control(room: str) -> str:
    """Stream: moderation events gateways act on (ban/kick, pin, notice), capped."""
    return f"{PREFIX}:{{{room}}}:ctl"


def pin(room: str) -> str:
    """String: the pinned message as JSON (PX when it expires)."""
    return f"{PREFIX}:{{{room}}}:pin"


def audit(room: str) -> str:
    """Stream: the room's audit log of moderation actions, capped."""
    return f"{PREFIX}:{{{room}}}:audit"


def shed(room: str) -> str:
    """Hash: gateway id -> ``rate:stamp_ms`` of comments shed by the ingest ceiling."""
    return f"{PREFIX}:{{{room}}}:shed"


def broadcasts(room: str) -> str:
    """Hash: broadcast id -> its metadata JSON (start, end, title)."""
    return f"{PREFIX}:{{{room}}}:bcs"


def live(room: str) -> str:
    """Hash of the broadcast on air now (``id``, ``start``); absent between broadcasts."""
    return f"{PREFIX}:{{{room}}}:live"


def recording(room: str, broadcast_id: str) -> str:
    """Stream: every comment kept during a broadcast (entry id = comment id), for replay."""
    return f"{PREFIX}:{{{room}}}:rec:{broadcast_id}"


def roles(room: str) -> str:
    """Sorted set: uid -> highest role rank (``auth.RANK``) a token of that user had
    when it acted in, or connected to, the room (staff only)."""
    return f"{PREFIX}:{{{room}}}:roles"


def staff_list(room: str) -> str:
    """Hash: uid -> the room's staff-list entry as JSON (``role``: ``moderator``,
    ``streamer`` or ``revoked``; ``by``, ``ts``), set by the room's streamer or an admin;
    ``staff_v`` in the settings hash bumps on every change (gateways re-read on it)."""
    return f"{PREFIX}:{{{room}}}:stafflist"


def ban_by(room: str) -> str:
    """Hash: uid -> rank of the role that set the uid's ban (kept beside ``bans``, whose
    values the door's scripts read as numbers)."""
    return f"{PREFIX}:{{{room}}}:banby"


# ---- held for review, reports, notes, shield (store/review.py, issue 19) ---------------
def first_comments(room: str) -> str:
    """Hash: uid -> ms of the user's first comment the door kept or held in the room
    (first-time chatters are held for review); expires when no one new came for long."""
    return f"{PREFIX}:{{{room}}}:firsts"


def held(room: str) -> str:
    """Hash: held id (``h<n>``) -> the payload of a comment held for review."""
    return f"{PREFIX}:{{{room}}}:held"


def review_queue(room: str) -> str:
    """Sorted set: held id -> ms it was held (the review queue, oldest first, bounded)."""
    return f"{PREFIX}:{{{room}}}:heldq"


def review_words(room: str) -> str:
    """Set: the room's review words (held, not refused; ``review_v`` bumps on change)."""
    return f"{PREFIX}:{{{room}}}:rwords"


def reports(room: str) -> str:
    """Hash: comment id -> JSON of its reports (reasons, reporters, the comment)."""
    return f"{PREFIX}:{{{room}}}:reports"


def reports_queue(room: str) -> str:
    """Sorted set: reported comment id -> ms of its latest report (bounded)."""
    return f"{PREFIX}:{{{room}}}:reportsq"


def report_quota(room: str, uid: str, minute: int) -> str:
    """String: reports ``uid`` filed in ``room`` in that minute (expires)."""
    return f"{PREFIX}:{{{room}}}:rq:{minute}:{uid}"


def notes(room: str) -> str:
    """Hash: uid -> JSON of moderators' private note about the user in the room."""
    return f"{PREFIX}:{{{room}}}:notes"


def nicks(room: str) -> str:
    """Hash: uid -> JSON ``{"nick", "role"}`` last seen for the user in the room."""
    return f"{PREFIX}:{{{room}}}:nicks"


def shield(room: str) -> str:
    """String: JSON of the settings shield mode replaced (restored when it goes off)."""
    return f"{PREFIX}:{{{room}}}:shield"


def room_of(key: bytes | str) -> str:
    """The room of a room key (inverse of the functions above)."""
    text = key.decode() if isinstance(key, bytes) else key
    start = text.index("{") + 1
    return text[start : text.index("}", start)]


# ---- identity (issue 19) --------------------------------------------------------------
def ip_bans(room: str) -> str:
    """Hash: network ("203.0.113.0/24") -> the IP ban as JSON (``until``, ``reason``,
    ``by``, ``uid``, ``ts``); ``ipbans_v`` in the settings hash bumps on every change
    (gateways re-read the hash on it, never per comment)."""
    return f"{PREFIX}:{{{room}}}:ipbans"


def last_ip(room: str, uid: str) -> str:
    """String: the client address ``uid`` last connected to the room from (expires after
    a day): what an IP ban derived from a user bans."""
    return f"{PREFIX}:{{{room}}}:ip:{uid}"


def staff_nicks(room: str) -> str:
    """Hash: uid -> the nick a staff member of the room was last seen with; ``nicks_v``
    in the settings hash bumps when one changes (guests may not mimic them)."""
    return f"{PREFIX}:{{{room}}}:staffnicks"


def ban_reasons(room: str) -> str:
    """Hash: uid -> ``{"until", "reason"}`` JSON of the uid's ban (beside ``bans``, whose
    values the door reads as numbers): what a ``banned`` error says."""
    return f"{PREFIX}:{{{room}}}:banwhy"


# ---- notices: news reaches only the gateways that hold a room (issue 25) ---------------
NOTICES_MAXLEN = 1000  # entries kept in a gateway's notice stream (a notice names rooms)


def holders(room: str) -> str:
    """Zset: notice id of each gateway feed with viewers of the room -> when that
    registration expires (ms); committers name the room in each live holder's notice
    stream (``store.notices``)."""
    return f"{PREFIX}:{{{room}}}:holders"


def notices(feed: str) -> str:
    """Stream of one gateway feed (its per-process notice id): ``r`` names rooms it holds
    that have new frames or control events (comma-separated). Created and kept alive by
    the gateway (PEXPIRE, refreshed); committers never create it (``NOMKSTREAM``)."""
    return f"{PREFIX}:gw:{{{feed}}}:notices"
