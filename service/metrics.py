"""Prometheus metric objects for Winnow, shared by every module that counts something.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR is set before this module is imported (service/gunicorn_conf.py), so each
worker writes its samples to files there and `render()` aggregates all of them; without it (tests, `flask run`) the
default in-process registry serves. Labels stay low-cardinality: route templates, never raw paths or key ids.
"""
from __future__ import annotations

import os
import threading
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Sub-millisecond buckets matter: a check is answered in well under a millisecond of server time.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUEST_LATENCY = Histogram(
    "winnow_http_request_duration_seconds",
    "Time from the start of the request to the response, by route template, method and status.",
    ["route", "method", "status"],
    buckets=_LATENCY_BUCKETS,
)
VERDICTS = Counter(
    "winnow_verdicts_total",
    "Verdicts answered, by verdict (ham, unsure, spam) and by the face that asked (api, akismet, console).",
    ["verdict", "source"],
)
RATE_LIMITED = Counter(
    "winnow_rate_limited_total",
    "Requests refused with 429 by the per-key rate limit.",
)
# livemax: a version a worker serves shows 1; after a swap the old label drops to 0 in every live worker.
MODEL_INFO = Gauge(
    "winnow_model_info",
    "The model version a web worker serves (1) or served before (0).",
    ["version"],
    multiprocess_mode="livemax",
)
MODEL_LOADED = Gauge(
    "winnow_model_loaded",
    "1 when every live web worker has a model loaded.",
    multiprocess_mode="livemin",
)
MODEL_REFUSED = Gauge(
    "winnow_model_refused",
    "1 when a live web worker refused to load the version the registry serves (another deployment's secret, or "
    "another scikit-learn) and serves an older model or the starter instead.",
    multiprocess_mode="livemax",
)
WRITE_BUFFER_SIZE = Gauge(
    "winnow_write_buffer_size",
    "Checked comments waiting in the write-behind buffer, summed over live workers.",
    multiprocess_mode="livesum",
)
WRITE_BUFFER_DROPPED = Counter(
    "winnow_write_buffer_dropped_total",
    "Checked comments dropped because the write-behind buffer was full (Redis down for too long).",
)

_model_lock = threading.Lock()
_model_version: str | None = None


# Label children by label values: labels() takes a lock and builds a tuple on every call, a dict lookup does not.
_latency_children: dict[tuple[str, str, int], Any] = {}
_verdict_children: dict[tuple[str, str], Any] = {}


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    """One request's latency; route is the route template and method a known verb, so the labels stay bounded."""
    child = _latency_children.get((route, method, status))
    if child is None:
        child = _latency_children[(route, method, status)] = REQUEST_LATENCY.labels(
            route=route, method=method, status=str(status))
    child.observe(seconds)


def observe_verdict(verdict: str, source: str = "api") -> None:
    child = _verdict_children.get((verdict, source))
    if child is None:
        child = _verdict_children[(verdict, source)] = VERDICTS.labels(verdict=verdict, source=source)
    child.inc()


def observe_model(version: str | None) -> None:
    """Record the version this process serves; cheap when unchanged, so it can run on every request."""
    global _model_version
    if version == _model_version:
        return
    with _model_lock:
        if version == _model_version:
            return
        if _model_version is not None:
            MODEL_INFO.labels(version=_model_version).set(0)
        if version is not None:
            MODEL_INFO.labels(version=version).set(1)
        MODEL_LOADED.set(1 if version is not None else 0)
        _model_version = version


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def render() -> bytes:
    """The exposition text: aggregated over all workers in multiprocess mode, this process's registry otherwise."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)
