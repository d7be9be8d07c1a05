"""Broadcast worker role: holds room leases and merges comments into frames."""

from danmaku.worker.service import BroadcastWorker

__all__ = ["BroadcastWorker"]
