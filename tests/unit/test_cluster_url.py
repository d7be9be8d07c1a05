"""Cluster URLs and command routing keys (no I/O: ``connect`` with unreachable seeds is
not called here; tests/integration/test_cluster.py runs a real cluster)."""

from __future__ import annotations

import pytest

from danmaku.store import cluster, keys


def test_cluster_urls_are_recognised() -> None:
    assert cluster.is_cluster_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7000")
    assert cluster.is_cluster_url("rediss+cluster://a:7000")
    assert not cluster.is_cluster_url("redis://127.0.0.1:6379/0")


@pytest.mark.parametrize(
    "url",
    ["redis://a:1", "redis+cluster://a", "redis+cluster://a:x", "redis+cluster://:7000"],
)
def test_malformed_cluster_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        cluster.connect(url)


def test_the_routing_key_of_each_pipelined_command() -> None:
    room = keys.comments("r1")
    assert cluster.command_key(("HSET", room, "f", "v")) == room
    assert cluster.command_key(("EVALSHA", "abc", 2, room, "other")) == room
    assert cluster.command_key(("EVALSHA", "abc", 0)) is None
    read = ("XREAD", b"COUNT", 64, b"STREAMS", keys.frames("r1"), keys.control("r1"), "1-0", "0")
    assert cluster.command_key(read) == keys.frames("r1")


def test_a_rooms_keys_share_one_slot() -> None:
    from redis.crc import key_slot

    room = "celebrity"
    slots = {
        key_slot(k.encode())
        for k in (
            keys.comments(room),
            keys.frames(room),
            keys.control(room),
            keys.lease(room),
            keys.users(room),
            keys.users_old(room),
            keys.door(room),
            keys.deleted(room),
            keys.recording(room, "b1"),
        )
    }
    assert len(slots) == 1
