"""Gateway-only measurements for issue 6 (fan-out): idle memory and CPU per connection,
ingest throughput of one gateway process, the reference scenario's latency and frame
writes per CPU-second, a handshake storm, and a gateway catching up after a stall.

Each case starts its own redis-server (temporary directory, free port) and a
``danmaku gateway`` process (plus a ``danmaku worker`` when frames are needed), so the
gateway's CPU and RSS are read from ``/proc`` apart from everything else. Clients run in
child processes of this command (``hold``/``send`` below, the lean client of
``loadtest/wire.py``), never in the gateway's process::

    python -m loadtest.gwbench idle --conns 10000      # RSS and idle CPU per connection
    python -m loadtest.gwbench ingest --senders 400    # comments/s accepted, Redis us/comment
    python -m loadtest.gwbench store --comments 200000 # the same path without WebSockets
    python -m loadtest.gwbench reference               # 5,000 viewers, 200 comments/s
    python -m loadtest.gwbench storm --viewers 1000 --storm 10000
    python -m loadtest.gwbench catchup --stall-s 2   # a 2 s backlog for 5,000 viewers

Senders with ``--rate`` send Poisson arrivals (evenly spaced sends would sit at one phase
of the worker's tick); viewers that only need to be there (``hold --drain``) are emptied
by one loop per process instead of parsing every frame.

Every case prints one JSON object with its figures. ``--env K=V`` passes extra
``DANMAKU_*`` settings to the gateway (e.g. ``--env DANMAKU_FAST_PATH=0``).
"""
