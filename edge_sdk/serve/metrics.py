"""Prometheus metrics of one server (its own registry, so two apps in a process never clash)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# VmHWM, not ru_maxrss: Linux carries ru_maxrss across execve, so a server started from a large
# process (a test runner that had held gigabytes) reported its parent's peak as its own.
from edge_sdk.measure.memory import peak_rss_bytes

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge("edge_sdk_queue_depth", "Requests waiting for the generator (not the running one)",
                                 registry=r)
        self.in_flight = Gauge("edge_sdk_requests_in_flight", "Requests running or waiting", registry=r)
        self.latency = Histogram("edge_sdk_request_seconds", "Time from accepting to answering a request",
                                 ["endpoint"], registry=r,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
        self.step_seconds = Histogram("edge_sdk_step_seconds", "Sampler step time", registry=r,
                                      buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30))
        self.requests = Counter("edge_sdk_requests", "Answered requests", ["endpoint", "status"], registry=r)
        self.rejected = Counter("edge_sdk_rejected", "Requests refused before running", ["reason"], registry=r)
        self.cancelled = Counter("edge_sdk_cancelled", "Runs stopped because the client went away", registry=r)
        self.images = Counter("edge_sdk_images", "Images generated", registry=r)
        self.peak_memory = Gauge("edge_sdk_peak_memory_bytes", "Peak resident memory of the server process",
                                 registry=r)
        self.peak_memory.set_function(peak_rss_bytes)

    def render(self) -> bytes:
        return generate_latest(self.registry)
