"""GC pauses are timed by generation (the process's own Metrics installs the hook);
``observe_many`` gives what ``observe`` per value gives; a ``Tally`` reads as a counter."""

from __future__ import annotations

import gc

from hypothesis import given
from hypothesis import strategies as st

from danmaku.metrics import Metrics, observe_many


def test_collections_are_timed_by_generation() -> None:
    m = Metrics(process=True)
    try:
        before = m.registry.get_sample_value("danmaku_gc_pause_seconds_count", {"generation": "2"})
        gc.collect()
        after = m.registry.get_sample_value("danmaku_gc_pause_seconds_count", {"generation": "2"})
        assert before is not None and after == before + 1
    finally:
        gc.callbacks.pop()  # the hook this test installed


@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), max_size=60))
def test_observe_many_is_observe_per_value(values: list[float]) -> None:
    one, many = Metrics(process=False), Metrics(process=False)
    for v in values:
        one.latency.labels("ingest").observe(v)
    observe_many(many.latency.labels("ingest"), values)
    assert _latency(one) == _latency(many)


def test_observe_many_counts_a_value_on_a_bucket_edge_in_that_bucket() -> None:
    m = Metrics(process=False)
    observe_many(m.latency.labels("ingest"), [0.1, 0.1000001, 7.0])
    got = m.registry.get_sample_value
    labels = {"stage": "ingest"}
    assert got("danmaku_latency_seconds_bucket", {**labels, "le": "0.1"}) == 1
    assert got("danmaku_latency_seconds_bucket", {**labels, "le": "0.125"}) == 2
    assert got("danmaku_latency_seconds_bucket", {**labels, "le": "+Inf"}) == 3
    assert got("danmaku_latency_seconds_count", labels) == 3


def _latency(m: Metrics) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value)
        for family in m.registry.collect()
        if family.name == "danmaku_latency_seconds"
        for s in family.samples
        if not s.name.endswith("_created")
    ]


def test_a_tally_is_exported_as_a_counter() -> None:
    m = Metrics(process=False)
    m.comments_received.inc()
    m.comments_received.inc(4)
    (family,) = [f for f in m.registry.collect() if f.name == "danmaku_comments_received"]
    assert family.type == "counter"
    assert m.registry.get_sample_value("danmaku_comments_received_total") == 5
    # no _created series anywhere (each is a line of every scrape that nobody reads)
    assert m.registry.get_sample_value("danmaku_comments_received_created") is None
