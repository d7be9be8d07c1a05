"""The command line: the cases, and the client processes the cases start."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import trio

from loadtest.gwbench.cases import (
    case_catchup,
    case_egress,
    case_idle,
    case_ingest,
    case_reference,
    case_store,
    case_storm,
)
from loadtest.gwbench.clients import hold, send
from loadtest.gwbench.procs import ROOM, raise_nofile


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.gwbench", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    idle = sub.add_parser("idle", help="RSS and idle CPU per connection")
    idle.add_argument("--conns", type=int, default=10_000)
    idle.add_argument("--holders", type=int, default=2, help="client processes")
    idle.add_argument("--idle-s", type=float, default=30.0)
    ing = sub.add_parser("ingest", help="comments/s one gateway accepts into Redis")
    ing.add_argument("--senders", type=int, default=400)
    ing.add_argument("--procs", type=int, default=1, help="sender processes")
    ing.add_argument("--window", type=int, default=32, help="comments in flight per sender")
    ing.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="comments/s in all, spread evenly over the senders (each comment its own"
        " read and its own ack write, as from real viewers); 0: as fast as --window allows",
    )
    ing.add_argument("--rooms", type=int, default=1)
    ing.add_argument("--seconds", type=float, default=10.0)
    ing.add_argument("--warmup-s", type=float, default=3.0)
    ing.add_argument("--py-spy", metavar="FILE", help="profile the gateway (raw stacks)")
    st = sub.add_parser("store", help="the ingest path without WebSockets")
    st.add_argument("--comments", type=int, default=200_000)
    st.add_argument("--users", type=int, default=10_000)
    st.add_argument("--rooms", type=int, default=1)
    ref = sub.add_parser("reference", help="issue 6's reference scenario: latency, writes/CPU-s")
    ref.add_argument("--deflate", action="store_true", help="viewers offer permessage-deflate")
    eg = sub.add_parser(
        "egress", help="paired reference runs, deflate off/on: egress per comment, writes/CPU-s"
    )
    eg.add_argument("--pairs", type=int, default=3)
    for q in (ref, eg):
        q.add_argument("--viewers", type=int, default=5000)
        q.add_argument("--measure", type=int, default=100, help="viewers that parse and time")
        q.add_argument("--holders", type=int, default=1, help="processes draining the rest")
        q.add_argument("--rate", type=float, default=200.0, help="comments/s")
        q.add_argument("--senders", type=int, default=20, help="10 comments/s each at 200/s")
        q.add_argument("--seconds", type=float, default=20.0)
        q.add_argument("--warmup-s", type=float, default=5.0)
    storm = sub.add_parser("storm", help="a handshake storm while viewers watch")
    storm.add_argument("--viewers", type=int, default=1000)
    storm.add_argument("--holders", type=int, default=1, help="processes draining viewers")
    storm.add_argument("--measure", type=int, default=100, help="viewers that parse and time")
    storm.add_argument("--rate", type=float, default=50.0, help="comments/s during the run")
    storm.add_argument("--storm", type=int, default=10_000)
    storm.add_argument("--storm-procs", type=int, default=1)
    storm.add_argument("--concurrency", type=int, default=1000, help="connects at once")
    storm.add_argument("--quiet-s", type=float, default=10.0)
    storm.add_argument(
        "--storm-room",
        default=ROOM,
        help="room the storm joins (default: the watched one, whose fan-out then grows)",
    )
    cu = sub.add_parser("catchup", help="a gateway stalled, then catching up")
    cu.add_argument("--viewers", type=int, default=5000)
    cu.add_argument("--measure", type=int, default=100, help="viewers that parse and time")
    cu.add_argument("--rate", type=float, default=200.0, help="comments/s")
    cu.add_argument("--senders", type=int, default=20)
    cu.add_argument("--stall-s", type=float, default=2.0)
    cu.add_argument("--seconds", type=float, default=3.0, help="CPU window before, after")
    cu.add_argument("--warmup-s", type=float, default=5.0)
    for q in (idle, ing, st, ref, eg, storm, cu):
        q.add_argument("--env", action="append", help="K=V for the gateway (repeatable)")
        q.add_argument("--repeat", type=int, default=1)
    h = sub.add_parser("hold", help="(internal) a process of viewers")
    h.add_argument("url")
    h.add_argument("n", type=int)
    h.add_argument("--concurrency", type=int, default=256)
    h.add_argument("--latency", action="store_true")
    h.add_argument("--room", default=ROOM)
    h.add_argument("--drain", action="store_true", help="one sweep loop, no parsing")
    h.add_argument("--deflate", action="store_true", help="offer permessage-deflate")
    s = sub.add_parser("send", help="(internal) a process of senders")
    s.add_argument("url")
    s.add_argument("n", type=int)
    s.add_argument("--window", type=int, default=32)
    s.add_argument("--rate", type=float, default=0.0)
    s.add_argument("--rooms", type=int, default=1)
    s.add_argument("--offset", type=int, default=0)
    args = p.parse_args(argv)
    if args.cmd == "hold":
        raise_nofile()
        trio.run(
            hold,
            args.url,
            args.n,
            args.concurrency,
            args.latency,
            args.room,
            args.drain,
            args.deflate,
        )
        return 0
    if args.cmd == "send":
        raise_nofile()
        trio.run(send, args.url, args.n, args.window, args.rate, args.rooms, args.offset)
        return 0
    case = {
        "idle": case_idle,
        "ingest": case_ingest,
        "store": case_store,
        "reference": case_reference,
        "storm": case_storm,
        "catchup": case_catchup,
        "egress": case_egress,
    }
    for _ in range(args.repeat):
        result = case[args.cmd](args)
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
