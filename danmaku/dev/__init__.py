"""Tools that run Redis beside danmaku on one machine: the embedded redis-server of
``danmaku up`` (``embedded``), a Redis Cluster on loopback (``localcluster``) and the
split-deployment demo of ``make cluster-demo`` (``devcluster``). Tests and the loadtest
harness start their servers with the same helpers. Nothing in a role's serving path
imports this package but ``danmaku up``'s start-up (``system.run_system``)."""
