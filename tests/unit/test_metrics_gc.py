"""GC pauses are timed by generation (the process's own Metrics installs the hook)."""

from __future__ import annotations

import gc

from danmaku.metrics import Metrics


def test_collections_are_timed_by_generation() -> None:
    m = Metrics(process=True)
    try:
        before = m.registry.get_sample_value("danmaku_gc_pause_seconds_count", {"generation": "2"})
        gc.collect()
        after = m.registry.get_sample_value("danmaku_gc_pause_seconds_count", {"generation": "2"})
        assert before is not None and after == before + 1
    finally:
        gc.callbacks.pop()  # the hook this test installed
