"""The publish path and the webhook reader on a Redis Cluster (3 masters): a batch over
rooms on every shard, its retry, frames in rooms on different shards, the directory,
and webhook events read across shards."""

from __future__ import annotations

import trio

from danmaku.config import Settings
from danmaku.dev.localcluster import LocalCluster
from tests.client import connect, start_system
from tests.integration.test_cluster import ROOMS, cluster, cluster_settings, shards
from tests.integration.test_server_api import KEY, ServerApi
from tests.integration.test_webhooks import SECRET, Receiver, wait_until

__all__ = ["cluster", "cluster_settings"]  # the fixtures, shared with test_cluster


async def test_publish_and_webhooks_across_shards(
    nursery: trio.Nursery, cluster: LocalCluster, cluster_settings: Settings
) -> None:
    assert len(shards(cluster, ROOMS)) == 3
    hook = Receiver()
    try:
        s = cluster_settings.replace(
            api_keys=KEY, webhook_urls=hook.url, webhook_secret=SECRET, webhook_poll_ms=50
        )
        system = await start_system(nursery, s)
        api = ServerApi(system)
        assert system.ws_port
        # A room's own tier table (issue 24), read across shards in the batch; the
        # endpoint registry's bounded add (a script) on a cluster.
        own = [{"name": "solo", "min": 0, "color": "#123456", "pin_s": 0}]
        status, _ = await api("PUT", f"/rooms/{ROOMS[0]}/tiers", {"tiers": own})
        assert status == 200
        status, _ = await api("POST", "/webhooks", {"url": "http://127.0.0.1:9/unused"})
        assert status == 201
        async with trio.open_nursery() as n:
            viewers = {room: await connect(n, system.ws_port, room) for room in ROOMS[:3]}
            batch = [
                {"room": r, "id": "gift-1", "kind": "gift", "uid": "u", "nick": "N"}
                | {"gift": {"name": "heart", "count": 2, "value": 3}}
                for r in ROOMS
            ]
            status, first = await api("POST", "/messages", {"messages": batch})
            assert status == 200 and all(r["status"] == "published" for r in first)
            assert [r["tier"]["name"] for r in first] == ["solo"] + ["green"] * (len(ROOMS) - 1)
            status, again = await api("POST", "/messages", {"messages": batch})
            assert [r["status"] for r in again] == ["duplicate"] * len(ROOMS)
            assert [r["comment_id"] for r in again] == [r["comment_id"] for r in first]
            for r in first[:3]:
                await viewers[r["room"]].wait_for(lambda c, r=r: r["comment_id"] in c.item_ids())
            status, page = await api("GET", "/rooms?sort=room&order=asc&limit=200")
            assert status == 200 and set(ROOMS) <= {line["room"] for line in page["rooms"]}
            n.cancel_scope.cancel()
        want = {(r["room"], r["comment_id"]) for r in first}
        await wait_until(
            lambda: want <= {(e["room"], e["data"]["id"]) for e in hook.delivered()}, 30
        )
    finally:
        hook.close()
